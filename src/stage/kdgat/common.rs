//! What the KD-GAT stage adapters share: reading a preprocess output into [`Splits`], the
//! `manifest.json` facts for evaluation reports, provenance, input checks and error mapping.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::stage::{BuildContext, StageError};
use crate::train::data::graphs::GraphSet;
use crate::train::model::TrainError;
use crate::train::model::batch::Splits;
use crate::train::model::config::{Common, DeviceClass};

pub(super) fn fail(e: TrainError) -> StageError {
    match e {
        TrainError::Config(m) => StageError::Config(m),
        TrainError::Io { path, source } => StageError::Io { path, source },
        e => StageError::Failed(e.to_string()),
    }
}

/// Checks input names: `required` must be there, nothing outside `required ∪ optional`.
pub(super) fn check_inputs(
    inputs: &[&str],
    required: &[&str],
    optional: &[&str],
) -> Result<(), String> {
    for r in required {
        if !inputs.contains(r) {
            return Err(format!("needs an input `{r}`"));
        }
    }
    for i in inputs {
        if !required.contains(i) && !optional.contains(i) {
            let known: Vec<&str> = required.iter().chain(optional).copied().collect();
            return Err(format!(
                "has an unknown input `{i}`; the nearest known input is `{}`",
                crate::train::model::config::nearest(i, &known)
            ));
        }
    }
    Ok(())
}

pub(super) fn check_teacher(kd: bool, inputs: &[&str]) -> Result<(), String> {
    match (kd, inputs.contains(&"teacher")) {
        (true, false) => Err("has `kd = true` but no input `teacher`".into()),
        (false, true) => Err("has an input `teacher` but `kd` is not true".into()),
        _ => Ok(()),
    }
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a preprocess output: every split, the vocabulary size and hash.
pub fn load_splits(data: &Path) -> Result<Splits, StageError> {
    let graphs = data.join("graphs");
    let vocab_path = data.join("vocab.json");
    let vocab_bytes = std::fs::read(&vocab_path).map_err(io(&vocab_path))?;
    let vocab: Value = serde_json::from_slice(&vocab_bytes)
        .map_err(|e| StageError::Failed(format!("`{}`: {e}", vocab_path.display())))?;
    let unk = vocab["unk"].as_u64().ok_or_else(|| {
        StageError::Failed(format!("`{}` has no integer `unk`", vocab_path.display()))
    })?;
    let load = |name: &str| -> Result<GraphSet, StageError> {
        GraphSet::load(&graphs.join(format!("{name}.safetensors")))
            .map_err(|e| StageError::Failed(e.to_string()))
    };
    let mut tests = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&graphs)
        .map_err(io(&graphs))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    names.sort();
    for p in names {
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if stem != "train" && stem != "val" {
            tests.push((stem.clone(), load(&stem)?));
        }
    }
    Ok(Splits {
        train: load("train")?,
        val: load("val")?,
        tests,
        num_ids: unk as usize + 1,
        vocab_sha256: blake3::hash(&vocab_bytes).to_hex().to_string(),
    })
}

/// Unhashed facts about this build, for `config.json`.
pub(super) fn provenance(ctx: &BuildContext, common: &Common) -> Value {
    let inputs: Map<String, Value> = ctx
        .inputs
        .iter()
        .map(|(k, p)| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            (k.clone(), json!(name))
        })
        .collect();
    json!({
        "drv_hash": ctx.drv_hash.to_string(),
        "target": ctx.drv.name,
        "kdbuild_version": env!("CARGO_PKG_VERSION"),
        "device": match common.device {
            DeviceClass::Cpu => "cpu",
            DeviceClass::Cuda => "cuda",
        },
        "gpu": gpu_model(common),
        "threads": candle_core::utils::get_num_threads(),
        "inputs": inputs,
    })
}

/// The GPU model (provenance only), from `nvidia-smi` when running on CUDA.
fn gpu_model(common: &Common) -> Value {
    if common.device != DeviceClass::Cuda {
        return Value::Null;
    }
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            json!(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
            )
        })
        .unwrap_or(Value::Null)
}

pub(super) fn copy_vocab(ctx: &BuildContext) -> Result<(), StageError> {
    let from = ctx.input("data")?.join("vocab.json");
    let to = ctx.out.join("vocab.json");
    std::fs::copy(&from, &to).map_err(io(&from))?;
    Ok(())
}

pub(super) fn model_file(ctx: &BuildContext, input: &str) -> Result<PathBuf, StageError> {
    Ok(ctx.input(input)?.join("model.safetensors"))
}

/// Refuses a teacher whose checkpoint was trained on another vocabulary (spec §5.5: the
/// student uses the teacher's vocabulary; same `num_ids` alone would not catch a different
/// ID order).
pub(super) fn check_teacher_vocab(model: &Path, data: &Splits) -> Result<(), StageError> {
    let meta = crate::train::model::checkpoint::read_metadata(model).map_err(fail)?;
    match meta.get("kdgat.vocab_sha256") {
        Some(v) if *v != data.vocab_sha256 => Err(StageError::Failed(format!(
            "the teacher `{}` was trained on another vocabulary (hash {v}, the data's {})",
            model.display(),
            data.vocab_sha256
        ))),
        _ => Ok(()),
    }
}
