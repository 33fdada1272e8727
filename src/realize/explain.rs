//! `kdbuild explain TARGET` (and `realize -n --explain`): the field-level difference between
//! the derivation a target's current result was built from and the one the pipeline asks for
//! now, with each changed input explained in turn — "input `data` changed because source
//! `demo` content changed".
//!
//! The changes are [`derivation::diff`](crate::derivation::diff)'s, wrapped in the dry run's
//! [`Reason`]. The old derivations come from the store's derivation files, so an explanation
//! reaches as far back as `gc` kept them (it keeps those of every kept path).

use std::collections::HashSet;
use std::fmt::Write;

use super::plan::Reason;
use crate::derivation::{Change, Derivation, Input, diff};
use crate::hash::DrvHash;
use crate::pipeline::{Instantiation, Pipeline};
use crate::store::{Store, StoreError};

/// Why a target would (or would not) be built.
#[derive(Clone, Debug, PartialEq)]
pub enum Explanation {
    /// Its current derivation's output is valid.
    UpToDate { path: String },
    /// No result of the target was ever registered in this store.
    NeverBuilt,
    /// This exact derivation was built before, but its output is no longer valid.
    OutputDeleted,
    /// The derivation of the current result is gone from the store, so the difference
    /// cannot be said.
    OldDerivationGone { old_path: String },
    /// The current result was built from another derivation; these hashed fields differ.
    Changed {
        old_path: String,
        causes: Vec<Cause>,
    },
}

/// One changed field, with why it changed when it is an input.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// Always a [`Reason::Changed`].
    pub reason: Reason,
    /// For a source: the source's name; for an input: its target name.
    pub what: Option<String>,
    /// Why an input derivation changed (its own changes, recursively).
    pub because: Vec<Cause>,
    /// What could not be said, or that it was explained above.
    pub note: Option<String>,
}

/// Explains node `i` of `inst`.
pub fn explain(
    p: &Pipeline,
    inst: &Instantiation,
    i: usize,
    store: Option<&Store>,
) -> Result<Explanation, StoreError> {
    let Some(store) = store else {
        return Ok(Explanation::NeverBuilt);
    };
    let db_err = |e| StoreError::db(store.root(), e);
    let node = &inst.nodes[i];
    if store.db.is_valid(&node.path).map_err(db_err)? {
        return Ok(Explanation::UpToDate {
            path: node.path.to_string(),
        });
    }
    let Some(latest) = store
        .db
        .latest_valid_for_target(inst.name(p, i))
        .map_err(db_err)?
    else {
        return Ok(if store.drv_file(&node.hash).exists() {
            Explanation::OutputDeleted
        } else {
            Explanation::NeverBuilt
        });
    };
    let old = latest
        .drv_hash
        .parse::<DrvHash>()
        .ok()
        .and_then(|h| store.read_derivation(&h).ok());
    let Some(old) = old else {
        return Ok(Explanation::OldDerivationGone {
            old_path: latest.path,
        });
    };
    let mut seen = HashSet::new();
    let causes = causes(p, inst, i, &old, &inst.derivation(p, i), store, &mut seen);
    Ok(Explanation::Changed {
        old_path: latest.path,
        causes,
    })
}

