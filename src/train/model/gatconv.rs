//! `GATConv` with PyG semantics (spec §4.1): `concat=True`, `negative_slope=0.2`,
//! `dropout=0`, `add_self_loops=True`, `bias=True`, optional `edge_dim`.
//!
//! Tensor names and layouts are PyG's, so a checkpoint loads into `torch_geometric.nn.GATConv`:
//! `lin.weight [H·C, in]`, `att_src [1, H, C]`, `att_dst [1, H, C]`, `bias [H·C]`, and with
//! edge features `lin_edge.weight [H·C, k]`, `att_edge [1, H, C]`.
//!
//! Two kernels compute the same function:
//! - [`Kernel::IndexAdd`], composed of candle ops: `index_select` per edge, a host-side
//!   per-target maximum as a detached shift (candle has no segment max; softmax ignores a
//!   shift), and `index_add` for every aggregation (never `scatter_add`, whose backward is
//!   broken in candle 0.11.1). It runs on every device and is the reference.
//! - [`Kernel::Fused`], one candle `CustomOp3` for scores, edge softmax and aggregation, with its
//!   own backward. It avoids the per-edge `[E, H, C]` tensors and most of the gradient
//!   buffers that dominate the composed kernel's time (NOTES). CPU only; edge features and
//!   other devices fall back to the composed kernel.
//!
//! The attention edge list is built once per batch ([`GatGraph`]): every existing `(i, i)` is
//! removed and one `(i, i)` per node is added, so a node without in-edges attends to itself.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::init::glorot;
use super::layers::{BatchNorm, Dropout, Mode, dropout_mask};

/// The shape of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatConvConfig {
    pub in_dim: usize,
    /// Channels per head, `C`.
    pub channels: usize,
    pub heads: usize,
    /// Edge feature width; 0 = no edge features.
    #[serde(default)]
    pub edge_dim: usize,
}

impl GatConvConfig {
    pub fn new(in_dim: usize, channels: usize, heads: usize) -> Self {
        GatConvConfig {
            in_dim,
            channels,
            heads,
            edge_dim: 0,
        }
    }

    /// Output width `H·C`.
    pub fn out_dim(&self) -> usize {
        self.heads * self.channels
    }

    /// `in·HC + 3HC` (+ `k·HC + HC` with edge features), spec §4.5.
    pub fn num_params(&self) -> usize {
        let hc = self.out_dim();
        let mut n = self.in_dim * hc + 3 * hc;
        if self.edge_dim > 0 {
            n += self.edge_dim * hc + hc;
        }
        n
    }
}

/// Which implementation computes attention and aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Pick [`Kernel::Fused`] where it applies (CPU, no edge features), else `IndexAdd`.
    Auto,
    Fused,
    IndexAdd,
}

/// The attention edge list, grouped by target node: every existing `(i, i)` removed, the other
/// edges in their order of appearance, then one `(i, i)` last among node `i`'s incoming edges.
/// Shared by [`GatGraph`] and the inference engine, which rebuilds it per batch in place.
#[derive(Clone, Debug, Default)]
pub struct Csr {
    pub num_nodes: usize,
    /// `dst_ptr[i]..dst_ptr[i+1]` index the edges entering node `i`.
    pub dst_ptr: Vec<u32>,
    /// Source node of each edge.
    pub src: Vec<u32>,
}

impl Csr {
    /// Rebuilds the list from window edges `(src, dst)` (batch-global indices), reusing the
    /// allocations.
    pub fn rebuild(&mut self, num_nodes: usize, src: &[u32], dst: &[u32]) {
        self.rebuild_with(num_nodes, src, dst, |_, _| {});
    }

    /// [`Csr::rebuild`], calling `placed(window edge, slot)` for every edge kept.
    pub fn rebuild_with(
        &mut self,
        num_nodes: usize,
        src: &[u32],
        dst: &[u32],
        mut placed: impl FnMut(usize, usize),
    ) {
        self.num_nodes = num_nodes;
        self.dst_ptr.clear();
        self.dst_ptr.resize(num_nodes + 1, 0);
        for (&s, &d) in src.iter().zip(dst) {
            if s != d {
                self.dst_ptr[d as usize + 1] += 1;
            }
        }
        for i in 0..num_nodes {
            self.dst_ptr[i + 1] += self.dst_ptr[i] + 1;
        }
        let e = self.dst_ptr[num_nodes] as usize;
        self.src.clear();
        self.src.resize(e, 0);
        let mut fill: Vec<u32> = self.dst_ptr[..num_nodes].to_vec();
        for (idx, (&s, &d)) in src.iter().zip(dst).enumerate() {
            if s != d {
                let p = fill[d as usize] as usize;
                self.src[p] = s;
                placed(idx, p);
                fill[d as usize] += 1;
            }
        }
        for (i, f) in fill.iter().enumerate() {
            debug_assert_eq!(*f + 1, self.dst_ptr[i + 1]);
            self.src[*f as usize] = i as u32;
        }
    }
}

