//! Garbage collection: delete every store path no root needs, like `nix-store --gc`.
//!
//! **Mark.** From the roots (see [`super::roots`]: pinned paths, result links, temporary roots
//! of running realizers and builds) over the references of valid paths. By default the
//! *build-time inputs* of a kept path are kept too (its derivation's inputs, recursively:
//! a kept student keeps its teacher and its preprocessed dataset even where the student's
//! output does not refer to them at run time), because provenance matters to researchers and
//! retraining a teacher costs GPU hours — Nix's `keep-outputs = true`.
//! [`GcOptions::keep_build_inputs`] `= false` (`kdbuild gc --runtime-only`) keeps only the
//! runtime closure. Either way the derivation files of everything kept, and of their inputs
//! recursively, stay (Nix's `keep-derivations`), so `explain`, `why-depends --build` and
//! `verify --repair` keep working for every kept path.
//!
//! **Sweep.** Dead paths are invalidated first (their rows go in one transaction, referrers
//! before what they refer to, so no valid path ever refers to an invalid one), then their
//! directories are renamed into `tmp/` and deleted: a gc killed half-way leaves only
//! unregistered directories, which are never treated as valid and which the next gc removes.
//! Then the derivations nobody needs (files and rows; build records and logs stay as
//! history), staging directories whose build lock is free (dead builds), and stray
//! directories named like store paths but not registered (the leftovers of killed
//! registrations), each deleted only while its per-path lock is held. Unsettled SLURM jobs
//! are roots too ([`roots::job_roots`]): their outputs, staging directories and inputs stay.
//!
//! **Concurrency.** gc holds the store lock exclusively from reading the roots to the end
//! of the sweep; see [`super::roots`] for why that keeps what running realizers and builds
//! use. `--max-freed` stops after that many bytes, deleting referrers first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::time::Instant;

use super::roots::{self, StoreLock};
use super::tree_hash;
use super::{PathLock, Store, StoreError, crash_point};
use crate::hash::DRV_HASH_CHARS;
use crate::store_path::StorePath;

/// How to collect.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Say what would be deleted; delete nothing.
    pub dry_run: bool,
    /// Stop once at least this many bytes of store paths were freed.
    pub max_freed: Option<u64>,
    /// Keep the build-time inputs of kept paths (the default; see the module doc).
    pub keep_build_inputs: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            max_freed: None,
            keep_build_inputs: true,
        }
    }
}

/// What a gc did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct GcReport {
    /// Distinct store paths the roots name.
    pub roots: usize,
    /// Valid paths kept.
    pub live: usize,
    /// Store paths deleted: (name, bytes).
    pub deleted: Vec<(String, u64)>,
    /// Derivations deleted (file and rows).
    pub derivations: usize,
    /// Staging directories of dead builds deleted: (name, bytes).
    pub staging: Vec<(String, u64)>,
    /// Unregistered directories named like store paths deleted: (name, bytes).
    pub strays: Vec<(String, u64)>,
    /// Staging directories and strays left because a live build holds their lock.
    pub busy: usize,
    /// Stale root entries removed (dead temporary roots, result links that are gone).
    pub stale_roots: usize,
    pub mark_ms: u128,
    pub sweep_ms: u128,
    /// The sweep's steps: (step, milliseconds).
    pub sweep_steps: Vec<(&'static str, u128)>,
}

impl GcReport {
    /// Bytes of store paths freed.
    pub fn freed_paths_bytes(&self) -> u64 {
        self.deleted.iter().map(|(_, b)| b).sum()
    }

    /// Bytes of staging directories and strays freed.
    pub fn freed_other_bytes(&self) -> u64 {
        self.staging
            .iter()
            .chain(self.strays.iter())
            .map(|(_, b)| b)
            .sum()
    }
}

/// The hash part of a store path name.
fn hash_of(path: &str) -> &str {
    path.get(..DRV_HASH_CHARS).unwrap_or(path)
}

