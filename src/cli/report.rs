//! `kdbuild report GLOB... -o report.html`: one self-contained HTML page with the DAG,
//! provenance, metrics, training curves, ROC/PR curves, confusion matrices, model sizes and a
//! build timeline. Reads the store only.

use std::collections::HashSet;
use std::path::PathBuf;

use super::context::Context;
use crate::Error;
use crate::report::{self, dag, html, metrics};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Evaluation targets or globs, e.g. '*-demo-eval'.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Where to write the page.
    #[arg(short, long, default_value = "report.html")]
    pub output: PathBuf,
    /// The page's title.
    #[arg(long, default_value = "kdbuild report")]
    pub title: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let (pipeline, registry) = ctx.load()?;
    let selected = pipeline.select(&args.targets)?;
    // Targets whose source data is absent here are reported as not realized.
    let (chosen, unavailable): (Vec<usize>, Vec<usize>) = selected
        .iter()
        .partition(|&&t| pipeline.missing_sources(t).is_empty());
    let store = ctx
        .open_store_read_only()?
        .ok_or_else(|| Error::Usage(format!("there is no store at `{}`", ctx.store.display())))?;
    let plan = ctx.plan(&pipeline, &registry, &chosen, &HashSet::new(), Some(&store))?;
    let dag_svg = match dag::svg(&pipeline, &plan) {
        Ok(s) => s,
        Err(dag::DagError::NoDot) => {
            eprintln!(
                "note: Graphviz `dot` is not installed; the report draws its DAG with a plainer built-in layout"
            );
            dag::svg_fallback(&pipeline, &plan)
        }
        Err(e) => return Err(Error::Environment(e.to_string())),
    };
    let mut evals = Vec::new();
    for &r in &plan.roots {
        let node = &plan.inst.nodes[r];
        let path = node.path.to_string();
        let valid = plan.nodes[r].valid;
        let name = &pipeline.targets[node.target].name;
        evals.push(report::eval_report(
            &store,
            name,
            valid.then_some(path.as_str()),
        )?);
    }
    for t in unavailable {
        evals.push(report::eval_report(
            &store,
            &pipeline.targets[t].name,
            None,
        )?);
    }
    let rows: Vec<metrics::Row> = evals
        .iter()
        .map(|e| metrics::Row {
            target: e.target.clone(),
            metrics: e.metrics.clone(),
        })
        .collect();
    let cols = metrics::columns(&rows, &metrics::Selection::default());
    let (head, body) = metrics::cells(&rows, &cols);
    let page = html::Page {
        title: args.title.clone(),
        generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        pipeline: ctx.pipeline.display().to_string(),
        store: store.root().display().to_string(),
        dag_svg,
        metrics_head: &head,
        metrics_body: &body,
        evals: &evals,
    };
    let text = html::render(&page);
    std::fs::write(&args.output, text).map_err(|e| {
        Error::Environment(format!("cannot write `{}`: {e}", args.output.display()))
    })?;
    let realized = evals.iter().filter(|e| e.path.is_some()).count();
    eprintln!(
        "wrote {} ({} target{}, {realized} realized)",
        args.output.display(),
        evals.len(),
        if evals.len() == 1 { "" } else { "s" }
    );
    Ok(())
}
