//! The three models packed for the engine: the VGAE's scoring pass, the GAT's logits and pooled
//! embedding, and the fusion model. Each `new` reads a trained candle model; each `forward`
//! writes into the [`Workspace`](super::Workspace) buffers of one batch.

use super::conv::{Act, PackedConv};
use super::kernels::{
    ABuf, Init, Isa, Packed, fast_exp, matmul, max16_padded, softplus_neg_abs, sum16_map,
    sum16_map_padded,
};
use crate::train::model::fusion::{FusionModel, NUM_ACTIONS, STATE_DIM, State, fuse};
use crate::train::model::gat::Gat;
use crate::train::model::gatconv::Csr;
use crate::train::model::layers::{LayerNorm, Linear};
use crate::train::model::vgae::Vgae;

/// A `Linear` packed with its bias.
pub fn pack_linear(l: &Linear) -> candle_core::Result<Packed> {
    let (n, k) = l.weight.dims2()?;
    let w = l.weight.flatten_all()?.to_vec1::<f32>()?;
    let b = l.bias.to_vec1::<f32>()?;
    Ok(Packed::new(&w, n, k, Some(&b)))
}

/// `out = act(x·Wᵀ + b)` for `m` rows of stride `ldx`, into `out` grown to fit, ReLU if
/// `relu`; returns the output's row stride.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn linear(
    isa: Isa,
    m: usize,
    x: &[f32],
    ldx: usize,
    w: &Packed,
    relu: bool,
    out: &mut ABuf,
) -> usize {
    let c = out.grow(m * w.npad);
    matmul(isa, m, x, ldx, w, Init::Bias, relu, c, w.npad);
    w.npad
}

/// `[rows, dim]` of an embedding, row-major.
fn embedding(t: &candle_core::Tensor) -> candle_core::Result<(Vec<f32>, usize)> {
    let (_, e) = t.dims2()?;
    Ok((t.flatten_all()?.to_vec1::<f32>()?, e))
}

/// The VGAE in evaluation mode (`z = μ`): encoder, `μ`, decoder, CAN-ID and neighbourhood heads.
pub struct VgaeNet {
    pub num_ids: usize,
    pub latent: usize,
    encoder: Vec<PackedConv>,
    mu: Packed,
    decoder: Vec<PackedConv>,
    canid: Packed,
    nbr: [Packed; 3],
}

/// Per-node VGAE outputs of one batch, as buffers.
#[derive(Default)]
pub struct VgaeBufs {
    pub mu: ABuf,
    /// `[N]` per-node sums: squared reconstruction error, neighbourhood BCE, CAN-ID CE.
    pub recon: Vec<f32>,
    pub nbr: Vec<f32>,
    pub canid: Vec<f32>,
    logits: ABuf,
    q: [ABuf; 2],
    mark: Vec<u32>,
}

