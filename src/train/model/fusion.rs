//! Fusion (spec §4.4, §5.6): the 15-feature state, **the one fused rule**, the Q-network and the
//! MLP ablation.
//!
//! The fused rule lives in [`decide`] alone. The DQN's reward, its validation, the `fixed`
//! baseline and evaluation all call it, so they cannot drift apart (pitfall 11: [O1]
//! rewarded `α > 0.5` and fused only in validation).

use std::path::Path;

use candle_core::{D, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::batch::{Scoring, chunks};
use super::checkpoint;
use super::config::Size;
use super::gat::Gat;
use super::init::ParamStore;
use super::layers::{Dropout, LayerNorm, Linear, Mode};
use super::vgae::{Vgae, graph_scores};
use crate::train::data::graphs::GraphSet;

/// State width.
pub const STATE_DIM: usize = 15;
/// Actions `a ∈ 0..=20`, `α = a/20`.
pub const NUM_ACTIONS: usize = 21;

/// One graph's fusion state: `[recon, nbr, canid, mean z, std z, max z, min z, 1/(1+recon),
/// p0, p1, mean g, std g, max g, min g, gat_conf]`.
pub type State = [f32; STATE_DIM];

/// `α` of action `a`.
pub fn alpha(action: usize) -> f32 {
    action as f32 / (NUM_ACTIONS - 1) as f32
}

/// `anomaly = clip(0.4·recon + 0.35·nbr + 0.25·canid, 0, 1)` from a state (spec §5.3).
pub fn anomaly(s: &State) -> f32 {
    (0.4 * s[0] + 0.35 * s[1] + 0.25 * s[2]).clamp(0.0, 1.0)
}

/// The GAT's attack probability `p1` from a state.
pub fn p1(s: &State) -> f32 {
    s[9]
}

/// **The fused rule**: `fused = (1−α)·anomaly + α·p1`, attack iff `fused > 0.5`.
/// Returns `(fused, attack)`. Every user of fusion (reward, validation, the `fixed` baseline,
/// evaluation, inference) goes through this function.
pub fn fuse(alpha: f32, s: &State) -> (f32, bool) {
    let fused = (1.0 - alpha) * anomaly(s) + alpha * p1(s);
    (fused, fused > 0.5)
}

/// The fused rule for action `a` (`α = a/20`).
pub fn decide(action: usize, s: &State) -> (f32, bool) {
    fuse(alpha(action), s)
}

/// The reward of acting `action` on a state of label `y` (spec §5.6): +1 if the fused decision
/// is right, −1 for a false positive, −`fn_cost` for a false negative.
pub fn reward(action: usize, s: &State, y: u8, fn_cost: f32) -> f32 {
    let (_, attack) = decide(action, s);
    match (attack, y != 0) {
        (a, b) if a == b => 1.0,
        (true, false) => -1.0,
        _ => -fn_cost,
    }
}

/// Builds a state from its parts (spec §5.6).
/// `z` are the graph's `μ` values (N×L), `logits` its two GAT logits, `g` its pooled embedding.
#[inline(always)]
pub fn state(recon: f32, nbr: f32, canid: f32, z: &[f32], logits: [f32; 2], g: &[f32]) -> State {
    // Sums in eight interleaved f64 lanes combined in a fixed order: deterministic, and not
    // one long chain of dependent additions. Plain functions inlined into the caller (the
    // inference engine compiles its pass per instruction set; a closure would be outlined).
    #[inline(always)]
    fn sum8(v: &[f32], f: impl Fn(f32) -> f64) -> f64 {
        let mut acc = [0f64; 8];
        let chunks = v.chunks_exact(8);
        for (l, &x) in chunks.remainder().iter().enumerate() {
            acc[l] += f(x);
        }
        for ch in chunks {
            for l in 0..8 {
                acc[l] += f(ch[l]);
            }
        }
        ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
    }
    #[inline(always)]
    fn stats(v: &[f32]) -> [f32; 4] {
        if v.is_empty() {
            return [0.0; 4];
        }
        let n = v.len() as f64;
        let mean = sum8(v, |x| x as f64) / n;
        let var = sum8(v, |x| (x as f64 - mean) * (x as f64 - mean)) / n;
        // Comparisons rather than `f32::max`/`min`: the same results (a NaN is never taken),
        // and they vectorise.
        let (mut max, mut min) = (f32::NEG_INFINITY, f32::INFINITY);
        for &x in v {
            max = if x > max { x } else { max };
            min = if x < min { x } else { min };
        }
        [mean as f32, var.sqrt() as f32, max, min]
    }
    let [zm, zs, zx, zn] = stats(z);
    let [gm, gs, gx, gn] = stats(g);
    let m = logits[0].max(logits[1]);
    let (e0, e1) = ((logits[0] - m).exp() as f64, (logits[1] - m).exp() as f64);
    let (q0, q1) = (e0 / (e0 + e1), e1 / (e0 + e1));
    let ent: f64 = [q0, q1]
        .iter()
        .map(|&p| if p > 0.0 { -p * p.ln() } else { 0.0 })
        .sum();
    let conf = (1.0 - ent / std::f64::consts::LN_2).clamp(0.0, 1.0);
    [
        recon,
        nbr,
        canid,
        zm,
        zs,
        zx,
        zn,
        1.0 / (1.0 + recon),
        q0 as f32,
        q1 as f32,
        gm,
        gs,
        gx,
        gn,
        conf as f32,
    ]
}

/// Q-network shape: `15 → L × [Linear(h), LayerNorm(h), ReLU, Dropout(0.2)] → Linear(21)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QConfig {
    pub hidden: usize,
    pub layers: usize,
    pub dropout: f32,
}