/// The store graph as the database holds it, loaded in a few queries.
struct Graph {
    /// valid path → size in bytes
    valid: HashMap<String, u64>,
    /// valid path → referenced paths
    refs: HashMap<String, Vec<String>>,
    /// drv hash → input store paths (sources left out)
    drv_inputs: HashMap<String, Vec<String>>,
    /// every recorded derivation
    derivations: HashSet<String>,
}

fn load_graph(store: &Store) -> rusqlite::Result<Graph> {
    let c = store.db.conn();
    let mut valid = HashMap::new();
    let mut st = c.prepare("SELECT path, size FROM valid_paths")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        valid.insert(r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64);
    }
    let mut refs: HashMap<String, Vec<String>> = HashMap::new();
    let mut st = c.prepare(
        "SELECT v.path, r.reference FROM refs r JOIN valid_paths v ON v.id = r.referrer",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        refs.entry(r.get(0)?).or_default().push(r.get(1)?);
    }
    let mut drv_inputs: HashMap<String, Vec<String>> = HashMap::new();
    let mut st =
        c.prepare("SELECT drv_hash, input FROM drv_inputs WHERE input NOT LIKE 'source:%'")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        drv_inputs.entry(r.get(0)?).or_default().push(r.get(1)?);
    }
    let mut derivations = HashSet::new();
    let mut st = c.prepare("SELECT drv_hash FROM derivations")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        derivations.insert(r.get::<_, String>(0)?);
    }
    Ok(Graph {
        valid,
        refs,
        drv_inputs,
        derivations,
    })
}

