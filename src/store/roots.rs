//! GC roots and the store-wide lock: what `kdbuild gc` must keep, and how it stays out of the
//! way of running realizers and builds.
//!
//! # Roots
//!
//! | kind | where | points to | kept while |
//! |------|-------|-----------|------------|
//! | pinned | `roots/<name>` | a relative symlink `../<hash>-<name>` | `kdbuild roots remove` |
//! | indirect (result links) | `roots/auto/<key>` | a symlink to a link anywhere (`results/<target>`), which points into the store | the link exists and still points into the store |
//! | temporary | `roots/temp/<host>-<pid>[.<n>]` | a file listing store path names, one a line | its owner holds an `flock` on it (it lives) |
//!
//! # The store lock protocol (`<store>/lock`)
//!
//! - `gc` holds the store lock **exclusively** from reading the roots to the end of its sweep.
//! - A realizer (and each `kdbuild build`) takes it **shared** only while it writes its
//!   temporary roots, and writes them *before* it looks at validity. So either gc ran before
//!   (and what it deleted is seen as missing and rebuilt), or gc runs after and sees the roots.
//!   A realizer started while gc runs waits for it; one already running goes on building.
//! - A temporary roots file is created and locked under the shared store lock, so gc never
//!   sees a file between its creation and its lock. gc treats a file whose lock it can take
//!   as the leftover of a dead process and deletes it.
//! - `roots add`, `verify` and `verify --repair` take the lock shared as well.
//!
//! flock on Linux grants a shared lock while an exclusive one is only *waited* for, so holders
//! of a shared lock that start builds (which take it shared again) cannot deadlock with a
//! waiting gc.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::lock::PathLock;
use crate::store_path::{StorePath, check_name};

/// The store-wide lock (`<store>/lock`), held for the life of the value.
#[derive(Debug)]
pub struct StoreLock {
    _lock: PathLock,
}

/// The path of the store-wide lock file.
pub fn store_lock_file(store_root: &Path) -> PathBuf {
    store_root.join("lock")
}

impl StoreLock {
    /// Takes the lock shared (realizers, builds, verify), calling `on_wait` once if a gc holds
    /// it and this has to wait.
    pub fn shared(store_root: &Path, on_wait: &mut dyn FnMut()) -> Result<StoreLock, StoreError> {
        Self::take(store_root, false, on_wait)
    }

    /// Takes the lock exclusively (gc), calling `on_wait` once if this has to wait.
    pub fn exclusive(
        store_root: &Path,
        on_wait: &mut dyn FnMut(),
    ) -> Result<StoreLock, StoreError> {
        Self::take(store_root, true, on_wait)
    }

    fn take(
        store_root: &Path,
        exclusive: bool,
        on_wait: &mut dyn FnMut(),
    ) -> Result<StoreLock, StoreError> {
        let path = store_lock_file(store_root);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let tried = if exclusive {
            f.try_lock()
        } else {
            f.try_lock_shared()
        };
        match tried {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                if exclusive { f.lock() } else { f.lock_shared() }
                    .map_err(|e| StoreError::io(&path, e))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
        }
        Ok(StoreLock {
            _lock: PathLock::from_locked(f, path),
        })
    }
}

/// This process's temporary roots: `roots/temp/<host>-<pid>`, locked for as long as the
/// value lives and deleted when it is dropped. What it lists is kept by gc.
#[derive(Debug)]
pub struct TempRoots {
    file: File,
    path: PathBuf,
    store_root: PathBuf,
}

/// The folder of temporary roots.
pub fn temp_roots_dir(store_root: &Path) -> PathBuf {
    store_root.join("roots").join("temp")
}

/// The name of a temporary roots file: host and pid, so that processes on several hosts
/// sharing one store never collide, and a counter after the first, so that two holders in
/// one process (each `flock`ing its own file) never wait for each other.
fn temp_roots_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    match N.fetch_add(1, Ordering::Relaxed) {
        0 => format!("{}-{}", hostname(), std::process::id()),
        n => format!("{}-{}.{n}", hostname(), std::process::id()),
    }
}

