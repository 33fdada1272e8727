//! One `GATConv` layer in evaluation mode on plain buffers: `h = x·Wᵀ` by the packed
//! microkernels, then one pass per target node for the edge softmax, the aggregation and the
//! epilogue `act(scale·(agg) + shift)` — the bias, an evaluation-mode BatchNorm and the
//! activation folded into one per-channel affine map and one function.
//!
//! The first layer of a model reads `[embedding(id), 10 features]`; its product is split as
//! `emb(id)·W_eᵀ + feats·W_fᵀ`, and the first term is a table computed once per ID when the
//! engine is built ([`Init::Table`]), so the layer's inner dimension drops to 10.

use super::kernels::{ABuf, Init, Isa, NR, Packed, aggregate, fast_exp, heads_of, matmul, sigmoid};
use crate::train::model::gatconv::{Csr, GatConv};
use crate::train::model::layers::BatchNorm;

/// The layer's activation after the affine epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Relu,
    Sigmoid,
}

/// A packed `GATConv` (no edge features).
pub struct PackedConv {
    pub heads: usize,
    pub channels: usize,
    /// `W` with the attention rows appended, `[H·C + 2H, in]` (for a first layer only its
    /// feature columns), no bias: a row of `h` is `[x·Wᵀ, s_src, s_dst]`.
    lin: Packed,
    /// First layer: per-ID rows `emb(id)·W_eᵀ`, stride `lin.npad`.
    table: Option<ABuf>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    act: Act,
    /// Head of each channel, for [`aggregate`].
    heads_of: Vec<i32>,
}

impl PackedConv {
    /// Packs `conv`; `bn` folds an evaluation-mode BatchNorm after the bias; `embedding`
    /// (`[num_ids, E]`, row-major) makes this a first layer whose input is `[emb(id), x]`.
    pub fn new(
        conv: &GatConv,
        bn: Option<&BatchNorm>,
        act: Act,
        embedding: Option<(&[f32], usize)>,
    ) -> candle_core::Result<PackedConv> {
        if conv.lin_edge.is_some() {
            candle_core::bail!("the inference engine has no edge-feature attention");
        }
        if conv.cfg.heads > NR {
            candle_core::bail!("the inference engine takes at most {NR} attention heads");
        }
        let (h, c) = (conv.cfg.heads, conv.cfg.channels);
        let hc = h * c;
        let inp = conv.cfg.in_dim;
        let mut w = conv.lin.flatten_all()?.to_vec1::<f32>()?;
        // The attention logits' node terms as 2H more output rows of `W`:
        // `s_src[i, k] = h[i, k, :]·a_src[k] = x[i]·(Σ_c a_src[k, c]·W[kC + c, :])`.
        let a_src = conv.att_src.flatten_all()?.to_vec1::<f32>()?;
        let a_dst = conv.att_dst.flatten_all()?.to_vec1::<f32>()?;
        for a in [&a_src, &a_dst] {
            for k in 0..h {
                for col in 0..inp {
                    let mut acc = 0f32;
                    for ch in 0..c {
                        acc = a[k * c + ch].mul_add(w[(k * c + ch) * inp + col], acc);
                    }
                    w.push(acc);
                }
            }
        }
        let rows = hc + 2 * h;
        let (lin, table) = match embedding {
            None => (Packed::new(&w, rows, inp, None), None),
            Some((emb, e)) => {
                if e >= inp || emb.len() % e != 0 {
                    candle_core::bail!("first layer: embedding width {e} vs input {inp}");
                }
                let feat_k = inp - e;
                let wf: Vec<f32> = (0..rows)
                    .flat_map(|j| w[j * inp + e..(j + 1) * inp].iter().copied())
                    .collect();
                let lin = Packed::new(&wf, rows, feat_k, None);
                let ids = emb.len() / e;
                let mut t = ABuf::zeros(ids * lin.npad);
                let tv = t.as_mut_slice();
                for id in 0..ids {
                    let row = &emb[id * e..(id + 1) * e];
                    for j in 0..rows {
                        let mut acc = 0f32;
                        for (kk, &v) in row.iter().enumerate() {
                            acc = v.mul_add(w[j * inp + kk], acc);
                        }
                        tv[id * lin.npad + j] = acc;
                    }
                }
                (lin, Some(t))
            }
        };
        let bias = conv.bias.to_vec1::<f32>()?;
        let (scale, shift) = match bn {
            None => (vec![1f32; hc], bias),
            Some(bn) => {
                let (s, t) = bn.eval_affine()?;
                let shift = bias.iter().zip(&s).zip(&t).map(|((b, s), t)| s * b + t);
                (s.clone(), shift.collect())
            }
        };
        Ok(PackedConv {
            heads: h,
            channels: c,
            lin,
            table,
            scale,
            shift,
            act,
            heads_of: heads_of(h, c),
        })
    }

