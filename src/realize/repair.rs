//! `kdbuild verify --repair`: fix what `store::verify` found, as `nix-store --verify
//! --check-contents --repair` does — by rebuilding from the derivation files.
//!
//! | problem | repair |
//! |---------|--------|
//! | missing, changed or unreadable contents | rebuild the derivation by hash and put the new tree in place; the path stays valid throughout (like Nix's repair), so its referrers stay valid |
//! | writable | re-hash; if the contents are intact make it read-only again, else rebuild |
//! | dangling or unrecorded reference | rebuild the referenced path if it is not valid (with whatever of its inputs is not valid either), then record the reference |
//! | derivation rows | re-insert them from the derivation file |
//! | derivation file | rewrite it if the current pipeline instantiates the same hash |
//! | stray | remove it, unless a valid path refers to it (then it is rebuilt in place) |
//!
//! What cannot be rebuilt (no derivation file, or its build fails) is invalidated together
//! with every path that refers to it, so that the closure invariant holds again; those are
//! reported and rebuilt by the next `realize`. A rebuild whose content hash differs from the
//! recorded one is reported: the build is not bit-for-bit reproducible, and results that
//! were computed from the old tree came from different bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::{Options, Plan, PlanNode, RealizeError, Reporter};
use crate::derivation::Derivation;
use crate::hash::{DRV_HASH_CHARS, DrvHash};
use crate::pipeline::{Instantiation, Node};
use crate::stage::Registry;
use crate::store::verify::{Problem, VerifyReport, input_rows};
use crate::store::{PathLock, Store, StoreError, gc, tree_hash};
use crate::store_path::StorePath;

/// What a repair did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Paths rebuilt from their derivations.
    pub rebuilt: Vec<String>,
    /// Rebuilt, but to a content hash other than the recorded one.
    pub not_reproducible: Vec<String>,
    /// Made read-only again; their contents were intact.
    pub sealed: Vec<String>,
    /// Derivations whose rows were re-inserted.
    pub records: Vec<String>,
    /// References recorded again: (path, reference).
    pub references: Vec<(String, String)>,
    /// Derivation files rewritten from the pipeline.
    pub derivations: Vec<String>,
    /// Strays removed.
    pub removed: Vec<String>,
    /// Invalidated because they could not be rebuilt (with their referrers).
    pub invalidated: Vec<String>,
    /// What could not be repaired, and why.
    pub failed: Vec<(String, String)>,
    /// Ctrl-C stopped the rebuilds.
    pub interrupted: bool,
}

fn hash_of(path: &str) -> Option<DrvHash> {
    path.get(..DRV_HASH_CHARS)?.parse().ok()
}