/// This machine's host name (the store does not depend on the executors, which have their
/// own copy for build records).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).replace('/', "_")
}

impl TempRoots {
    /// Registers `paths` (store path names, `<hash>-<name>`) as temporary roots. Waits while
    /// a gc runs (calling `on_wait` once); returns once gc is guaranteed to see them.
    pub fn hold(
        store_root: &Path,
        paths: impl IntoIterator<Item = String>,
        on_wait: &mut dyn FnMut(),
    ) -> Result<TempRoots, StoreError> {
        let dir = temp_roots_dir(store_root);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let path = dir.join(temp_roots_name());
        // Created and locked under the shared store lock: gc, which holds it exclusively,
        // never sees a file that exists but is not yet locked.
        let _store = StoreLock::shared(store_root, on_wait)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        file.lock().map_err(|e| StoreError::io(&path, e))?;
        file.set_len(0).map_err(|e| StoreError::io(&path, e))?;
        let mut roots = TempRoots {
            file,
            path,
            store_root: store_root.to_path_buf(),
        };
        roots.append(paths)?;
        Ok(roots)
    }

    /// Adds more temporary roots.
    pub fn add(&mut self, paths: impl IntoIterator<Item = String>) -> Result<(), StoreError> {
        let _store = StoreLock::shared(&self.store_root, &mut || {})?;
        self.append(paths)
    }

    fn append(&mut self, paths: impl IntoIterator<Item = String>) -> Result<(), StoreError> {
        let mut buf = String::new();
        for p in paths {
            buf.push_str(&p);
            buf.push('\n');
        }
        // One write of whole lines; the file is opened for writing at its end by seeking.
        use std::io::Seek;
        self.file
            .seek(io::SeekFrom::End(0))
            .and_then(|_| self.file.write_all(buf.as_bytes()))
            .map_err(|e| StoreError::io(&self.path, e))
    }

    /// The file that holds the roots.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempRoots {
    fn drop(&mut self) {
        // Unlinked while still locked; the lock goes with the file descriptor.
        let _ = fs::remove_file(&self.path);
    }
}

/// The temporary roots of live processes, and the files of dead ones (which gc deletes).
#[derive(Debug, Default)]
pub struct TempRootFiles {
    /// (file name, store path names) of each live holder.
    pub live: Vec<(String, Vec<String>)>,
    /// Files whose owner died.
    pub dead: Vec<PathBuf>,
}

/// Reads every temporary roots file. A file is live iff its lock is held by someone else.
/// Call with the store lock held exclusively (gc) to get a stable answer.
pub fn read_temp_roots(store_root: &Path) -> Result<TempRootFiles, StoreError> {
    let dir = temp_roots_dir(store_root);
    let mut out = TempRootFiles::default();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        match f.try_lock_shared() {
            Ok(()) => out.dead.push(path),
            Err(fs::TryLockError::WouldBlock) => {
                let paths = io::BufReader::new(&f)
                    .lines()
                    .map_while(Result::ok)
                    .filter(|l| !l.is_empty())
                    .collect();
                out.live.push((name, paths));
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
        }
    }
    Ok(out)
}

/// A pinned root: `roots/<name>` → a store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pinned {
    pub name: String,
    /// The store path name it points to, if it points into the store.
    pub path: Option<String>,
}

/// A result link registered as a root: `roots/auto/<key>` → `link` → store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indirect {
    /// The registry entry in `roots/auto/`.
    pub entry: PathBuf,
    /// The link it names (e.g. `results/teacher-demo-eval`).
    pub link: PathBuf,
    /// The store path name the link points to now; `None` if the link is gone or points
    /// elsewhere (then it is no root).
    pub path: Option<String>,
}

/// Names `roots/` reserves for its own folders.
const RESERVED: &[&str] = &["auto", "temp"];

