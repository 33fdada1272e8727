//! Computes each built-in stage kind's code identity when kdbuild is compiled: a blake3 digest
//! of the source files that kind runs, plus the locked versions of the crates they use (from
//! Cargo.lock). The result is `$OUT_DIR/code_identity.rs`, included by `stage::code`.
//!
//! Editing one trainer changes only its kind's digest, so only that stage's derivations (and
//! their dependents) rebuild.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// kind → (source files or directories, crates whose locked versions count).
/// A directory means every `.rs` file below it. Keep these lists tight: a file listed for a
/// kind invalidates that kind's results whenever it changes.
const CODE_GROUPS: &[(&str, &[&str], &[&str])] = &[
    (
        "kdgat.preprocess",
        &["src/train/data", "src/stage/kdgat/preprocess.rs"],
        // blake3 keys the split seeds; serde_json writes manifest.json and vocab.json.
        &[
            "csv",
            "zip",
            "safetensors",
            "rand",
            "rand_chacha",
            "blake3",
            "serde_json",
        ],
    ),
    // The model kinds: the shared model core (MODEL_CORE, spelled out in each list), then
    // each kind's own model, trainer and engine adapter. Editing `train_gat.rs` rebuilds the
    // GATs and what depends on them, never a VGAE; editing `eval.rs` rebuilds evaluations only.
    (
        "kdgat.vgae",
        &[
            "src/train/model/mod.rs",
            "src/train/model/init.rs",
            "src/train/model/layers.rs",
            "src/train/model/batch.rs",
            "src/train/model/gatconv.rs",
            "src/train/model/checkpoint.rs",
            "src/train/model/config.rs",
            "src/train/model/optim.rs",
            "src/train/model/progress.rs",
            "src/train/model/metrics.rs",
            "src/train/data/graphs.rs",
            "src/stage/kdgat/mod.rs",
            "src/stage/kdgat/common.rs",
            "src/train/model/vgae.rs",
            "src/train/model/kd.rs",
            "src/train/model/train_vgae.rs",
            "src/stage/kdgat/vgae.rs",
        ],
        MODEL_CRATES,
    ),
    (
        "kdgat.gat",
        &[
            "src/train/model/mod.rs",
            "src/train/model/init.rs",
            "src/train/model/layers.rs",
            "src/train/model/batch.rs",
            "src/train/model/gatconv.rs",
            "src/train/model/checkpoint.rs",
            "src/train/model/config.rs",
            "src/train/model/optim.rs",
            "src/train/model/progress.rs",
            "src/train/model/metrics.rs",
            "src/train/data/graphs.rs",
            "src/stage/kdgat/mod.rs",
            "src/stage/kdgat/common.rs",
            "src/train/model/vgae.rs",
            "src/train/model/gat.rs",
            "src/train/model/kd.rs",
            "src/train/model/curriculum.rs",
            "src/train/model/train_gat.rs",
            "src/stage/kdgat/gat.rs",
        ],
        MODEL_CRATES,
    ),
    (
        "kdgat.dqn",
        &[
            "src/train/model/mod.rs",
            "src/train/model/init.rs",
            "src/train/model/layers.rs",
            "src/train/model/batch.rs",
            "src/train/model/gatconv.rs",
            "src/train/model/checkpoint.rs",
            "src/train/model/config.rs",
            "src/train/model/optim.rs",
            "src/train/model/progress.rs",
            "src/train/model/metrics.rs",
            "src/train/data/graphs.rs",
            "src/stage/kdgat/mod.rs",
            "src/stage/kdgat/common.rs",
            "src/train/model/vgae.rs",
            "src/train/model/gat.rs",
            "src/train/model/fusion.rs",
            "src/train/model/train_fusion.rs",
            "src/stage/kdgat/dqn.rs",
        ],
        MODEL_CRATES,
    ),
    (
        "kdgat.eval",
        &[
            "src/train/model/mod.rs",
            "src/train/model/init.rs",
            "src/train/model/layers.rs",
            "src/train/model/batch.rs",
            "src/train/model/gatconv.rs",
            "src/train/model/checkpoint.rs",
            "src/train/model/config.rs",
            "src/train/model/optim.rs",
            "src/train/model/progress.rs",
            "src/train/model/metrics.rs",
            "src/train/data/graphs.rs",
            "src/stage/kdgat/mod.rs",
            "src/stage/kdgat/common.rs",
            "src/train/model/vgae.rs",
            "src/train/model/gat.rs",
            "src/train/model/fusion.rs",
            "src/train/model/infer/mod.rs",
            "src/train/model/infer/conv.rs",
            "src/train/model/infer/kernels.rs",
            "src/train/model/infer/nets.rs",
            "src/train/model/eval.rs",
            "src/stage/kdgat/eval.rs",
        ],
        MODEL_CRATES,
    ),
];

/// The crates the model kinds run.
const MODEL_CRATES: &[&str] = &[
    "candle-core",
    "candle-nn",
    "safetensors",
    "rand",
    "rand_chacha",
    "serde_json",
];

fn rs_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            rs_files(&e, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// `name → versions` from Cargo.lock, without a TOML parser (build scripts stay dependency-free).
fn locked_versions(lock: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut name: Option<String> = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("version = ")
            && let Some(n) = name.take()
        {
            out.entry(n)
                .or_default()
                .push(v.trim_matches('"').to_string());
        }
    }
    out
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let lock = fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    println!("cargo:rerun-if-changed=Cargo.lock");
    let versions = locked_versions(&lock);

    let mut code = String::from(
        "/// (kind, blake3 hex of its sources, [(crate, locked version)]), generated by build.rs.\n\
         pub const CODE_IDENTITIES: &[CodeGroup] = &[\n",
    );
    for (kind, paths, crates) in CODE_GROUPS {
        let mut files = Vec::new();
        for p in *paths {
            let full = root.join(p);
            println!("cargo:rerun-if-changed={}", full.display());
            rs_files(&full, &mut files);
        }
        let mut hasher = blake3::Hasher::new();
        for f in &files {
            let rel = f
                .strip_prefix(&root)
                .unwrap_or(f)
                .to_string_lossy()
                .replace('\\', "/");
            let bytes = fs::read(f).unwrap_or_default();
            hasher.update(rel.as_bytes());
            hasher.update(&[0]);
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
        let digest = hasher.finalize().to_hex();
        code.push_str(&format!("    ({kind:?}, {:?}, &[", digest.as_str()));
        for c in *crates {
            let v = versions
                .get(*c)
                .map(|v| v.join("+"))
                .unwrap_or_else(|| "unlocked".into());
            code.push_str(&format!("({c:?}, {v:?}), "));
        }
        code.push_str("]),\n");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("code_identity.rs");
    fs::write(out, code).unwrap();
}
