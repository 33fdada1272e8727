//! `kdbuild verify`: is the database true to the disk? (`nix-store --verify`).
//!
//! | check | problem |
//! |-------|---------|
//! | every valid path exists | [`Problem::Missing`] |
//! | every valid path is read-only throughout | [`Problem::Writable`] |
//! | its file bytes add up to the recorded size (cheap, always) | [`Problem::SizeMismatch`] |
//! | its content hash matches (`--check-contents`: every byte is read) | [`Problem::ContentMismatch`] |
//! | its derivation file exists and hashes to its name | [`Problem::DerivationMissing`], [`Problem::DerivationCorrupt`] |
//! | its derivation's rows exist and agree with the file | [`Problem::DerivationRecord`] |
//! | every reference is valid | [`Problem::DanglingReference`] |
//! | every reference its stage declares is recorded | [`Problem::MissingReference`] |
//! | no unregistered directory is named like a store path | [`Problem::Stray`] |
//!
//! A stray is never treated as valid (validity is the database row and nothing else); it is
//! reported because it is either the leftover of a killed registration or gc, or a valid
//! path whose row was lost. Repair lives in `realize::repair`, which rebuilds from the
//! derivation files.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::{PathLock, Store, StoreError, tree_hash};
use crate::derivation::{Derivation, Input};
use crate::hash::{ContentHash, DrvHash};

/// One inconsistency between the database and the disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// Registered, but nothing is at its place.
    Missing { path: String },
    /// Registered, but `file` inside it can be written.
    Writable { path: String, file: String },
    /// Registered with `recorded` bytes; the files hold `actual`.
    SizeMismatch {
        path: String,
        recorded: u64,
        actual: u64,
    },
    /// Registered with content hash `recorded`; the tree hashes to `actual`.
    ContentMismatch {
        path: String,
        recorded: String,
        actual: String,
    },
    /// The tree could not be read.
    Unreadable { path: String, message: String },
    /// The derivation file of a valid path is gone.
    DerivationMissing { path: String, drv: String },
    /// The derivation file does not parse or does not hash to its name.
    DerivationCorrupt {
        path: String,
        drv: String,
        message: String,
    },
    /// The `derivations` / `drv_inputs` rows of a valid path's derivation are missing or
    /// disagree with its file.
    DerivationRecord { path: String, drv: String },
    /// A valid path refers to a path that is not valid.
    DanglingReference {
        path: String,
        reference: String,
        input: String,
    },
    /// The stage declares a reference the database does not record.
    MissingReference {
        path: String,
        reference: String,
        input: String,
    },
    /// A directory named like a store path that is not registered.
    Stray { path: String },
}

impl Problem {
    /// The store path (name) the problem is about.
    pub fn path(&self) -> &str {
        match self {
            Problem::Missing { path }
            | Problem::Writable { path, .. }
            | Problem::SizeMismatch { path, .. }
            | Problem::ContentMismatch { path, .. }
            | Problem::Unreadable { path, .. }
            | Problem::DerivationMissing { path, .. }
            | Problem::DerivationCorrupt { path, .. }
            | Problem::DerivationRecord { path, .. }
            | Problem::DanglingReference { path, .. }
            | Problem::MissingReference { path, .. }
            | Problem::Stray { path } => path,
        }
    }

