//! AdamW (β 0.9/0.999, eps 1e-8) with a global gradient-norm clip, as spec §5.1 prescribes.
//! candle-nn's AdamW does the update; the clip (PyTorch's `clip_grad_norm_`: scale by
//! `max_norm / (norm + 1e-6)` when that is below 1) is done here over the variables in name
//! order, so the norm is summed in a fixed order.

use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

/// An optimiser over named variables.
pub struct Optim {
    opt: AdamW,
    vars: Vec<(String, Var)>,
    clip: f64,
}

impl Optim {
    pub fn new(
        mut vars: Vec<(String, Var)>,
        lr: f64,
        weight_decay: f64,
        clip: f64,
    ) -> candle_core::Result<Optim> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let opt = AdamW::new(
            vars.iter().map(|(_, v)| v.clone()).collect(),
            ParamsAdamW {
                lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
            },
        )?;
        Ok(Optim { opt, vars, clip })
    }

    pub fn lr(&self) -> f64 {
        self.opt.learning_rate()
    }

    /// Backpropagates `loss`, clips and steps. Returns the gradient norm before clipping.
    pub fn step(&mut self, loss: &Tensor) -> candle_core::Result<f64> {
        let mut grads = loss.backward()?;
        let mut sq = 0f64;
        for (_, v) in &self.vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        if self.clip > 0.0 {
            let coef = self.clip / (norm + 1e-6);
            if coef < 1.0 {
                for (_, v) in &self.vars {
                    if let Some(g) = grads.get(v.as_tensor()) {
                        let scaled = (g * coef)?;
                        grads.insert(v.as_tensor(), scaled);
                    }
                }
            }
        }
        self.opt.step(&grads)?;
        Ok(norm)
    }
}
