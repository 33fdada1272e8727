//! `kdbuild graph TARGET... --format dot|mermaid|text`: the closure's dependency graph, built
//! and to-build derivations drawn differently, edges labelled with input names.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use super::context::Context;
use crate::Error;
use crate::pipeline::{Pipeline, TargetInput};
use crate::realize::Plan;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Dot,
    Mermaid,
    Text,
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
        Format::Dot => dot(&pipeline, &plan),
        Format::Mermaid => mermaid(&pipeline, &plan),
        Format::Text => text(&pipeline, &plan),
    };
    print!("{text}");
    Ok(())
}

/// (from, to, label) edges between node names, sources included as `source:<name>`.
fn edges(p: &Pipeline, plan: &Plan) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for n in &plan.inst.nodes {
        let t = &p.targets[n.target];
        for (input, what) in &t.inputs {
            let from = match what {
                TargetInput::Target(j) => p.targets[*j].name.clone(),
                TargetInput::Source(s) => format!("source:{s}"),
            };
            out.push((from, t.name.clone(), input.to_string()));
        }
    }
    out
}

fn sources(p: &Pipeline, plan: &Plan) -> Vec<String> {
    let mut s: Vec<String> = plan
        .inst
        .nodes
        .iter()
        .flat_map(|n| p.targets[n.target].inputs.iter())
        .filter_map(|(_, i)| match i {
            TargetInput::Source(s) => Some(format!("source:{s}")),
            _ => None,
        })
        .collect();
    s.sort();
    s.dedup();
    s
}

/// Graphviz: valid derivations green, to-build ones orange, sources as ellipses.
pub fn dot(p: &Pipeline, plan: &Plan) -> String {
    let mut s = String::from(
        "digraph kdbuild {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];\n",
    );
    for src in sources(p, plan) {
        let _ = writeln!(s, "  \"{src}\" [shape=ellipse, fillcolor=\"#e3f2fd\"];");
    }
    for (i, n) in plan.inst.nodes.iter().enumerate() {
        let (colour, state) = if plan.nodes[i].valid {
            ("#c8e6c9", "built")
        } else {
            ("#ffe0b2", "to build")
        };
        let _ = writeln!(
            s,
            "  \"{}\" [fillcolor=\"{colour}\", tooltip=\"{state}: {}\"];",
            p.targets[n.target].name, n.path
        );
    }
    for (a, b, l) in edges(p, plan) {
        let _ = writeln!(s, "  \"{a}\" -> \"{b}\" [label=\"{l}\"];");
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart with `built`/`tobuild` classes.
pub fn mermaid(p: &Pipeline, plan: &Plan) -> String {
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut s = String::from("flowchart LR\n");
    for src in sources(p, plan) {
        let id = format!("n{}", ids.len());
        let _ = writeln!(s, "  {id}([\"{src}\"]):::source");
        ids.insert(src, id);
    }
    for (i, n) in plan.inst.nodes.iter().enumerate() {
        let id = format!("n{}", ids.len());
        let class = if plan.nodes[i].valid {
            "built"
        } else {
            "tobuild"
        };
        let name = &p.targets[n.target].name;
        let _ = writeln!(s, "  {id}[\"{name}\"]:::{class}");
        ids.insert(name.clone(), id);
    }
    for (a, b, l) in edges(p, plan) {
        let _ = writeln!(s, "  {} -->|{l}| {}", ids[&a], ids[&b]);
    }
    s.push_str("  classDef built fill:#c8e6c9\n  classDef tobuild fill:#ffe0b2\n  classDef source fill:#e3f2fd\n");
    s
}

/// One line per derivation, inputs first: `[built]` or `[to build]`, then its inputs.
pub fn text(p: &Pipeline, plan: &Plan) -> String {
    let mut s = String::new();
    for (i, n) in plan.inst.nodes.iter().enumerate() {
        let state = if plan.nodes[i].valid {
            "built   "
        } else {
            "to build"
        };
        let _ = writeln!(s, "[{state}] {}", p.targets[n.target].name);
        for (input, what) in &p.targets[n.target].inputs {
            let from = match what {
                TargetInput::Target(j) => p.targets[*j].name.clone(),
                TargetInput::Source(src) => format!("source:{src}"),
            };
            let _ = writeln!(s, "             <- {input}: {from}");
        }
    }
    s
}
