//! Stage kinds: what a derivation's builder does, and the registry that names them.
//!
//! The engine knows stages only through [`StageKind`]. `command` runs any program; the
//! KD-GAT kinds (`kdgat.preprocess`, `kdgat.vgae`, …) are registered by [`Registry::builtin`]
//! and adapt `crate::train`, which itself knows nothing of the engine.
//!
//! Each kind carries its own [`CodeIdentity`]: for built-in kinds a digest of the source files
//! it runs, computed when kdbuild is compiled (see `build.rs`), plus the locked versions of the
//! crates those files use. Editing one trainer therefore rebuilds that stage only.

pub mod code;
pub mod command;
pub mod kdgat;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

use crate::derivation::{CodeIdentity, Derivation};
use crate::hash::DrvHash;

/// Everything a stage needs to build one derivation, inside `kdbuild build`.
pub struct BuildContext<'a> {
    pub drv: &'a Derivation,
    pub drv_hash: DrvHash,
    /// The staging directory: the stage writes its outputs here, nowhere else.
    pub out: &'a Path,
    /// Where each input lives: store paths for derivation inputs, source paths for sources.
    pub inputs: BTreeMap<String, PathBuf>,
}

impl BuildContext<'_> {
    /// The path of input `name`, or a [`StageError::MissingInput`].
    pub fn input(&self, name: &str) -> Result<&Path, StageError> {
        self.inputs
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| StageError::MissingInput(name.to_string()))
    }

    /// The stage configuration.
    pub fn config(&self) -> &Value {
        &self.drv.config
    }
}

/// A build that did not produce its output.
#[derive(Debug, Error)]
pub enum StageError {
    #[error("input `{0}` is missing from the derivation")]
    MissingInput(String),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("command exited with {0}")]
    CommandFailed(String),
    #[error("{0}")]
    Failed(String),
}

/// A kind of stage: how derivations of that kind are checked and built.
pub trait StageKind: Send + Sync {
    /// The name written in pipeline files, e.g. `kdgat.gat`.
    fn name(&self) -> &'static str;

    /// The identity of the code this kind runs (hashed into every derivation of the kind).
    fn code_identity(&self) -> CodeIdentity;

    /// Checks a target's config and input names when the pipeline is instantiated, so that
    /// mistakes show up before anything builds. Returns a message naming what is wrong.
    fn check(&self, _config: &Value, _inputs: &[&str]) -> Result<(), String> {
        Ok(())
    }

    /// Builds the derivation into `ctx.out`. Runs in the `kdbuild build` child process.
    fn build(&self, ctx: &BuildContext) -> Result<(), StageError>;

    /// The inputs the output refers to at run time (its references, walked by `gc` and
    /// `why-depends`). By default every derivation input.
    fn references(&self, drv: &Derivation) -> Vec<String> {
        drv.input_paths().map(|(k, _)| k.to_string()).collect()
    }
}

/// The stage kinds kdbuild knows, by name.
pub struct Registry {
    kinds: BTreeMap<&'static str, Box<dyn StageKind>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            kinds: BTreeMap::new(),
        }
    }

    /// Every kind compiled into kdbuild.
    pub fn builtin() -> Self {
        let mut r = Registry::new();
        r.register(Box::new(command::Command));
        kdgat::register(&mut r);
        r
    }

    /// Adds a kind; a later registration of the same name replaces the earlier one.
    pub fn register(&mut self, kind: Box<dyn StageKind>) {
        self.kinds.insert(kind.name(), kind);
    }

    pub fn get(&self, name: &str) -> Option<&dyn StageKind> {
        self.kinds.get(name).map(|k| k.as_ref())
    }

    /// All kind names, sorted (for suggestions).
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::builtin()
    }
}
