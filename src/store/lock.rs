//! File locks (`flock`): a per-path lock makes a second realizer wait for a build in progress
//! instead of starting it again. Locks die with their process, so a killed build never leaves
//! a path locked.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::StoreError;

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct PathLock {
    _file: File,
    path: PathBuf,
}

impl PathLock {
    fn open(path: &Path) -> Result<File, StoreError> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))
    }

    /// Waits for an exclusive lock on `path`.
    pub fn exclusive(path: &Path) -> Result<PathLock, StoreError> {
        let f = Self::open(path)?;
        f.lock().map_err(|e| StoreError::io(path, e))?;
        Ok(PathLock {
            _file: f,
            path: path.to_path_buf(),
        })
    }

    /// Waits for a shared lock on `path`.
    pub fn shared(path: &Path) -> Result<PathLock, StoreError> {
        let f = Self::open(path)?;
        f.lock_shared().map_err(|e| StoreError::io(path, e))?;
        Ok(PathLock {
            _file: f,
            path: path.to_path_buf(),
        })
    }

    /// Takes an exclusive lock if nobody holds one; `None` if it is held.
    pub fn try_exclusive(path: &Path) -> Result<Option<PathLock>, StoreError> {
        let f = Self::open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(PathLock {
                _file: f,
                path: path.to_path_buf(),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io(path, e)),
        }
    }

    /// Wraps a file this process has already locked.
    pub(crate) fn from_locked(file: File, path: PathBuf) -> PathLock {
        PathLock { _file: file, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_locks_exclude() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        let held = PathLock::exclusive(&p).unwrap();
        assert!(PathLock::try_exclusive(&p).unwrap().is_none());
        drop(held);
        assert!(PathLock::try_exclusive(&p).unwrap().is_some());
    }
}