/// The attention edge list of a batch ([`Csr`]) with its tensors.
#[derive(Debug)]
pub struct GatGraph {
    pub num_nodes: usize,
    /// Source of each attention edge, grouped by target.
    pub src: Vec<u32>,
    /// Target of each attention edge (non-decreasing).
    pub dst: Vec<u32>,
    /// `dst_ptr[i]..dst_ptr[i+1]` are the edges entering node `i`.
    pub dst_ptr: Vec<u32>,
    pub src_t: Tensor,
    pub dst_t: Tensor,
    /// `[E', k]` edge features; a new self-loop gets the mean of the node's other incoming
    /// edges' features (PyG `fill_value="mean"`), or zeros.
    pub edge_attr: Option<Tensor>,
}

impl GatGraph {
    /// Builds the attention edge list from window edges `src → dst` (batch-global indices).
    /// `edge_attr` is `(values [E·k], k)`.
    pub fn new(
        num_nodes: usize,
        src: &[u32],
        dst: &[u32],
        edge_attr: Option<(&[f32], usize)>,
        device: &Device,
    ) -> candle_core::Result<GatGraph> {
        let k = edge_attr.map(|(_, k)| k).unwrap_or(0);
        // At most every window edge plus one self-loop per node; cut to size below.
        let mut attr = vec![0f32; (src.len() + num_nodes) * k];
        let mut csr = Csr::default();
        csr.rebuild_with(num_nodes, src, dst, |idx, p| {
            if let Some((a, k)) = edge_attr {
                attr[p * k..(p + 1) * k].copy_from_slice(&a[idx * k..(idx + 1) * k]);
            }
        });
        let Csr {
            dst_ptr,
            src: out_src,
            ..
        } = csr;
        let e = out_src.len();
        attr.truncate(e * k);
        let mut out_dst = Vec::with_capacity(e);
        for i in 0..num_nodes {
            let (start, p) = (dst_ptr[i] as usize, dst_ptr[i + 1] as usize - 1);
            out_dst.resize(p + 1, i as u32);
            // The self-loop's features: the mean of the node's other incoming edges'.
            let others = p - start;
            if k > 0 && others > 0 {
                for c in 0..k {
                    let mut acc = 0f32;
                    for q in start..p {
                        acc += attr[q * k + c];
                    }
                    attr[p * k + c] = acc / others as f32;
                }
            }
        }
        let src_t = Tensor::from_slice(&out_src, e, device)?;
        let dst_t = Tensor::from_slice(&out_dst, e, device)?;
        let edge_attr = if k > 0 {
            Some(Tensor::from_vec(attr, (e, k), device)?)
        } else {
            None
        };
        Ok(GatGraph {
            num_nodes,
            src: out_src,
            dst: out_dst,
            dst_ptr,
            src_t,
            dst_t,
            edge_attr,
        })
    }

    pub fn num_edges(&self) -> usize {
        self.src.len()
    }
}

/// One `GATConv` layer.
#[derive(Clone, Debug)]
pub struct GatConv {
    pub cfg: GatConvConfig,
    /// `lin.weight`, `[H·C, in]`.
    pub lin: Tensor,
    /// `[1, H, C]`
    pub att_src: Tensor,
    pub att_dst: Tensor,
    /// `[H·C]`
    pub bias: Tensor,
    pub lin_edge: Option<Tensor>,
    pub att_edge: Option<Tensor>,
    /// The kernel [`GatConv::forward`] uses (default [`Kernel::Auto`]).
    pub kernel: Kernel,
}

impl GatConv {
    /// Creates the layer's tensors under `vb` (Glorot weights, zero bias).
    pub fn new(cfg: GatConvConfig, vb: VarBuilder) -> candle_core::Result<GatConv> {
        let (h, c, hc) = (cfg.heads, cfg.channels, cfg.out_dim());
        let lin =
            vb.pp("lin")
                .get_with_hints((hc, cfg.in_dim), "weight", glorot(hc, cfg.in_dim))?;
        let att_src = vb.get_with_hints((1, h, c), "att_src", glorot(h, c))?;
        let att_dst = vb.get_with_hints((1, h, c), "att_dst", glorot(h, c))?;
        let (lin_edge, att_edge) = if cfg.edge_dim > 0 {
            (
                Some(vb.pp("lin_edge").get_with_hints(
                    (hc, cfg.edge_dim),
                    "weight",
                    glorot(hc, cfg.edge_dim),
                )?),
                Some(vb.get_with_hints((1, h, c), "att_edge", glorot(h, c))?),
            )
        } else {
            (None, None)
        };
        let bias = vb.get_with_hints(hc, "bias", candle_nn::Init::Const(0.0))?;
        Ok(GatConv {
            cfg,
            lin,
            att_src,
            att_dst,
            bias,
            lin_edge,
            att_edge,
            kernel: Kernel::Auto,
        })
    }