    /// A short name of the kind of problem (the JSON `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Missing { .. } => "missing",
            Problem::Writable { .. } => "writable",
            Problem::SizeMismatch { .. } => "size_mismatch",
            Problem::ContentMismatch { .. } => "content_mismatch",
            Problem::Unreadable { .. } => "unreadable",
            Problem::DerivationMissing { .. } => "derivation_missing",
            Problem::DerivationCorrupt { .. } => "derivation_corrupt",
            Problem::DerivationRecord { .. } => "derivation_record",
            Problem::DanglingReference { .. } => "dangling_reference",
            Problem::MissingReference { .. } => "missing_reference",
            Problem::Stray { .. } => "stray",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { path } => write!(f, "`{path}` is valid but not on disk"),
            Problem::Writable { path, file } => {
                write!(f, "`{path}` is valid but `{file}` in it is writable")
            }
            Problem::SizeMismatch {
                path,
                recorded,
                actual,
            } => write!(
                f,
                "`{path}` holds {actual} bytes, {recorded} were registered (files changed or deleted)"
            ),
            Problem::ContentMismatch {
                path,
                recorded,
                actual,
            } => write!(
                f,
                "`{path}` hashes to {actual}, {recorded} was registered (contents changed)"
            ),
            Problem::Unreadable { path, message } => {
                write!(f, "`{path}` cannot be read: {message}")
            }
            Problem::DerivationMissing { path, drv } => {
                write!(f, "the derivation `drv/{drv}.json` of `{path}` is missing")
            }
            Problem::DerivationCorrupt { path, drv, message } => {
                write!(
                    f,
                    "the derivation `drv/{drv}.json` of `{path}` is corrupt: {message}"
                )
            }
            Problem::DerivationRecord { path, drv } => write!(
                f,
                "the database rows of derivation `{drv}` (of `{path}`) are missing or disagree with its file"
            ),
            Problem::DanglingReference {
                path,
                reference,
                input,
            } => write!(
                f,
                "`{path}` refers to `{reference}` (input `{input}`), which is not valid"
            ),
            Problem::MissingReference {
                path,
                reference,
                input,
            } => write!(
                f,
                "`{path}` should refer to `{reference}` (input `{input}`) but the database does not record it"
            ),
            Problem::Stray { path } => write!(
                f,
                "`{path}` is on disk but not registered (a leftover of a killed build or gc, or a lost row); it is not treated as valid"
            ),
        }
    }
}

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Re-hash every valid path's content.
    pub check_contents: bool,
    /// Worker threads for hashing (0: one per CPU).
    pub threads: usize,
}

/// What a verify found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Valid paths checked.
    pub checked: usize,
    /// Bytes hashed (with `check_contents`).
    pub bytes_hashed: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One valid path's row.
#[derive(Clone, Debug)]
struct Row {
    path: String,
    drv_hash: String,
    content: String,
    size: u64,
}

/// Checks the store. `expected_refs` gives, for a derivation, the input names its stage
/// declares as run-time references (the stage registry's answer; the store does not know
/// stage kinds). Hold the store lock shared around this call so that gc does not delete
/// what is being checked.
pub fn verify(
    store: &Store,
    opts: &VerifyOptions,
    expected_refs: &dyn Fn(&Derivation) -> Vec<String>,
) -> Result<VerifyReport, StoreError> {
    let root = store.root().to_path_buf();
    let db_err = |e| StoreError::db(&root, e);
    let rows = load_rows(store).map_err(db_err)?;
    let refs = load_refs(store).map_err(db_err)?;
    let valid: BTreeSet<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    let mut report = VerifyReport {
        checked: rows.len(),
        ..Default::default()
    };

    // Disk (existence, permissions, sizes, contents) on worker threads, while this thread
    // checks derivations and references against the database.
    let (disk, hashed, records) = std::thread::scope(|s| {
        let trees = s.spawn(|| check_trees(&root, &rows, opts));
        let records = check_records(store, &rows, &refs, &valid, expected_refs);
        let (disk, hashed) = trees.join().expect("verify threads");
        (disk, hashed, records)
    });
    report.problems.extend(disk);
    report.problems.extend(records?);
    report.bytes_hashed = hashed;

    // Strays: named like store paths, not registered. Re-checked against the database (a
    // realizer may have registered one since the rows were read) and skipped while a build
    // holds its lock (it is being registered right now), or while a SLURM job that published
    // it waits for a realizer to register it.
    let in_flight: HashSet<String> = super::roots::job_roots(store)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    for (name, sp) in super::gc::store_path_dirs(&root)? {
        if valid.contains(name.as_str())
            || in_flight.contains(&name)
            || store.db.is_valid(&sp).map_err(db_err)?
        {
            continue;
        }
        if PathLock::try_exclusive(&store.lock_file(&sp.hash()))?.is_none() {
            continue;
        }
        report.problems.push(Problem::Stray { path: name });
    }
    report.problems.sort_by(|a, b| {
        (a.path(), a.kind(), format!("{a}")).cmp(&(b.path(), b.kind(), format!("{b}")))
    });
    report.problems.dedup();
    Ok(report)
}