/// Repairs what `report` found. `known_drv` answers a derivation hash from the current
/// pipeline, for derivation files that are gone. The caller holds the store lock shared.
pub fn repair(
    store: Arc<Mutex<Store>>,
    report: &VerifyReport,
    registry: &Arc<Registry>,
    opts: &Options,
    reporter: &mut dyn Reporter,
    known_drv: &dyn Fn(&DrvHash) -> Option<Derivation>,
) -> Result<RepairReport, RealizeError> {
    let mut out = RepairReport::default();
    let mut by_path: BTreeMap<&str, Vec<&Problem>> = BTreeMap::new();
    for p in &report.problems {
        by_path.entry(p.path()).or_default().push(p);
    }
    let s = store.lock().expect("store lock");
    let root = s.root().to_path_buf();
    let db_err = |e| StoreError::db(&root, e);

    // 1. Derivation files the pipeline can still produce.
    for p in &report.problems {
        if let Problem::DerivationMissing { drv, .. } | Problem::DerivationCorrupt { drv, .. } = p
            && let Ok(h) = drv.parse::<DrvHash>()
        {
            match known_drv(&h).filter(|d| d.hash().ok() == Some(h)) {
                Some(d) => {
                    let f = s.drv_file(&h);
                    let _ = std::fs::remove_file(&f);
                    s.write_derivation(&h, &d)?;
                    out.derivations.push(drv.clone());
                }
                None => out.failed.push((
                    p.path().to_string(),
                    format!(
                        "its derivation `{drv}` is gone and the current pipeline does not produce it"
                    ),
                )),
            }
        }
    }

    // 2. What to rebuild in place (valid, broken) and what to build (referenced, invalid).
    let mut rebuild: BTreeSet<String> = BTreeSet::new();
    let mut build: BTreeSet<String> = BTreeSet::new();
    for (path, problems) in &by_path {
        for p in problems {
            match p {
                Problem::Missing { .. }
                | Problem::SizeMismatch { .. }
                | Problem::ContentMismatch { .. }
                | Problem::Unreadable { .. } => {
                    rebuild.insert(path.to_string());
                }
                Problem::Writable { .. } => {
                    let intact = s.db.path_info(path).map_err(db_err)?.is_some_and(|info| {
                        tree_hash::hash_tree(&root.join(path))
                            .is_ok_and(|h| h.hash == info.content_hash)
                    });
                    if intact {
                        tree_hash::make_read_only(&root.join(path), true)
                            .map_err(|e| StoreError::io(&root.join(path), e))?;
                        out.sealed.push(path.to_string());
                    } else {
                        rebuild.insert(path.to_string());
                    }
                }
                Problem::DanglingReference { reference, .. }
                | Problem::MissingReference { reference, .. }
                    if !is_valid(&s, reference)? =>
                {
                    build.insert(reference.clone());
                }
                _ => {}
            }
        }
    }
    // Anything built needs its inputs valid: add the invalid ones, recursively.
    let mut drvs: BTreeMap<String, Derivation> = BTreeMap::new();
    let mut cannot: BTreeMap<String, String> = BTreeMap::new();
    let mut stack: Vec<String> = rebuild.iter().chain(build.iter()).cloned().collect();
    while let Some(p) = stack.pop() {
        if drvs.contains_key(&p) || cannot.contains_key(&p) {
            continue;
        }
        let Some(h) = hash_of(&p) else {
            cannot.insert(p, "not a store path name".into());
            continue;
        };
        match s.read_derivation(&h) {
            Ok(d) => {
                for (_, input) in d.input_paths() {
                    let input = input.to_string();
                    if !is_valid(&s, &input)? {
                        build.insert(input.clone());
                        stack.push(input);
                    }
                }
                drvs.insert(p, d);
            }
            Err(e) => {
                cannot.insert(p, format!("cannot rebuild it: {e}"));
            }
        }
    }
    // A path whose inputs cannot be built cannot be built either.
    loop {
        let blocked: Vec<(String, String)> = drvs
            .iter()
            .filter_map(|(p, d)| {
                d.input_paths()
                    .map(|(_, i)| i.to_string())
                    .find(|i| cannot.contains_key(i))
                    .map(|i| (p.clone(), format!("its input `{i}` cannot be rebuilt")))
            })
            .collect();
        if blocked.is_empty() {
            break;
        }
        for (p, why) in blocked {
            drvs.remove(&p);
            cannot.insert(p, why);
        }
    }
    // Old content hashes, to say afterwards whether a rebuild reproduced them.
    let mut old_hashes = BTreeMap::new();
    for p in drvs.keys() {
        if let Some(info) = s.db.path_info(p).map_err(db_err)? {
            old_hashes.insert(p.clone(), info.content_hash);
        }
    }
    drop(s);

    // 3. Build, inputs first.
    let (plan, plan_drvs) = plan_from_derivations(&store, &drvs)?;
    let summary = super::run_plan(store.clone(), &plan, plan_drvs, registry, opts, reporter)?;
    let s = store.lock().expect("store lock");
    for (i, node) in plan.inst.nodes.iter().enumerate() {
        let p = node.path.to_string();
        let name = node.path.name();
        if summary.failed.iter().any(|f| f == name) || summary.skipped.iter().any(|f| f == name) {
            cannot.insert(p, "its rebuild failed (see `kdbuild log`)".into());
            continue;
        }
        if plan.nodes[i].build && is_valid(&s, &p)? {
            out.rebuilt.push(p.clone());
            if let (Some(old), Some(new)) =
                (old_hashes.get(&p), s.db.path_info(&p).map_err(db_err)?)
                && *old != new.content_hash
            {
                out.not_reproducible.push(p);
            }
        }
    }
    if summary.interrupted {
        out.interrupted = true;
        return Ok(out);
    }
    drop(s);

    // 4. Records: derivation rows and references.
    let mut s = store.lock().expect("store lock");
    for p in &report.problems {
        match p {
            Problem::DerivationRecord { drv, .. } => {
                let Ok(h) = drv.parse::<DrvHash>() else {
                    continue;
                };
                let Ok(d) = s.read_derivation(&h) else {
                    continue;
                };
                let rows = input_rows(&d);
                s.db.write(|tx| {
                    tx.execute("DELETE FROM drv_inputs WHERE drv_hash = ?1", [drv])?;
                    tx.execute(
                        "INSERT OR IGNORE INTO derivations (drv_hash, target, stage, kind, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        rusqlite::params![drv, d.name, d.stage, d.kind, crate::store::db::now_ms()],
                    )?;
                    for (name, input, content) in &rows {
                        tx.execute(
                            "INSERT INTO drv_inputs (drv_hash, name, input, content) VALUES (?1, ?2, ?3, ?4)",
                            rusqlite::params![drv, name, input, content],
                        )?;
                    }
                    Ok(())
                })
                .map_err(db_err)?;
                out.records.push(drv.clone());
            }
            Problem::MissingReference {
                path,
                reference,
                input,
            } if is_valid(&s, reference)? => {
                s.db.write(|tx| {
                    tx.execute(
                        "INSERT OR IGNORE INTO refs (referrer, reference, reason)
                         SELECT id, ?2, ?3 FROM valid_paths WHERE path = ?1",
                        rusqlite::params![path, reference, input],
                    )
                })
                .map_err(db_err)?;
                out.references.push((path.clone(), reference.clone()));
            }
            _ => {}
        }
    }

    // 5. Strays nobody needs.
    for p in &report.problems {
        if let Problem::Stray { path } = p
            && !is_valid(&s, path)?
            && let Ok(sp) = path.parse::<StorePath>()
            && let Some(_held) = PathLock::try_exclusive(&s.lock_file(&sp.hash()))?
            && !is_valid(&s, path)?
        {
            gc::delete_dir(&root, &root.join(path), path)?;
            out.removed.push(path.clone());
        }
    }

    // 6. What could not be rebuilt: invalid with everything that refers to it, if it is
    // valid; a referrer of something that could not be built is invalidated too.
    let mut doomed: BTreeSet<String> = BTreeSet::new();
    for (p, why) in &cannot {
        out.failed.push((p.clone(), why.clone()));
        if is_valid(&s, p)? {
            doomed.insert(p.clone());
        }
    }
    for p in &report.problems {
        if let Problem::DanglingReference {
            path, reference, ..
        } = p
            && !is_valid(&s, reference)?
        {
            doomed.insert(path.clone());
        }
    }
    if !doomed.is_empty() {
        out.invalidated = gc::invalidate_with_referrers(&mut s, &doomed)?;
    }
    out.failed.sort();
    out.failed.dedup();
    Ok(out)
}

