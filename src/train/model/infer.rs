//! Evaluation-mode passes over graph sets, shared by every stage that needs them: VGAE scores
//! (curriculum difficulty, evaluation), GAT logits, fusion states and fused scores, and the
//! loaders that rebuild a trained model from its checkpoint metadata alone.
//!
//! Everything here runs in evaluation mode (`z = μ`, running BatchNorm statistics, no dropout,
//! no UNK replacement), so its results do not depend on any generator.

use std::path::Path;

use candle_core::{D, Device, Tensor};

use super::TrainError;
use super::batch::{Batch, BatchOptions, chunks};
use super::checkpoint::{self, meta_get};
use super::config::FusionMethod;
use super::fusion::{self, FusionMlp, NUM_ACTIONS, QConfig, QNet, STATE_DIM, State};
use super::gat::{Gat, GatConfig};
use super::init::ParamStore;
use super::layers::Mode;
use super::vgae::{GraphScore, Vgae, VgaeConfig, graph_scores};
use crate::train::data::graphs::GraphSet;

/// The data a trainer sees: the training pool, val, every test split, and the vocabulary size.
pub struct Splits {
    pub train: GraphSet,
    pub val: GraphSet,
    /// Test splits, sorted by name.
    pub tests: Vec<(String, GraphSet)>,
    pub num_ids: usize,
    /// blake3 (hex) of `vocab.json`, recorded in checkpoints.
    pub vocab_sha256: String,
}

/// `0..set.len()`.
pub fn all(set: &GraphSet) -> Vec<usize> {
    (0..set.len()).collect()
}

/// How evaluation passes batch.
#[derive(Clone, Debug)]
pub struct Scoring {
    pub device: Device,
    pub num_ids: usize,
    pub batch_graphs: usize,
}

impl Scoring {
    fn batch(
        &self,
        set: &GraphSet,
        idx: &[usize],
        nbr: bool,
        edges: bool,
    ) -> Result<Batch, TrainError> {
        Batch::new(
            set,
            idx,
            &self.device,
            BatchOptions {
                nbr_target: nbr,
                edge_attr: edges,
                ..BatchOptions::eval(self.num_ids)
            },
        )
    }

    /// VGAE score terms of graphs `idx`.
    pub fn vgae_scores(
        &self,
        vgae: &Vgae,
        set: &GraphSet,
        idx: &[usize],
    ) -> Result<Vec<GraphScore>, TrainError> {
        let mut out = Vec::with_capacity(idx.len());
        for c in chunks(idx, self.batch_graphs) {
            let b = self.batch(set, c, true, false)?;
            let o = vgae.forward(&b, &mut Mode::Eval)?;
            out.extend(graph_scores(&o, &b)?);
        }
        Ok(out)
    }

    /// GAT logits of graphs `idx`.
    pub fn gat_logits(
        &self,
        gat: &Gat,
        set: &GraphSet,
        idx: &[usize],
    ) -> Result<Vec<[f32; 2]>, TrainError> {
        let mut out = Vec::with_capacity(idx.len());
        for c in chunks(idx, self.batch_graphs) {
            let b = self.batch(set, c, false, gat.cfg.edge_dim > 0)?;
            let l = gat.forward(&b, &mut Mode::Eval)?.logits.to_vec2::<f32>()?;
            out.extend(l.into_iter().map(|r| [r[0], r[1]]));
        }
        Ok(out)
    }

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
                out.push(fusion::state(
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
    /// [`fusion::fuse`]), `σ(out)` for mlp (attack iff `> 0.5`).
    pub fn score(
        &self,
        states: &[State],
        device: &Device,
    ) -> candle_core::Result<Vec<(f32, bool)>> {
        Ok(match self {
            FusionModel::Dqn(q) => Self::greedy_actions(q, states, device)?
                .into_iter()
                .zip(states)
                .map(|(a, s)| fusion::decide(a, s))
                .collect(),
            FusionModel::Fixed(a) => states.iter().map(|s| fusion::fuse(*a, s)).collect(),
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

fn arch<T: serde::de::DeserializeOwned>(
    meta: &std::collections::BTreeMap<String, String>,
    path: &Path,
) -> Result<T, TrainError> {
    let a = meta_get(meta, "architecture", path)?;
    serde_json::from_str(a).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("architecture: {e}"),
    })
}

fn expect_kind(
    meta: &std::collections::BTreeMap<String, String>,
    path: &Path,
    want: &[&str],
) -> Result<String, TrainError> {
    let k = meta_get(meta, "kind", path)?;
    if !want.contains(&k) {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("holds a `{k}` model, expected {}", want.join(" or ")),
        });
    }
    Ok(k.to_string())
}

/// A VGAE rebuilt from `model.safetensors`.
pub fn load_vgae(path: &Path, device: &Device) -> Result<(ParamStore, Vgae), TrainError> {
    let meta = checkpoint::read_metadata(path)?;
    expect_kind(&meta, path, &["vgae"])?;
    let cfg: VgaeConfig = arch(&meta, path)?;
    let store = ParamStore::new(0, device);
    let model = Vgae::new(&cfg, store.var_builder())?;
    checkpoint::load(path, &store)?;
    Ok((store, model))
}

/// A GAT rebuilt from `model.safetensors`.
pub fn load_gat(path: &Path, device: &Device) -> Result<(ParamStore, Gat), TrainError> {
    let meta = checkpoint::read_metadata(path)?;
    expect_kind(&meta, path, &["gat"])?;
    let cfg: GatConfig = arch(&meta, path)?;
    let store = ParamStore::new(0, device);
    let model = Gat::new(&cfg, store.var_builder())?;
    checkpoint::load(path, &store)?;
    Ok((store, model))
}

/// A fusion model rebuilt from `model.safetensors`.
pub fn load_fusion(path: &Path, device: &Device) -> Result<FusionModel, TrainError> {
    let meta = checkpoint::read_metadata(path)?;
    let kind = expect_kind(&meta, path, &["qnet", "mlp", "fixed"])?;
    let store = ParamStore::new(0, device);
    let model = match kind.as_str() {
        "qnet" => {
            let cfg: QConfig = arch(&meta, path)?;
            FusionModel::Dqn(QNet::new(&cfg, store.var_builder())?)
        }
        "mlp" => FusionModel::Mlp(FusionMlp::new(store.var_builder())?),
        _ => {
            let a: serde_json::Value = arch(&meta, path)?;
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
    let _ = NUM_ACTIONS;
    Ok(model)
}
