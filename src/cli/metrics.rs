//! `kdbuild metrics GLOB... [--metric M]... [--split S]... [--model M]... [--format F]` and
//! `kdbuild metrics --diff A B`: tables of realized evaluations' metrics. Reads the store only.

use super::context::Context;
use super::output::print_json;
use crate::Error;
use crate::report::metrics::{self, Row, Selection};
use crate::report::read_json;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Markdown,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Evaluation targets or globs, e.g. 'student-*-eval'.
    #[arg(required_unless_present = "diff")]
    pub targets: Vec<String>,
    /// Metrics to show (repeatable): accuracy, precision, recall, f1, specificity, mcc,
    /// roc_auc, pr_auc, dr_at_fpr_1e-3, dr_at_fpr_1e-2, threshold, n_samples…
    #[arg(long = "metric", value_name = "NAME")]
    pub metrics: Vec<String>,
    /// Splits to show (repeatable); default: every test split.
    #[arg(long = "split", value_name = "NAME")]
    pub splits: Vec<String>,
    /// Models to show (repeatable): vgae, gat, fusion; default: gat and fusion.
    #[arg(long = "model", value_name = "NAME")]
    pub models: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Compare two targets: their values and the deltas (B − A).
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with = "targets")]
    pub diff: Option<Vec<String>>,
}

/// The rows of `patterns`: every matching target, with its metrics if it is realized.
pub fn rows(ctx: &Context, patterns: &[String]) -> Result<Vec<Row>, Error> {
    let (pipeline, registry) = ctx.load()?;
    let chosen = pipeline.select(patterns)?;
    let store = ctx.open_store_read_only()?;
    // Targets whose source data is absent here cannot have been realized from this pipeline:
    // they are listed as not realized rather than failing the whole table.
    let available: Vec<usize> = chosen
        .iter()
        .copied()
        .filter(|&t| pipeline.missing_sources(t).is_empty())
        .collect();
    let inst = ctx.instantiate(&pipeline, &registry, &available, store.as_ref())?;
    let mut out = Vec::new();
    for t in chosen {
        let Some(n) = inst.node_of(t) else {
            out.push(Row {
                target: pipeline.targets[t].name.clone(),
                metrics: None,
            });
            continue;
        };
        let node = &inst.nodes[n];
        let valid = match &store {
            Some(s) => {
                s.db.is_valid(&node.path)
                    .map_err(|e| crate::store::StoreError::db(s.root(), e))?
            }
            None => false,
        };
        let metrics = match (&store, valid) {
            (Some(s), true) => read_json(&s.path_of(&node.path).join("metrics.json")),
            _ => None,
        };
        out.push(Row {
            target: pipeline.targets[t].name.clone(),
            metrics,
        });
    }
    Ok(out)
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let sel = Selection {
        metrics: args.metrics,
        splits: args.splits,
        models: args.models,
    };
    let (head, body, rows, cols) = match &args.diff {
        Some(ab) => {
            let rows = rows(ctx, ab)?;
            let (a, b) = (&rows[0], &rows[1]);
            for r in [a, b] {
                if r.metrics.is_none() {
                    return Err(Error::Usage(format!(
                        "`{}` is not realized in this store (or has no metrics.json): realize it first",
                        r.target
                    )));
                }
            }
            let cols = metrics::columns(&rows, &sel);
            let (h, b) = metrics::diff_cells(a, b, &cols);
            (h, b, rows, cols)
        }
        None => {
            let rows = rows(ctx, &args.targets)?;
            let cols = metrics::columns(&rows, &sel);
            let (h, b) = metrics::cells(&rows, &cols);
            (h, b, rows, cols)
        }
    };
    let format = if ctx.json { Format::Json } else { args.format };
    match format {
        Format::Table => print!("{}", metrics::render_table(&head, &body)),
        Format::Markdown => print!("{}", metrics::render_markdown(&head, &body)),
        Format::Csv => print!("{}", metrics::render_csv(&head, &body)),
        Format::Json if args.diff.is_some() => {
            let items: Vec<serde_json::Value> = body
                .iter()
                .map(|r| serde_json::json!({"column": r[0], "a": r[1], "b": r[2], "delta": r[3]}))
                .collect();
            print_json(&serde_json::json!({"a": head[1], "b": head[2], "rows": items}));
        }
        Format::Json => print_json(&metrics::render_json(&rows, &cols)),
    }
    Ok(())
}