fn is_valid(s: &Store, path: &str) -> Result<bool, StoreError> {
    s.db.path_info(path)
        .map(|i| i.is_some())
        .map_err(|e| StoreError::db(s.root(), e))
}

/// A plan that builds `drvs` (store path name → derivation) in dependency order, with the
/// valid ones forced (rebuilt in place).
/// A plan and the derivation of each of its nodes.
type PlanWithDerivations = (Plan, Vec<Option<Arc<Derivation>>>);

fn plan_from_derivations(
    store: &Arc<Mutex<Store>>,
    drvs: &BTreeMap<String, Derivation>,
) -> Result<PlanWithDerivations, StoreError> {
    // Inputs first: a referrers-first order, reversed.
    let names: BTreeSet<String> = drvs.keys().cloned().collect();
    let mut order = crate::store::closure::referrers_first(&names, |p: &String| {
        Ok::<_, StoreError>(drvs[p].input_paths().map(|(_, i)| i.to_string()).collect())
    })?;
    order.reverse();
    let index: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let s = store.lock().expect("store lock");
    let mut inst = Instantiation::default();
    let mut nodes = Vec::new();
    let mut plan_drvs = Vec::new();
    for p in &order {
        let d = &drvs[p];
        let sp: StorePath = p.parse().map_err(|_| StoreError::NoDerivation(p.clone()))?;
        inst.nodes.push(Node {
            target: 0,
            hash: sp.hash(),
            path: sp.clone(),
            deps: d
                .input_paths()
                .filter_map(|(name, i)| {
                    index
                        .get(i.to_string().as_str())
                        .map(|&j| (Arc::from(name), j))
                })
                .collect(),
        });
        let valid =
            s.db.is_valid(&sp)
                .map_err(|e| StoreError::db(s.root(), e))?;
        nodes.push(PlanNode {
            valid,
            needed: true,
            build: true,
            reasons: Vec::new(),
        });
        plan_drvs.push(Some(Arc::new(d.clone())));
    }
    let roots = (0..order.len()).collect();
    Ok((Plan { inst, nodes, roots }, plan_drvs))
}