impl Graph {
    /// The input store paths of derivation `hash`: from the database, or from its file when
    /// the database has no row for it (an old store, or a row lost to corruption).
    fn inputs_of(&self, store: &Store, hash: &str) -> Vec<String> {
        if let Some(v) = self.drv_inputs.get(hash) {
            return v.clone();
        }
        if self.derivations.contains(hash) {
            return Vec::new();
        }
        let Ok(h) = hash.parse() else {
            return Vec::new();
        };
        match store.read_derivation(&h) {
            Ok(d) => d.input_paths().map(|(_, p)| p.to_string()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Collects garbage. `on_wait` is called once if gc has to wait for the store lock (a
/// realizer is writing its temporary roots, or `verify` runs).
pub fn collect(
    store: &mut Store,
    opts: &GcOptions,
    on_wait: &mut dyn FnMut(),
) -> Result<GcReport, StoreError> {
    let root = store.root().to_path_buf();
    let _lock = StoreLock::exclusive(&root, on_wait)?;
    let t0 = Instant::now();
    let mut report = GcReport::default();
    let db_err = |e| StoreError::db(&root, e);
    // gc touches every row once: a page cache of 64 MiB (for this connection only) keeps
    // SQLite from re-reading index pages of a large store.
    store
        .db
        .conn()
        .pragma_update(None, "cache_size", -65536)
        .map_err(db_err)?;

    // ---- mark
    let mut roots = roots::find_roots(&root)?;
    roots.roots.extend(roots::job_roots(store)?);
    let root_paths: BTreeSet<String> = roots.paths().into_iter().map(String::from).collect();
    report.roots = root_paths.len();
    let graph = load_graph(store).map_err(db_err)?;
    let keep_inputs = opts.keep_build_inputs;
    let live = super::closure::closure(root_paths.iter().cloned(), |p: &String| {
        let mut next = graph.refs.get(p).cloned().unwrap_or_default();
        if keep_inputs {
            next.extend(graph.inputs_of(store, hash_of(p)));
        }
        Ok::<_, StoreError>(next)
    })?;
    let dead: BTreeSet<String> = graph
        .valid
        .keys()
        .filter(|p| !live.contains(*p))
        .cloned()
        .collect();
    report.live = graph.valid.len() - dead.len();
    let order = super::closure::referrers_first(&dead, |p: &String| {
        Ok::<_, StoreError>(graph.refs.get(p).cloned().unwrap_or_default())
    })?;
    let mut chosen = Vec::new();
    let mut freed = 0u64;
    for p in order {
        if opts.max_freed.is_some_and(|m| freed >= m) {
            break;
        }
        let size = graph.valid[&p];
        freed += size;
        chosen.push((p, size));
    }
    // Derivations to keep: those of every path that stays valid or is a root, and their
    // inputs' derivations, recursively.
    let chosen_set: HashSet<&str> = chosen.iter().map(|(p, _)| p.as_str()).collect();
    let staying = graph
        .valid
        .keys()
        .filter(|p| !chosen_set.contains(p.as_str()))
        .chain(root_paths.iter())
        .map(|p| hash_of(p).to_string());
    let keep_drvs = super::closure::closure(staying, |h: &String| {
        Ok::<_, StoreError>(
            graph
                .inputs_of(store, h)
                .iter()
                .map(|p| hash_of(p).to_string())
                .collect(),
        )
    })?;
    report.mark_ms = t0.elapsed().as_millis();

    // ---- sweep
    let t1 = Instant::now();
    if !opts.dry_run {
        for f in roots.dead_temp.iter().chain(roots.stale_indirect.iter()) {
            if fs::remove_file(f).is_ok() {
                report.stale_roots += 1;
            }
        }
        let mut step = Instant::now();
        let mut lap = |name, report: &mut GcReport| {
            report.sweep_steps.push((name, step.elapsed().as_millis()));
            step = Instant::now();
        };
        invalidate(store, chosen.iter().map(|(p, _)| p.as_str())).map_err(db_err)?;
        crash_point("gc:invalidated");
        lap("invalidate", &mut report);
        if let Some((first, _)) = chosen.first() {
            remove_dir(&root, first)?;
            crash_point("gc:deleted-one");
        }
        let rest: Vec<&str> = chosen.iter().skip(1).map(|(p, _)| p.as_str()).collect();
        in_parallel(&rest, |p| remove_dir(&root, p))?;
        lap("delete paths", &mut report);
    }
    let t2 = Instant::now();
    report.deleted = chosen;
    report.derivations = sweep_derivations(store, &graph, &keep_drvs, opts.dry_run)?;
    report
        .sweep_steps
        .push(("derivations", t2.elapsed().as_millis()));
    let t3 = Instant::now();
    sweep_staging(store, &root_paths, &mut report, opts.dry_run)?;
    sweep_strays(store, &root_paths, &mut report, opts.dry_run)?;
    report
        .sweep_steps
        .push(("staging and strays", t3.elapsed().as_millis()));
    report.sweep_ms = t1.elapsed().as_millis();
    Ok(report)
}

/// Removes the rows of `paths` in one transaction (refs explicitly, whatever the foreign-key
/// setting of the connection).
fn invalidate<'a>(store: &mut Store, paths: impl Iterator<Item = &'a str>) -> rusqlite::Result<()> {
    let paths: Vec<&str> = paths.collect();
    if paths.is_empty() {
        return Ok(());
    }
    store.db.write(|tx| {
        let mut del_refs = tx.prepare_cached(
            "DELETE FROM refs WHERE referrer = (SELECT id FROM valid_paths WHERE path = ?1)",
        )?;
        let mut del_path = tx.prepare_cached("DELETE FROM valid_paths WHERE path = ?1")?;
        for p in &paths {
            del_refs.execute([p])?;
            del_path.execute([p])?;
        }
        Ok(())
    })
}

/// Invalidates `paths` and every valid path that refers to them, recursively, so that no
/// valid path is left referring to an invalid one; then deletes their directories. Returns
/// what was invalidated, sorted. (`verify --repair` uses it for what it cannot rebuild.)
pub fn invalidate_with_referrers(
    store: &mut Store,
    paths: &BTreeSet<String>,
) -> Result<Vec<String>, StoreError> {
    let root = store.root().to_path_buf();
    let db_err = |e| StoreError::db(&root, e);
    let all = {
        let mut st = store
            .db
            .conn()
            .prepare(
                "SELECT v.path FROM refs r JOIN valid_paths v ON v.id = r.referrer
                 WHERE r.reference = ?1",
            )
            .map_err(db_err)?;
        super::closure::closure(paths.iter().cloned(), |p: &String| {
            st.query_map([p], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        })
        .map_err(db_err)?
    };
    let mut all: Vec<String> = all
        .into_iter()
        .filter(|p| store.db.path_info(p).ok().flatten().is_some())
        .collect();
    all.sort();
    invalidate(store, all.iter().map(String::as_str)).map_err(db_err)?;
    for p in &all {
        delete_dir(&root, &root.join(p), p)?;
    }
    Ok(all)
}

/// Runs `f` over `items` on a few threads. Deleting is bound by file-system latency more than
/// by CPU (ext4 looks up and rewrites directory blocks, the journal waits), so several
/// deletions in flight overlap those waits. Returns the first error.
fn in_parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> Result<(), StoreError> + Sync,
) -> Result<(), StoreError> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const THREADS: usize = 4;
    let next = AtomicUsize::new(0);
    let first_err: Mutex<Option<StoreError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..THREADS.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item) {
                        first_err.lock().expect("gc errors").get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_err.into_inner().expect("gc errors") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Deletes the directory of store path `name` (its size is known from the database).
fn remove_dir(store_root: &Path, name: &str) -> Result<(), StoreError> {
    delete_dir_measured(store_root, &store_root.join(name), name, false).map(|_| ())
}

/// Deletes a store directory and returns the bytes it held: renamed into `tmp/` first (one atomic step), so a half-deleted
/// tree is never left under a store path's name.
pub(crate) fn delete_dir(store_root: &Path, dir: &Path, name: &str) -> Result<u64, StoreError> {
    delete_dir_measured(store_root, dir, name, true)
}

fn delete_dir_measured(
    store_root: &Path,
    dir: &Path,
    name: &str,
    measure: bool,
) -> Result<u64, StoreError> {
    let trash = store_root
        .join("tmp")
        .join(format!(".gc-{name}.{}", std::process::id()));
    match fs::rename(dir, &trash) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(dir, e)),
    }
    let size = if measure { tree_size(&trash) } else { 0 };
    tree_hash::remove_tree(&trash).map_err(|e| StoreError::io(&trash, e))?;
    Ok(size)
}

/// Bytes of file content below `path` (best effort).
pub(crate) fn tree_size(path: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Deletes derivation files and rows that no kept path needs. Returns how many.
fn sweep_derivations(
    store: &mut Store,
    graph: &Graph,
    keep: &HashSet<String>,
    dry_run: bool,
) -> Result<usize, StoreError> {
    let root = store.root().to_path_buf();
    let drv_dir = root.join("drv");
    let mut doomed: BTreeSet<String> = graph
        .derivations
        .iter()
        .filter(|h| !keep.contains(*h))
        .cloned()
        .collect();
    let mut tmp_files = Vec::new();
    for e in fs::read_dir(&drv_dir)
        .map_err(|e| StoreError::io(&drv_dir, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(h) = name.strip_suffix(".json") {
            if !keep.contains(h) {
                doomed.insert(h.to_string());
            }
        } else if let Some((_, pid)) = name.split_once(".json.tmp")
            && pid.parse::<i32>().is_ok_and(|pid| !process_alive(pid))
        {
            tmp_files.push(e.path());
        }
    }
    if dry_run || doomed.is_empty() {
        return Ok(doomed.len());
    }
    store
        .db
        .write(|tx| {
            let mut d = tx.prepare_cached("DELETE FROM derivations WHERE drv_hash = ?1")?;
            let mut i = tx.prepare_cached("DELETE FROM drv_inputs WHERE drv_hash = ?1")?;
            for h in &doomed {
                d.execute([h])?;
                i.execute([h])?;
            }
            Ok(())
        })
        .map_err(|e| StoreError::db(&root, e))?;
    let doomed: Vec<&String> = doomed.iter().collect();
    in_parallel(&doomed, |h| {
        let f = drv_dir.join(format!("{h}.json"));
        match fs::remove_file(&f) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&f, e)),
        }
    })?;
    for f in tmp_files {
        let _ = fs::remove_file(f);
    }
    Ok(doomed.len())
}

/// Whether process `pid` exists on this host.
fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Deletes staging directories whose build lock is free (their build is dead), and the trash
/// of interrupted gcs.
fn sweep_staging(
    store: &Store,
    roots: &BTreeSet<String>,
    report: &mut GcReport,
    dry_run: bool,
) -> Result<(), StoreError> {
    let tmp = store.root().join("tmp");
    let mut names: Vec<String> = fs::read_dir(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = tmp.join(&name);
        if let Some(rest) = name.strip_prefix(".gc-") {
            // Trash of a gc: deletable once its gc is gone.
            let pid = rest.rsplit('.').next().and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(|p| p as u32 != std::process::id() && process_alive(p)) {
                continue;
            }
            let size = tree_size(&path);
            if !dry_run {
                tree_hash::remove_tree(&path).map_err(|e| StoreError::io(&path, e))?;
            }
            report.staging.push((name, size));
            continue;
        }
        // `<hash>-<name>.<attempt>`
        let Some(base) = name.rsplit_once('.').map(|(b, _)| b) else {
            continue;
        };
        let Ok(sp) = base.parse::<StorePath>() else {
            continue;
        };
        // A root's staging directory may be a SLURM job's, building on another node.
        if roots.contains(base) {
            report.busy += 1;
            continue;
        }
        let Some(_held) = PathLock::try_exclusive(&store.lock_file(&sp.hash()))? else {
            report.busy += 1;
            continue;
        };
        let size = tree_size(&path);
        if !dry_run {
            tree_hash::remove_tree(&path).map_err(|e| StoreError::io(&path, e))?;
        }
        report.staging.push((name, size));
    }
    Ok(())
}

/// Deletes directories named like store paths that are not valid, each under its per-path
/// lock and after re-checking validity under it (a realizer may have registered it since
/// the mark).
fn sweep_strays(
    store: &Store,
    roots: &BTreeSet<String>,
    report: &mut GcReport,
    dry_run: bool,
) -> Result<(), StoreError> {
    let root = store.root().to_path_buf();
    for (name, sp) in store_entries(&root)? {
        // An unregistered root is a SLURM job's published output, waiting to be registered.
        if roots.contains(&name) {
            continue;
        }
        let side = name.starts_with('.');
        let valid = |sp: &StorePath| store.db.is_valid(sp).map_err(|e| StoreError::db(&root, e));
        if !side && valid(&sp)? {
            continue;
        }
        let Some(_held) = PathLock::try_exclusive(&store.lock_file(&sp.hash()))? else {
            report.busy += 1;
            continue;
        };
        if !side && valid(&sp)? {
            continue;
        }
        let size = if dry_run {
            tree_size(&root.join(&name))
        } else {
            delete_dir(&root, &root.join(&name), &name)?
        };
        report.strays.push((name, size));
    }
    Ok(())
}

/// Entries of the store directory whose names parse as store paths.
pub fn store_path_dirs(root: &Path) -> Result<Vec<(String, StorePath)>, StoreError> {
    Ok(store_entries(root)?
        .into_iter()
        .filter(|(name, sp)| *name == sp.to_string())
        .collect())
}

/// Entries of the store directory that are store paths, or the hidden side trees of forced
/// rebuilds (`.<path>.new<pid>`, see `Store::side_dir`), with the store path each belongs to.
fn store_entries(root: &Path) -> Result<Vec<(String, StorePath)>, StoreError> {
    let mut out = Vec::new();
    for e in fs::read_dir(root)
        .map_err(|e| StoreError::io(root, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let base = match name.strip_prefix('.') {
            Some(hidden) => match hidden.rsplit_once(".new") {
                Some((b, pid)) if pid.parse::<u32>().is_ok() => b,
                _ => continue,
            },
            None => name.as_str(),
        };
        if let Ok(sp) = base.parse::<StorePath>() {
            out.push((name, sp));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::DrvHash;
    use crate::store::BuildRecord;
    use crate::store::roots::TempRoots;

    /// A store path named `name`, registered with `refs` (input, path) as references and
    /// `inputs` (input, path) as its derivation's build-time inputs.
    fn add(
        store: &mut Store,
        name: &str,
        refs: &[(&str, &str)],
        inputs: &[(&str, &str)],
    ) -> String {
        let hash = DrvHash::of_canonical(name.as_bytes());
        let sp = StorePath::new(hash, name).unwrap();
        let staging = store.staging_dir(&sp, 1);
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join("out"), name).unwrap();
        let rows: Vec<(String, String, Option<String>)> = inputs
            .iter()
            .map(|(i, p)| (i.to_string(), p.to_string(), None))
            .collect();
        store
            .db
            .add_derivation(&hash, name, "s", "command", &rows)
            .unwrap();
        let refs = refs
            .iter()
            .map(|(i, p)| (p.to_string(), i.to_string()))
            .collect();
        store
            .register_output(&staging, &sp, refs, BuildRecord::default())
            .unwrap();
        sp.to_string()
    }

    /// teacher ← student (build input `teacher`, not a runtime reference) ← eval (refers to
    /// student), all on `prep`; plus an unrooted `junk`.
    fn fixture() -> (tempfile::TempDir, Store, [String; 5]) {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&d.path().join("store")).unwrap();
        let prep = add(&mut s, "prep", &[], &[]);
        let teacher = add(&mut s, "teacher", &[("data", &prep)], &[("data", &prep)]);
        let student = add(
            &mut s,
            "student",
            &[("data", &prep)],
            &[("data", &prep), ("teacher", &teacher)],
        );
        let eval = add(
            &mut s,
            "eval",
            &[("model", &student)],
            &[("model", &student)],
        );
        let junk = add(&mut s, "junk", &[("data", &prep)], &[("data", &prep)]);
        let sp: StorePath = eval.parse().unwrap();
        roots::add_pinned(&s, "eval", &sp, &mut || {}).unwrap();
        (d, s, [prep, teacher, student, eval, junk])
    }

    fn valid(s: &Store) -> Vec<String> {
        let mut v: Vec<String> =
            s.db.all_valid()
                .unwrap()
                .into_iter()
                .map(|i| i.path)
                .collect();
        v.sort();
        v
    }

    #[test]
    fn build_inputs_of_kept_paths_are_kept_by_default() {
        let (_d, mut s, [prep, teacher, student, eval, junk]) = fixture();
        let r = collect(&mut s, &GcOptions::default(), &mut || {}).unwrap();
        assert_eq!(
            r.deleted.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            vec![junk.clone()]
        );
        let mut want = vec![prep, teacher, student, eval];
        want.sort();
        assert_eq!(valid(&s), want);
        assert!(!s.root().join(&junk).exists());
    }

    #[test]
    fn runtime_only_collects_unreferenced_build_inputs_but_keeps_their_derivations() {
        let (_d, mut s, [prep, teacher, student, eval, junk]) = fixture();
        let opts = GcOptions {
            keep_build_inputs: false,
            ..Default::default()
        };
        let r = collect(&mut s, &opts, &mut || {}).unwrap();
        let mut deleted: Vec<String> = r.deleted.iter().map(|(p, _)| p.clone()).collect();
        deleted.sort();
        let mut want = vec![junk.clone(), teacher.clone()];
        want.sort();
        assert_eq!(deleted, want);
        let mut kept = vec![prep, student, eval];
        kept.sort();
        assert_eq!(valid(&s), kept);
        // The teacher's derivation stays (the student's derivation needs it); junk's goes.
        let has_drv = |p: &str| {
            s.db.conn()
                .query_row(
                    "SELECT 1 FROM derivations WHERE drv_hash = ?1",
                    [&p[..32]],
                    |_| Ok(()),
                )
                .is_ok()
        };
        assert!(has_drv(&teacher));
        assert!(!has_drv(&junk));
    }

    #[test]
    fn dry_run_deletes_nothing() {
        let (_d, mut s, paths) = fixture();
        let before = valid(&s);
        let r = collect(
            &mut s,
            &GcOptions {
                dry_run: true,
                ..Default::default()
            },
            &mut || {},
        )
        .unwrap();
        assert_eq!(r.deleted.len(), 1);
        assert_eq!(valid(&s), before);
        assert!(s.root().join(&paths[4]).exists());
    }

    #[test]
    fn max_freed_deletes_referrers_first_and_keeps_the_closure_invariant() {
        let (_d, mut s, [prep, ..]) = fixture();
        roots::remove_pinned(s.root(), "eval").unwrap();
        // Everything is garbage now; free about one path's worth.
        let r = collect(
            &mut s,
            &GcOptions {
                max_freed: Some(1),
                ..Default::default()
            },
            &mut || {},
        )
        .unwrap();
        assert_eq!(r.deleted.len(), 1);
        assert_ne!(r.deleted[0].0, prep, "prep is referred to: it goes last");
        // Every reference of a valid path is valid.
        let valid: HashSet<String> = valid(&s).into_iter().collect();
        for p in &valid {
            for (r, _) in s.db.references(p).unwrap() {
                assert!(valid.contains(&r), "{p} refers to invalid {r}");
            }
        }
        let r = collect(&mut s, &GcOptions::default(), &mut || {}).unwrap();
        assert_eq!(r.deleted.len(), 4);
        assert!(s.db.all_valid().unwrap().is_empty());
    }

    #[test]
    fn temporary_roots_keep_paths_while_held() {
        let (_d, mut s, [.., junk]) = fixture();
        let held = TempRoots::hold(s.root(), [junk.clone()], &mut || {}).unwrap();
        let r = collect(&mut s, &GcOptions::default(), &mut || {}).unwrap();
        assert!(r.deleted.is_empty(), "{:?}", r.deleted);
        drop(held);
        let r = collect(&mut s, &GcOptions::default(), &mut || {}).unwrap();
        assert_eq!(r.deleted.len(), 1);
    }

    #[test]
    fn strays_and_dead_staging_go_locked_staging_stays() {
        let (_d, mut s, _) = fixture();
        let h = DrvHash::of_canonical(b"stray");
        let stray = StorePath::new(h, "stray").unwrap();
        fs::create_dir_all(s.path_of(&stray)).unwrap();
        let dead = s.staging_dir(&stray, 3);
        fs::create_dir_all(&dead).unwrap();
        let h2 = DrvHash::of_canonical(b"busy");
        let busy = StorePath::new(h2, "busy").unwrap();
        let live = s.staging_dir(&busy, 1);
        fs::create_dir_all(&live).unwrap();
        let _build = PathLock::exclusive(&s.lock_file(&h2)).unwrap();
        let r = collect(&mut s, &GcOptions::default(), &mut || {}).unwrap();
        assert_eq!(r.strays.len(), 1);
        assert!(!s.path_of(&stray).exists());
        assert!(!dead.exists());
        assert!(live.exists(), "a running build's staging directory stays");
        assert_eq!(r.busy, 1);
    }
}
