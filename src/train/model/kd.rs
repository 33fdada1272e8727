//! The GAT losses and knowledge distillation (spec §5.4, §5.5).
//!
//! - [`weighted_ce`]: class-weighted cross entropy `Σ w_y·ℓ / Σ w_y`.
//! - [`gat_kd_loss`]: `α·T²·KL(p_t ‖ p_s) + (1−α)·CE_w`, the softmax taken over the **2 classes
//!   of each graph** (pitfall 19: [O2]'s ran over the batch, [O3]'s was identically 0).
//! - [`vgae_kd_loss`]: `α·(w_lat·MSE(P(μ_s), μ_t) + w_rec·MSE(cont_s, cont_t)) + (1−α)·L_task`,
//!   with `P` a projection trained jointly and then discarded ([`KdProjection`]).

use candle_core::{D, Tensor};
use candle_nn::VarBuilder;

use super::layers::Linear;

/// Class weights `w_c = (n_0 + n_1) / (2·n_c)` (0 for an absent class).
pub fn class_weights(y: &[u8]) -> [f32; 2] {
    let n1 = y.iter().filter(|&&v| v != 0).count();
    let n0 = y.len() - n1;
    let w = |c: usize| {
        if c == 0 {
            0.0
        } else {
            (n0 + n1) as f32 / (2 * c) as f32
        }
    };
    [w(n0), w(n1)]
}

/// `Σ_b w_{y_b}·CE_b / Σ_b w_{y_b}` for `logits [B, 2]` and u32 labels `y [B]`.
pub fn weighted_ce(
    logits: &Tensor,
    y: &Tensor,
    y_host: &[u8],
    w: [f32; 2],
) -> candle_core::Result<Tensor> {
    let ce = candle_nn::ops::log_softmax(logits, D::Minus1)?
        .gather(&y.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?;
    let wv: Vec<f32> = y_host.iter().map(|&c| w[(c != 0) as usize]).collect();
    let total: f32 = wv.iter().sum();
    let wt = Tensor::from_vec(wv, y_host.len(), logits.device())?;
    (ce * wt)?.sum_all()? / total.max(f32::MIN_POSITIVE) as f64
}

/// `KL(softmax(t/T) ‖ softmax(s/T))` averaged over the batch: `(1/B) Σ_b Σ_c p_t (log p_t − log p_s)`.
pub fn kl_per_graph(student: &Tensor, teacher: &Tensor, temp: f64) -> candle_core::Result<Tensor> {
    let ls = candle_nn::ops::log_softmax(&(student / temp)?, D::Minus1)?;
    let lt = candle_nn::ops::log_softmax(&(teacher.detach() / temp)?, D::Minus1)?;
    let b = student.dim(0)? as f64;
    (lt.exp()? * (&lt - ls)?)?.sum_all()? / b
}

/// The distilled GAT loss `α·T²·KL + (1−α)·ce_w`.
pub fn gat_kd_loss(
    student: &Tensor,
    teacher: &Tensor,
    ce_w: &Tensor,
    temp: f64,
    alpha: f64,
) -> candle_core::Result<Tensor> {
    (kl_per_graph(student, teacher, temp)? * (alpha * temp * temp))? + (ce_w * (1.0 - alpha))?
}

/// The projection `P` from the student's latent size to the teacher's (`projection.*`), or the
/// identity when they match. Trained with the student, never saved with it.
pub struct KdProjection(Option<Linear>);

impl KdProjection {
    pub fn new(student: usize, teacher: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(KdProjection(if student == teacher {
            None
        } else {
            Some(Linear::new(student, teacher, vb.pp("projection"))?)
        }))
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.0 {
            Some(l) => l.forward(x),
            None => Ok(x.clone()),
        }
    }
}

/// Weights of the distilled VGAE loss.
#[derive(Clone, Copy, Debug)]
pub struct VgaeKdWeights {
    pub alpha: f64,
    pub latent: f64,
    pub recon: f64,
}

/// The distilled VGAE loss.
pub fn vgae_kd_loss(
    mu_s_projected: &Tensor,
    mu_t: &Tensor,
    cont_s: &Tensor,
    cont_t: &Tensor,
    task: &Tensor,
    w: VgaeKdWeights,
) -> candle_core::Result<Tensor> {
    let lat = candle_nn::loss::mse(mu_s_projected, &mu_t.detach())?;
    let rec = candle_nn::loss::mse(cont_s, &cont_t.detach())?;
    let kd = ((lat * w.latent)? + (rec * w.recon)?)?;
    (kd * w.alpha)? + (task * (1.0 - w.alpha))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Hand-computed: one graph, student logits (0, 0), teacher logits (0, 4 ln 3), T = 4.
    /// p_t = softmax(0, ln 3) = (1/4, 3/4), p_s = (1/2, 1/2):
    /// KL = 1/4·ln(1/2) + 3/4·ln(3/2) = 0.1308121…; with α = 0.7 and CE_w = 2:
    /// L = 0.7·16·0.1308121 + 0.3·2 = 2.0650955.
    #[test]
    fn kd_loss_hand_computed() {
        let d = &Device::Cpu;
        let s = Tensor::new(&[[0f32, 0.]], d).unwrap();
        let t = Tensor::new(&[[0f32, 4.0 * 3f32.ln()]], d).unwrap();
        let kl = kl_per_graph(&s, &t, 4.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = 0.25 * 0.5f32.ln() + 0.75 * 1.5f32.ln();
        assert!((kl - want).abs() < 1e-6, "{kl} vs {want}");
        let ce = Tensor::new(2f32, d).unwrap();
        let l = gat_kd_loss(&s, &t, &ce, 4.0, 0.7)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - 2.065_095_5).abs() < 1e-5, "{l}");
        // Two graphs: the mean over graphs, not a softmax over the batch.
        let s2 = Tensor::new(&[[0f32, 0.], [0., 0.]], d).unwrap();
        let t2 = Tensor::new(&[[0f32, 4.0 * 3f32.ln()], [0., 0.]], d).unwrap();
        let kl2 = kl_per_graph(&s2, &t2, 4.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((kl2 - want / 2.0).abs() < 1e-6);
    }

    #[test]
    fn weighted_ce_balances_classes() {
        let d = &Device::Cpu;
        let y = [0u8, 0, 0, 1];
        assert_eq!(class_weights(&y), [4.0 / 6.0, 2.0]);
        // Logits favour class 0 by ln 3 everywhere: CE0 = ln(4/3), CE1 = ln 4.
        let l = Tensor::new(&[[3f32.ln(), 0.]; 4], d).unwrap();
        let yt = Tensor::new(&[0u32, 0, 0, 1], d).unwrap();
        let v = weighted_ce(&l, &yt, &y, class_weights(&y))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = (3.0 * (2.0 / 3.0) * (4f32 / 3.0).ln() + 2.0 * 4f32.ln()) / 4.0;
        assert!((v - want).abs() < 1e-6);
    }
}
