//! AdamW (β 0.9/0.999, eps 1e-8) with a global gradient-norm clip, as spec §5.1 prescribes
//! (PyTorch's `clip_grad_norm_`: scale by `max_norm / (norm + 1e-6)` when that is below 1).
//!
//! On the CPU the update runs in place, one pass over each parameter with its moments kept
//! beside it (candle's `AdamW` makes about a dozen tensor passes per parameter, most of the
//! fusion stage's time with the 689k-parameter Q-network). Elsewhere candle-nn's `AdamW` does
//! it. Norms are summed over the variables in name order, so they are reproducible.

use std::sync::Mutex;

use candle_core::{CpuStorage, InplaceOp2, Layout, Storage, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

/// An optimiser over named variables.
pub struct Optim {
    backend: Backend,
    vars: Vec<(String, Var)>,
    clip: f64,
    params: ParamsAdamW,
    step_t: u32,
}

enum Backend {
    /// First and second moments of each variable, host-side.
    Cpu(Vec<Mutex<(Vec<f32>, Vec<f32>)>>),
    Candle(AdamW),
}

impl Optim {
    pub fn new(
        mut vars: Vec<(String, Var)>,
        lr: f64,
        weight_decay: f64,
        clip: f64,
    ) -> candle_core::Result<Optim> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = ParamsAdamW {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        };
        let cpu = vars.iter().all(|(_, v)| v.device().is_cpu());
        let backend = if cpu {
            Backend::Cpu(
                vars.iter()
                    .map(|(_, v)| {
                        Mutex::new((vec![0.0; v.elem_count()], vec![0.0; v.elem_count()]))
                    })
                    .collect(),
            )
        } else {
            Backend::Candle(AdamW::new(
                vars.iter().map(|(_, v)| v.clone()).collect(),
                params.clone(),
            )?)
        };
        Ok(Optim {
            backend,
            vars,
            clip,
            params,
            step_t: 0,
        })
    }

    pub fn lr(&self) -> f64 {
        self.params.lr
    }

    /// Backpropagates `loss`, clips and steps. Returns the gradient norm before clipping.
    pub fn step(&mut self, loss: &Tensor) -> candle_core::Result<f64> {
        let mut grads = loss.backward()?;
        let mut sq = 0f64;
        for (_, v) in &self.vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += sum_sq(g)?;
            }
        }
        let norm = sq.sqrt();
        let coef = if self.clip > 0.0 && self.clip / (norm + 1e-6) < 1.0 {
            self.clip / (norm + 1e-6)
        } else {
            1.0
        };
        self.step_t += 1;
        match &mut self.backend {
            Backend::Candle(opt) => {
                if coef < 1.0 {
                    for (_, v) in &self.vars {
                        if let Some(g) = grads.get(v.as_tensor()) {
                            let scaled = (g * coef)?;
                            grads.insert(v.as_tensor(), scaled);
                        }
                    }
                }
                opt.step(&grads)?;
            }
            Backend::Cpu(moments) => {
                let p = &self.params;
                for ((_, v), mv) in self.vars.iter().zip(moments.iter()) {
                    let Some(g) = grads.get(v.as_tensor()) else {
                        continue;
                    };
                    let g = g.contiguous()?;
                    v.as_tensor().inplace_op2(
                        &g,
                        &AdamWStep {
                            moments: mv,
                            coef: coef as f32,
                            lr: p.lr as f32,
                            decay: (p.lr * p.weight_decay) as f32,
                            beta1: p.beta1 as f32,
                            beta2: p.beta2 as f32,
                            eps: p.eps as f32,
                            scale_m: (1.0 / (1.0 - p.beta1.powi(self.step_t as i32))) as f32,
                            scale_v: (1.0 / (1.0 - p.beta2.powi(self.step_t as i32))) as f32,
                        },
                    )?;
                }
            }
        }
        Ok(norm)
    }
}

/// `Σ g²` of a tensor, read in place on the CPU.
fn sum_sq(g: &Tensor) -> candle_core::Result<f64> {
    if g.device().is_cpu() && g.is_contiguous() {
        let (st, l) = g.storage_and_layout();
        if let (Storage::Cpu(s), Some((a, b))) = (&*st, l.contiguous_offsets()) {
            let v = &s.as_slice::<f32>()?[a..b];
            let mut acc = [0f64; 4];
            let chunks = v.chunks_exact(4);
            let rest = chunks.remainder();
            for c in chunks {
                for k in 0..4 {
                    acc[k] += (c[k] * c[k]) as f64;
                }
            }
            let tail: f64 = rest.iter().map(|x| (x * x) as f64).sum();
            return Ok(acc.iter().sum::<f64>() + tail);
        }
    }
    Ok(g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64)
}

/// One in-place AdamW update of a parameter from its gradient (scaled by the clip `coef`).
struct AdamWStep<'a> {
    moments: &'a Mutex<(Vec<f32>, Vec<f32>)>,
    coef: f32,
    lr: f32,
    decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    scale_m: f32,
    scale_v: f32,
}

impl InplaceOp2 for AdamWStep<'_> {
    fn name(&self) -> &'static str {
        "adamw-step"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((a, b)), Some((c, d))) = (dst_l.contiguous_offsets(), src_l.contiguous_offsets())
        else {
            candle_core::bail!("adamw: parameters and gradients must be contiguous");
        };
        let g = &src.as_slice::<f32>()?[c..d];
        let CpuStorage::F32(theta) = dst else {
            candle_core::bail!("adamw: parameters must be f32");
        };
        let theta = &mut theta[a..b];
        let mut mv = self.moments.lock().expect("moments lock");
        let (m, v) = &mut *mv;
        if theta.len() != g.len() || m.len() != g.len() {
            candle_core::bail!("adamw: shapes differ");
        }
        for i in 0..g.len() {
            let gi = g[i] * self.coef;
            m[i] = self.beta1 * m[i] + (1.0 - self.beta1) * gi;
            v[i] = self.beta2 * v[i] + (1.0 - self.beta2) * gi * gi;
            let mh = m[i] * self.scale_m;
            let vh = v[i] * self.scale_v;
            theta[i] = theta[i] * (1.0 - self.decay) - self.lr * mh / (vh.sqrt() + self.eps);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The in-place update follows candle-nn's AdamW (with the same clip) step for step.
    #[test]
    fn inplace_adamw_matches_candle() {
        let dev = &Device::Cpu;
        let run = |ours: bool| {
            let w = Var::from_vec(vec![0.5f32, -1.0, 2.0, 0.1], 4, dev).unwrap();
            let vars = vec![("w".to_string(), w.clone())];
            let mut opt = Optim::new(vars.clone(), 0.05, 0.01, 1.0).unwrap();
            if !ours {
                opt.backend =
                    Backend::Candle(AdamW::new(vec![w.clone()], opt.params.clone()).unwrap());
            }
            let t = Tensor::new(&[1f32, 2., -3., 4.], dev).unwrap();
            for _ in 0..5 {
                let loss = ((w.as_tensor() - &t)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    * 3.0)
                    .unwrap();
                opt.step(&loss).unwrap();
            }
            w.as_tensor().to_vec1::<f32>().unwrap()
        };
        let (a, b) = (run(true), run(false));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}