impl QConfig {
    /// Large `h = 576, L = 3`; small `h = 160, L = 2`.
    pub fn for_size(size: Size) -> QConfig {
        match size {
            Size::Large => QConfig {
                hidden: 576,
                layers: 3,
                dropout: 0.2,
            },
            Size::Small => QConfig {
                hidden: 160,
                layers: 2,
                dropout: 0.2,
            },
        }
    }

    pub fn num_params(&self) -> usize {
        let h = self.hidden;
        Linear::num_params(STATE_DIM, h)
            + 2 * h
            + (self.layers - 1) * (Linear::num_params(h, h) + 2 * h)
            + Linear::num_params(h, NUM_ACTIONS)
    }
}

/// The Q-network; names `net.{4i}` (Linear), `net.{4i+1}` (LayerNorm), `net.{4L}` (output),
/// as [O1]'s `nn.Sequential`.
pub struct QNet {
    pub cfg: QConfig,
    pub(crate) blocks: Vec<(Linear, LayerNorm)>,
    pub(crate) out: Linear,
    dropout: Dropout,
}

impl QNet {
    pub fn new(cfg: &QConfig, vb: VarBuilder) -> candle_core::Result<QNet> {
        let net = vb.pp("net");
        let mut blocks = Vec::new();
        let mut inp = STATE_DIM;
        for i in 0..cfg.layers {
            blocks.push((
                Linear::new(inp, cfg.hidden, net.pp(4 * i))?,
                LayerNorm::new(cfg.hidden, net.pp(4 * i + 1))?,
            ));
            inp = cfg.hidden;
        }
        let out = Linear::new(inp, NUM_ACTIONS, net.pp(4 * cfg.layers))?;
        Ok(QNet {
            cfg: cfg.clone(),
            blocks,
            out,
            dropout: Dropout::new(cfg.dropout),
        })
    }

    /// `states [B, 15]` → `Q [B, 21]`.
    pub fn forward(&self, s: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let mut x = s.clone();
        for (lin, ln) in &self.blocks {
            x = self
                .dropout
                .forward(&ln.forward(&lin.forward(&x)?)?.relu()?, mode)?;
        }
        self.out.forward(&x)
    }
}

/// The MLP ablation: `15 → 64 → 32 → 1`, ReLU and Dropout(0.2) after each hidden layer;
/// names `net.0`, `net.3`, `net.6`.
pub struct FusionMlp {
    pub(crate) layers: [Linear; 3],
    dropout: Dropout,
}

impl FusionMlp {
    pub const NUM_PARAMS: usize = 3137;

    pub fn new(vb: VarBuilder) -> candle_core::Result<FusionMlp> {
        let net = vb.pp("net");
        Ok(FusionMlp {
            layers: [
                Linear::new(STATE_DIM, 64, net.pp(0))?,
                Linear::new(64, 32, net.pp(3))?,
                Linear::new(32, 1, net.pp(6))?,
            ],
            dropout: Dropout::new(0.2),
        })
    }

