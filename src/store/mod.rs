//! The content-addressed store: a directory of read-only outputs and the database that says
//! which of them are valid.
//!
//! ```text
//! store/
//!   <hash>-<name>/            valid outputs, read-only (valid iff registered in db.sqlite)
//!   drv/<hash>.json           derivations, as instantiated
//!   tmp/<hash>-<name>.<n>/    staging directories of running or failed builds
//!   bin/<blake3>-kdbuild      binaries that SLURM jobs run (see `executor::slurm`)
//!   log/<hash>/<n>.log        build logs, and <n>.result.json written by the build
//!   locks/<hash>.lock         per-path build locks
//!   roots/                    GC roots: pinned links, auto/ (result links), temp/ (live processes)
//!   db.sqlite                 valid paths, references, derivations, builds, source cache
//!   lock                      the store-wide lock: gc exclusive, realizers shared (see `roots`)
//! ```
//!
//! Invariants: a store path is valid iff it is registered; it is registered only after its
//! tree was hashed, made read-only and renamed into place, in one transaction with its
//! references and build record; every reference of a valid path is valid. `gc` removes rows
//! before directories and `verify` checks all of this (see [`gc`], [`verify`]).

pub mod closure;
pub mod db;
pub mod gc;
pub mod jobs;
pub mod lock;
pub mod roots;
pub mod source;
pub mod tree_hash;
pub mod verify;

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use db::{BuildRecord, Db, PathInfo, RegisterError, Registration};
pub use jobs::JobRow;
pub use lock::PathLock;

use crate::derivation::Derivation;
use crate::hash::DrvHash;
use crate::store_path::StorePath;

