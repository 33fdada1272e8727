//! Checkpoints: `model.safetensors` with PyTorch/PyG names and layouts, metadata per spec §6.5
//! (architecture JSON, `num_ids`, vocabulary hash, best epoch, criterion), so a teacher can be
//! rebuilt without guessing (pitfall 29).
//!
//! The file is written here rather than by the `safetensors` crate, whose metadata map is a
//! `HashMap` serialised in iteration order: with names and metadata sorted, the same weights
//! always give the same bytes (and the same store content hash). BatchNorm's
//! `num_batches_tracked` is written as a 0-dim `I64`, as PyTorch keeps it, so
//! `model.load_state_dict(safetensors.torch.load_file(...))` works strictly.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::{Map, Value, json};

use super::TrainError;
use super::init::ParamStore;

/// Metadata key prefix for kdgat's own entries.
pub const META_PREFIX: &str = "kdgat.";

/// Writes the variables of `store` whose names pass `keep` to `path`, with `metadata`.
pub fn save(
    path: &Path,
    store: &ParamStore,
    keep: impl Fn(&str) -> bool,
    metadata: &BTreeMap<String, String>,
) -> Result<(), TrainError> {
    let mut tensors: Vec<(String, &'static str, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, var) in store.all() {
        if !keep(&name) {
            continue;
        }
        let t = var.as_tensor();
        if name.ends_with(".num_batches_tracked") {
            let v = t.to_dtype(DType::F32)?.to_scalar::<f32>()? as i64;
            tensors.push((name, "I64", vec![], v.to_le_bytes().to_vec()));
        } else {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.push((name, "F32", t.dims().to_vec(), bytes));
        }
    }
    write_safetensors(path, &tensors, metadata)
}

/// Serialises tensors (sorted by name) and sorted metadata in the safetensors format.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, &'static str, Vec<usize>, Vec<u8>)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), TrainError> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| tensors[a].0.cmp(&tensors[b].0));
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for &i in &order {
        let (name, dtype, shape, bytes) = &tensors[i];
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).expect("json serialises");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + offset);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for &i in &order {
        out.extend_from_slice(&tensors[i].3);
    }
    std::fs::write(path, out).map_err(TrainError::io(path))
}

/// The metadata of a safetensors file.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, TrainError> {
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// Fills the variables of `store` (the model must be built first) from `path`. Every variable
/// must be present with its shape; extra tensors in the file are an error too, so a wrong
/// architecture cannot load silently. Returns the metadata.
pub fn load(path: &Path, store: &ParamStore) -> Result<BTreeMap<String, String>, TrainError> {
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    let err = |m: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: m,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let vars = store.all();
    let known: std::collections::BTreeSet<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    if let Some(extra) = st.names().into_iter().find(|n| !known.contains(n)) {
        return Err(err(format!(
            "holds tensor `{extra}`, which the model does not have"
        )));
    }
    for (name, var) in &vars {
        let view = st
            .tensor(name)
            .map_err(|_| err(format!("lacks tensor `{name}`")))?;
        let t = match view.dtype() {
            Dtype::F32 => {
                let v: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Tensor::from_vec(v, view.shape(), store.device())?
            }
            Dtype::I64 => {
                let v: Vec<f32> = view
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect();
                Tensor::from_vec(v, view.shape(), store.device())?
            }
            d => return Err(err(format!("tensor `{name}` has dtype {d:?}"))),
        };
        if t.dims() != var.dims() {
            return Err(err(format!(
                "tensor `{name}` has shape {:?}, the model expects {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t)?;
    }
    read_metadata(path)
}

/// The standard metadata of a model file.
pub struct ModelMeta<'a> {
    /// `vgae`, `gat`, `qnet`, `mlp` or `fixed`.
    pub kind: &'a str,
    pub size: &'a str,
    pub architecture: Value,
    pub num_ids: usize,
    pub vocab_sha256: &'a str,
    pub best_epoch: Option<usize>,
    pub criterion_name: &'a str,
    pub criterion: Option<f64>,
}

impl ModelMeta<'_> {
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let p = |k: &str| format!("{META_PREFIX}{k}");
        let mut m = BTreeMap::new();
        m.insert("format".into(), "pt".into());
        m.insert(p("schema"), "kdgat.model.v1".into());
        m.insert(p("kind"), self.kind.into());
        m.insert(p("size"), self.size.into());
        m.insert(p("architecture"), self.architecture.to_string());
        m.insert(p("num_ids"), self.num_ids.to_string());
        m.insert(p("vocab_sha256"), self.vocab_sha256.into());
        m.insert(
            p("best_epoch"),
            self.best_epoch.map(|e| e.to_string()).unwrap_or_default(),
        );
        m.insert(p("criterion_name"), self.criterion_name.into());
        m.insert(
            p("criterion"),
            self.criterion.map(|c| format!("{c:?}")).unwrap_or_default(),
        );
        m
    }
}

/// A metadata value, or a checkpoint error naming the key.
pub fn meta_get<'m>(
    meta: &'m BTreeMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<&'m str, TrainError> {
    meta.get(&format!("{META_PREFIX}{key}"))
        .map(String::as_str)
        .ok_or_else(|| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("metadata lacks `{META_PREFIX}{key}`"),
        })
}

/// The architecture JSON of a checkpoint, deserialised.
pub fn architecture<T: serde::de::DeserializeOwned>(
    meta: &BTreeMap<String, String>,
    path: &Path,
) -> Result<T, TrainError> {
    let a = meta_get(meta, "architecture", path)?;
    serde_json::from_str(a).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("architecture: {e}"),
    })
}

/// The model kind of a checkpoint, which must be one of `want`.
pub fn expect_kind(
    meta: &BTreeMap<String, String>,
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

/// Writes `value` as pretty JSON with a trailing newline.
pub fn write_json(path: &Path, value: &Value) -> Result<(), TrainError> {
    let mut s = serde_json::to_string_pretty(value).expect("json serialises");
    s.push('\n');
    std::fs::write(path, s).map_err(TrainError::io(path))
}

/// Writes a text file.
pub fn write_text(path: &Path, text: &str) -> Result<(), TrainError> {
    std::fs::write(path, text).map_err(TrainError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::config::Size;
    use crate::train::model::gat::{Gat, GatConfig};
    use candle_core::Device;

    #[test]
    fn round_trip_is_byte_stable_and_strict() {
        let d = tempfile::tempdir().unwrap();
        let cfg = GatConfig::for_size(Size::Small, 7);
        let a = ParamStore::new(1, &Device::Cpu);
        Gat::new(&cfg, a.var_builder()).unwrap();
        let meta: BTreeMap<String, String> =
            [("b".to_string(), "2".to_string()), ("a".into(), "1".into())].into();
        let p1 = d.path().join("1.safetensors");
        let p2 = d.path().join("2.safetensors");
        save(&p1, &a, |_| true, &meta).unwrap();
        save(&p2, &a, |_| true, &meta).unwrap();
        assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
        let b = ParamStore::new(2, &Device::Cpu);
        Gat::new(&cfg, b.var_builder()).unwrap();
        let m = load(&p1, &b).unwrap();
        assert_eq!(m, meta);
        for ((_, x), (_, y)) in a.all().iter().zip(b.all().iter()) {
            let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(x, y);
        }
        // A different architecture does not load.
        let c = ParamStore::new(2, &Device::Cpu);
        Gat::new(&GatConfig::for_size(Size::Small, 8), c.var_builder()).unwrap();
        assert!(load(&p1, &c).is_err());
    }
}