/// The changes from `old` to `new` (node `i`), each input change explained recursively.
/// `seen` holds (old, new) input hashes already explained.
fn causes(
    p: &Pipeline,
    inst: &Instantiation,
    i: usize,
    old: &Derivation,
    new: &Derivation,
    store: &Store,
    seen: &mut HashSet<(DrvHash, DrvHash)>,
) -> Vec<Cause> {
    diff(old, new)
        .into_iter()
        .map(|change| {
            let mut cause = Cause {
                reason: Reason::Changed(change.clone()),
                what: None,
                because: Vec::new(),
                note: None,
            };
            match &change {
                Change::Source { name, .. } => {
                    if let Some(Input::Source { name: s, .. }) = new.inputs.get(name) {
                        cause.what = Some(s.clone());
                    }
                }
                Change::Input { name, .. } => {
                    let (Some(Input::Derivation { hash: oh, .. }), Some(dep)) = (
                        old.inputs.get(name),
                        inst.nodes[i]
                            .deps
                            .iter()
                            .find(|(n, _)| &**n == name)
                            .map(|(_, d)| *d),
                    ) else {
                        return cause;
                    };
                    let nh = inst.nodes[dep].hash;
                    cause.what = Some(inst.name(p, dep).to_string());
                    if !seen.insert((*oh, nh)) {
                        cause.note = Some("explained above".into());
                        return cause;
                    }
                    match store.read_derivation(oh) {
                        Ok(old_in) => {
                            let new_in = inst.derivation(p, dep);
                            cause.because = causes(p, inst, dep, &old_in, &new_in, store, seen);
                        }
                        Err(_) => {
                            cause.note = Some(format!(
                                "its old derivation `{oh}` is no longer in the store"
                            ))
                        }
                    }
                }
                _ => {}
            }
            cause
        })
        .collect()
}

impl Cause {
    /// The cause in one line, without what it is explained by.
    pub fn headline(&self) -> String {
        match &self.reason {
            // "`x` changed" (same target, another derivation); added, removed and renamed
            // inputs are said as `diff` says them.
            Reason::Changed(Change::Input { name, detail })
                if detail.starts_with('`') && detail.ends_with(" changed") =>
            {
                match &self.what {
                    Some(t) => format!("input `{name}` (`{t}`) changed"),
                    None => format!("input `{name}` changed"),
                }
            }
            Reason::Changed(Change::Source { name, detail }) => match &self.what {
                Some(s) => format!("source `{s}` (input `{name}`) {detail}"),
                None => format!("source input `{name}` {detail}"),
            },
            r => r.to_string(),
        }
    }
}

/// Renders causes as an indented tree; a cause explained by exactly one leaf is said on one
/// line ("input `data` (`demo-preprocess`) changed because source `demo` (input `raw`)
/// content changed").
pub fn render_causes(causes: &[Cause], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for c in causes {
        let mut line = c.headline();
        if let Some(n) = &c.note {
            let _ = write!(line, " ({n})");
        }
        match c.because.as_slice() {
            [] => {
                let _ = writeln!(out, "{pad}- {line}");
            }
            [only] if only.because.is_empty() && only.note.is_none() => {
                let _ = writeln!(out, "{pad}- {line} because {}", only.headline());
            }
            more => {
                let _ = writeln!(out, "{pad}- {line} because:");
                render_causes(more, indent + 2, out);
            }
        }
    }
}

/// The whole explanation of `target`, as `kdbuild explain` prints it.
pub fn render(target: &str, e: &Explanation, store_root: &std::path::Path) -> String {
    let mut out = String::new();
    match e {
        Explanation::UpToDate { path } => {
            let _ = writeln!(
                out,
                "{target} is up to date: {}",
                store_root.join(path).display()
            );
        }
        Explanation::NeverBuilt => {
            let _ = writeln!(
                out,
                "{target} would be built: it was never built in this store"
            );
        }
        Explanation::OutputDeleted => {
            let _ = writeln!(
                out,
                "{target} would be built: this exact derivation was built before, but its output is no longer valid (collected or invalidated)"
            );
        }
        Explanation::OldDerivationGone { old_path } => {
            let _ = writeln!(
                out,
                "{target} would be built: its current result {} was built from a derivation that is no longer in the store, so what changed cannot be said",
                store_root.join(old_path).display()
            );
        }
        Explanation::Changed { old_path, causes } => {
            let _ = writeln!(
                out,
                "{target} would be built: its current result {} was built from a different derivation:",
                store_root.join(old_path).display()
            );
            render_causes(causes, 2, &mut out);
        }
    }
    out
}