/// Errors of the store: IO and database failures, with the path they concern.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store database `{}`: {source}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("derivation `{0}` is not in the store (run `kdbuild realize` to instantiate it)")]
    NoDerivation(String),
    #[error("derivation file `{}` is corrupt: {message}", path.display())]
    BadDerivation { path: PathBuf, message: String },
    #[error("cannot register `{path}`: {source}")]
    Register {
        path: String,
        #[source]
        source: RegisterError,
    },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn db(path: &Path, source: rusqlite::Error) -> Self {
        StoreError::Db {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An open store.
pub struct Store {
    root: PathBuf,
    pub db: Db,
}

impl Store {
    /// Opens the store at `root`, creating its layout if needed.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in ["", "drv", "tmp", "log", "locks", "roots"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(|e| StoreError::io(&d, e))?;
        }
        let root = std::path::absolute(root).map_err(|e| StoreError::io(root, e))?;
        let db = Db::open(&root.join("db.sqlite"))?;
        Ok(Store { root, db })
    }

    /// Opens an existing store without changing anything (for dry runs); `None` if there is
    /// no store at `root` yet.
    pub fn open_read_only(root: &Path) -> Result<Option<Store>, StoreError> {
        let db_path = root.join("db.sqlite");
        if !db_path.exists() {
            return Ok(None);
        }
        let root = std::path::absolute(root).map_err(|e| StoreError::io(root, e))?;
        let db = Db::open_read_only(&db_path)?;
        Ok(Some(Store { root, db }))
    }

    /// The store directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a store path lives.
    pub fn path_of(&self, p: &StorePath) -> PathBuf {
        self.root.join(p.to_string())
    }

    /// Where the derivation file of `hash` lives.
    pub fn drv_file(&self, hash: &DrvHash) -> PathBuf {
        self.root.join("drv").join(format!("{hash}.json"))
    }

    /// The staging directory of one build attempt.
    pub fn staging_dir(&self, p: &StorePath, attempt: u32) -> PathBuf {
        self.root.join("tmp").join(format!("{p}.{attempt}"))
    }

    /// The log of one build attempt.
    pub fn log_file(&self, hash: &DrvHash, attempt: u32) -> PathBuf {
        self.root
            .join("log")
            .join(hash.to_string())
            .join(format!("{attempt}.log"))
    }

    /// The result record a build writes last (see `executor::builder`).
    pub fn result_file(&self, hash: &DrvHash, attempt: u32) -> PathBuf {
        self.root
            .join("log")
            .join(hash.to_string())
            .join(format!("{attempt}.result.json"))
    }

    /// Where a replacement tree waits beside its store path during a forced rebuild:
    /// `<store>/.<hash>-<name>.new<pid>`, hidden, never valid, swept by gc once the path's
    /// lock is free.
    pub fn side_dir(&self, p: &StorePath) -> PathBuf {
        self.root.join(format!(".{p}.new{}", std::process::id()))
    }

    /// The lock file of a store path's build.
    pub fn lock_file(&self, hash: &DrvHash) -> PathBuf {
        self.root.join("locks").join(format!("{hash}.lock"))
    }

    /// Writes a derivation file (atomically; an existing one is left as it is, since its name
    /// is its hash).
    pub fn write_derivation(
        &self,
        hash: &DrvHash,
        drv: &Derivation,
    ) -> Result<PathBuf, StoreError> {
        let path = self.drv_file(hash);
        if path.exists() {
            return Ok(path);
        }
        let json = serde_json::to_vec_pretty(drv).expect("derivations serialise");
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        fs::write(&tmp, json).map_err(|e| StoreError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
        Ok(path)
    }

    /// Reads a derivation file and checks that its content still hashes to its name.
    pub fn read_derivation(&self, hash: &DrvHash) -> Result<Derivation, StoreError> {
        read_derivation_at(&self.root, hash)
    }

    /// Registers a finished staging directory as store path `path`: hash the tree, make it
    /// read-only, rename it into place and commit path, references and build record in one
    /// transaction. Returns the content hash.
    ///
    /// If `path` is already valid (a forced rebuild, or `verify --repair`), the new tree
    /// replaces the old one by an atomic exchange of the two directories (or by a plain
    /// rename where the old one is gone), and the row is updated in one transaction.
    pub fn register_output(
        &mut self,
        staging: &Path,
        path: &StorePath,
        references: Vec<(String, String)>,
        build: BuildRecord,
    ) -> Result<tree_hash::Hashed, StoreError> {
        let hashed = tree_hash::hash_tree(staging).map_err(|e| StoreError::io(staging, e))?;
        crash_point("register:hashed");
        // Contents read-only first; the top directory stays writable until it is in place,
        // because moving a directory between parents rewrites its `..` entry.
        tree_hash::make_read_only(staging, false).map_err(|e| StoreError::io(staging, e))?;
        crash_point("register:read-only");
        let dest = self.path_of(path);
        let reg = Registration {
            path,
            content: hashed.hash,
            size: hashed.size,
            references,
            build,
        };
        let already_valid = self
            .db
            .is_valid(path)
            .map_err(|e| StoreError::db(&self.root, e))?;
        if already_valid && fs::symlink_metadata(&dest).is_ok() {
            // Next to `dest` first (the top is still writable, as a move between parents
            // needs), then sealed there, so that the exchange within one folder puts a tree
            // in place that is read-only throughout, even if this process dies right after.
            let side = self.side_dir(path);
            tree_hash::remove_tree(&side).map_err(|e| StoreError::io(&side, e))?;
            fs::rename(staging, &side).map_err(|e| StoreError::io(&side, e))?;
            tree_hash::make_read_only(&side, true).map_err(|e| StoreError::io(&side, e))?;
            replace_dir(&side, &dest).map_err(|e| StoreError::io(&dest, e))?;
            crash_point("register:exchanged");
            self.db
                .replace(&reg)
                .map_err(|source| StoreError::Register {
                    path: path.to_string(),
                    source,
                })?;
            // `side` now holds the old tree.
            tree_hash::remove_tree(&side).map_err(|e| StoreError::io(&side, e))?;
            return Ok(hashed);
        }
        // Anything already at `dest` is not registered (we checked validity under the lock),
        // so it is the leftover of a killed registration: remove it. (A valid path whose
        // directory is gone is repaired the same way, then its row is updated.)
        tree_hash::remove_tree(&dest).map_err(|e| StoreError::io(&dest, e))?;
        fs::rename(staging, &dest).map_err(|e| StoreError::io(&dest, e))?;
        crash_point("register:renamed");
        tree_hash::make_read_only(&dest, true).map_err(|e| StoreError::io(&dest, e))?;
        crash_point("register:sealed");
        let registered = if already_valid {
            self.db.replace(&reg)
        } else {
            self.db.register(&reg)
        };
        registered.map_err(|source| StoreError::Register {
            path: path.to_string(),
            source,
        })?;
        crash_point("register:committed");
        Ok(hashed)
    }
}

impl Store {
    /// Registers an output that its build already moved to its store path (a SLURM job
    /// publishes its output there, unregistered, so that the jobs that depend on it can read
    /// it): hash the tree, make it read-only and commit path, references and build record
    /// in one transaction. The caller holds the path's lock and has checked that the path is
    /// not valid.
    pub fn register_in_place(
        &mut self,
        path: &StorePath,
        references: Vec<(String, String)>,
        build: BuildRecord,
    ) -> Result<tree_hash::Hashed, StoreError> {
        let dest = self.path_of(path);
        let hashed = tree_hash::hash_tree(&dest).map_err(|e| StoreError::io(&dest, e))?;
        tree_hash::make_read_only(&dest, true).map_err(|e| StoreError::io(&dest, e))?;
        let reg = Registration {
            path,
            content: hashed.hash,
            size: hashed.size,
            references,
            build,
        };
        self.db
            .register(&reg)
            .map_err(|source| StoreError::Register {
                path: path.to_string(),
                source,
            })?;
        Ok(hashed)
    }
}

/// Puts the tree at `new` in place of the one at `dest`, leaving the old tree at `new`:
/// atomically by [`exchange`] where the file system can, else (NFS, Lustre: no
/// `RENAME_EXCHANGE`) by two renames, with a moment in which `dest` is absent.
fn replace_dir(new: &Path, dest: &Path) -> std::io::Result<()> {
    match exchange(new, dest) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            let aside = new.with_extension(format!("old{}", std::process::id()));
            fs::rename(dest, &aside)?;
            fs::rename(new, dest)?;
            fs::rename(&aside, new)
        }
        Err(e) => Err(e),
    }
}

