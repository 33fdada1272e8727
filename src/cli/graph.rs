//! `kdbuild graph TARGET... --format dot|mermaid|text|svg`: the closure's dependency graph.

use std::collections::HashSet;

use super::context::Context;
use crate::Error;
use crate::report::dag;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Dot,
    Mermaid,
    Text,
    /// Rendered by Graphviz's `dot`, which must be installed.
    Svg,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Target names or glob patterns.
    #[arg(required = true)]
    pub targets: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let (pipeline, registry) = ctx.load()?;
    let roots = pipeline.select(&args.targets)?;
    let store = ctx.open_store_read_only()?;
    let plan = ctx.plan(
        &pipeline,
        &registry,
        &roots,
        &HashSet::new(),
        store.as_ref(),
    )?;
    let text = match args.format {
        Format::Dot => dag::dot(&pipeline, &plan),
        Format::Mermaid => dag::mermaid(&pipeline, &plan),
        Format::Text => dag::text(&pipeline, &plan),
        Format::Svg => dag::svg(&pipeline, &plan).map_err(|e| match e {
            dag::DagError::NoDot => Error::Environment(e.to_string()),
            other => Error::Environment(other.to_string()),
        })?,
    };
    print!("{text}");
    Ok(())
}
