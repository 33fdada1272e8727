//! The GAT classifier (spec §4.2): ID embedding on feature column 0, `L` GATConv layers with
//! ReLU and dropout, jumping knowledge by concatenation, global mean pooling, and an MLP head
//! giving 2-class logits. Tensor names follow [O1]'s `GATWithJK` (`id_embedding.weight`,
//! `convs.0.lin.weight`, `fc_layers.0.weight`, …), so a checkpoint loads into it.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use std::path::Path;

use super::TrainError;
use super::batch::{Batch, Scoring, chunks};
use super::checkpoint;
use super::config::Size;
use super::gatconv::{GatConv, GatConvConfig};
use super::init::ParamStore;
use super::layers::{Dropout, Embedding, Linear, Mode, mean_pool};
use crate::train::data::graphs::GraphSet;

/// The GAT architecture; [`GatConfig::for_size`] gives the spec's two.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatConfig {
    pub num_ids: usize,
    pub embedding_dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub channels: usize,
    /// Head depth `fc`: `fc − 1` hidden `Linear(d, d)` layers, then `Linear(d, 2)`.
    pub fc_layers: usize,
    pub dropout: f32,
    #[serde(default)]
    pub edge_dim: usize,
}

impl GatConfig {
    /// Spec §4.2: large 3 × 8 × 48, emb 16, fc 1, p 0.2; small 2 × 4 × 24, emb 8, fc 2, p 0.1.
    pub fn for_size(size: Size, num_ids: usize) -> GatConfig {
        match size {
            Size::Large => GatConfig {
                num_ids,
                embedding_dim: 16,
                layers: 3,
                heads: 8,
                channels: 48,
                fc_layers: 1,
                dropout: 0.2,
                edge_dim: 0,
            },
            Size::Small => GatConfig {
                num_ids,
                embedding_dim: 8,
                layers: 2,
                heads: 4,
                channels: 24,
                fc_layers: 2,
                dropout: 0.1,
                edge_dim: 0,
            },
        }
    }

    /// Layer width `H·C`.
    pub fn width(&self) -> usize {
        self.heads * self.channels
    }

    /// Jumping-knowledge width `d = L·H·C`.
    pub fn jk_dim(&self) -> usize {
        self.layers * self.width()
    }

    fn conv(&self, l: usize) -> GatConvConfig {
        let in_dim = if l == 0 {
            self.embedding_dim + 10
        } else {
            self.width()
        };
        GatConvConfig {
            edge_dim: self.edge_dim,
            ..GatConvConfig::new(in_dim, self.channels, self.heads)
        }
    }

    /// Closed-form parameter count (spec §4.5).
    pub fn num_params(&self) -> usize {
        let d = self.jk_dim();
        self.num_ids * self.embedding_dim
            + (0..self.layers)
                .map(|l| self.conv(l).num_params())
                .sum::<usize>()
            + (self.fc_layers - 1) * Linear::num_params(d, d)
            + Linear::num_params(d, 2)
    }
}

/// What the classifier returns.
pub struct GatOutput {
    /// `[B, 2]`
    pub logits: Tensor,
    /// The pooled jumping-knowledge embedding `[B, d]` (fusion statistics, spec §5.6).
    pub g: Tensor,
}

/// The GAT classifier.
pub struct Gat {
    pub cfg: GatConfig,
    pub id_embedding: Embedding,
    pub convs: Vec<GatConv>,
    pub fc: Vec<Linear>,
    dropout: Dropout,
}

