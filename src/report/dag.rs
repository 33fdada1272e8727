//! The dependency graph of a plan, as Graphviz dot, Mermaid, text, or SVG: built and to-build
//! derivations drawn differently, sources as ellipses, edges labelled with input names.
//!
//! SVG goes through Graphviz's `dot` when it is installed; the report falls back to a simple
//! layered layout of its own when it is not, so that a report never lacks its DAG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use thiserror::Error;

use super::svg::esc;
use crate::pipeline::{Pipeline, TargetInput};
use crate::realize::Plan;

/// Why Graphviz could not draw the graph.
#[derive(Debug, Error)]
pub enum DagError {
    #[error(
        "`dot` (Graphviz) is not installed: install it (Debian: `apt install graphviz`; Nix: it is in `nix develop`), or use `--format dot|mermaid|text`"
    )]
    NoDot,
    #[error("`dot` failed: {0}")]
    DotFailed(String),
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
        "digraph kdbuild {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];\n  edge [fontname=\"sans-serif\", fontsize=10, color=\"#777777\"];\n",
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

/// SVG through Graphviz's `dot`, without the XML prologue so that it can be inlined.
pub fn svg(p: &Pipeline, plan: &Plan) -> Result<String, DagError> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DagError::NoDot,
            _ => DagError::DotFailed(e.to_string()),
        })?;
    let text = dot(p, plan);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| DagError::DotFailed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| DagError::DotFailed(e.to_string()))?;
    if !out.status.success() {
        return Err(DagError::DotFailed(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let svg = String::from_utf8_lossy(&out.stdout);
    let start = svg.find("<svg").unwrap_or(0);
    Ok(svg[start..].to_string())
}

/// SVG drawn without Graphviz: nodes in columns by depth (longest path from a source), edges
/// as straight lines. Plainer than `dot`, but always available.
pub fn svg_fallback(p: &Pipeline, plan: &Plan) -> String {
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    for s in sources(p, plan) {
        depth.insert(s, 0);
    }
    // Nodes come inputs first, so one pass gives each its longest-path depth.
    for n in &plan.inst.nodes {
        let t = &p.targets[n.target];
        let d = t
            .inputs
            .iter()
            .map(|(_, i)| match i {
                TargetInput::Target(j) => depth.get(&p.targets[*j].name).copied().unwrap_or(0) + 1,
                TargetInput::Source(_) => 1,
            })
            .max()
            .unwrap_or(0);
        depth.insert(t.name.clone(), d);
    }
    let built: BTreeMap<&str, bool> = plan
        .inst
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (p.targets[n.target].name.as_str(), plan.nodes[i].valid))
        .collect();
    let (col_w, row_h, box_w, box_h) = (230.0, 44.0, 200.0, 28.0);
    let mut rows_in_col: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (name, d) in &depth {
        let r = rows_in_col.entry(*d).or_default();
        pos.insert(
            name.clone(),
            (10.0 + *d as f64 * col_w, 10.0 + *r as f64 * row_h),
        );
        *r += 1;
    }
    let width = 20.0 + (rows_in_col.len().max(1)) as f64 * col_w;
    let height = 20.0 + rows_in_col.values().max().copied().unwrap_or(1) as f64 * row_h;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    for (a, b, label) in edges(p, plan) {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(&a), pos.get(&b)) else {
            continue;
        };
        let _ = write!(
            s,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{x2}\" y2=\"{}\" stroke=\"#999\"><title>{}</title></line>",
            x1 + box_w,
            y1 + box_h / 2.0,
            y2 + box_h / 2.0,
            esc(&label)
        );
    }
    for (name, (x, y)) in &pos {
        let fill = match built.get(name.as_str()) {
            Some(true) => "#c8e6c9",
            Some(false) => "#ffe0b2",
            None => "#e3f2fd",
        };
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{box_w}\" height=\"{box_h}\" rx=\"6\" fill=\"{fill}\" stroke=\"#666\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x + box_w / 2.0,
            y + box_h / 2.0 + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}
