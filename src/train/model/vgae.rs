//! The VGAE (spec §4.3): a GATConv + BatchNorm encoder to `μ, logσ²`, a GATConv decoder that
//! reconstructs the 10 continuous node features, a CAN-ID head and a neighbourhood head.
//! `z = μ + ε·σ` in training and **`z = μ` in evaluation**, so scores, curriculum difficulty,
//! fusion states and distillation targets are deterministic (pitfall 8).
//!
//! Names follow [O1]'s `GraphAutoencoderNeighborhood`: `encoder_layers.0.lin.weight`,
//! `encoder_bns.0.running_mean`, `z_mean`, `z_logvar`, `decoder_layers.*`, `decoder_bns.*`,
//! `canid_classifier`, `neighborhood_decoder.{0,3,6}`.

use candle_core::{D, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use std::path::Path;

use candle_core::Device;

use super::TrainError;
use super::batch::{Batch, Scoring, chunks};
use super::checkpoint;
use super::config::Size;
use super::gatconv::{GatConv, GatConvConfig};
use super::init::ParamStore;
use super::init::normal;
use super::layers::{BatchNorm, Dropout, Embedding, Linear, Mode};
use crate::train::data::graphs::GraphSet;

/// The VGAE architecture; [`VgaeConfig::for_size`] gives the spec's two.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VgaeConfig {
    pub num_ids: usize,
    pub embedding_dim: usize,
    /// Encoder widths `t` (the latent size is not repeated here).
    pub encoder_dims: Vec<usize>,
    /// Heads of the first encoder layer; later encoder layers have one.
    pub encoder_heads: usize,
    pub latent_dim: usize,
    /// Heads of the intermediate decoder layers (1 where they do not divide the width).
    pub decoder_heads: usize,
    pub dropout: f32,
    #[serde(default)]
    pub edge_dim: usize,
}

impl VgaeConfig {
    /// Spec §4.3: large emb 32, [480, 240] (4 heads), L 48, p 0.15; small emb 4, [80, 40]
    /// (1 head), L 16, p 0.1.
    pub fn for_size(size: Size, num_ids: usize) -> VgaeConfig {
        match size {
            Size::Large => VgaeConfig {
                num_ids,
                embedding_dim: 32,
                encoder_dims: vec![480, 240],
                encoder_heads: 4,
                latent_dim: 48,
                decoder_heads: 4,
                dropout: 0.15,
                edge_dim: 0,
            },
            Size::Small => VgaeConfig {
                num_ids,
                embedding_dim: 4,
                encoder_dims: vec![80, 40],
                encoder_heads: 1,
                latent_dim: 16,
                decoder_heads: 4,
                dropout: 0.1,
                edge_dim: 0,
            },
        }
    }

    fn split(width: usize, heads: usize) -> (usize, usize) {
        if heads > 1 && width.is_multiple_of(heads) {
            (width / heads, heads)
        } else {
            (width, 1)
        }
    }

    fn encoder(&self) -> Vec<GatConvConfig> {
        let mut inp = self.embedding_dim + 10;
        self.encoder_dims
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let (c, h) = Self::split(t, if i == 0 { self.encoder_heads } else { 1 });
                let cfg = GatConvConfig {
                    edge_dim: self.edge_dim,
                    ..GatConvConfig::new(inp, c, h)
                };
                inp = t;
                cfg
            })
            .collect()
    }

    /// Intermediate decoder layers, then the final `GATConv(·, 10, 1)`.
    fn decoder(&self) -> Vec<GatConvConfig> {
        let mut inp = self.latent_dim;
        let mut out = Vec::new();
        for &t in self.encoder_dims.iter().skip(1).rev() {
            let (c, h) = Self::split(t, self.decoder_heads);
            out.push(GatConvConfig {
                edge_dim: self.edge_dim,
                ..GatConvConfig::new(inp, c, h)
            });
            inp = t;
        }
        out.push(GatConvConfig {
            edge_dim: self.edge_dim,
            ..GatConvConfig::new(inp, 10, 1)
        });
        out
    }

    fn last_width(&self) -> usize {
        *self
            .encoder_dims
            .last()
            .expect("at least one encoder layer")
    }

    /// Closed-form parameter count (spec §4.5).
    pub fn num_params(&self) -> usize {
        let (n, l) = (self.num_ids, self.latent_dim);
        let enc: usize = self
            .encoder()
            .iter()
            .map(|c| c.num_params() + 2 * c.out_dim())
            .sum();
        let dec = self.decoder();
        let dec: usize = dec
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.num_params()
                    + if i + 1 < dec.len() {
                        2 * c.out_dim()
                    } else {
                        0
                    }
            })
            .sum();
        n * self.embedding_dim
            + enc
            + 2 * Linear::num_params(self.last_width(), l)
            + dec
            + 2 * Linear::num_params(l, n)
            + 2 * Linear::num_params(l, l)
    }
}