/// Why a root cannot be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("`{0}` cannot name a root: {1}")]
    BadName(String, String),
    #[error("there is no pinned root `{0}` (see `kdbuild roots list`)")]
    NoSuchRoot(String),
    #[error("`{0}` is not valid in this store (build it with `kdbuild realize` first)")]
    NotValid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store path name a pinned root's symlink target names, if it names one.
fn pinned_target(target: &Path) -> Option<String> {
    let name = target.file_name()?.to_str()?;
    name.parse::<StorePath>().ok().map(|_| name.to_string())
}

/// Every pinned root, by name.
pub fn pinned(store_root: &Path) -> Result<Vec<Pinned>, StoreError> {
    let dir = store_root.join("roots");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| StoreError::io(&dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if RESERVED.contains(&name.as_str()) || name.starts_with('.') {
            continue;
        }
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        out.push(Pinned {
            name,
            path: pinned_target(&target),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Pins store path `path` (a valid `<hash>-<name>`) as root `name`, replacing a root of that
/// name. Takes the store lock shared, so that a running gc finishes first, and checks
/// validity under it.
pub fn add_pinned(
    store: &super::Store,
    name: &str,
    path: &StorePath,
    on_wait: &mut dyn FnMut(),
) -> Result<PathBuf, RootError> {
    check_name(name).map_err(|e| RootError::BadName(name.into(), e.to_string()))?;
    if RESERVED.contains(&name) {
        return Err(RootError::BadName(
            name.into(),
            "the name is reserved for `roots/auto` and `roots/temp`".into(),
        ));
    }
    let _lock = StoreLock::shared(store.root(), on_wait)?;
    if !store
        .db
        .is_valid(path)
        .map_err(|e| StoreError::db(store.root(), e))?
    {
        return Err(RootError::NotValid(path.to_string()));
    }
    let dir = store.root().join("roots");
    let link = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    // Relative, so that a moved store keeps its roots.
    std::os::unix::fs::symlink(Path::new("..").join(path.to_string()), &tmp)
        .and_then(|_| fs::rename(&tmp, &link))
        .map_err(|e| StoreError::io(&link, e))?;
    Ok(link)
}

/// Removes pinned root `name`.
pub fn remove_pinned(store_root: &Path, name: &str) -> Result<(), RootError> {
    if RESERVED.contains(&name) || check_name(name).is_err() {
        return Err(RootError::NoSuchRoot(name.into()));
    }
    let link = store_root.join("roots").join(name);
    match fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::remove_file(&link).map_err(|e| StoreError::io(&link, e))?;
            Ok(())
        }
        _ => Err(RootError::NoSuchRoot(name.into())),
    }
}

/// Every registered result link, with the store path it points to now.
pub fn indirect(store_root: &Path) -> Result<Vec<Indirect>, StoreError> {
    let dir = store_root.join("roots").join("auto");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    let canonical_root = fs::canonicalize(store_root).map_err(|e| StoreError::io(store_root, e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| StoreError::io(&dir, e))?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let entry = e.path();
        let Ok(link) = fs::read_link(&entry) else {
            continue;
        };
        // Follow the link (and any links it goes through) to where it lands now.
        let path = fs::canonicalize(&link).ok().and_then(|target| {
            if target.parent() != Some(canonical_root.as_path()) {
                return None;
            }
            pinned_target(&target)
        });
        out.push(Indirect { entry, link, path });
    }
    out.sort_by(|a, b| a.link.cmp(&b.link));
    Ok(out)
}

/// Whether an indirect root's link no longer exists (so its entry can go).
pub fn link_is_gone(link: &Path) -> bool {
    matches!(fs::symlink_metadata(link), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// All roots as store path names, with where each comes from (for gc's report and
/// `roots list`).
#[derive(Debug, Default)]
pub struct RootSet {
    /// (origin, store path name): `pinned:<name>`, `link:<path>`, `temp:<file>`, `job:<id>`.
    pub roots: Vec<(String, String)>,
    /// Temporary roots files of dead processes.
    pub dead_temp: Vec<PathBuf>,
    /// `roots/auto` entries whose link is gone.
    pub stale_indirect: Vec<PathBuf>,
}

impl RootSet {
    /// The distinct store path names.
    pub fn paths(&self) -> BTreeSet<&str> {
        self.roots.iter().map(|(_, p)| p.as_str()).collect()
    }
}

/// The roots held by SLURM jobs no realizer has settled yet: each job's own store path (a
/// job may already have published its output there, unregistered) and the build-time inputs
/// of its derivation, which the job reads on its node. A detached realizer holds no temporary
/// roots, so without these a gc between `realize --detach` and the re-attach would delete
/// what queued jobs need.
pub fn job_roots(store: &super::Store) -> Result<Vec<(String, String)>, StoreError> {
    let db_err = |e| StoreError::db(store.root(), e);
    if !store.db.has_jobs_table() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for job in store.db.unsettled_jobs().map_err(db_err)? {
        let origin = format!("job:{}", job.job_id);
        out.push((origin.clone(), format!("{}-{}", job.drv_hash, job.target)));
        for (_, input) in store.db.drv_inputs(&job.drv_hash).map_err(db_err)? {
            if !input.starts_with("source:") {
                out.push((origin.clone(), input));
            }
        }
    }
    Ok(out)
}

/// Finds every root: pinned, indirect and temporary.
pub fn find_roots(store_root: &Path) -> Result<RootSet, StoreError> {
    let mut set = RootSet::default();
    for p in pinned(store_root)? {
        if let Some(path) = p.path {
            set.roots.push((format!("pinned:{}", p.name), path));
        }
    }
    for i in indirect(store_root)? {
        match i.path {
            Some(path) => set.roots.push((format!("link:{}", i.link.display()), path)),
            None if link_is_gone(&i.link) => set.stale_indirect.push(i.entry),
            None => {}
        }
    }
    let temp = read_temp_roots(store_root)?;
    for (file, paths) in temp.live {
        for p in paths {
            set.roots.push((format!("temp:{file}"), p));
        }
    }
    set.dead_temp = temp.dead;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_roots_are_live_while_held_and_gone_after() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let mut held = TempRoots::hold(root, ["a".to_string()], &mut || {}).unwrap();
        held.add(["b".to_string()]).unwrap();
        // Another open file description sees the lock as held.
        let t = read_temp_roots(root).unwrap();
        assert_eq!(t.live.len(), 1);
        assert_eq!(t.live[0].1, vec!["a", "b"]);
        assert!(t.dead.is_empty());
        let file = held.path().to_path_buf();
        drop(held);
        assert!(!file.exists());
    }

    #[test]
    fn two_holders_in_one_process_do_not_wait_for_each_other() {
        let d = tempfile::tempdir().unwrap();
        let a = TempRoots::hold(d.path(), ["a".to_string()], &mut || {}).unwrap();
        let b = TempRoots::hold(d.path(), ["b".to_string()], &mut || {}).unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(read_temp_roots(d.path()).unwrap().live.len(), 2);
    }

    #[test]
    fn an_unlocked_temp_roots_file_is_dead() {
        let d = tempfile::tempdir().unwrap();
        let dir = temp_roots_dir(d.path());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("host-1"), "x\n").unwrap();
        let t = read_temp_roots(d.path()).unwrap();
        assert!(t.live.is_empty());
        assert_eq!(t.dead, vec![dir.join("host-1")]);
    }

    #[test]
    fn exclusive_store_lock_waits_for_shared_holders() {
        let d = tempfile::tempdir().unwrap();
        let shared = StoreLock::shared(d.path(), &mut || {}).unwrap();
        let mut waited = false;
        let t = std::thread::spawn({
            let root = d.path().to_path_buf();
            move || {
                let mut w = false;
                let _x = StoreLock::exclusive(&root, &mut || w = true).unwrap();
                w
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        // A second shared holder is not blocked by the waiting exclusive one.
        let _again = StoreLock::shared(d.path(), &mut || waited = true).unwrap();
        assert!(!waited);
        drop(shared);
        drop(_again);
        assert!(t.join().unwrap(), "the exclusive taker had to wait");
    }
}