    /// `x [N, in]` → `[N, H·C]`, with the layer's kernel.
    pub fn forward(&self, x: &Tensor, g: &Arc<GatGraph>) -> candle_core::Result<Tensor> {
        self.forward_with(x, g, self.kernel)
    }

    /// `x [N, in]` → `[N, H·C]` with an explicit kernel.
    pub fn forward_with(
        &self,
        x: &Tensor,
        g: &Arc<GatGraph>,
        kernel: Kernel,
    ) -> candle_core::Result<Tensor> {
        match self.resolve(x, kernel)? {
            Kernel::Fused => self.fused(x, g, false, None, 0.0, None),
            _ => self
                .attend_index_add(&x.matmul(&self.lin.t()?)?, g)?
                .broadcast_add(&self.bias),
        }
    }

    /// `Dropout(ReLU(GATConv(x)))`, the GAT classifier's layer. With the fused kernel the
    /// bias, ReLU and dropout mask are applied inside the attention op (one output tensor, one
    /// backward) instead of as three candle ops.
    pub fn forward_relu_dropout(
        &self,
        x: &Tensor,
        g: &Arc<GatGraph>,
        dropout: &Dropout,
        mode: &mut Mode,
    ) -> candle_core::Result<Tensor> {
        match self.resolve(x, self.kernel)? {
            Kernel::Fused => {
                let mask = match mode {
                    Mode::Train(rng) if dropout.p > 0.0 => {
                        Some(dropout_mask(x.dim(0)? * self.cfg.out_dim(), dropout.p, rng))
                    }
                    _ => None,
                };
                self.fused(x, g, true, mask, dropout.p, None)
            }
            _ => dropout.forward(&self.forward_with(x, g, Kernel::IndexAdd)?.relu()?, mode),
        }
    }

    /// `Dropout(ReLU(BatchNorm(GATConv(x))))`, the VGAE's layer. In evaluation with the fused
    /// kernel the BatchNorm (an affine map with running statistics) and the ReLU are folded
    /// into the attention op; in training the BatchNorm op of [`BatchNorm`] takes the epilogue.
    pub fn forward_bn_relu_dropout(
        &self,
        x: &Tensor,
        g: &Arc<GatGraph>,
        bn: &BatchNorm,
        dropout: &Dropout,
        mode: &mut Mode,
    ) -> candle_core::Result<Tensor> {
        if !mode.is_train() && self.resolve(x, self.kernel)? == Kernel::Fused {
            let (scale, shift) = bn.eval_affine()?;
            return self.fused(x, g, true, None, 0.0, Some((scale, shift)));
        }
        bn.forward_relu_dropout(&self.forward(x, g)?, dropout, mode)
    }

    fn resolve(&self, x: &Tensor, kernel: Kernel) -> candle_core::Result<Kernel> {
        let fused_ok = self.cfg.edge_dim == 0 && x.device().is_cpu();
        Ok(match kernel {
            Kernel::Auto if fused_ok => Kernel::Fused,
            Kernel::Auto => Kernel::IndexAdd,
            Kernel::Fused if !fused_ok => {
                candle_core::bail!("the fused GAT kernel needs the CPU and no edge features")
            }
            k => k,
        })
    }

    fn fused(
        &self,
        x: &Tensor,
        g: &Arc<GatGraph>,
        relu: bool,
        mask: Option<Vec<f32>>,
        p: f32,
        affine: Option<(Vec<f32>, Vec<f32>)>,
    ) -> candle_core::Result<Tensor> {
        let h = x.matmul(&self.lin.t()?)?;
        let att = Tensor::cat(&[&self.att_src, &self.att_dst], 0)?;
        h.apply_op3(
            &att,
            &self.bias,
            GatAttention {
                graph: g.clone(),
                heads: self.cfg.heads,
                channels: self.cfg.channels,
                relu,
                mask,
                p,
                affine,
            },
        )
    }