/// The VGAE forward pass, named so that nothing is taken from the wrong slot (pitfall 22).
pub struct VgaeOutput {
    /// `[N, 10]`, sigmoid outputs reconstructing `x[:, 1..11]`.
    pub cont: Tensor,
    /// `[N, num_ids]`
    pub canid_logits: Tensor,
    /// `[N, num_ids]`
    pub nbr_logits: Tensor,
    /// `[N, L]`
    pub mu: Tensor,
    pub logvar: Tensor,
    pub z: Tensor,
    /// Scalar.
    pub kl: Tensor,
}

/// The VGAE.
pub struct Vgae {
    pub cfg: VgaeConfig,
    pub id_embedding: Embedding,
    pub(crate) encoder: Vec<(GatConv, BatchNorm)>,
    pub(crate) z_mean: Linear,
    z_logvar: Linear,
    pub(crate) decoder: Vec<(GatConv, Option<BatchNorm>)>,
    pub(crate) canid_classifier: Linear,
    pub(crate) nbr: [Linear; 3],
    dropout: Dropout,
}

impl Vgae {
    pub fn new(cfg: &VgaeConfig, vb: VarBuilder) -> candle_core::Result<Vgae> {
        if cfg.encoder_dims.is_empty() {
            candle_core::bail!("a VGAE needs at least one encoder layer");
        }
        let (n, l) = (cfg.num_ids, cfg.latent_dim);
        let id_embedding = Embedding::new(n, cfg.embedding_dim, vb.pp("id_embedding"))?;
        let encoder = cfg
            .encoder()
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                Ok((
                    GatConv::new(c, vb.pp("encoder_layers").pp(i))?,
                    BatchNorm::new(c.out_dim(), vb.pp("encoder_bns").pp(i))?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let z_mean = Linear::new(cfg.last_width(), l, vb.pp("z_mean"))?;
        let z_logvar = Linear::new(cfg.last_width(), l, vb.pp("z_logvar"))?;
        let dec = cfg.decoder();
        let last = dec.len() - 1;
        let decoder = dec
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let conv = GatConv::new(c, vb.pp("decoder_layers").pp(i))?;
                let bn = if i < last {
                    Some(BatchNorm::new(c.out_dim(), vb.pp("decoder_bns").pp(i))?)
                } else {
                    None
                };
                Ok((conv, bn))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let canid_classifier = Linear::new(l, n, vb.pp("canid_classifier"))?;
        let nd = vb.pp("neighborhood_decoder");
        let nbr = [
            Linear::new(l, l, nd.pp(0))?,
            Linear::new(l, l, nd.pp(3))?,
            Linear::new(l, n, nd.pp(6))?,
        ];
        Ok(Vgae {
            cfg: cfg.clone(),
            id_embedding,
            encoder,
            z_mean,
            z_logvar,
            decoder,
            canid_classifier,
            nbr,
            dropout: Dropout::new(cfg.dropout),
        })
    }

    /// Selects the attention kernel of every layer (benchmarks and tests).
    pub fn set_kernel(&mut self, k: super::gatconv::Kernel) {
        for (c, _) in &mut self.encoder {
            c.kernel = k;
        }
        for (c, _) in &mut self.decoder {
            c.kernel = k;
        }
    }

    pub fn forward(&self, batch: &Batch, mode: &mut Mode) -> candle_core::Result<VgaeOutput> {
        let emb = self.id_embedding.forward(&batch.ids)?;
        let mut x = Tensor::cat(&[&emb, &batch.feats], 1)?;
        for (conv, bn) in &self.encoder {
            x = conv.forward_bn_relu_dropout(&x, &batch.gat, bn, &self.dropout, mode)?;
        }
        let mu = self.z_mean.forward(&x)?;
        let logvar = self.z_logvar.forward(&x)?.clamp(-20f32, 20f32)?;
        let z = match mode {
            Mode::Train(rng) => {
                let eps: Vec<f32> = (0..mu.elem_count()).map(|_| normal(*rng) as f32).collect();
                let eps = Tensor::from_vec(eps, mu.shape(), mu.device())?;
                (&mu + (eps * (&logvar * 0.5)?.exp()?)?)?
            }
            Mode::Eval => mu.clone(),
        };
        let kl = ((((&logvar + 1.0)? - mu.sqr()?)? - logvar.exp()?)?.mean_all()? * -0.5)?;
        let mut h = z.clone();
        for (conv, bn) in &self.decoder {
            h = match bn {
                Some(bn) => {
                    conv.forward_bn_relu_dropout(&h, &batch.gat, bn, &self.dropout, mode)?
                }
                None => candle_nn::ops::sigmoid(&conv.forward(&h, &batch.gat)?)?,
            };
        }
        let canid_logits = self.canid_classifier.forward(&z)?;
        let mut q = self.nbr[0].forward(&z)?.relu()?;
        q = self.dropout.forward(&q, mode)?;
        q = self.nbr[1].forward(&q)?.relu()?;
        q = self.dropout.forward(&q, mode)?;
        let nbr_logits = self.nbr[2].forward(&q)?;
        Ok(VgaeOutput {
            cont: h,
            canid_logits,
            nbr_logits,
            mu,
            logvar,
            z,
            kl,
        })
    }
}

/// Element-wise `BCEWithLogits(x, t)`, in the stable form `max(x,0) − x·t + log(1 + e^{−|x|})`
/// (candle-nn's version takes `log(sigmoid)` and overflows).
pub fn bce_with_logits(x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (x.relu()? - (x * t)?)? + soft
}

/// Per-node cross entropy `[N]` of `logits [N, C]` against u32 `target [N]`: one fused op on
/// the CPU (with a vocabulary of 2,049 ids the composed `log_softmax` + `gather` makes several
/// `[N, num_ids]` passes forward and backward), candle ops elsewhere.
pub fn node_ce(logits: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    if logits.device().is_cpu() {
        return logits.contiguous()?.apply_op2(&target.contiguous()?, RowCe);
    }
    candle_nn::ops::log_softmax(logits, D::Minus1)?
        .gather(&target.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()
}

/// Per-row sums `[N]` of `BCEWithLogits(x, t)` over `[N, K]`: fused on the CPU.
pub fn bce_row_sums(x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() {
        return x.contiguous()?.apply_op2(&t.contiguous()?, RowBce);
    }
    bce_with_logits(x, t)?.sum(1)
}

fn cpu_slice<'a, T: candle_core::WithDType>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => candle_core::bail!("row loss: inputs must be contiguous"),
    }
}

/// `e^x` in f32, branch-free so that loops over slices vectorise (libm's `expf` is a call per
/// element and was a tenth of inference time). Cody–Waite range reduction and a degree-6
/// polynomial: within 2 ulp of `expf` over the f32 range; saturates below −87 and above 88.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67 + r * (0.041_666_6 + r * (0.008_333_452 + r * 0.001_388_89)))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `ln(1 + e^{−|x|})`, the stable part of softplus, as `2·atanh(y/(2+y))` with
/// `y = e^{−|x|}` (exact for tiny `y`, where `1 + y` would round to 1).
#[inline(always)]
fn softplus_neg_abs(x: f32) -> f32 {
    let y = fast_exp(-x.abs());
    let s = y / (2.0 + y);
    let s2 = s * s;
    2.0 * s
        * (1.0
            + s2 * (1.0 / 3.0
                + s2 * (1.0 / 5.0
                    + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 / 13.0))))))
}

