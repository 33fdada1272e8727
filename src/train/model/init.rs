//! Seeded parameters: every random number of a run derives from the run's `seed`.
//!
//! candle's CPU random generator cannot be seeded (NOTES), so weights are drawn here from
//! `rand_chacha` and turned into tensors. Each tensor gets its own generator, seeded by
//! `hash(seed, "init", tensor name)`: adding a layer never shifts the initial values of the
//! others, and the order in which a model asks for its tensors does not matter.
//!
//! [`ParamStore`] is the candle [`SimpleBackend`] behind every model's [`VarBuilder`]: it creates
//! a [`Var`] on first request (the candle way, `vb.pp("convs").pp(0)` giving the stable name
//! `convs.0.lin.weight`), hands out the same variable on later requests, and knows which names
//! are buffers (BatchNorm running statistics) rather than trainable parameters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{Rng as _, RngCore, SeedableRng};

/// The random generator of every seeded purpose (init, dropout, UNK replacement, sampling).
pub type Rng = rand_chacha::ChaCha8Rng;

/// The sub-seed of one purpose (`split`, `init`, `dropout`, `unk`, `curriculum`, `dqn`, …):
/// `hash(seed, purpose)`, so adding a purpose or a stage never shifts the others (spec §5.1).
pub fn sub_seed(seed: u64, purpose: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"kdgat.seed.v1\0");
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A generator for one purpose of one run.
pub fn rng(seed: u64, purpose: &str) -> Rng {
    Rng::seed_from_u64(sub_seed(seed, purpose))
}

