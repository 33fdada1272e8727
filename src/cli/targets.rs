//! `kdbuild targets [GLOB]`: the pipeline's targets, one per line.

use serde_json::json;

use super::context::Context;
use super::output::print_json;
use crate::Error;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only targets matching this glob.
    pub pattern: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let (pipeline, _) = ctx.load()?;
    let chosen: Vec<usize> = match &args.pattern {
        Some(p) => pipeline.select(std::slice::from_ref(p))?,
        None => (0..pipeline.targets.len()).collect(),
    };
    if ctx.json {
        print_json(&json!(
            chosen
                .iter()
                .map(|&i| {
                    let t = &pipeline.targets[i];
                    let stage = &pipeline.stages[t.stage];
                    json!({"target": t.name, "stage": stage.name, "kind": stage.kind,
                       "matrix": t.bindings.iter().map(|(k, v)| (k.to_string(), json!(&**v)))
                           .collect::<serde_json::Map<_, _>>()})
                })
                .collect::<Vec<_>>()
        ));
        return Ok(());
    }
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in chosen {
        let _ = writeln!(out, "{}", pipeline.targets[i].name);
    }
    Ok(())
}