/// `(logits [N, K], target u32 [N]) → CE [N]`; backward `g·(softmax − onehot)`.
struct RowCe;

impl candle_core::CustomOp2 for RowCe {
    fn name(&self) -> &'static str {
        "row-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = cpu_slice::<f32>(s1, l1)?;
        let t = cpu_slice::<u32>(s2, l2)?;
        let (n, k) = l1.shape().dims2()?;
        let out: Vec<f32> = x
            .chunks_exact(k)
            .zip(t)
            .map(|(row, &y)| {
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let lse = m + row.iter().map(|v| fast_exp(v - m)).sum::<f32>().ln();
                lse - row[y as usize]
            })
            .collect();
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from(n),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let tv = t.to_vec1::<u32>()?;
        let gv = g.to_vec1::<f32>()?;
        let mut dx = Vec::with_capacity(n * k);
        for ((row, &y), &gr) in xv.chunks_exact(k).zip(&tv).zip(&gv) {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = row.iter().map(|v| fast_exp(v - m)).sum();
            let start = dx.len();
            dx.extend(row.iter().map(|v| gr * fast_exp(v - m) / z));
            dx[start + y as usize] -= gr;
        }
        Ok((Some(Tensor::from_vec(dx, (n, k), x.device())?), None))
    }
}