    /// The composed kernel: scores, edge softmax and aggregation from candle ops.
    fn attend_index_add(&self, h: &Tensor, g: &GatGraph) -> candle_core::Result<Tensor> {
        let (hh, c) = (self.cfg.heads, self.cfg.channels);
        let n = h.dim(0)?;
        let h3 = h.reshape((n, hh, c))?;
        let s_src = h3.broadcast_mul(&self.att_src)?.sum(2)?;
        let s_dst = h3.broadcast_mul(&self.att_dst)?.sum(2)?;
        let mut u = (s_src.index_select(&g.src_t, 0)? + s_dst.index_select(&g.dst_t, 0)?)?;
        if let (Some(le), Some(ae), Some(ea)) = (&self.lin_edge, &self.att_edge, &g.edge_attr) {
            let e = ea.dim(0)?;
            let he = ea.matmul(&le.t()?)?.reshape((e, hh, c))?;
            u = (u + he.broadcast_mul(ae)?.sum(2)?)?;
        }
        let e = u.maximum(&(&u * 0.2)?)?;
        // Detached per-target, per-head maximum: softmax is invariant to it.
        let ev = e.to_vec2::<f32>()?;
        let mut m = vec![f32::NEG_INFINITY; n * hh];
        for (row, &d) in ev.iter().zip(&g.dst) {
            for k in 0..hh {
                let slot = &mut m[d as usize * hh + k];
                *slot = slot.max(row[k]);
            }
        }
        for v in &mut m {
            if !v.is_finite() {
                *v = 0.0;
            }
        }
        let m = Tensor::from_vec(m, (n, hh), h.device())?;
        let ex = (e - m.index_select(&g.dst_t, 0)?)?.exp()?;
        let denom =
            (Tensor::zeros((n, hh), DType::F32, h.device())?.index_add(&g.dst_t, &ex, 0)? + 1e-16)?;
        let alpha = (ex / denom.index_select(&g.dst_t, 0)?)?;
        let msg = h3
            .index_select(&g.src_t, 0)?
            .broadcast_mul(&alpha.unsqueeze(2)?)?;
        Tensor::zeros((n, hh, c), DType::F32, h.device())?
            .index_add(&g.dst_t, &msg, 0)?
            .reshape((n, hh * c))
    }

    /// The attention weights `α [E', H]` of the last layer call for `x` (eval diagnostics and
    /// tests), in the order of `g.src`/`g.dst`.
    pub fn attention(&self, x: &Tensor, g: &Arc<GatGraph>) -> candle_core::Result<Vec<f32>> {
        let h = x.matmul(&self.lin.t()?)?.contiguous()?;
        let hv = h.flatten_all()?.to_vec1::<f32>()?;
        let asv = self.att_src.flatten_all()?.to_vec1::<f32>()?;
        let adv = self.att_dst.flatten_all()?.to_vec1::<f32>()?;
        let op = GatAttention {
            graph: g.clone(),
            heads: self.cfg.heads,
            channels: self.cfg.channels,
            relu: false,
            mask: None,
            p: 0.0,
            affine: None,
        };
        let (ss, sd) = op.scores(&hv, &asv, &adv);
        let mut alpha = vec![0f32; g.num_edges() * self.cfg.heads];
        for i in 0..g.num_nodes {
            op.softmax_into(i, &ss, &sd, &mut alpha);
        }
        Ok(alpha)
    }
}

/// The fused attention op: `(h [N, H·C], att [2, H, C] = att_src ‖ att_dst, bias [H·C]) →
/// y [N, H·C]`, `y = mask ⊙ act(Σ_{j→i} α_jik · h[j,k,:] + bias)` with α the edge softmax of
/// spec §4.1, `act` ReLU or the identity, `mask` an optional inverted-dropout mask.
struct GatAttention {
    graph: Arc<GatGraph>,
    heads: usize,
    channels: usize,
    relu: bool,
    mask: Option<Vec<f32>>,
    /// The dropout probability behind `mask`.
    p: f32,
    /// Evaluation-mode BatchNorm folded in after the bias: `(scale, shift)` per channel.
    /// Forward only (evaluation passes never backpropagate).
    affine: Option<(Vec<f32>, Vec<f32>)>,
}

/// `Σ a[i]·b[i]` with eight running sums (vectorisable; a fixed order, so deterministic).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += a·x`.
#[inline]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (v, &u) in y.iter_mut().zip(x) {
        *v += a * u;
    }
}

const NEG_SLOPE: f32 = 0.2;

impl GatAttention {
    /// Node scores `s_src`, `s_dst`, each `[N, H]`.
    fn scores(&self, h: &[f32], a_src: &[f32], a_dst: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (hh, c) = (self.heads, self.channels);
        let n = self.graph.num_nodes;
        let mut ss = vec![0f32; n * hh];
        let mut sd = vec![0f32; n * hh];
        for i in 0..n {
            for k in 0..hh {
                let row = &h[(i * hh + k) * c..(i * hh + k + 1) * c];
                ss[i * hh + k] = dot(row, &a_src[k * c..(k + 1) * c]);
                sd[i * hh + k] = dot(row, &a_dst[k * c..(k + 1) * c]);
            }
        }
        (ss, sd)
    }

    /// Writes `α` of the edges entering node `i` into `alpha[e·H + k]`.
    fn softmax_into(&self, i: usize, ss: &[f32], sd: &[f32], alpha: &mut [f32]) {
        let hh = self.heads;
        let g = &self.graph;
        let (e0, e1) = (g.dst_ptr[i] as usize, g.dst_ptr[i + 1] as usize);
        for k in 0..hh {
            let mut m = f32::NEG_INFINITY;
            for e in e0..e1 {
                let u = ss[g.src[e] as usize * hh + k] + sd[i * hh + k];
                let s = if u > 0.0 { u } else { NEG_SLOPE * u };
                alpha[e * hh + k] = s;
                m = m.max(s);
            }
            let mut sum = 0f32;
            for e in e0..e1 {
                let w = (alpha[e * hh + k] - m).exp();
                alpha[e * hh + k] = w;
                sum += w;
            }
            let inv = 1.0 / (sum + 1e-16);
            for e in e0..e1 {
                alpha[e * hh + k] *= inv;
            }
        }
    }
}