impl VgaeNet {
    /// Packs a trained VGAE (BatchNorms folded, `logσ²` dropped: evaluation uses `z = μ`).
    pub fn new(v: &Vgae) -> candle_core::Result<VgaeNet> {
        let (emb, e) = embedding(&v.id_embedding.weight)?;
        let mut encoder = Vec::new();
        for (i, (conv, bn)) in v.encoder.iter().enumerate() {
            let first = (i == 0).then_some((&emb[..], e));
            encoder.push(PackedConv::new(conv, Some(bn), Act::Relu, first)?);
        }
        let decoder = v
            .decoder
            .iter()
            .map(|(conv, bn)| {
                let act = if bn.is_some() {
                    Act::Relu
                } else {
                    Act::Sigmoid
                };
                PackedConv::new(conv, bn.as_ref(), act, None)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(VgaeNet {
            num_ids: v.cfg.num_ids,
            latent: v.cfg.latent_dim,
            encoder,
            mu: pack_linear(&v.z_mean)?,
            decoder,
            canid: pack_linear(&v.canid_classifier)?,
            nbr: [
                pack_linear(&v.nbr[0])?,
                pack_linear(&v.nbr[1])?,
                pack_linear(&v.nbr[2])?,
            ],
        })
    }

    /// Row stride of `VgaeBufs::mu`.
    pub fn mu_stride(&self) -> usize {
        self.mu.npad
    }

    /// One batch: `feats` `[N, 10]`, `ids` the vocabulary indices, `g` the attention list,
    /// `(src, dst)` the window edges (the neighbourhood targets).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn forward(
        &self,
        isa: Isa,
        g: &Csr,
        feats: &[f32],
        ids: &[u32],
        edges: (&[u32], &[u32]),
        ws: &mut super::Scratch,
        out: &mut VgaeBufs,
    ) {
        let n = g.num_nodes;
        let (mut x, mut ldx) = (feats, 10usize);
        let mut cur = std::mem::take(&mut ws.a);
        for conv in &self.encoder {
            conv.forward(isa, g, x, ldx, ids, &mut ws.h, &mut ws.scores, &mut ws.b);
            std::mem::swap(&mut cur, &mut ws.b);
            (x, ldx) = (cur.as_slice(), conv.stride());
        }
        linear(isa, n, x, ldx, &self.mu, false, &mut out.mu);
        ws.a = cur;
        let (mu, ldm) = (out.mu.as_slice(), self.mu.npad);
        // Decoder: the reconstruction of the 10 features.
        let (mut x, mut ldx) = (mu, ldm);
        let mut cur = std::mem::take(&mut ws.a);
        for conv in &self.decoder {
            conv.forward(isa, g, x, ldx, ids, &mut ws.h, &mut ws.scores, &mut ws.b);
            std::mem::swap(&mut cur, &mut ws.b);
            (x, ldx) = (cur.as_slice(), conv.stride());
        }
        // (Plain loops rather than iterator adapters: the adapters' `fold` is not inlined
        // into the engine's ISA-specific pass and would run without its vector width.)
        out.recon.clear();
        for i in 0..n {
            let (r, f) = (&x[i * ldx..i * ldx + 10], &feats[i * 10..(i + 1) * 10]);
            let mut acc = 0f32;
            for (a, b) in r.iter().zip(f) {
                acc += (a - b) * (a - b);
            }
            out.recon.push(acc);
        }
        ws.a = cur;
        // CAN-ID cross entropy.
        let k = self.num_ids;
        let ldl = linear(isa, n, mu, ldm, &self.canid, false, &mut out.logits);
        let logits = out.logits.as_slice();
        out.canid.clear();
        for i in 0..n {
            // The whole padded row (`npad` is a multiple of 16), the lanes past `k` masked.
            let padded = &logits[i * ldl..(i + 1) * ldl];
            let m = max16_padded(padded, k);
            let lse = m + sum16_map_padded(padded, k, |v| fast_exp(v - m)).ln();
            out.canid.push(lse - padded[ids[i] as usize]);
        }
        // Neighbourhood BCE: Σ_k softplus terms minus the logits of the neighbours' IDs.
        let [q0, q1] = &mut out.q;
        let ld0 = linear(isa, n, mu, ldm, &self.nbr[0], true, q0);
        let ld1 = linear(isa, n, q0.as_slice(), ld0, &self.nbr[1], true, q1);
        let ldn = linear(
            isa,
            n,
            q1.as_slice(),
            ld1,
            &self.nbr[2],
            false,
            &mut out.logits,
        );
        let logits = out.logits.as_slice();
        out.nbr.clear();
        for i in 0..n {
            let padded = &logits[i * ldn..(i + 1) * ldn];
            let bce = sum16_map_padded(padded, k, |v| v.max(0.0) + softplus_neg_abs(v));
            out.nbr.push(bce);
        }
        // Subtract x[a, id(b)] once per distinct target id of each node `a`.
        out.mark.clear();
        out.mark.resize(n * k.div_ceil(32), 0);
        let words = k.div_ceil(32);
        for (&a, &b) in edges.0.iter().zip(edges.1) {
            let (a, id) = (a as usize, ids[b as usize] as usize);
            let w = &mut out.mark[a * words + id / 32];
            if *w & (1 << (id % 32)) == 0 {
                *w |= 1 << (id % 32);
                out.nbr[a] -= logits[a * ldn + id];
            }
        }
    }
}

/// The GAT classifier: convolutions, per-layer pooled outputs (jumping knowledge `cat` then
/// mean pooling), the head.
pub struct GatNet {
    convs: Vec<PackedConv>,
    fc: Vec<Packed>,
    jk: usize,
}

/// Per-graph GAT outputs of one batch.
#[derive(Default)]
pub struct GatBufs {
    /// `[B, jk]` pooled embeddings.
    pub g: Vec<f32>,
    /// `[B, 2]` logits (stride [`GatNet::logit_stride`]).
    pub logits: ABuf,
    fc: [ABuf; 2],
}

impl GatNet {
    /// Packs a trained GAT.
    pub fn new(gat: &Gat) -> candle_core::Result<GatNet> {
        let (emb, e) = embedding(&gat.id_embedding.weight)?;
        let convs = gat
            .convs
            .iter()
            .enumerate()
            .map(|(i, c)| PackedConv::new(c, None, Act::Relu, (i == 0).then_some((&emb[..], e))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let jk = convs.iter().map(|c| c.width()).sum();
        let fc = gat
            .fc
            .iter()
            .map(pack_linear)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(GatNet { convs, fc, jk })
    }

    /// Width of the pooled embedding.
    pub fn jk_dim(&self) -> usize {
        self.jk
    }

    /// Row stride of `GatBufs::logits`.
    pub fn logit_stride(&self) -> usize {
        self.fc.last().map(|f| f.npad).unwrap_or(0)
    }

    /// One batch; `starts[b]..starts[b+1]` are graph `b`'s nodes.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn forward(
        &self,
        isa: Isa,
        g: &Csr,
        feats: &[f32],
        ids: &[u32],
        starts: &[usize],
        ws: &mut super::Scratch,
        out: &mut GatBufs,
    ) {
        let b = starts.len() - 1;
        out.g.clear();
        out.g.resize(b * self.jk, 0.0);
        let (mut x, mut ldx) = (feats, 10usize);
        let mut cur = std::mem::take(&mut ws.a);
        let mut col = 0;
        for conv in &self.convs {
            conv.forward(isa, g, x, ldx, ids, &mut ws.h, &mut ws.scores, &mut ws.b);
            std::mem::swap(&mut cur, &mut ws.b);
            (x, ldx) = (cur.as_slice(), conv.stride());
            let w = conv.width();
            for gi in 0..b {
                let pooled = &mut out.g[gi * self.jk + col..gi * self.jk + col + w];
                let (s, e) = (starts[gi], starts[gi + 1]);
                for i in s..e {
                    for (p, &v) in pooled.iter_mut().zip(&x[i * ldx..i * ldx + w]) {
                        *p += v;
                    }
                }
                let inv = 1.0 / (e - s).max(1) as f32;
                for p in pooled.iter_mut() {
                    *p *= inv;
                }
            }
            col += w;
        }
        ws.a = cur;
        // The head: hidden layers ping-pong between two buffers, the last writes the logits.
        let mut prev = std::mem::take(&mut out.fc[0]);
        let mut next = std::mem::take(&mut out.fc[1]);
        let mut ldx = self.jk;
        let (hidden, last) = self.fc.split_at(self.fc.len() - 1);
        for (i, lin) in hidden.iter().enumerate() {
            let x = if i == 0 { &out.g[..] } else { prev.as_slice() };
            ldx = linear(isa, b, x, ldx, lin, true, &mut next);
            std::mem::swap(&mut prev, &mut next);
        }
        let x = if hidden.is_empty() {
            &out.g[..]
        } else {
            prev.as_slice()
        };
        linear(isa, b, x, ldx, &last[0], false, &mut out.logits);
        out.fc = [prev, next];
    }
}

/// A trained fusion model, packed.
pub enum FusionNet {
    Dqn {
        blocks: Vec<(Packed, Vec<f32>, Vec<f32>)>,
        out: Packed,
    },
    Mlp([Packed; 3]),
    Fixed(f32),
}

fn layer_norm_params(ln: &LayerNorm) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    Ok((ln.weight.to_vec1::<f32>()?, ln.bias.to_vec1::<f32>()?))
}

impl FusionNet {
    /// Packs a trained fusion model.
    pub fn new(f: &FusionModel) -> candle_core::Result<FusionNet> {
        Ok(match f {
            FusionModel::Dqn(q) => FusionNet::Dqn {
                blocks: q
                    .blocks
                    .iter()
                    .map(|(lin, ln)| {
                        let (w, b) = layer_norm_params(ln)?;
                        Ok((pack_linear(lin)?, w, b))
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?,
                out: pack_linear(&q.out)?,
            },
            FusionModel::Mlp(m) => FusionNet::Mlp([
                pack_linear(&m.layers[0])?,
                pack_linear(&m.layers[1])?,
                pack_linear(&m.layers[2])?,
            ]),
            FusionModel::Fixed(a) => FusionNet::Fixed(*a),
        })
    }

    /// `(score, attack)` per state, by the rules of
    /// [`FusionModel::score`](crate::train::model::fusion::FusionModel::score).
    #[inline(always)]
    pub fn score(&self, isa: Isa, states: &[State], ws: &mut super::Scratch) -> Vec<(f32, bool)> {
        let b = states.len();
        let flat: Vec<f32> = states.iter().flat_map(|s| s.iter().copied()).collect();
        match self {
            FusionNet::Fixed(a) => states.iter().map(|s| fuse(*a, s)).collect(),
            FusionNet::Dqn { blocks, out } => {
                let (mut x, mut ldx) = (&flat[..], STATE_DIM);
                let mut cur = std::mem::take(&mut ws.a);
                for (lin, w, bias) in blocks {
                    let ld = linear(isa, b, x, ldx, lin, false, &mut ws.b);
                    let hdim = lin.n;
                    for row in ws.b.as_mut_slice().chunks_exact_mut(ld) {
                        let r = &mut row[..hdim];
                        let mean = sum16_map(r, |v| v) / hdim as f32;
                        let var = sum16_map(r, |v| (v - mean) * (v - mean)) / hdim as f32;
                        let inv = 1.0 / (var + 1e-5).sqrt();
                        for ((v, &g), &bb) in r.iter_mut().zip(w).zip(bias) {
                            *v = ((*v - mean) * inv * g + bb).max(0.0);
                        }
                    }
                    std::mem::swap(&mut cur, &mut ws.b);
                    (x, ldx) = (cur.as_slice(), ld);
                }
                linear(isa, b, x, ldx, out, false, &mut ws.h);
                let q = ws.h.as_slice();
                let res = states
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let row = &q[i * out.npad..i * out.npad + NUM_ACTIONS];
                        // First maximum, as candle's argmax.
                        let mut best = 0;
                        for (a, &v) in row.iter().enumerate() {
                            if v > row[best] {
                                best = a;
                            }
                        }
                        crate::train::model::fusion::decide(best, s)
                    })
                    .collect();
                ws.a = cur;
                res
            }
            FusionNet::Mlp(layers) => {
                let (y0, y1, z) = (&mut ws.a, &mut ws.b, &mut ws.h);
                let ld0 = linear(isa, b, &flat, STATE_DIM, &layers[0], true, y0);
                let ld1 = linear(isa, b, y0.as_slice(), ld0, &layers[1], true, y1);
                let ldz = linear(isa, b, y1.as_slice(), ld1, &layers[2], false, z);
                (0..b)
                    .map(|i| {
                        let p = super::kernels::sigmoid(z.as_slice()[i * ldz]);
                        (p, p > 0.5)
                    })
                    .collect()
            }
        }
    }
}