/// Fault injection for the crash tests: if the environment variable `KDBUILD_CRASH_AT` is
/// `NAME` or `NAME:N`, the process kills itself with SIGKILL the first (or `N`-th) time it
/// reaches point `NAME`, exactly as an outside `kill -9` would. Unset, it costs one check of
/// a cached value.
pub fn crash_point(name: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static AT: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("KDBUILD_CRASH_AT").ok()?;
        Some(match v.rsplit_once(':') {
            Some((n, k)) if k.parse::<usize>().is_ok() => (n.to_string(), k.parse().unwrap()),
            _ => (v, 1),
        })
    });
    if let Some((point, nth)) = at
        && point == name
        && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *nth
    {
        // SAFETY: signalling ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Swaps two directories atomically (`renameat2` with `RENAME_EXCHANGE`), so a reader of
/// `b` sees the old tree or the new one, never neither.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them as given.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads derivation `hash` from the store at `root` without opening its database (builds do
/// this: only the realizer touches the database), checking that it still hashes to its name.
pub fn read_derivation_at(root: &Path, hash: &DrvHash) -> Result<Derivation, StoreError> {
    let path = root.join("drv").join(format!("{hash}.json"));
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NoDerivation(hash.to_string()));
        }
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let drv: Derivation =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::BadDerivation {
            path: path.clone(),
            message: e.to_string(),
        })?;
    match drv.hash() {
        Ok(h) if h == *hash => Ok(drv),
        Ok(h) => Err(StoreError::BadDerivation {
            path,
            message: format!("its content hashes to {h}"),
        }),
        Err(e) => Err(StoreError::BadDerivation {
            path,
            message: e.to_string(),
        }),
    }
}
