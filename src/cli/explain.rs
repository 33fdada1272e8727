//! `kdbuild explain TARGET|GLOB...`: why a target would be rebuilt — the field-level
//! difference between the derivation its current result was built from and the one the
//! pipeline asks for now, each changed input explained in turn (see `realize::explain`).

use serde_json::{Value, json};

use super::context::Context;
use super::output::print_json;
use crate::Error;
use crate::realize::explain::{Cause, Explanation, explain, render};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Target names or glob patterns.
    #[arg(required = true)]
    pub targets: Vec<String>,
}

fn cause_json(c: &Cause) -> Value {
    json!({
        "change": c.headline(),
        "note": c.note,
        "because": c.because.iter().map(cause_json).collect::<Vec<_>>(),
    })
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let (pipeline, registry) = ctx.load()?;
    let roots = pipeline.select(&args.targets)?;
    let store = ctx.open_store_read_only()?;
    let inst = ctx.instantiate(&pipeline, &registry, &roots, store.as_ref())?;
    let store_root = store
        .as_ref()
        .map(|s| s.root().to_path_buf())
        .unwrap_or_else(|| std::path::absolute(&ctx.store).unwrap_or(ctx.store.clone()));
    let mut items = Vec::new();
    for t in roots {
        let n = inst.node_of(t).expect("roots are in their closure");
        let name = inst.name(&pipeline, n).to_string();
        let e = explain(&pipeline, &inst, n, store.as_ref())?;
        if ctx.json {
            let (status, old, causes) = match &e {
                Explanation::UpToDate { path } => ("up_to_date", Some(path.clone()), vec![]),
                Explanation::NeverBuilt => ("never_built", None, vec![]),
                Explanation::OutputDeleted => ("output_deleted", None, vec![]),
                Explanation::OldDerivationGone { old_path } => {
                    ("old_derivation_gone", Some(old_path.clone()), vec![])
                }
                Explanation::Changed { old_path, causes } => (
                    "changed",
                    Some(old_path.clone()),
                    causes.iter().map(cause_json).collect(),
                ),
            };
            items.push(json!({
                "target": name,
                "status": status,
                "path": store_root.join(inst.nodes[n].path.to_string()),
                "result": old.map(|p| store_root.join(p)),
                "causes": causes,
            }));
        } else {
            print!("{}", render(&name, &e, &store_root));
        }
    }
    if ctx.json {
        print_json(&Value::Array(items));
    }
    Ok(())
}