/// `(x [N, K], t [N, K]) → Σ_k BCEWithLogits [N]`; backward `g·(σ(x) − t)`.
struct RowBce;

impl candle_core::CustomOp2 for RowBce {
    fn name(&self) -> &'static str {
        "row-bce-with-logits"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = cpu_slice::<f32>(s1, l1)?;
        let t = cpu_slice::<f32>(s2, l2)?;
        let (n, k) = l1.shape().dims2()?;
        let out: Vec<f32> = x
            .chunks_exact(k)
            .zip(t.chunks_exact(k))
            .map(|(xr, tr)| {
                xr.iter()
                    .zip(tr)
                    .map(|(&v, &y)| v.max(0.0) - v * y + softplus_neg_abs(v))
                    .sum()
            })
            .collect();
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from(n),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let tv = t.flatten_all()?.to_vec1::<f32>()?;
        let gv = g.to_vec1::<f32>()?;
        let mut dx = Vec::with_capacity(n * k);
        for ((xr, tr), &gr) in xv.chunks_exact(k).zip(tv.chunks_exact(k)).zip(&gv) {
            dx.extend(
                xr.iter()
                    .zip(tr)
                    .map(|(&v, &y)| gr * (1.0 / (1.0 + (-v).exp()) - y)),
            );
        }
        Ok((Some(Tensor::from_vec(dx, (n, k), x.device())?), None))
    }
}

/// The per-node error terms that both the training loss and the scores are means of.
pub struct NodeErrors {
    /// `[N]`: Σ over the 10 features of the squared reconstruction error.
    pub recon_sum: Tensor,
    /// `[N]`: Σ over `num_ids` of the neighbourhood BCE.
    pub nbr_sum: Tensor,
    /// `[N]`: CAN-ID cross entropy.
    pub canid: Tensor,
}

/// Per-node errors of `out` on `batch` (which must carry the neighbourhood target).
pub fn node_errors(out: &VgaeOutput, batch: &Batch) -> candle_core::Result<NodeErrors> {
    let target = batch
        .nbr_target
        .as_ref()
        .ok_or_else(|| candle_core::Error::Msg("batch lacks the neighbourhood target".into()))?;
    Ok(NodeErrors {
        recon_sum: (&out.cont - &batch.feats)?.sqr()?.sum(1)?,
        nbr_sum: bce_row_sums(&out.nbr_logits, target)?,
        canid: node_ce(&out.canid_logits, &batch.ids_true)?,
    })
}