impl GatAttention {
    fn dropout_p(&self) -> f32 {
        self.p
    }

    /// `Σ_{j→i} α_jik · h[j,k,:]` for every node, `[N, H·C]`.
    fn aggregate(&self, h: &[f32], ss: &[f32], sd: &[f32]) -> Vec<f32> {
        let (hh, c) = (self.heads, self.channels);
        let hc = hh * c;
        let g = &self.graph;
        let mut alpha = vec![0f32; g.num_edges() * hh];
        // Rows are built in a small buffer and appended: no zero-filled [N, H·C] pass.
        let mut out = Vec::with_capacity(g.num_nodes * hc);
        let mut o = vec![0f32; hc];
        for i in 0..g.num_nodes {
            self.softmax_into(i, ss, sd, &mut alpha);
            o.fill(0.0);
            for e in g.dst_ptr[i] as usize..g.dst_ptr[i + 1] as usize {
                let j = g.src[e] as usize;
                let hj = &h[j * hc..(j + 1) * hc];
                for k in 0..hh {
                    axpy(
                        alpha[e * hh + k],
                        &hj[k * c..(k + 1) * c],
                        &mut o[k * c..(k + 1) * c],
                    );
                }
            }
            out.extend_from_slice(&o);
        }
        out
    }

    /// Backward of [`GatAttention::aggregate`] given its output `out` and gradient `gr`:
    /// `(dh, d att_src, d att_dst)`.
    fn aggregate_bwd(
        &self,
        h: &[f32],
        a_src: &[f32],
        a_dst: &[f32],
        out: &[f32],
        gr: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (hh, c) = (self.heads, self.channels);
        let hc = hh * c;
        let g = &self.graph;
        let n = g.num_nodes;
        let (ss, sd) = self.scores(h, a_src, a_dst);
        let mut alpha = vec![0f32; g.num_edges() * hh];
        let mut dh = vec![0f32; n * hc];
        let mut dss = vec![0f32; n * hh];
        let mut dsd = vec![0f32; n * hh];
        let mut t = vec![0f32; hh];
        for i in 0..n {
            self.softmax_into(i, &ss, &sd, &mut alpha);
            let gi = &gr[i * hc..(i + 1) * hc];
            let oi = &out[i * hc..(i + 1) * hc];
            for k in 0..hh {
                t[k] = dot(&gi[k * c..(k + 1) * c], &oi[k * c..(k + 1) * c]);
            }
            for e in g.dst_ptr[i] as usize..g.dst_ptr[i + 1] as usize {
                let j = g.src[e] as usize;
                for k in 0..hh {
                    let a = alpha[e * hh + k];
                    let hjk = &h[j * hc + k * c..j * hc + (k + 1) * c];
                    let gik = &gi[k * c..(k + 1) * c];
                    let da = dot(gik, hjk);
                    let u = ss[j * hh + k] + sd[i * hh + k];
                    let slope = if u > 0.0 { 1.0 } else { NEG_SLOPE };
                    let du = a * (da - t[k]) * slope;
                    dss[j * hh + k] += du;
                    dsd[i * hh + k] += du;
                    axpy(a, gik, &mut dh[j * hc + k * c..j * hc + (k + 1) * c]);
                }
            }
        }
        let mut da_s = vec![0f32; hc];
        let mut da_d = vec![0f32; hc];
        for v in 0..n {
            for k in 0..hh {
                let (xs, xd) = (dss[v * hh + k], dsd[v * hh + k]);
                let r = k * c..(k + 1) * c;
                let hv = &h[v * hc + r.start..v * hc + r.end];
                let dhv = &mut dh[v * hc + r.start..v * hc + r.end];
                axpy(xs, &a_src[r.clone()], dhv);
                axpy(xd, &a_dst[r.clone()], dhv);
                axpy(xs, hv, &mut da_s[r.clone()]);
                axpy(xd, hv, &mut da_d[r]);
            }
        }
        (dh, da_s, da_d)
    }
}

/// The contiguous f32 data of a CPU tensor, or an error naming `what`.
fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("gat attention: `{what}` must be contiguous"),
    }
}

/// Runs `f` on the contiguous f32 data of `t` (which must live on the CPU).
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(s) => Ok(f(cpu_f32(s, l, "tensor")?)),
        _ => candle_core::bail!("gat attention: the fused kernel runs on the CPU only"),
    }
}