    /// `states [B, 15]` → logits `[B]`.
    pub fn forward(&self, s: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let mut x = s.clone();
        for lin in &self.layers[..2] {
            x = self.dropout.forward(&lin.forward(&x)?.relu()?, mode)?;
        }
        self.layers[2].forward(&x)?.squeeze(1)
    }
}

/// The fusion method (spec §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMethod {
    Dqn,
    Mlp,
    Fixed,
}

impl FusionMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            FusionMethod::Dqn => "dqn",
            FusionMethod::Mlp => "mlp",
            FusionMethod::Fixed => "fixed",
        }
    }

    pub fn parse(s: &str) -> Option<FusionMethod> {
        match s {
            "dqn" => Some(FusionMethod::Dqn),
            "mlp" => Some(FusionMethod::Mlp),
            "fixed" => Some(FusionMethod::Fixed),
            _ => None,
        }
    }
}

impl Scoring {
    /// Fusion states (spec §5.6) of graphs `idx`: one VGAE and one GAT pass per batch.
    pub fn states(
        &self,
        vgae: &Vgae,
        gat: &Gat,
        set: &GraphSet,
        idx: &[usize],
    ) -> Result<Vec<State>, TrainError> {
        let mut out = Vec::with_capacity(idx.len());
        for c in chunks(idx, self.batch_graphs) {
            let b = self.batch(set, c, true, gat.cfg.edge_dim > 0)?;
            let vo = vgae.forward(&b, &mut Mode::Eval)?;
            let scores = graph_scores(&vo, &b)?;
            let latent = vo.mu.dim(1)?;
            let mu = vo.mu.flatten_all()?.to_vec1::<f32>()?;
            let go = gat.forward(&b, &mut Mode::Eval)?;
            let logits = go.logits.to_vec2::<f32>()?;
            let d = go.g.dim(1)?;
            let g = go.g.flatten_all()?.to_vec1::<f32>()?;
            let mut start = 0;
            for (k, sc) in scores.iter().enumerate() {
                let n = b.node_counts[k];
                out.push(state(
                    sc.recon,
                    sc.nbr,
                    sc.canid,
                    &mu[start * latent..(start + n) * latent],
                    [logits[k][0], logits[k][1]],
                    &g[k * d..(k + 1) * d],
                ));
                start += n;
            }
        }
        Ok(out)
    }
}

/// `[B, 15]` tensor of states.
pub fn states_tensor(states: &[State], device: &Device) -> candle_core::Result<Tensor> {
    let flat: Vec<f32> = states.iter().flat_map(|s| s.iter().copied()).collect();
    Tensor::from_vec(flat, (states.len(), STATE_DIM), device)
}

/// A trained fusion model.
pub enum FusionModel {
    Dqn(QNet),
    Mlp(FusionMlp),
    Fixed(f32),
}

impl FusionModel {
    pub fn method(&self) -> FusionMethod {
        match self {
            FusionModel::Dqn(_) => FusionMethod::Dqn,
            FusionModel::Mlp(_) => FusionMethod::Mlp,
            FusionModel::Fixed(_) => FusionMethod::Fixed,
        }
    }

    /// Greedy actions of the Q-network (evaluation mode), in chunks of 4096 states.
    pub fn greedy_actions(
        q: &QNet,
        states: &[State],
        device: &Device,
    ) -> candle_core::Result<Vec<usize>> {
        let mut out = Vec::with_capacity(states.len());
        for c in states.chunks(4096) {
            let qv = q.forward(&states_tensor(c, device)?, &mut Mode::Eval)?;
            out.extend(
                qv.argmax(D::Minus1)?
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|a| a as usize),
            );
        }
        Ok(out)
    }

    /// Scores and decisions (spec §6.1): `fused` for dqn and fixed (attack iff `> 0.5`, by
    /// [`fuse`]), `σ(out)` for mlp (attack iff `> 0.5`).
    pub fn score(
        &self,
        states: &[State],
        device: &Device,
    ) -> candle_core::Result<Vec<(f32, bool)>> {
        Ok(match self {
            FusionModel::Dqn(q) => Self::greedy_actions(q, states, device)?
                .into_iter()
                .zip(states)
                .map(|(a, s)| decide(a, s))
                .collect(),
            FusionModel::Fixed(a) => states.iter().map(|s| fuse(*a, s)).collect(),
            FusionModel::Mlp(m) => {
                let mut out = Vec::with_capacity(states.len());
                for c in states.chunks(4096) {
                    let z = m.forward(&states_tensor(c, device)?, &mut Mode::Eval)?;
                    let p = candle_nn::ops::sigmoid(&z)?.to_vec1::<f32>()?;
                    out.extend(p.into_iter().map(|p| (p, p > 0.5)));
                }
                out
            }
        })
    }
}