/// `L_task` (spec §5.2): `MSE + 0.1·CE + 0.05·BCE + 0.01·KL`, means over N×10, N and N×num_ids.
pub fn task_loss(out: &VgaeOutput, batch: &Batch) -> candle_core::Result<Tensor> {
    let e = node_errors(out, batch)?;
    let n = batch.num_nodes as f64;
    let ids = out.nbr_logits.dim(1)? as f64;
    let mse = (e.recon_sum.sum_all()? / (n * 10.0))?;
    let ce = (e.canid.sum_all()? / n)?;
    let bce = (e.nbr_sum.sum_all()? / (n * ids))?;
    ((mse + (ce * 0.1)?)? + (bce * 0.05)?)? + (&out.kl * 0.01)?
}

/// One graph's VGAE score terms (spec §5.3), computed in evaluation mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GraphScore {
    pub recon: f32,
    pub nbr: f32,
    pub canid: f32,
}

impl GraphScore {
    /// `vgae_score = 0.4·recon + 0.35·nbr + 0.25·canid`, unclipped.
    pub fn score(&self) -> f32 {
        0.4 * self.recon + 0.35 * self.nbr + 0.25 * self.canid
    }

    /// `anomaly = clip(vgae_score, 0, 1)`.
    pub fn anomaly(&self) -> f32 {
        self.score().clamp(0.0, 1.0)
    }
}

/// Per-graph score terms of `out` on `batch`.
pub fn graph_scores(out: &VgaeOutput, batch: &Batch) -> candle_core::Result<Vec<GraphScore>> {
    let e = node_errors(out, batch)?;
    let ids = out.nbr_logits.dim(1)?;
    let recon = batch.graph_mean(&e.recon_sum, 10)?.to_vec1::<f32>()?;
    let nbr = batch.graph_mean(&e.nbr_sum, ids)?.to_vec1::<f32>()?;
    let canid = batch.graph_mean(&e.canid, 1)?.to_vec1::<f32>()?;
    Ok((0..batch.num_graphs)
        .map(|g| GraphScore {
            recon: recon[g],
            nbr: nbr[g],
            canid: canid[g],
        })
        .collect())
}

impl Scoring {
    /// VGAE score terms of graphs `idx` (evaluation mode).
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
}