impl CustomOp3 for GatAttention {
    fn name(&self) -> &'static str {
        "gat-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = cpu_f32(s1, l1, "h")?;
        let att = cpu_f32(s2, l2, "att")?;
        let bias = cpu_f32(s3, l3, "bias")?;
        let hc = self.heads * self.channels;
        let n = self.graph.num_nodes;
        if h.len() != n * hc || att.len() != 2 * hc || bias.len() != hc {
            candle_core::bail!("gat attention: shapes do not match the graph");
        }
        if self.mask.as_ref().is_some_and(|m| m.len() != n * hc) {
            candle_core::bail!("gat attention: the dropout mask does not match the output");
        }
        let (ss, sd) = self.scores(h, &att[..hc], &att[hc..]);
        let mut out = self.aggregate(h, &ss, &sd);
        for (i, row) in out.chunks_exact_mut(hc).enumerate() {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
            if let Some((scale, shift)) = &self.affine {
                for ((v, a), t) in row.iter_mut().zip(scale).zip(shift) {
                    *v = *v * a + t;
                }
            }
            if self.relu {
                for v in row.iter_mut() {
                    *v = v.max(0.0);
                }
            }
            if let Some(m) = &self.mask {
                for (v, m) in row.iter_mut().zip(&m[i * hc..(i + 1) * hc]) {
                    *v *= m;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, hc))))
    }

    fn bwd(
        &self,
        h: &Tensor,
        att: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.affine.is_some() {
            candle_core::bail!("gat attention: the folded BatchNorm is for evaluation only");
        }
        let (hh, c) = (self.heads, self.channels);
        let hc = hh * c;
        let n = self.graph.num_nodes;
        let att = att.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.to_vec1::<f32>()?;
        let (dh, da_s, da_d, db) = with_f32(h, |h| {
            with_f32(res, |y| {
                with_f32(grad_res, |gy| {
                    // Through the epilogue: the gradient at the pre-activation, and the
                    // aggregation's output wherever that gradient is non-zero.
                    let mut gpre = vec![0f32; n * hc];
                    let mut agg = vec![0f32; n * hc];
                    let mut db = vec![0f32; hc];
                    let inv = self.mask.as_ref().map_or(1.0, |_| 1.0 - self.dropout_p());
                    for i in 0..n {
                        let r = i * hc..(i + 1) * hc;
                        let (yr, gyr) = (&y[r.clone()], &gy[r.clone()]);
                        let mr = self.mask.as_ref().map(|m| &m[r.clone()]);
                        let (gp, ag) = (&mut gpre[r.clone()], &mut agg[r]);
                        for p in 0..hc {
                            let m = mr.map_or(1.0, |m| m[p]);
                            let live = m != 0.0 && (!self.relu || yr[p] > 0.0);
                            let f = if live { 1.0 } else { 0.0 };
                            gp[p] = gyr[p] * m * f;
                            ag[p] = (yr[p] * inv - bias[p]) * f;
                        }
                        for (d, g) in db.iter_mut().zip(gp.iter()) {
                            *d += g;
                        }
                    }
                    let (dh, da_s, da_d) =
                        self.aggregate_bwd(h, &att[..hc], &att[hc..], &agg, &gpre);
                    (dh, da_s, da_d, db)
                })
            })
        })???;
        let dev = h.device();
        let mut datt = da_s;
        datt.extend(da_d);
        Ok((
            Some(Tensor::from_vec(dh, (n, hc), dev)?),
            Some(Tensor::from_vec(datt, (2, hh, c), dev)?),
            Some(Tensor::from_vec(db, hc, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::init::{ParamStore, Rng, normal};
    use rand::{Rng as _, SeedableRng};

    fn layer(seed: u64, cfg: GatConvConfig) -> (ParamStore, GatConv) {
        let ps = ParamStore::new(seed, &Device::Cpu);
        let conv = GatConv::new(cfg, ps.var_builder()).unwrap();
        // A non-zero bias so that it is checked too.
        let hc = cfg.out_dim();
        let b: Vec<f32> = (0..hc).map(|i| 0.01 * i as f32).collect();
        ps.get("bias")
            .unwrap()
            .set(&Tensor::from_vec(b, hc, &Device::Cpu).unwrap())
            .unwrap();
        (ps, conv)
    }

    /// Dense reference: a masked N×N softmax per head, with the self-loop rule of spec §4.1.
    fn dense(conv: &GatConv, x: &[f32], n: usize, src: &[u32], dst: &[u32]) -> Vec<f32> {
        let cfg = conv.cfg;
        let (hh, c, hc) = (cfg.heads, cfg.channels, cfg.out_dim());
        let w = conv.lin.to_vec2::<f32>().unwrap();
        let a_s = conv
            .att_src
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let a_d = conv
            .att_dst
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let bias = conv.bias.to_vec1::<f32>().unwrap();
        let mut h = vec![0f64; n * hc];
        for i in 0..n {
            for o in 0..hc {
                h[i * hc + o] = (0..cfg.in_dim)
                    .map(|q| x[i * cfg.in_dim + q] as f64 * w[o][q] as f64)
                    .sum();
            }
        }
        let mut mask = vec![false; n * n]; // mask[i*n + j]: j → i
        for (&s, &d) in src.iter().zip(dst) {
            mask[d as usize * n + s as usize] = true;
        }
        for i in 0..n {
            mask[i * n + i] = true;
        }
        let mut out = vec![0f32; n * hc];
        for i in 0..n {
            for k in 0..hh {
                let sc = |j: usize, a: &[f32]| -> f64 {
                    (0..c)
                        .map(|q| h[j * hc + k * c + q] * a[k * c + q] as f64)
                        .sum()
                };
                let e: Vec<f64> = (0..n)
                    .map(|j| {
                        if !mask[i * n + j] {
                            return f64::NEG_INFINITY;
                        }
                        let u = sc(j, &a_s) + sc(i, &a_d);
                        if u > 0.0 { u } else { 0.2 * u }
                    })
                    .collect();
                let m = e.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = e.iter().map(|v| (v - m).exp()).sum();
                for q in 0..c {
                    let v: f64 = (0..n)
                        .map(|j| (e[j] - m).exp() / z * h[j * hc + k * c + q])
                        .sum();
                    out[i * hc + k * c + q] = v as f32 + bias[k * c + q];
                }
            }
        }
        out
    }

    /// A random graph of distinct edges (as windows have) with an existing self-loop on
    /// node 0 and no in-edges into node n−1.
    fn random_graph(rng: &mut Rng, n: usize, e: usize) -> (Vec<u32>, Vec<u32>) {
        let mut edges = std::collections::BTreeSet::from([(0u32, 0u32)]);
        while edges.len() < e.min(n * (n - 1)) {
            edges.insert((
                rng.random_range(0..n as u32),
                rng.random_range(0..(n - 1) as u32),
            ));
        }
        edges.into_iter().unzip()
    }

    fn rand_x(rng: &mut Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| normal(rng) as f32).collect()
    }

    #[test]
    fn matches_dense_reference_on_random_graphs() {
        let mut rng = Rng::seed_from_u64(7);
        for (trial, (n, e, heads, ch)) in [(6, 12, 2, 3), (12, 40, 4, 5), (20, 90, 3, 8)]
            .into_iter()
            .enumerate()
        {
            let cfg = GatConvConfig::new(7, ch, heads);
            let (_, conv) = layer(trial as u64, cfg);
            let (src, dst) = random_graph(&mut rng, n, e);
            let x = rand_x(&mut rng, n * 7);
            let g = Arc::new(GatGraph::new(n, &src, &dst, None, &Device::Cpu).unwrap());
            let xt = Tensor::from_vec(x.clone(), (n, 7), &Device::Cpu).unwrap();
            let want = dense(&conv, &x, n, &src, &dst);
            for kernel in [Kernel::Fused, Kernel::IndexAdd] {
                let got = conv.forward_with(&xt, &g, kernel).unwrap();
                let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{kernel:?}: {a} vs {b}");
                }
            }
            // The node without in-edges attends only to itself.
            let alpha = conv.attention(&xt, &g).unwrap();
            let last = n - 1;
            let (e0, e1) = (g.dst_ptr[last] as usize, g.dst_ptr[last + 1] as usize);
            assert_eq!(e1 - e0, 1);
            assert_eq!(g.src[e0] as usize, last);
            for k in 0..heads {
                assert!((alpha[e0 * heads + k] - 1.0).abs() < 1e-6);
            }
            // The existing self-loop (0,0) was replaced, not doubled.
            let loops0 = (g.dst_ptr[0]..g.dst_ptr[1])
                .filter(|&q| g.src[q as usize] == 0)
                .count();
            assert_eq!(loops0, 1);
        }
    }

    /// Loss = Σ out ⊙ R for a fixed random R; its gradient checked by central differences in f64
    /// terms of f32 arithmetic (relative tolerance).
    fn grad_check(kernel: Kernel) {
        let mut rng = Rng::seed_from_u64(11);
        let (n, heads, ch, din) = (7, 2, 3, 4);
        let cfg = GatConvConfig::new(din, ch, heads);
        let (ps, conv) = layer(3, cfg);
        let (src, dst) = random_graph(&mut rng, n, 16);
        let g = Arc::new(GatGraph::new(n, &src, &dst, None, &Device::Cpu).unwrap());
        let x =
            candle_core::Var::from_vec(rand_x(&mut rng, n * din), (n, din), &Device::Cpu).unwrap();
        let r = Tensor::from_vec(
            rand_x(&mut rng, n * heads * ch),
            (n, heads * ch),
            &Device::Cpu,
        )
        .unwrap();
        let loss = |conv: &GatConv, x: &Tensor| -> f32 {
            (conv.forward_with(x, &g, kernel).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let out = (conv.forward_with(x.as_tensor(), &g, kernel).unwrap() * &r).unwrap();
        let grads = out.sum_all().unwrap().backward().unwrap();
        let mut vars: Vec<(String, candle_core::Var)> = ps.all();
        vars.push(("x".into(), x.clone()));
        for (name, var) in vars {
            let analytic = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let shape = var.shape().clone();
            for (p, &ga) in analytic.iter().enumerate() {
                let eps = 1e-2f32;
                let mut plus = base.clone();
                plus[p] += eps;
                var.set(&Tensor::from_vec(plus, shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                let lp = loss(&conv, x.as_tensor());
                let mut minus = base.clone();
                minus[p] -= eps;
                var.set(&Tensor::from_vec(minus, shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                let lm = loss(&conv, x.as_tensor());
                var.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                let fd = (lp - lm) / (2.0 * eps);
                assert!(
                    (fd - ga).abs() <= 2e-2 * (1.0 + ga.abs()),
                    "{kernel:?} {name}[{p}]: finite difference {fd}, backward {ga}"
                );
            }
        }
    }

    #[test]
    fn fused_gradients_match_finite_differences() {
        grad_check(Kernel::Fused);
    }

    #[test]
    fn index_add_gradients_match_finite_differences() {
        grad_check(Kernel::IndexAdd);
    }

    #[test]
    fn fused_and_index_add_gradients_agree() {
        let mut rng = Rng::seed_from_u64(5);
        let (n, din) = (30, 26);
        let cfg = GatConvConfig::new(din, 6, 4);
        let (ps, conv) = layer(9, cfg);
        let (src, dst) = random_graph(&mut rng, n, 80);
        let g = Arc::new(GatGraph::new(n, &src, &dst, None, &Device::Cpu).unwrap());
        let x = Tensor::from_vec(rand_x(&mut rng, n * din), (n, din), &Device::Cpu).unwrap();
        let r = Tensor::from_vec(rand_x(&mut rng, n * 24), (n, 24), &Device::Cpu).unwrap();
        let grads = |k| {
            let out = (conv.forward_with(&x, &g, k).unwrap().relu().unwrap() * &r).unwrap();
            out.sum_all().unwrap().backward().unwrap()
        };
        let (gf, gi) = (grads(Kernel::Fused), grads(Kernel::IndexAdd));
        for (name, v) in ps.all() {
            let a = gf
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = gi
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() < 1e-4 * (1.0 + q.abs()), "{name}: {p} vs {q}");
            }
        }
    }

    #[test]
    fn edge_features_follow_pyg_mean_fill() {
        // 0→1 (attr 2), 2→1 (attr 4), 1→1 existing loop (attr 100, dropped), node 0 no in-edges.
        let src = [0u32, 2, 1];
        let dst = [1u32, 1, 1];
        let attr = [2f32, 4., 100.];
        let g = GatGraph::new(3, &src, &dst, Some((&attr, 1)), &Device::Cpu).unwrap();
        let a = g
            .edge_attr
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Order: node 0: [loop]; node 1: [0→1, 2→1, loop]; node 2: [loop].
        assert_eq!(g.src, vec![0, 0, 2, 1, 2]);
        assert_eq!(a, vec![0., 2., 4., 3., 0.]);
        let cfg = GatConvConfig {
            edge_dim: 1,
            ..GatConvConfig::new(2, 2, 2)
        };
        let ps = ParamStore::new(1, &Device::Cpu);
        GatConv::new(cfg, ps.var_builder()).unwrap();
        assert_eq!(ps.num_params(), cfg.num_params());
    }
    #[test]
    fn fused_epilogue_matches_composed_relu_dropout() {
        use crate::train::model::layers::{Dropout, Mode};
        let mut rng = Rng::seed_from_u64(8);
        let (n, din) = (25, 9);
        let (ps, mut conv) = layer(4, GatConvConfig::new(din, 5, 3));
        let (src, dst) = random_graph(&mut rng, n, 70);
        let g = Arc::new(GatGraph::new(n, &src, &dst, None, &Device::Cpu).unwrap());
        let x =
            candle_core::Var::from_vec(rand_x(&mut rng, n * din), (n, din), &Device::Cpu).unwrap();
        let r = Tensor::from_vec(rand_x(&mut rng, n * 15), (n, 15), &Device::Cpu).unwrap();
        let d = Dropout::new(0.3);
        let run = |conv: &GatConv| {
            let mut rr = Rng::seed_from_u64(99);
            let y = conv
                .forward_relu_dropout(x.as_tensor(), &g, &d, &mut Mode::Train(&mut rr))
                .unwrap();
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), grads)
        };
        conv.kernel = Kernel::Fused;
        let (yf, gf) = run(&conv);
        conv.kernel = Kernel::IndexAdd;
        let (yi, gi) = run(&conv);
        assert!(yf.contains(&0.0) && yf.iter().any(|v| *v > 0.0));
        for (a, b) in yf.iter().zip(&yi) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let mut vars = ps.all();
        vars.push(("x".into(), x.clone()));
        for (name, v) in vars {
            let a = gf
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = gi
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() < 1e-4 * (1.0 + q.abs()), "{name}: {p} vs {q}");
            }
        }
    }
}
