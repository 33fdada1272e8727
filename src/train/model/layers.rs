//! The small layers every model shares, PyTorch semantics and names: embedding, linear,
//! BatchNorm (batch statistics in training, running statistics in evaluation), LayerNorm,
//! seeded inverted dropout and global mean pooling (spec §4.1).
//!
//! candle-nn has most of these, but two of its versions do not fit: its `LayerNorm` takes a
//! forward-only fast path on contiguous input (no gradient flows through it), and its dropout
//! draws from candle's unseedable generator. Owning these few lines keeps training reproducible.

use candle_core::{D, DType, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use rand::RngCore;

use super::init::{Rng, torch_linear};

/// Training (dropout on, batch statistics, UNK replacement by the caller) or evaluation.
pub enum Mode<'a> {
    Eval,
    Train(&'a mut Rng),
}

impl Mode<'_> {
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }
}

/// `nn.Embedding`, initialised N(0, 1).
#[derive(Clone, Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(num: usize, dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints(
            (num, dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        Ok(Embedding { weight })
    }

    /// `ids [N]` (u32) → `[N, dim]`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.weight.index_select(ids, 0)
    }
}

/// `nn.Linear` with PyTorch's default initialisation; `weight [out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(inp: usize, out: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints((out, inp), "weight", torch_linear(inp))?;
        let bias = vb.get_with_hints(out, "bias", torch_linear(inp))?;
        Ok(Linear { weight, bias })
    }

    /// `x [N, in]` → `[N, out]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }

    pub fn num_params(inp: usize, out: usize) -> usize {
        inp * out + out
    }
}