/// A VGAE rebuilt from its `model.safetensors` metadata alone.
pub fn load_vgae(path: &Path, device: &Device) -> Result<(ParamStore, Vgae), TrainError> {
    let meta = checkpoint::read_metadata(path)?;
    checkpoint::expect_kind(&meta, path, &["vgae"])?;
    let cfg: VgaeConfig = checkpoint::architecture(&meta, path)?;
    let store = ParamStore::new(0, device);
    let model = Vgae::new(&cfg, store.var_builder())?;
    checkpoint::load(path, &store)?;
    Ok((store, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::init::ParamStore;
    use candle_core::Device;

    #[test]
    fn parameter_counts_match_spec() {
        for (size, n, want) in [
            (Size::Large, 30, 185_850),
            (Size::Large, 2049, 448_320),
            (Size::Small, 30, 9_186),
            (Size::Small, 2049, 85_908),
        ] {
            let cfg = VgaeConfig::for_size(size, n);
            let ps = ParamStore::new(0, &Device::Cpu);
            Vgae::new(&cfg, ps.var_builder()).unwrap();
            assert_eq!(ps.num_params(), want, "{size:?} at num_ids {n}");
            assert_eq!(
                cfg.num_params(),
                want,
                "{size:?} closed form at num_ids {n}"
            );
        }
    }

    #[test]
    fn fused_row_losses_match_composed() {
        let dev = &Device::Cpu;
        let vals: Vec<f32> = (0..4 * 6)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.9)
            .collect();
        let x = candle_core::Var::from_vec(vals, (4, 6), dev).unwrap();
        let t: Vec<f32> = (0..24).map(|i| ((i % 3) == 0) as u8 as f32).collect();
        let t = Tensor::from_vec(t, (4, 6), dev).unwrap();
        let ids = Tensor::new(&[0u32, 5, 2, 3], dev).unwrap();
        let w = Tensor::new(&[1f32, -2., 0.5, 3.], dev).unwrap();
        let check = |a: Tensor, b: Tensor| {
            let ga = (&a * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&b * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (p, q) in v(&a).iter().zip(v(&b)) {
                assert!((p - q).abs() < 1e-5);
            }
            for (p, q) in v(ga.get(x.as_tensor()).unwrap())
                .iter()
                .zip(v(gb.get(x.as_tensor()).unwrap()))
            {
                assert!((p - q).abs() < 1e-5);
            }
        };
        check(
            bce_row_sums(x.as_tensor(), &t).unwrap(),
            bce_with_logits(x.as_tensor(), &t).unwrap().sum(1).unwrap(),
        );
        let composed = candle_nn::ops::log_softmax(x.as_tensor(), D::Minus1)
            .unwrap()
            .gather(&ids.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap();
        check(node_ce(x.as_tensor(), &ids).unwrap(), composed);
    }

    /// Training (fused BatchNorm op) and evaluation (BatchNorm folded into the attention op)
    /// agree with the composed kernels.
    #[test]
    fn fused_and_composed_vgae_agree() {
        use crate::train::model::batch::BatchOptions;
        use crate::train::model::gatconv::Kernel;
        use crate::train::model::init::Rng;
        use rand::SeedableRng;
        let data = crate::train::model::synth::splits(12, 10, 30, 2);
        let idx: Vec<usize> = (0..8).collect();
        let b = Batch::new(
            &data.train,
            &idx,
            &Device::Cpu,
            BatchOptions {
                nbr_target: true,
                ..BatchOptions::eval(12)
            },
        )
        .unwrap();
        let run = |k: Kernel| {
            let ps = ParamStore::new(1, &Device::Cpu);
            let mut m =
                Vgae::new(&VgaeConfig::for_size(Size::Small, 12), ps.var_builder()).unwrap();
            m.set_kernel(k);
            let mut r = Rng::seed_from_u64(5);
            let t = m.forward(&b, &mut Mode::Train(&mut r)).unwrap();
            let loss = task_loss(&t, &b).unwrap();
            let g = loss.backward().unwrap();
            let gw = g
                .get(&ps.get("encoder_layers.0.lin.weight").unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let e = m.forward(&b, &mut Mode::Eval).unwrap();
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (loss.to_scalar::<f32>().unwrap(), gw, v(&e.cont), v(&e.mu))
        };
        let (a, c) = (run(Kernel::Fused), run(Kernel::IndexAdd));
        assert!((a.0 - c.0).abs() < 1e-5);
        for (p, q) in [(&a.1, &c.1), (&a.2, &c.2), (&a.3, &c.3)] {
            for (x, y) in p.iter().zip(q.iter()) {
                assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn fast_math_matches_libm() {
        let mut x = -100f32;
        while x < 100.0 {
            let (a, b) = (fast_exp(x), x.clamp(-87.0, 88.0).exp());
            assert!((a - b).abs() <= 1e-6 * b, "exp({x}): {a} vs {b}");
            let (c, d) = (softplus_neg_abs(x), (-x.abs()).exp().ln_1p());
            assert!(
                (c - d).abs() <= 1e-6 * d + 1e-30,
                "softplus({x}): {c} vs {d}"
            );
            x += 0.0137;
        }
    }

    #[test]
    fn bce_is_stable() {
        let x = Tensor::new(&[-200f32, 0., 200.], &Device::Cpu).unwrap();
        let t = Tensor::new(&[0f32, 1., 1.], &Device::Cpu).unwrap();
        let v = bce_with_logits(&x, &t).unwrap().to_vec1::<f32>().unwrap();
        assert!(v[0].abs() < 1e-6 && (v[1] - 2f32.ln()).abs() < 1e-6 && v[2].abs() < 1e-6);
    }
}