/// Derivation files and rows, and references, of every valid path.
fn check_records(
    store: &Store,
    rows: &[Row],
    refs: &HashMap<String, Vec<(String, String)>>,
    valid: &BTreeSet<&str>,
    expected_refs: &dyn Fn(&Derivation) -> Vec<String>,
) -> Result<Vec<Problem>, StoreError> {
    let db_err = |e| StoreError::db(store.root(), e);
    let mut problems = Vec::new();
    for row in rows {
        let drv = match drv_of(store, row) {
            Ok(d) => Some(d),
            Err(p) => {
                problems.push(p);
                None
            }
        };
        let recorded: &[(String, String)] = refs.get(&row.path).map_or(&[], |v| v.as_slice());
        for (reference, input) in recorded {
            if !valid.contains(reference.as_str()) {
                problems.push(Problem::DanglingReference {
                    path: row.path.clone(),
                    reference: reference.clone(),
                    input: input.clone(),
                });
            }
        }
        let Some(drv) = drv else { continue };
        if !record_matches(store, &row.drv_hash, &drv).map_err(db_err)? {
            problems.push(Problem::DerivationRecord {
                path: row.path.clone(),
                drv: row.drv_hash.clone(),
            });
        }
        for input in expected_refs(&drv) {
            let Some(p) = drv.inputs.get(&input).and_then(Input::store_path) else {
                continue;
            };
            let p = p.to_string();
            if !recorded.iter().any(|(r, i)| *r == p && *i == input) {
                problems.push(Problem::MissingReference {
                    path: row.path.clone(),
                    reference: p,
                    input,
                });
            }
        }
    }
    Ok(problems)
}

fn load_rows(store: &Store) -> rusqlite::Result<Vec<Row>> {
    let mut st = store
        .db
        .conn()
        .prepare("SELECT path, drv_hash, content_hash, size FROM valid_paths ORDER BY path")?;
    st.query_map([], |r| {
        Ok(Row {
            path: r.get(0)?,
            drv_hash: r.get(1)?,
            content: r.get(2)?,
            size: r.get::<_, i64>(3)?.max(0) as u64,
        })
    })?
    .collect()
}

fn load_refs(store: &Store) -> rusqlite::Result<HashMap<String, Vec<(String, String)>>> {
    let mut st = store.db.conn().prepare(
        "SELECT v.path, r.reference, r.reason FROM refs r JOIN valid_paths v ON v.id = r.referrer
         ORDER BY v.path, r.reference, r.reason",
    )?;
    let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        out.entry(r.get(0)?)
            .or_default()
            .push((r.get(1)?, r.get(2)?));
    }
    Ok(out)
}

fn drv_of(store: &Store, row: &Row) -> Result<Derivation, Problem> {
    let Ok(hash) = row.drv_hash.parse::<DrvHash>() else {
        return Err(Problem::DerivationCorrupt {
            path: row.path.clone(),
            drv: row.drv_hash.clone(),
            message: "the recorded hash does not parse".into(),
        });
    };
    match store.read_derivation(&hash) {
        Ok(d) => Ok(d),
        Err(StoreError::NoDerivation(_)) => Err(Problem::DerivationMissing {
            path: row.path.clone(),
            drv: row.drv_hash.clone(),
        }),
        Err(e) => Err(Problem::DerivationCorrupt {
            path: row.path.clone(),
            drv: row.drv_hash.clone(),
            message: e.to_string(),
        }),
    }
}

/// The rows a realizer records for a derivation: (input name, store path or
/// `source:<name>`, source content hash).
pub fn input_rows(drv: &Derivation) -> Vec<(String, String, Option<String>)> {
    drv.inputs
        .iter()
        .map(|(name, input)| match input {
            Input::Derivation { .. } => (
                name.clone(),
                input
                    .store_path()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                None,
            ),
            Input::Source {
                name: s, content, ..
            } => (
                name.clone(),
                format!("source:{s}"),
                Some(content.to_string()),
            ),
        })
        .collect()
}