/// A fusion model rebuilt from `model.safetensors`.
pub fn load_fusion(path: &Path, device: &Device) -> Result<FusionModel, TrainError> {
    let meta = checkpoint::read_metadata(path)?;
    let kind = checkpoint::expect_kind(&meta, path, &["qnet", "mlp", "fixed"])?;
    let store = ParamStore::new(0, device);
    let model = match kind.as_str() {
        "qnet" => {
            let cfg: QConfig = checkpoint::architecture(&meta, path)?;
            FusionModel::Dqn(QNet::new(&cfg, store.var_builder())?)
        }
        "mlp" => FusionModel::Mlp(FusionMlp::new(store.var_builder())?),
        _ => {
            let a: serde_json::Value = checkpoint::architecture(&meta, path)?;
            let alpha = a
                .get("fixed_alpha")
                .and_then(|v| v.as_f64())
                .ok_or_else(|| TrainError::Checkpoint {
                    path: path.to_path_buf(),
                    message: "a `fixed` model needs `fixed_alpha` in its architecture".into(),
                })?;
            FusionModel::Fixed(alpha as f32)
        }
    };
    checkpoint::load(path, &store)?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::init::{ParamStore, Rng};
    use candle_core::Device;
    use rand::{Rng as _, SeedableRng};

    #[test]
    fn parameter_counts_match_spec() {
        for (size, want) in [(Size::Large, 689_493), (Size::Small, 32_341)] {
            let cfg = QConfig::for_size(size);
            let ps = ParamStore::new(0, &Device::Cpu);
            QNet::new(&cfg, ps.var_builder()).unwrap();
            assert_eq!(ps.num_params(), want);
            assert_eq!(cfg.num_params(), want);
        }
        let ps = ParamStore::new(0, &Device::Cpu);
        FusionMlp::new(ps.var_builder()).unwrap();
        assert_eq!(ps.num_params(), FusionMlp::NUM_PARAMS);
    }

    fn random_state(rng: &mut Rng) -> State {
        let mut s = [0f32; STATE_DIM];
        for v in s.iter_mut() {
            *v = rng.random::<f32>();
        }
        s
    }

    #[test]
    fn alpha_zero_is_the_anomaly_and_one_is_p1() {
        let mut rng = Rng::seed_from_u64(3);
        for _ in 0..200 {
            let s = random_state(&mut rng);
            assert_eq!(decide(0, &s).0, anomaly(&s));
            assert_eq!(decide(NUM_ACTIONS - 1, &s).0, p1(&s));
        }
    }

    /// Reward, validation and inference share [`decide`]: the reward is +1 exactly when the
    /// prediction that inference makes (and validation scores) equals the label.
    #[test]
    fn reward_and_inference_predict_alike() {
        let mut rng = Rng::seed_from_u64(4);
        for _ in 0..2000 {
            let s = random_state(&mut rng);
            let a = rng.random_range(0..NUM_ACTIONS);
            let y = rng.random_range(0..2u8);
            let (_, predicted) = decide(a, &s);
            let r = reward(a, &s, y, 3.0);
            assert_eq!(r == 1.0, predicted == (y == 1));
            if r != 1.0 {
                assert_eq!(r, if predicted { -1.0 } else { -3.0 });
            }
        }
    }

    #[test]
    fn state_features() {
        let s = state(1.0, 0.5, 2.0, &[1.0, 3.0], [0.0, 0.0], &[2.0]);
        assert_eq!(&s[..8], &[1.0, 0.5, 2.0, 2.0, 1.0, 3.0, 1.0, 0.5]);
        assert!((s[8] - 0.5).abs() < 1e-7 && (s[9] - 0.5).abs() < 1e-7);
        assert_eq!(&s[10..14], &[2.0, 0.0, 2.0, 2.0]);
        assert!(s[14].abs() < 1e-7, "equal logits have no confidence");
        let sure = state(0.0, 0.0, 0.0, &[0.0], [-50.0, 50.0], &[0.0]);
        assert!((sure[14] - 1.0).abs() < 1e-6);
    }
}
