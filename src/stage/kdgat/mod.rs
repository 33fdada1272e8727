//! The KD-GAT stage kinds: thin adapters from the engine's [`StageKind`](super::StageKind) to
//! `crate::train`, which knows nothing of the engine. One file per kind (so `build.rs` can hash
//! each kind's own adapter), plus what they share in [`common`].
//!
//! Each adapter parses the derivation's config into the trainer's config, loads the inputs,
//! calls `crate::train::model` and writes the outputs; nothing here trains or scores.
//!
//! Inputs (by name) and runtime references (what an output needs to be used, walked by `gc`
//! and `why-depends`):
//!
//! | kind | inputs | references |
//! |---|---|---|
//! | `kdgat.vgae` | `data`, `teacher` (iff `kd`) | none: the model is self-contained (`vocab.json` is copied in) |
//! | `kdgat.gat` | `data`, `vgae` (curriculum difficulty), `teacher` (iff `kd`) | none, likewise |
//! | `kdgat.dqn` | `data`, `vgae`, `gat` | `vgae`, `gat`: fusion runs on their outputs |
//! | `kdgat.eval` | `data`, `vgae`, `gat`, `dqn` | all four: what it evaluated |
//!
//! A student's `teacher` is a build-time input only: the distilled student is a complete
//! model, and the teacher's identity is already in the student's derivation hash (its store
//! path name is recorded in `config.json` as provenance).
//!
//! Input layout: `data` is a preprocess output (`graphs/<split>.safetensors` for `train`,
//! `val` and each test split, `vocab.json` `{"ids": [...], "unk": n}`, `manifest.json`);
//! model inputs hold `model.safetensors`.

pub mod common;
pub mod dqn;
pub mod eval;
pub mod gat;
pub mod vgae;

use super::Registry;

/// Adds every KD-GAT stage kind to `r`.
pub fn register(r: &mut Registry) {
    r.register(Box::new(vgae::VgaeStage));
    r.register(Box::new(gat::GatStage));
    r.register(Box::new(dqn::DqnStage));
    r.register(Box::new(eval::EvalStage));
}
