//! The KD-GAT stage kinds: thin adapters from the engine's [`StageKind`](super::StageKind) to
//! `crate::train`, which knows nothing of the engine.

pub mod preprocess;

use super::Registry;

/// Adds every KD-GAT stage kind to `r`.
pub fn register(r: &mut Registry) {
    r.register(Box::new(preprocess::Preprocess));
}
