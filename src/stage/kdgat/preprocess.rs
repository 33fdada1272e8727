//! The `kdgat.preprocess` stage kind: one dataset (a source input named `raw`) → graphs,
//! vocabulary and manifest in the store (layout: `crate::train::data::preprocess`).
//!
//! - the *reading* config (format, layout, …) is the source's own `config`, carried in the
//!   derivation's `raw` input and hashed with the data's content;
//! - the *cutting* config (window, stride, split, seed, profile, edge features) is the stage's
//!   `config`, checked when the pipeline is instantiated so that a typo fails before any build.
//!
//! The thread count comes from the stage's `cpus` resource (never hashed: the output does
//! not depend on it).

use serde_json::Value;

use super::super::{BuildContext, StageError, StageKind};
use crate::derivation::{CodeIdentity, Input};
use crate::train::data::options::{DatasetConfig, StageConfig};
use crate::train::data::preprocess;

/// The kind's name in pipeline files.
pub const NAME: &str = "kdgat.preprocess";

/// The `kdgat.preprocess` stage kind.
pub struct Preprocess;

impl StageKind for Preprocess {
    fn name(&self) -> &'static str {
        NAME
    }

    fn code_identity(&self) -> CodeIdentity {
        crate::stage::code::identity(NAME)
    }

    fn check(&self, config: &Value, inputs: &[&str]) -> Result<(), String> {
        if !inputs.contains(&"raw") {
            return Err(
                "needs an input `raw` naming the dataset, e.g. inputs.raw = \"source:{dataset}\""
                    .into(),
            );
        }
        if let Some(extra) = inputs.iter().find(|i| **i != "raw") {
            return Err(format!("has no use for input `{extra}` (only `raw`)"));
        }
        StageConfig::from_json(config)
            .map(|_| ())
            .map_err(|e| format!("config key {e}"))
    }

    fn build(&self, ctx: &BuildContext) -> Result<(), StageError> {
        let stage = StageConfig::from_json(ctx.config())
            .map_err(|e| StageError::Config(format!("config key {e}")))?;
        let source_config = match ctx.drv.inputs.get("raw") {
            Some(Input::Source { config, .. }) => config,
            Some(Input::Derivation { name, .. }) => {
                return Err(StageError::Config(format!(
                    "input `raw` is the target `{name}`, but it must be a dataset source (`source:…`)"
                )));
            }
            None => return Err(StageError::MissingInput("raw".into())),
        };
        let source_name = match ctx.drv.inputs.get("raw") {
            Some(Input::Source { name, .. }) => name.as_str(),
            _ => "raw",
        };
        let dataset = DatasetConfig::from_json(source_config)
            .map_err(|e| StageError::Config(format!("source `{source_name}`: config key {e}")))?;
        let raw = ctx.input("raw")?;
        let threads = ctx
            .drv
            .recorded
            .resources
            .cpus
            .map(|c| c as usize)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
        let m = preprocess::run(raw, &dataset, &stage, ctx.out, threads)
            .map_err(|e| StageError::Failed(e.to_string()))?;
        // One summary line per split on the build log.
        for (name, s) in &m.splits {
            eprintln!(
                "{name}: {} windows ({} attack), unk_row_rate {:.4}",
                s.windows, s.attack, s.unk_row_rate
            );
        }
        for w in &m.warnings {
            eprintln!("warning: {w}");
        }
        Ok(())
    }
}