/// `nn.BatchNorm1d` over nodes: eps 1e-5, momentum 0.1; running statistics are buffers
/// (`running_mean`, `running_var`, `num_batches_tracked`) that checkpoints keep.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Var,
    pub running_var: Var,
    pub num_batches_tracked: Var,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        let rm = vb.get_with_hints(dim, "running_mean", Init::Const(0.0))?;
        let rv = vb.get_with_hints(dim, "running_var", Init::Const(1.0))?;
        let nb = vb.get_with_hints((), "num_batches_tracked", Init::Const(0.0))?;
        Ok(BatchNorm {
            weight,
            bias,
            running_mean: Var::from_tensor(&rm)?,
            running_var: Var::from_tensor(&rv)?,
            num_batches_tracked: Var::from_tensor(&nb)?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// `x [N, C]`. In training, normalises with the batch statistics and updates the running
    /// ones (unbiased variance, as PyTorch); in evaluation, uses the running statistics.
    pub fn forward(&self, x: &Tensor, mode: &Mode) -> candle_core::Result<Tensor> {
        match mode {
            Mode::Train(_) if x.device().is_cpu() => self.fused_train(x, false, None),
            _ => self.forward_composed(x, mode),
        }
    }

    /// `Dropout(ReLU(BatchNorm(x)))`, the VGAE's layer epilogue; in training on the CPU one
    /// fused op with its own backward (BatchNorm composed of candle ops costs about ten
    /// tensor passes forward and more backward).
    pub fn forward_relu_dropout(
        &self,
        x: &Tensor,
        dropout: &Dropout,
        mode: &mut Mode,
    ) -> candle_core::Result<Tensor> {
        match mode {
            Mode::Train(rng) if x.device().is_cpu() => {
                let mask = (dropout.p > 0.0).then(|| dropout_mask(x.elem_count(), dropout.p, rng));
                self.fused_train(x, true, mask)
            }
            _ => {
                let y = self.forward_composed(x, mode)?.relu()?;
                dropout.forward(&y, mode)
            }
        }
    }

    fn fused_train(
        &self,
        x: &Tensor,
        relu: bool,
        mask: Option<Vec<f32>>,
    ) -> candle_core::Result<Tensor> {
        let stats = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let y = x.contiguous()?.apply_op3(
            &self.weight,
            &self.bias,
            BatchNormOp {
                eps: self.eps as f32,
                relu,
                mask,
                stats: stats.clone(),
            },
        )?;
        let st = std::mem::take(&mut *stats.lock().expect("stats lock"));
        let c = st.len() / 2;
        let dev = x.device();
        self.update_running(
            &Tensor::from_slice(&st[..c], c, dev)?,
            &Tensor::from_slice(&st[c..], c, dev)?,
            x.dim(0)?,
        )?;
        Ok(y)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> candle_core::Result<()> {
        let m = self.momentum;
        let unbias = if n > 1 {
            n as f64 / (n - 1) as f64
        } else {
            1.0
        };
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (var.detach() * (m * unbias))?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        let nb = (self.num_batches_tracked.as_tensor() + 1.0)?;
        self.num_batches_tracked.set(&nb)
    }

    /// Evaluation-mode BatchNorm as `x·scale + shift` per channel (host values).
    pub fn eval_affine(&self) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let w = self.weight.to_vec1::<f32>()?;
        let b = self.bias.to_vec1::<f32>()?;
        let rm = self.running_mean.as_tensor().to_vec1::<f32>()?;
        let rv = self.running_var.as_tensor().to_vec1::<f32>()?;
        let scale: Vec<f32> = w
            .iter()
            .zip(&rv)
            .map(|(w, v)| w / (v + self.eps as f32).sqrt())
            .collect();
        let shift = b
            .iter()
            .zip(&rm)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Ok((scale, shift))
    }

    /// BatchNorm from candle ops: the reference, and the path on other devices.
    pub fn forward_composed(&self, x: &Tensor, mode: &Mode) -> candle_core::Result<Tensor> {
        if mode.is_train() {
            let mean = x.mean(0)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean(0)?;
            let xhat = xc.broadcast_div(&(&var + self.eps)?.sqrt()?)?;
            self.update_running(&mean, &var, x.dim(0)?)?;
            xhat.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
        } else {
            let scale = self
                .weight
                .div(&(self.running_var.as_tensor() + self.eps)?.sqrt()?)?;
            let shift = (&self.bias - self.running_mean.as_tensor().mul(&scale)?)?;
            x.broadcast_mul(&scale)?.broadcast_add(&shift)
        }
    }
}

/// Training-mode BatchNorm as one op: `(x [N, C], γ [C], β [C]) → y = mask ⊙ act(γ·x̂ + β)`,
/// `x̂ = (x − μ)/√(σ² + eps)` with the batch's mean and biased variance, `act` ReLU or the
/// identity. The batch statistics are handed back through `stats` (mean ‖ var).
struct BatchNormOp {
    eps: f32,
    relu: bool,
    mask: Option<Vec<f32>>,
    stats: std::sync::Arc<std::sync::Mutex<Vec<f32>>>,
}

/// Column means and biased variances of `x [n, c]`, accumulated in f64.
fn column_stats(x: &[f32], n: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
    let mut sum = vec![0f64; c];
    for row in x.chunks_exact(c) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n.max(1) as f64).collect();
    let mut sq = vec![0f64; c];
    for row in x.chunks_exact(c) {
        for ((s, &v), m) in sq.iter_mut().zip(row).zip(&mean) {
            let d = v as f64 - m;
            *s += d * d;
        }
    }
    (
        mean.iter().map(|&m| m as f32).collect(),
        sq.iter().map(|s| (s / n.max(1) as f64) as f32).collect(),
    )
}

fn f32_slice<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("batch norm: inputs must be contiguous"),
    }
}

