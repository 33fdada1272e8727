//! Instantiation: targets → derivations, for the closure of the targets a command needs.
//!
//! Pure apart from two lookups passed in: the content hash of a source (the store answers it
//! from its cache keyed by path, size, mtime and inode) and of a script file. Every source in
//! the closure is checked before any is hashed, so a missing dataset fails the command before
//! anything builds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::error::PipelineError;
use super::load::{Pipeline, Source, TargetInput};
use crate::derivation::{CodeIdentity, Derivation, Input, Recorded};
use crate::hash::{ContentHash, DrvHash};
use crate::stage::Registry;
use crate::store_path::StorePath;

/// One target with its derivation.
#[derive(Debug, Clone)]
pub struct Node {
    /// Index into `Pipeline::targets`.
    pub target: usize,
    pub drv: Derivation,
    pub hash: DrvHash,
    pub path: StorePath,
    /// Indices into [`Instantiation::nodes`] of the derivation inputs, by input name.
    pub deps: Vec<(String, usize)>,
}

/// The derivations of a closure, inputs before the targets that need them.
#[derive(Debug, Default)]
pub struct Instantiation {
    pub nodes: Vec<Node>,
    by_target: HashMap<usize, usize>,
}

impl Instantiation {
    /// The node of target index `t`, if it is in this closure.
    pub fn node_of(&self, target: usize) -> Option<usize> {
        self.by_target.get(&target).copied()
    }
}

/// Looks up content hashes of sources and script files.
pub trait ContentLookup {
    /// The content hash of a source; fails with `MissingSource` if it is absent.
    fn source(&mut self, source: &Source) -> Result<ContentHash, PipelineError>;
    /// The content hash of a script file.
    fn script(&mut self, path: &Path) -> Result<ContentHash, PipelineError>;
}

/// Instantiates the closure of `roots` (target indices).
pub fn instantiate(
    p: &Pipeline,
    registry: &Registry,
    roots: &[usize],
    lookup: &mut dyn ContentLookup,
) -> Result<Instantiation, PipelineError> {
    let order = closure_order(p, roots);

    // Every source first, so that a missing one fails before anything else happens.
    let mut source_hashes: HashMap<&str, ContentHash> = HashMap::new();
    for &t in &order {
        for input in p.targets[t].inputs.values() {
            if let TargetInput::Source(s) = input
                && !source_hashes.contains_key(s.as_str())
            {
                let src = &p.sources[s];
                source_hashes.insert(s.as_str(), lookup.source(src)?);
            }
        }
    }

    let mut codes: HashMap<&str, CodeIdentity> = HashMap::new();
    let mut scripts: HashMap<PathBuf, ContentHash> = HashMap::new();
    let mut out = Instantiation {
        nodes: Vec::with_capacity(order.len()),
        by_target: HashMap::with_capacity(order.len()),
    };
    for &t in &order {
        let target = &p.targets[t];
        let mut inputs = BTreeMap::new();
        let mut deps = Vec::new();
        let mut source_paths = BTreeMap::new();
        for (name, input) in &target.inputs {
            match input {
                TargetInput::Target(j) => {
                    let n = out.by_target[j];
                    let node = &out.nodes[n];
                    inputs.insert(
                        name.clone(),
                        Input::Derivation {
                            hash: node.hash,
                            name: p.targets[*j].name.clone(),
                        },
                    );
                    deps.push((name.clone(), n));
                }
                TargetInput::Source(s) => {
                    let src = &p.sources[s];
                    inputs.insert(
                        name.clone(),
                        Input::Source {
                            name: s.clone(),
                            content: source_hashes[s.as_str()],
                            config: src.config.clone(),
                        },
                    );
                    source_paths.insert(name.clone(), src.path.clone());
                }
            }
        }
        let mut script_hashes = BTreeMap::new();
        for (name, path) in &target.scripts {
            let h = match scripts.get(path) {
                Some(h) => *h,
                None => {
                    let h = lookup.script(path)?;
                    scripts.insert(path.clone(), h);
                    h
                }
            };
            script_hashes.insert(name.clone(), h);
        }
        let code = codes
            .entry(target.kind.as_str())
            .or_insert_with(|| {
                registry
                    .get(&target.kind)
                    .map(|k| k.code_identity())
                    .unwrap_or_default()
            })
            .clone();
        let drv = Derivation {
            name: target.name.clone(),
            stage: target.stage.clone(),
            kind: target.kind.clone(),
            builder: target.builder.clone(),
            config: (*target.config).clone(),
            inputs,
            scripts: script_hashes,
            code,
            recorded: Recorded {
                resources: target.resources.clone(),
                source_paths,
                script_paths: target.scripts.clone(),
                pass_env: target.pass_env.clone(),
            },
        };
        let hash = drv.hash().map_err(|e| PipelineError::Invalid {
            loc: target.loc.clone(),
            key: format!("stages.{}.config", target.stage),
            message: e.to_string(),
        })?;
        let path = StorePath::new(hash, &target.name).expect("target names were checked at load");
        out.by_target.insert(t, out.nodes.len());
        out.nodes.push(Node {
            target: t,
            drv,
            hash,
            path,
            deps,
        });
    }
    Ok(out)
}

/// The closure of `roots`, each target after all of its inputs (iterative post-order DFS;
/// the pipeline has no cycles, `load` checked).
pub fn closure_order(p: &Pipeline, roots: &[usize]) -> Vec<usize> {
    // A node is marked when it is expanded, not when pushed: a node pushed early by one
    // parent may be needed sooner by another, and must then be emitted before that one.
    let mut seen = vec![false; p.targets.len()];
    let mut order = Vec::new();
    let mut stack: Vec<(usize, bool)> = Vec::new();
    for &r in roots {
        stack.push((r, false));
        while let Some((t, expanded)) = stack.pop() {
            if expanded {
                order.push(t);
                continue;
            }
            if seen[t] {
                continue;
            }
            seen[t] = true;
            stack.push((t, true));
            for input in p.targets[t].inputs.values().rev() {
                if let TargetInput::Target(j) = input
                    && !seen[*j]
                {
                    stack.push((*j, false));
                }
            }
        }
    }
    order
}
