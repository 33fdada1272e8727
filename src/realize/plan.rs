//! The plan: which derivations of a closure must be built, and why (Snakemake's `reason:`).
//!
//! Only what is *needed* is built: the requested targets, forced targets, and the inputs of
//! anything needed that is not valid. A valid path's inputs are not needed, even if they were
//! deleted.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::derivation::{Change, diff};
use crate::pipeline::{Instantiation, Pipeline};
use crate::store::{Store, StoreError};

/// Why a derivation will be built (the dry run's and `explain`'s words).
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// `--rebuild` or `--rebuild-stage` asked for it.
    Forced,
    /// The target was never built into this store.
    OutputMissing,
    /// This exact derivation was built before, but its output is no longer valid.
    OutputDeleted,
    /// A hashed field differs from the derivation of the target's current result.
    Changed(Change),
    /// An input derivation is itself being built.
    InputRebuilt(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Forced => f.write_str("forced"),
            Reason::OutputMissing => f.write_str("output missing"),
            Reason::OutputDeleted => f.write_str("output missing (was built, then deleted)"),
            Reason::Changed(c) => write!(f, "{c}"),
            Reason::InputRebuilt(i) => write!(f, "input `{i}` rebuilt"),
        }
    }
}

/// The plan's view of one node of the instantiation.
#[derive(Clone, Debug, Default)]
pub struct PlanNode {
    /// Registered in the store.
    pub valid: bool,
    /// Required by a requested target through invalid paths.
    pub needed: bool,
    /// Needed and (invalid or forced): will be built.
    pub build: bool,
    pub reasons: Vec<Reason>,
}

/// A closure's instantiation, with what to build and why.
#[derive(Debug)]
pub struct Plan {
    pub inst: Instantiation,
    pub nodes: Vec<PlanNode>,
    /// Node indices of the requested targets.
    pub roots: Vec<usize>,
}

/// The DAG of what will be built: one graph node per derivation to build (weight: its index
/// in the instantiation), one edge from each input to the derivation that needs it (weight:
/// the input's name). The scheduler walks it.
pub type BuildGraph = DiGraph<usize, Arc<str>>;

impl Plan {
    /// Node indices to build, inputs first.
    pub fn to_build(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].build)
            .collect()
    }

    /// The graph of what will be built. Graph node `k` is the `k`-th entry of
    /// [`Plan::to_build`], so graph nodes are in dependency order too.
    pub fn build_graph(&self) -> BuildGraph {
        let to_build = self.to_build();
        let mut g = BuildGraph::with_capacity(to_build.len(), to_build.len() * 2);
        let mut at: Vec<Option<NodeIndex>> = vec![None; self.nodes.len()];
        for &i in &to_build {
            at[i] = Some(g.add_node(i));
        }
        for &i in &to_build {
            for (name, d) in &self.inst.nodes[i].deps {
                if let (Some(from), Some(to)) = (at[*d], at[i]) {
                    g.add_edge(from, to, name.clone());
                }
            }
        }
        g
    }

    /// Computes the plan. `forced` holds node indices to rebuild even if valid. `store` is
    /// `None` when no store exists yet: everything is missing.
    pub fn new(
        p: &Pipeline,
        inst: Instantiation,
        roots: Vec<usize>,
        forced: &HashSet<usize>,
        store: Option<&Store>,
    ) -> Result<Plan, StoreError> {
        let n = inst.nodes.len();
        let mut nodes = vec![PlanNode::default(); n];
        if let Some(s) = store {
            for (i, node) in inst.nodes.iter().enumerate() {
                nodes[i].valid =
                    s.db.is_valid(&node.path)
                        .map_err(|e| StoreError::db(s.root(), e))?;
            }
        }
        // Needed: walk from the roots, descending only through what will be built. Nodes come
        // inputs-first, so one reverse pass suffices.
        // Forced nodes are needed wherever they sit in the closure: `--rebuild-stage prep`
        // rebuilds the prep outputs even when everything downstream is valid. Their
        // dependents are not rebuilt: their inputs' identities have not changed.
        for &r in roots.iter().chain(forced.iter()) {
            nodes[r].needed = true;
        }
        for i in (0..n).rev() {
            if !nodes[i].needed {
                continue;
            }
            let forced_here = forced.contains(&i);
            nodes[i].build = !nodes[i].valid || forced_here;
            if nodes[i].build {
                for (_, d) in &inst.nodes[i].deps {
                    nodes[*d].needed = true;
                }
            }
        }
        // Reasons, inputs first so "input rebuilt" can be said.
        for i in 0..n {
            if !nodes[i].build {
                continue;
            }
            let mut reasons = Vec::new();
            if forced.contains(&i) && nodes[i].valid {
                reasons.push(Reason::Forced);
            }
            let rebuilt: Vec<&str> = inst.nodes[i]
                .deps
                .iter()
                .filter(|(_, d)| nodes[*d].build)
                .map(|(name, _)| &**name)
                .collect();
            if !nodes[i].valid {
                reasons.extend(missing_reasons(p, store, &inst, i, &rebuilt)?);
            }
            reasons.extend(rebuilt.iter().map(|r| Reason::InputRebuilt(r.to_string())));
            nodes[i].reasons = reasons;
        }
        Ok(Plan { inst, nodes, roots })
    }
}

/// Why an invalid node's output is missing: compared with the derivation of the target's
/// latest valid result, if there is one.
fn missing_reasons(
    p: &Pipeline,
    store: Option<&Store>,
    inst: &Instantiation,
    i: usize,
    rebuilt: &[&str],
) -> Result<Vec<Reason>, StoreError> {
    let Some(store) = store else {
        return Ok(vec![Reason::OutputMissing]);
    };
    let node = &inst.nodes[i];
    let latest = store
        .db
        .latest_valid_for_target(inst.name(p, i))
        .map_err(|e| StoreError::db(store.root(), e))?;
    let Some(latest) = latest else {
        let built_before = store.drv_file(&node.hash).exists();
        return Ok(vec![if built_before {
            Reason::OutputDeleted
        } else {
            Reason::OutputMissing
        }]);
    };
    let Ok(old_hash) = latest.drv_hash.parse() else {
        return Ok(vec![Reason::OutputMissing]);
    };
    let old = match store.read_derivation(&old_hash) {
        Ok(d) => d,
        Err(_) => return Ok(vec![Reason::OutputMissing]),
    };
    let changes = diff(&old, &inst.derivation(p, i));
    let reasons: Vec<Reason> = changes
        .into_iter()
        // an input that is being rebuilt is reported once, as such
        .filter(|c| !matches!(c, Change::Input { name, .. } if rebuilt.contains(&&**name)))
        .map(Reason::Changed)
        .collect();
    if reasons.is_empty() && rebuilt.is_empty() {
        return Ok(vec![Reason::OutputMissing]);
    }
    Ok(reasons)
}
