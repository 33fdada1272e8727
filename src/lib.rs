//! kdbuild: a declarative, Nix-like build system for ML training pipelines.
//!
//! A pipeline file ([`pipeline`]) expands to derivations ([`derivation`]), each named by the
//! hash of its inputs, configuration and code. The realizer ([`realize`]) builds what is
//! missing into a content-addressed store ([`store`]) through an executor ([`executor`]),
//! running stage kinds ([`stage`]); the KD-GAT models live in [`train`].
//!
//! Dependency direction: `cli → realize → {executor, store} → {derivation, hash, store_path}`;
//! `pipeline → derivation`; `train` depends on none of the engine. The pure core
//! (`derivation`, `hash`, `store_path`) does no IO.

pub mod cli;
pub mod derivation;
pub mod error;
pub mod executor;
pub mod hash;
pub mod pipeline;
pub mod realize;
pub mod report;
pub mod stage;
pub mod store;
pub mod store_path;
pub mod train;

pub use error::{Error, ErrorKind};
