//! Instantiation: targets → derivations, for the closure of the targets a command needs.
//!
//! Pure apart from two lookups passed in: the content hash of a source (the store answers it
//! from its cache keyed by path, size, mtime and inode) and of a script file. Every source in
//! the closure is checked before any is hashed, so a missing dataset fails the command before
//! anything builds.
//!
//! A [`Node`] keeps only the hash and store path of its derivation; the full [`Derivation`] is
//! rebuilt on demand by [`Instantiation::derivation`] (the realizer needs it only for what it
//! builds), which keeps planning 32,000 targets small.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::PipelineError;
use super::load::{Pipeline, Source, TargetInput};
use crate::derivation::{CodeIdentity, Derivation, Input, Recorded};
use crate::hash::{ContentHash, DrvHash};
use crate::stage::Registry;
use crate::store_path::StorePath;

/// One target of the closure, with its derivation's identity.
#[derive(Debug, Clone)]
pub struct Node {
    /// Index into `Pipeline::targets`.
    pub target: usize,
    pub hash: DrvHash,
    pub path: StorePath,
    /// Indices into [`Instantiation::nodes`] of the derivation inputs, with their input names.
    pub deps: Vec<(Arc<str>, usize)>,
}

/// The derivations of a closure, inputs before the targets that need them.
#[derive(Debug, Default)]
pub struct Instantiation {
    pub nodes: Vec<Node>,
    by_target: HashMap<usize, usize>,
    sources: HashMap<String, ContentHash>,
    scripts: HashMap<PathBuf, ContentHash>,
    codes: HashMap<String, CodeIdentity>,
}

/// Looks up content hashes of sources and script files.
pub trait ContentLookup {
    /// The content hash of a source; fails with `MissingSource` if it is absent.
    fn source(&mut self, source: &Source) -> Result<ContentHash, PipelineError>;
    /// The content hash of a script file.
    fn script(&mut self, path: &Path) -> Result<ContentHash, PipelineError>;
}

impl Instantiation {
    /// The node of target index `t`, if it is in this closure.
    pub fn node_of(&self, target: usize) -> Option<usize> {
        self.by_target.get(&target).copied()
    }

    /// The target name of node `n`.
    pub fn name<'p>(&self, p: &'p Pipeline, n: usize) -> &'p str {
        &p.targets[self.nodes[n].target].name
    }

    /// The full derivation of node `n`.
    pub fn derivation(&self, p: &Pipeline, n: usize) -> Derivation {
        self.build_derivation(p, n, true)
    }

    /// Node `n`'s derivation; without `recorded` when only its hash is wanted.
    fn build_derivation(&self, p: &Pipeline, n: usize, with_recorded: bool) -> Derivation {
        let node = &self.nodes[n];
        let target = &p.targets[node.target];
        let stage = &p.stages[target.stage];
        let mut inputs = BTreeMap::new();
        let mut source_paths = BTreeMap::new();
        for (name, input) in &target.inputs {
            match input {
                TargetInput::Target(j) => {
                    let dep = &self.nodes[self.by_target[j]];
                    inputs.insert(
                        String::from(&**name),
                        Input::Derivation {
                            hash: dep.hash,
                            name: p.targets[*j].name.clone(),
                        },
                    );
                }
                TargetInput::Source(s) => {
                    let src = &p.sources[s.as_str()];
                    inputs.insert(
                        String::from(&**name),
                        Input::Source {
                            name: s.clone(),
                            content: self.sources[s.as_str()],
                            config: src.config.clone(),
                        },
                    );
                    if with_recorded {
                        source_paths.insert(String::from(&**name), src.path.clone());
                    }
                }
            }
        }
        Derivation {
            name: target.name.clone(),
            stage: stage.name.clone(),
            kind: stage.kind.clone(),
            builder: (*target.builder).clone(),
            config: (*target.config).clone(),
            inputs,
            scripts: stage
                .scripts
                .iter()
                .map(|(k, path)| (k.clone(), self.scripts[path]))
                .collect(),
            code: self.codes.get(&stage.kind).cloned().unwrap_or_default(),
            recorded: if with_recorded {
                Recorded {
                    resources: (*stage.resources).clone(),
                    source_paths,
                    script_paths: (*stage.scripts).clone(),
                    pass_env: (*stage.pass_env).clone(),
                }
            } else {
                Recorded::default()
            },
        }
    }
}

/// Instantiates the closure of `roots` (target indices).
pub fn instantiate(
    p: &Pipeline,
    registry: &Registry,
    roots: &[usize],
    lookup: &mut dyn ContentLookup,
) -> Result<Instantiation, PipelineError> {
    let order = closure_order(p, roots);
    let mut out = Instantiation {
        nodes: Vec::with_capacity(order.len()),
        by_target: HashMap::with_capacity(order.len()),
        ..Default::default()
    };

    // Every source first, so that a missing one fails before anything else happens.
    for &t in &order {
        for (_, input) in &p.targets[t].inputs {
            if let TargetInput::Source(s) = input
                && !out.sources.contains_key(s)
            {
                let h = lookup.source(&p.sources[s.as_str()])?;
                out.sources.insert(s.clone(), h);
            }
        }
    }
    for &t in &order {
        let stage = p.stage_of(t);
        for path in stage.scripts.values() {
            if !out.scripts.contains_key(path) {
                let h = lookup.script(path)?;
                out.scripts.insert(path.clone(), h);
            }
        }
        if !out.codes.contains_key(&stage.kind) {
            let code = registry
                .get(&stage.kind)
                .map(|k| k.code_identity())
                .unwrap_or_default();
            out.codes.insert(stage.kind.clone(), code);
        }
    }

    for &t in &order {
        let target = &p.targets[t];
        let deps = target
            .inputs
            .iter()
            .filter_map(|(name, i)| match i {
                TargetInput::Target(j) => Some((name.clone(), out.by_target[j])),
                TargetInput::Source(_) => None,
            })
            .collect();
        out.by_target.insert(t, out.nodes.len());
        // A placeholder identity until the derivation is hashed just below.
        out.nodes.push(Node {
            target: t,
            hash: DrvHash::of_canonical(b""),
            path: StorePath::new(DrvHash::of_canonical(b""), &target.name)
                .expect("target names were checked at load"),
            deps,
        });
        let n = out.nodes.len() - 1;
        let drv = out.build_derivation(p, n, false);
        let hash = drv.hash().map_err(|e| PipelineError::Invalid {
            loc: p.stage_of(t).loc.clone(),
            key: format!("stages.{}.config", p.stage_of(t).name),
            message: e.to_string(),
        })?;
        let node = &mut out.nodes[n];
        node.hash = hash;
        node.path = StorePath::new(hash, &target.name).expect("target names were checked at load");
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
            for (_, input) in p.targets[t].inputs.iter().rev() {
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