    /// Output width `H·C`.
    pub fn width(&self) -> usize {
        self.heads * self.channels
    }

    /// Row stride of this layer's output buffers.
    pub fn stride(&self) -> usize {
        self.lin.npad
    }

    /// `x` (`m` rows of stride `ldx`; for a first layer the 10 features, with `ids`) →
    /// `out` (`m` rows of stride [`PackedConv::stride`]). `h` and `scores` are scratch.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn forward(
        &self,
        isa: Isa,
        g: &Csr,
        x: &[f32],
        ldx: usize,
        ids: &[u32],
        h: &mut ABuf,
        scores: &mut Vec<f32>,
        out: &mut ABuf,
    ) {
        let (m, ld) = (g.num_nodes, self.lin.npad);
        let init = match &self.table {
            Some(t) => Init::Table {
                table: t.as_slice(),
                ld,
                ids,
            },
            None => Init::Bias,
        };
        let hbuf = h.grow(m * ld);
        matmul(isa, m, x, ldx, &self.lin, init, false, hbuf, ld);
        self.attend(isa, g, h.as_slice(), scores, out.grow(m * ld));
    }

    /// Edge softmax, aggregation and epilogue, node by node. The per-head quantities live in
    /// 16-lane arrays (heads ≤ 16), so the loops over them vectorise to one register.
    #[inline(always)]
    fn attend(&self, isa: Isa, g: &Csr, h: &[f32], w: &mut Vec<f32>, out: &mut [f32]) {
        let (hh, ld) = (self.heads, self.lin.npad);
        let hc = hh * self.channels;
        let relu = self.act == Act::Relu;
        let max_deg = (0..g.num_nodes)
            .map(|i| (g.dst_ptr[i + 1] - g.dst_ptr[i]) as usize)
            .max()
            .unwrap_or(0);
        if w.len() < max_deg * NR {
            w.resize(max_deg * NR, 0.0);
        }
        for i in 0..g.num_nodes {
            let (e0, e1) = (g.dst_ptr[i] as usize, g.dst_ptr[i + 1] as usize);
            let src = &g.src[e0..e1];
            let w = &mut w[..src.len() * NR];
            let mut di = [0f32; NR];
            let row = &h[i * ld + hc + hh..i * ld + hc + 2 * hh];
            for l in 0..hh {
                di[l] = row[l];
            }
            // Logits `LeakyReLU(s_src[j] + s_dst[i])` and their per-head maximum.
            let mut mx = [f32::NEG_INFINITY; NR];
            for (t, &j) in src.iter().enumerate() {
                let sj = &h[j as usize * ld + hc..j as usize * ld + hc + hh];
                let mut lg = [0f32; NR];
                for l in 0..hh {
                    lg[l] = sj[l];
                }
                for l in 0..NR {
                    let u = lg[l] + di[l];
                    lg[l] = if u > 0.0 { u } else { 0.2 * u };
                    mx[l] = mx[l].max(lg[l]);
                }
                w[t * NR..(t + 1) * NR].copy_from_slice(&lg);
            }
            let mut sum = [0f32; NR];
            for lg in w.chunks_exact_mut(NR) {
                for l in 0..NR {
                    lg[l] = fast_exp(lg[l] - mx[l]);
                    sum[l] += lg[l];
                }
            }
            let mut inv = [0f32; NR];
            for l in 0..NR {
                inv[l] = 1.0 / (sum[l] + 1e-16);
            }
            let o = &mut out[i * ld..i * ld + hc];
            aggregate(
                isa,
                hh,
                self.channels,
                &self.heads_of,
                h,
                ld,
                src,
                w,
                &inv,
                &self.scale,
                &self.shift,
                relu,
                o,
            );
            if self.act == Act::Sigmoid {
                for v in o.iter_mut() {
                    *v = sigmoid(*v);
                }
            }
        }
        debug_assert!(ld >= hc && ld % NR == 0);
    }
}