/// Whether the `derivations` row and `drv_inputs` rows of `hash` exist and agree with `drv`.
fn record_matches(store: &Store, hash: &str, drv: &Derivation) -> rusqlite::Result<bool> {
    let c = store.db.conn();
    let mut st = c.prepare_cached("SELECT 1 FROM derivations WHERE drv_hash = ?1")?;
    if !st.exists([hash])? {
        return Ok(false);
    }
    let rows: BTreeMap<String, String> = store.db.drv_inputs(hash)?.into_iter().collect();
    let want: BTreeMap<String, String> = input_rows(drv)
        .into_iter()
        .map(|(n, i, _)| (n, i))
        .collect();
    Ok(rows == want)
}

/// Checks every valid path's tree on `opts.threads` threads. Returns problems and bytes
/// hashed.
fn check_trees(root: &Path, rows: &[Row], opts: &VerifyOptions) -> (Vec<Problem>, u64) {
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
    .min(rows.len().max(1));
    let next = AtomicUsize::new(0);
    let out = Mutex::new((Vec::new(), 0u64));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(row) = rows.get(i) else { break };
                    let (problems, hashed) = check_tree(root, row, opts.check_contents);
                    let mut o = out.lock().expect("verify results");
                    o.0.extend(problems);
                    o.1 += hashed;
                }
            });
        }
    });
    out.into_inner().expect("verify results")
}

fn check_tree(root: &Path, row: &Row, contents: bool) -> (Vec<Problem>, u64) {
    let dir = root.join(&row.path);
    let mut problems = Vec::new();
    if fs::symlink_metadata(&dir).is_err() {
        return (
            vec![Problem::Missing {
                path: row.path.clone(),
            }],
            0,
        );
    }
    let mut writable = None;
    let writable_entry = |p: &Path, m: &fs::Metadata, w: &mut Option<String>| {
        if w.is_none() && !m.file_type().is_symlink() && m.permissions().mode() & 0o222 != 0 {
            let rel = p.strip_prefix(&dir).unwrap_or(p).display().to_string();
            *w = Some(if rel.is_empty() { ".".into() } else { rel });
        }
    };
    if contents {
        // One walk: hash every byte, and look at every entry's permissions on the way.
        let hashed =
            tree_hash::hash_tree_visit(&dir, &mut |p, m| writable_entry(p, m, &mut writable));
        if let Some(file) = writable {
            problems.push(Problem::Writable {
                path: row.path.clone(),
                file,
            });
        }
        match hashed {
            Ok(h) => {
                let recorded: Option<ContentHash> = row.content.parse().ok();
                if recorded != Some(h.hash) {
                    problems.push(Problem::ContentMismatch {
                        path: row.path.clone(),
                        recorded: row.content.clone(),
                        actual: h.hash.to_string(),
                    });
                }
                return (problems, h.size);
            }
            Err(e) => {
                problems.push(Problem::Unreadable {
                    path: row.path.clone(),
                    message: e.to_string(),
                });
                return (problems, 0);
            }
        }
    }
    // Without contents, a metadata walk: writable entries and the byte count.
    let mut size = 0u64;
    if let Err(e) = walk(&dir, &dir, &mut writable, &mut size) {
        return (
            vec![Problem::Unreadable {
                path: row.path.clone(),
                message: e.to_string(),
            }],
            0,
        );
    }
    if let Some(file) = writable {
        problems.push(Problem::Writable {
            path: row.path.clone(),
            file,
        });
    }
    if size != row.size {
        problems.push(Problem::SizeMismatch {
            path: row.path.clone(),
            recorded: row.size,
            actual: size,
        });
    }
    (problems, 0)
}

/// Walks a tree's metadata: the first writable entry, and the bytes that `tree_hash` counts
/// (file lengths and symlink target lengths).
fn walk(
    top: &Path,
    p: &Path,
    writable: &mut Option<String>,
    size: &mut u64,
) -> std::io::Result<()> {
    let m = fs::symlink_metadata(p)?;
    if m.file_type().is_symlink() {
        *size += fs::read_link(p)?.as_os_str().len() as u64;
        return Ok(());
    }
    if writable.is_none() && m.permissions().mode() & 0o222 != 0 {
        let rel = p.strip_prefix(top).unwrap_or(p).display().to_string();
        *writable = Some(if rel.is_empty() { ".".into() } else { rel });
    }
    if m.is_dir() {
        for e in fs::read_dir(p)? {
            walk(top, &e?.path(), writable, size)?;
        }
    } else {
        *size += m.len();
    }
    Ok(())
}
