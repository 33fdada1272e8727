//! Pipelines: the declarative file (TOML) that expands to derivations.
//!
//! `load` parses and validates a file into targets with resolved configs and inputs (every
//! error located at file, line, column and key); `instantiate` turns the closure of some
//! targets into hashed derivations. See `spec` for the language.

pub mod error;
pub mod instantiate;
pub mod load;
pub mod resources;
pub mod spec;
pub mod template;
pub mod vars;

pub use error::{Location, PipelineError};
pub use instantiate::{ContentLookup, Instantiation, Node, instantiate};
pub use load::{Pipeline, Source, Stage, Target, TargetInput};