impl candle_core::CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (x, w, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let (n, c) = l1.shape().dims2()?;
        let (mean, var) = column_stats(x, n, c);
        let scale: Vec<f32> = var
            .iter()
            .zip(w)
            .map(|(v, w)| w / (v + self.eps).sqrt())
            .collect();
        let shift: Vec<f32> = b
            .iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        let mut y = Vec::with_capacity(n * c);
        for (i, row) in x.chunks_exact(c).enumerate() {
            let start = y.len();
            y.extend(
                row.iter()
                    .zip(&scale)
                    .zip(&shift)
                    .map(|((v, s), t)| v * s + t),
            );
            let out = &mut y[start..];
            if self.relu {
                for v in out.iter_mut() {
                    *v = v.max(0.0);
                }
            }
            if let Some(m) = &self.mask {
                for (v, m) in out.iter_mut().zip(&m[i * c..(i + 1) * c]) {
                    *v *= m;
                }
            }
        }
        let mut st = self.stats.lock().expect("stats lock");
        st.clear();
        st.extend_from_slice(&mean);
        st.extend_from_slice(&var);
        Ok((candle_core::CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c) = x.dims2()?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let yv = res.flatten_all()?.to_vec1::<f32>()?;
        let gv = grad.flatten_all()?.to_vec1::<f32>()?;
        let wv = w.to_vec1::<f32>()?;
        let (mean, var) = column_stats(&xv, n, c);
        let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        // Gradient at the pre-activation.
        let gpre: Vec<f32> = (0..n * c)
            .map(|k| {
                let m = self.mask.as_ref().map_or(1.0, |m| m[k]);
                if m == 0.0 || (self.relu && yv[k] <= 0.0) {
                    0.0
                } else {
                    gv[k] * m
                }
            })
            .collect();
        let mut db = vec![0f32; c];
        let mut dw = vec![0f32; c];
        for (xr, gr) in xv.chunks_exact(c).zip(gpre.chunks_exact(c)) {
            for j in 0..c {
                let xh = (xr[j] - mean[j]) * inv[j];
                db[j] += gr[j];
                dw[j] += gr[j] * xh;
            }
        }
        let nf = n as f32;
        let mut dx = Vec::with_capacity(n * c);
        for (xr, gr) in xv.chunks_exact(c).zip(gpre.chunks_exact(c)) {
            for j in 0..c {
                let xh = (xr[j] - mean[j]) * inv[j];
                dx.push(wv[j] * inv[j] * (gr[j] - db[j] / nf - xh * dw[j] / nf));
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, c), dev)?),
            Some(Tensor::from_vec(dw, c, dev)?),
            Some(Tensor::from_vec(db, c, dev)?),
        ))
    }
}

/// `nn.LayerNorm(dim)`, eps 1e-5, over the last dimension.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(LayerNorm {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            eps: 1e-5,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Inverted dropout with the run's own generator (candle's cannot be seeded).
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    pub p: f32,
}

impl Dropout {
    pub fn new(p: f32) -> Self {
        Dropout { p }
    }

    pub fn forward(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let Mode::Train(rng) = mode else {
            return Ok(x.clone());
        };
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let mask = dropout_mask(x.elem_count(), self.p, rng);
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

/// An inverted-dropout mask of `n` values: 0 with probability `p` (to 1/65536), else
/// `1/(1−p)`, from 16 random bits per value.
pub fn dropout_mask(n: usize, p: f32, rng: &mut Rng) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p);
    let cut = (p as f64 * 65536.0).round() as u16;
    let mut bytes = vec![0u8; 2 * n];
    rng.fill_bytes(&mut bytes);
    bytes
        .chunks_exact(2)
        .map(|b| {
            if u16::from_le_bytes([b[0], b[1]]) < cut {
                0.0
            } else {
                keep
            }
        })
        .collect()
}

