//! The KD-GAT stage kinds: thin adapters from the engine's [`StageKind`](super::StageKind) to
//! `crate::train`, which knows nothing of the engine.

use super::Registry;

/// Adds every KD-GAT stage kind to `r`.
pub fn register(_r: &mut Registry) {}