impl Gat {
    pub fn new(cfg: &GatConfig, vb: VarBuilder) -> candle_core::Result<Gat> {
        if cfg.layers == 0 || cfg.fc_layers == 0 || cfg.num_ids == 0 {
            candle_core::bail!("a GAT needs at least one layer, one head layer and one id");
        }
        let id_embedding = Embedding::new(cfg.num_ids, cfg.embedding_dim, vb.pp("id_embedding"))?;
        let convs = (0..cfg.layers)
            .map(|l| GatConv::new(cfg.conv(l), vb.pp("convs").pp(l)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let d = cfg.jk_dim();
        let mut fc = Vec::new();
        for i in 0..cfg.fc_layers {
            let out = if i + 1 == cfg.fc_layers { 2 } else { d };
            // Indices follow nn.Sequential-style [Linear, ReLU, Dropout]* numbering.
            fc.push(Linear::new(d, out, vb.pp("fc_layers").pp(3 * i))?);
        }
        Ok(Gat {
            cfg: cfg.clone(),
            id_embedding,
            convs,
            fc,
            dropout: Dropout::new(cfg.dropout),
        })
    }

    /// Selects the attention kernel of every layer (benchmarks and tests).
    pub fn set_kernel(&mut self, k: super::gatconv::Kernel) {
        for c in &mut self.convs {
            c.kernel = k;
        }
    }

    pub fn forward(&self, batch: &Batch, mode: &mut Mode) -> candle_core::Result<GatOutput> {
        let emb = self.id_embedding.forward(&batch.ids)?;
        let mut x = Tensor::cat(&[&emb, &batch.feats], 1)?;
        // Jumping knowledge `cat` then mean pooling, computed as the concatenation of each
        // layer's pooled output (pooling is linear per column), which avoids an [N, L·H·C]
        // tensor and its backward.
        let mut pooled = Vec::with_capacity(self.convs.len());
        for conv in &self.convs {
            x = conv.forward_relu_dropout(&x, &batch.gat, &self.dropout, mode)?;
            pooled.push(mean_pool(
                &x,
                &batch.graph,
                &batch.inv_counts,
                batch.num_graphs,
            )?);
        }
        let g = if pooled.len() == 1 {
            pooled.pop().expect("one layer")
        } else {
            Tensor::cat(&pooled, 1)?
        };
        let mut h = g.clone();
        for (i, lin) in self.fc.iter().enumerate() {
            h = lin.forward(&h)?;
            if i + 1 < self.fc.len() {
                h = self.dropout.forward(&h.relu()?, mode)?;
            }
        }
        Ok(GatOutput { logits: h, g })
    }
}

impl Scoring {
    /// GAT logits of graphs `idx` (evaluation mode).
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
}

/// A GAT rebuilt from its `model.safetensors` metadata alone.
pub fn load_gat(
    path: &Path,
    device: &candle_core::Device,
) -> Result<(ParamStore, Gat), TrainError> {
    let meta = checkpoint::read_metadata(path)?;
    checkpoint::expect_kind(&meta, path, &["gat"])?;
    let cfg: GatConfig = checkpoint::architecture(&meta, path)?;
    let store = ParamStore::new(0, device);
    let model = Gat::new(&cfg, store.var_builder())?;
    checkpoint::load(path, &store)?;
    Ok((store, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::init::ParamStore;
    use candle_core::Device;

    fn count(size: Size, n: usize) -> (usize, usize) {
        let cfg = GatConfig::for_size(size, n);
        let ps = ParamStore::new(0, &Device::Cpu);
        Gat::new(&cfg, ps.var_builder()).unwrap();
        (ps.num_params(), cfg.num_params())
    }

    #[test]
    fn parameter_counts_match_spec() {
        for (size, n, want) in [
            (Size::Large, 30, 311_138),
            (Size::Large, 2049, 343_442),
            (Size::Small, 30, 49_202),
            (Size::Small, 2049, 65_354),
        ] {
            assert_eq!(count(size, n), (want, want), "{size:?} at num_ids {n}");
        }
    }

    #[test]
    fn pytorch_names() {
        let ps = ParamStore::new(0, &Device::Cpu);
        Gat::new(&GatConfig::for_size(Size::Small, 5), ps.var_builder()).unwrap();
        let names: Vec<String> = ps.all().into_iter().map(|(k, _)| k).collect();
        for want in [
            "id_embedding.weight",
            "convs.0.lin.weight",
            "convs.1.att_src",
            "convs.1.bias",
            "fc_layers.0.weight",
            "fc_layers.3.bias",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
    }
}