/// A standard normal draw (Box–Muller; `rand_distr` is not a dependency).
pub fn normal(rng: &mut impl RngCore) -> f64 {
    loop {
        let u1: f64 = rng.random();
        let u2: f64 = rng.random();
        if u1 > f64::MIN_POSITIVE {
            return (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        }
    }
}

/// Whether a tensor name is a buffer (saved, never trained): BatchNorm running statistics.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

/// Glorot-uniform bound for a `[.., fan_a, fan_b]` tensor, as PyG's `glorot` computes it from
/// the last two dimensions.
pub fn glorot(fan_a: usize, fan_b: usize) -> Init {
    let a = (6.0 / (fan_a + fan_b) as f64).sqrt();
    Init::Uniform { lo: -a, up: a }
}

/// PyTorch's default `nn.Linear` initialisation: `U(−1/√fan_in, 1/√fan_in)` for the weight
/// (kaiming-uniform with `a = √5`) and for the bias.
pub fn torch_linear(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// The variables of one model (or one trainer's auxiliary layers), created with seeded values.
#[derive(Clone)]
pub struct ParamStore {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    seed: u64,
    device: Device,
}

/// Deep copies of every variable's value: the "best checkpoint" of spec §5.1.
pub type Snapshot = BTreeMap<String, Tensor>;

impl ParamStore {
    /// An empty store whose variables will be drawn from `seed`.
    pub fn new(seed: u64, device: &Device) -> Self {
        ParamStore {
            vars: Arc::new(Mutex::new(BTreeMap::new())),
            seed,
            device: device.clone(),
        }
    }

    /// A [`VarBuilder`] over this store, for `Model::new(cfg, vb)`.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, self.device.clone())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every variable, sorted by name.
    pub fn all(&self) -> Vec<(String, Var)> {
        let m = self.vars.lock().expect("param store lock");
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The trainable variables (buffers left out), sorted by name.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.all()
            .into_iter()
            .filter(|(k, _)| !is_buffer(k))
            .collect()
    }

    /// The number of trainable parameters (spec §4.5 counts).
    pub fn num_params(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<Var> {
        self.vars
            .lock()
            .expect("param store lock")
            .get(name)
            .cloned()
    }

    /// Deep copies of all values (parameters and buffers).
    pub fn snapshot(&self) -> candle_core::Result<Snapshot> {
        self.all()
            .into_iter()
            .map(|(k, v)| Ok((k, v.as_tensor().copy()?.detach())))
            .collect()
    }

    /// Writes a snapshot back into the variables.
    pub fn restore(&self, snap: &Snapshot) -> candle_core::Result<()> {
        for (k, v) in self.all() {
            match snap.get(&k) {
                Some(t) => v.set(t)?,
                None => candle_core::bail!("snapshot lacks tensor `{k}`"),
            }
        }
        Ok(())
    }
}

/// Early stopping on a validation key: the best epoch's key and parameters, and how many
/// counted epochs have passed without improving on it. Shared by the VGAE and GAT trainers.
pub struct BestEpoch<K> {
    best: Option<(K, usize, Snapshot)>,
    bad: usize,
}

impl<K: Copy> BestEpoch<K> {
    pub fn new() -> Self {
        BestEpoch { best: None, bad: 0 }
    }

    /// Records epoch `epoch` with `key`: if it beats the best so far by `better(key, best)` (the
    /// first epoch always does) the parameters are snapshotted and the count reset, otherwise
    /// the epoch counts against the patience when `counts`. Returns whether it improved.
    pub fn record(
        &mut self,
        key: K,
        epoch: usize,
        better: impl Fn(K, K) -> bool,
        counts: bool,
        store: &ParamStore,
    ) -> candle_core::Result<bool> {
        let improved = self.best.as_ref().is_none_or(|(b, _, _)| better(key, *b));
        if improved {
            self.best = Some((key, epoch, store.snapshot()?));
            self.bad = 0;
        } else if counts {
            self.bad += 1;
        }
        Ok(improved)
    }

    /// Whether `patience` counted epochs have passed without improvement and epochs remain
    /// after `epoch` (of `epochs`).
    pub fn stop(&self, patience: usize, epoch: usize, epochs: usize) -> bool {
        self.bad >= patience.max(1) && epoch + 1 < epochs
    }

    /// Restores the best epoch's parameters into `store`: `(key, epoch)`; `None` when no epoch
    /// ran.
    pub fn restore(self, store: &ParamStore) -> candle_core::Result<Option<(K, usize)>> {
        match self.best {
            Some((key, epoch, snap)) => {
                store.restore(&snap)?;
                Ok(Some((key, epoch)))
            }
            None => Ok(None),
        }
    }
}

impl<K: Copy> Default for BestEpoch<K> {
    fn default() -> Self {
        Self::new()
    }
}

fn sample(init: Init, n: usize, rng: &mut Rng) -> candle_core::Result<Vec<f32>> {
    Ok(match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } => (0..n)
            .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
            .collect(),
        Init::Randn { mean, stdev } => (0..n)
            .map(|_| (mean + stdev * normal(rng)) as f32)
            .collect(),
        Init::Kaiming { .. } => {
            candle_core::bail!("Kaiming init hints are not supported; pass explicit bounds")
        }
    })
}

impl SimpleBackend for ParamStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut m = self.vars.lock().expect("param store lock");
        if let Some(v) = m.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "tensor `{name}` exists with shape {:?}, asked for {:?}",
                    v.shape(),
                    s
                );
            }
            return Ok(v.as_tensor().clone());
        }
        let mut r = rng(self.seed, &format!("init:{name}"));
        let values = sample(h, s.elem_count(), &mut r)?;
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        m.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let m = self.vars.lock().expect("param store lock");
        m.get(name).map(|v| v.as_tensor().clone()).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
        })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars
            .lock()
            .expect("param store lock")
            .contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_depends_on_seed_and_name_not_order() {
        let a = ParamStore::new(1, &Device::Cpu);
        let b = ParamStore::new(1, &Device::Cpu);
        let c = ParamStore::new(2, &Device::Cpu);
        let va = a.var_builder();
        let vb = b.var_builder();
        let vc = c.var_builder();
        let i = Init::Uniform { lo: -1.0, up: 1.0 };
        let x1 = va.get_with_hints(4, "x", i).unwrap();
        let _ = vb.get_with_hints(3, "y", i).unwrap();
        let x2 = vb.get_with_hints(4, "x", i).unwrap();
        let x3 = vc.get_with_hints(4, "x", i).unwrap();
        let v = |t: &Tensor| t.to_vec1::<f32>().unwrap();
        assert_eq!(v(&x1), v(&x2));
        assert_ne!(v(&x1), v(&x3));
        assert_ne!(sub_seed(42, "dropout"), sub_seed(42, "unk"));
    }

    #[test]
    fn snapshot_is_a_deep_copy() {
        let s = ParamStore::new(0, &Device::Cpu);
        let t = s
            .var_builder()
            .get_with_hints(2, "w", Init::Const(1.0))
            .unwrap();
        let snap = s.snapshot().unwrap();
        s.get("w")
            .unwrap()
            .set(&Tensor::new(&[5f32, 5.], &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![5., 5.]);
        s.restore(&snap).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![1., 1.]);
    }
}
