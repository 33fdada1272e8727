//! The build side: what `kdbuild build <drv>` does in its staging directory, on this machine
//! or on a SLURM node.
//!
//! It reads the derivation from the store (never the database: only the realizer writes
//! that), resolves its inputs to paths, runs the stage kind, and writes a [`BuildResult`] as
//! its very last act. A build that is killed therefore leaves no result record, and the
//! realizer registers nothing for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::derivation::{Derivation, Input};
use crate::hash::DrvHash;
use crate::stage::{BuildContext, Registry, StageError};
use crate::store::db::now_ms;

/// What a build reports about itself, written last to `log/<hash>/<attempt>.result.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuildResult {
    pub drv_hash: String,
    pub succeeded: bool,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub host: String,
    pub started_at: i64,
    pub ended_at: i64,
    /// Peak resident memory of the build and its children, in KiB.
    pub peak_rss_kb: i64,
    pub kdbuild_version: String,
    /// The output was moved to its store path (unregistered) instead of staying in the
    /// staging directory (`--publish`, for builds whose dependents run elsewhere).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub published: bool,
}

/// Errors before the stage could run at all.
#[derive(Debug, thiserror::Error)]
pub enum BuildSetupError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("input `{name}` ({}) is missing", path.display())]
    MissingInput { name: String, path: PathBuf },
    #[error("stage kind `{0}` is not compiled into this kdbuild")]
    UnknownKind(String),
}

/// Builds derivation `hash` of the store at `store_root` into `out`, writing `result` last.
/// Returns whether the build succeeded.
///
/// With `publish`, a successful output is then moved to its store path, unregistered (and
/// read-only), unless something is there already (a valid path being rebuilt): a SLURM job
/// does this so that the jobs queued after it (`afterok`) find their inputs where they
/// belong before any realizer has registered them. The realizer registers it in place.
pub fn run_build(
    store_root: &Path,
    hash: &DrvHash,
    out: &Path,
    result: &Path,
    registry: &Registry,
    publish: bool,
) -> Result<bool, BuildSetupError> {
    let started_at = now_ms();
    let drv = crate::store::read_derivation_at(store_root, hash)?;
    // This build's own temporary GC roots, its inputs and its output: they stay even if the
    // realizer that started it dies (a SLURM job can outlive it). Best effort: the realizer
    // roots them too, and a missing input fails the build below.
    let _roots = crate::store::roots::TempRoots::hold(
        store_root,
        drv.input_paths()
            .map(|(_, p)| p.to_string())
            .chain([format!("{hash}-{}", drv.name)]),
        &mut || {},
    )
    .ok();
    let outcome = build_derivation(store_root, hash, &drv, out, registry);
    let (succeeded, error) = match outcome {
        Ok(()) => (true, None),
        Err(BuildError::Stage(e)) => (false, Some(e.to_string())),
        Err(BuildError::Setup(e)) => (false, Some(e.to_string())),
    };
    let published = succeeded && publish && publish_output(store_root, hash, &drv.name, out);
    if let Some(e) = &error {
        eprintln!("kdbuild: build of `{}` failed: {e}", drv.name);
    }
    let record = BuildResult {
        drv_hash: hash.to_string(),
        succeeded,
        error,
        host: hostname(),
        started_at,
        ended_at: now_ms(),
        peak_rss_kb: peak_rss_kb(),
        kdbuild_version: env!("CARGO_PKG_VERSION").to_string(),
        published,
    };
    write_result(result, &record).map_err(|e| crate::store::StoreError::Io {
        path: result.to_path_buf(),
        source: e,
    })?;
    Ok(succeeded)
}

/// Moves a finished output to its store path if nothing is there; whether it did.
fn publish_output(store_root: &Path, hash: &DrvHash, name: &str, out: &Path) -> bool {
    use crate::store::tree_hash::make_read_only;
    let Ok(path) = crate::store_path::StorePath::new(*hash, name) else {
        return false;
    };
    let dest = store_root.join(path.to_string());
    if dest.symlink_metadata().is_ok() {
        return false;
    }
    // Contents read-only first; the top directory after the move (see `register_output`).
    let moved = make_read_only(out, false).and_then(|_| std::fs::rename(out, &dest));
    match moved {
        Ok(()) => {
            if let Err(e) = make_read_only(&dest, true) {
                eprintln!("kdbuild: cannot make `{}` read-only: {e}", dest.display());
            }
            true
        }
        Err(e) => {
            eprintln!(
                "kdbuild: cannot move the output to `{}` ({e}); it stays in `{}`",
                dest.display(),
                out.display()
            );
            false
        }
    }
}

enum BuildError {
    Stage(StageError),
    Setup(BuildSetupError),
}

fn build_derivation(
    store_root: &Path,
    hash: &DrvHash,
    drv: &Derivation,
    out: &Path,
    registry: &Registry,
) -> Result<(), BuildError> {
    let kind = registry
        .get(&drv.kind)
        .ok_or_else(|| BuildError::Setup(BuildSetupError::UnknownKind(drv.kind.clone())))?;
    let mut inputs = BTreeMap::new();
    for (name, input) in &drv.inputs {
        let path = match input {
            Input::Derivation { .. } => store_root.join(
                input
                    .store_path()
                    .expect("derivation inputs have store paths")
                    .to_string(),
            ),
            Input::Source { .. } => drv
                .recorded
                .source_paths
                .get(name)
                .cloned()
                .unwrap_or_default(),
        };
        if !path.exists() {
            return Err(BuildError::Setup(BuildSetupError::MissingInput {
                name: name.clone(),
                path,
            }));
        }
        inputs.insert(name.clone(), path);
    }
    std::fs::create_dir_all(out).map_err(|source| {
        BuildError::Stage(StageError::Io {
            path: out.to_path_buf(),
            source,
        })
    })?;
    let ctx = BuildContext {
        drv,
        drv_hash: *hash,
        out,
        inputs,
    };
    kind.build(&ctx).map_err(BuildError::Stage)
}

/// Writes the result record atomically (temp file + rename), so a reader sees all or nothing.
pub fn write_result(path: &Path, r: &BuildResult) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(r).expect("results serialise"),
    )?;
    std::fs::rename(&tmp, path)
}

/// Reads a result record; `None` if the build never wrote one (it was killed).
pub fn read_result(path: &Path) -> Option<BuildResult> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Peak resident memory of this process and its waited-for children, in KiB.
pub fn peak_rss_kb() -> i64 {
    let usage = |who| {
        // SAFETY: getrusage fills the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut ru) } == 0 {
            ru.ru_maxrss
        } else {
            0
        }
    };
    usage(libc::RUSAGE_SELF).max(usage(libc::RUSAGE_CHILDREN))
}