/// Per-graph mean of node rows: `x [N, d]` → `[B, d]`, `graph` the node → graph index (u32),
/// `inv_counts [B, 1]` the reciprocal node counts.
pub fn mean_pool(
    x: &Tensor,
    graph: &Tensor,
    inv_counts: &Tensor,
    num_graphs: usize,
) -> candle_core::Result<Tensor> {
    let d = x.dim(1)?;
    Tensor::zeros((num_graphs, d), DType::F32, x.device())?
        .index_add(graph, x, 0)?
        .broadcast_mul(inv_counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::init::ParamStore;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn batchnorm_train_and_eval() {
        let ps = ParamStore::new(0, &Device::Cpu);
        let bn = BatchNorm::new(2, ps.var_builder()).unwrap();
        let x = Tensor::new(&[[1f32, 10.], [3., 30.]], &Device::Cpu).unwrap();
        let mut rng = Rng::seed_from_u64(0);
        let y = bn
            .forward(&x, &Mode::Train(&mut rng))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((y[0][0] + 1.0).abs() < 1e-3 && (y[1][1] - 1.0).abs() < 1e-3);
        let rm = bn.running_mean.as_tensor().to_vec1::<f32>().unwrap();
        let rv = bn.running_var.as_tensor().to_vec1::<f32>().unwrap();
        // 0.9·0 + 0.1·mean; 0.9·1 + 0.1·unbiased var (2 and 200).
        assert!((rm[0] - 0.2).abs() < 1e-6 && (rm[1] - 2.0).abs() < 1e-5);
        assert!((rv[0] - 1.1).abs() < 1e-6 && (rv[1] - 20.9).abs() < 1e-4);
        let e = bn
            .forward(&x, &Mode::Eval)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((e[0][0] - (1.0 - 0.2) / (1.1f32 + 1e-5).sqrt()).abs() < 1e-5);
        assert_eq!(
            bn.num_batches_tracked
                .as_tensor()
                .to_scalar::<f32>()
                .unwrap(),
            1.0
        );
    }

    #[test]
    fn fused_batchnorm_matches_composed() {
        let dev = &Device::Cpu;
        let mut r = Rng::seed_from_u64(3);
        let vals: Vec<f32> = (0..7 * 5)
            .map(|_| crate::train::model::init::normal(&mut r) as f32)
            .collect();
        let x = Var::from_vec(vals, (7, 5), dev).unwrap();
        let rt: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let rt = Tensor::from_vec(rt, (7, 5), dev).unwrap();
        let d = Dropout::new(0.25);
        let run = |fused: bool| {
            let ps = ParamStore::new(0, dev);
            let bn = BatchNorm::new(5, ps.var_builder()).unwrap();
            let w: Vec<f32> = (0..5).map(|i| 0.5 + i as f32 * 0.3).collect();
            ps.get("weight")
                .unwrap()
                .set(&Tensor::from_vec(w, 5, dev).unwrap())
                .unwrap();
            ps.get("bias")
                .unwrap()
                .set(&Tensor::new(&[0.1f32, -0.2, 0.0, 0.3, 0.05], dev).unwrap())
                .unwrap();
            let mut rr = Rng::seed_from_u64(9);
            let mut mode = Mode::Train(&mut rr);
            let y = if fused {
                bn.forward_relu_dropout(x.as_tensor(), &d, &mut mode)
                    .unwrap()
            } else {
                let y = bn
                    .forward_composed(x.as_tensor(), &mode)
                    .unwrap()
                    .relu()
                    .unwrap();
                d.forward(&y, &mut mode).unwrap()
            };
            let g = (&y * &rt).unwrap().sum_all().unwrap().backward().unwrap();
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (
                v(&y),
                v(g.get(x.as_tensor()).unwrap()),
                v(g.get(&bn.weight).unwrap()),
                v(g.get(&bn.bias).unwrap()),
                v(bn.running_var.as_tensor()),
            )
        };
        let (a, b) = (run(true), run(false));
        for (p, q) in [
            (&a.0, &b.0),
            (&a.1, &b.1),
            (&a.2, &b.2),
            (&a.3, &b.3),
            (&a.4, &b.4),
        ] {
            for (u, v) in p.iter().zip(q.iter()) {
                assert!((u - v).abs() < 1e-4, "{u} vs {v}");
            }
        }
    }

    #[test]
    fn layernorm_has_gradients() {
        let ps = ParamStore::new(0, &Device::Cpu);
        let ln = LayerNorm::new(3, ps.var_builder()).unwrap();
        let x = Var::new(&[[1f32, 2., 4.]], &Device::Cpu).unwrap();
        let y = ln.forward(x.as_tensor()).unwrap();
        let w = Tensor::new(&[[1f32, 0., 0.]], &Device::Cpu).unwrap();
        let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(x.as_tensor()).is_some());
        assert!(g.get(&ln.weight).is_some());
    }

    #[test]
    fn dropout_is_seeded_and_inverted() {
        let x = Tensor::ones((100, 10), DType::F32, &Device::Cpu).unwrap();
        let d = Dropout::new(0.5);
        let run = |s| {
            let mut r = Rng::seed_from_u64(s);
            d.forward(&x, &mut Mode::Train(&mut r))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let mean: f32 = run(1).iter().sum::<f32>() / 1000.0;
        assert!((mean - 1.0).abs() < 0.1);
        let e = d.forward(&x, &mut Mode::Eval).unwrap();
        assert_eq!(e.sum_all().unwrap().to_scalar::<f32>().unwrap(), 1000.0);
    }
}
