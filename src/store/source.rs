//! Content hashes of source datasets and script files, with the store's stat-keyed cache:
//! a file whose (path, size, mtime, inode) are unchanged is not read again, so a 10 GB
//! dataset costs one `stat` per file on every command after the first.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Store;
use super::tree_hash::{self, Hashed};
use crate::hash::ContentHash;
use crate::pipeline::error::MissingSource;
use crate::pipeline::{ContentLookup, PipelineError, Source};

/// Answers instantiation's content lookups from the store's cache.
pub struct StoreLookup<'a> {
    /// `None` when there is no store yet (a dry run against a new store): nothing is cached.
    pub store: Option<&'a Store>,
}

impl StoreLookup<'_> {
    fn cached_file(&self, path: &Path, meta: &fs::Metadata) -> io::Result<Hashed> {
        let Some(store) = self.store else {
            return tree_hash::hash_file(path);
        };
        let key = path.to_string_lossy();
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        if let Ok(Some(h)) = store
            .db
            .cached_file_hash(&key, meta.len(), mtime_ns, meta.ino())
        {
            return Ok(Hashed {
                hash: h,
                size: meta.len(),
            });
        }
        let h = tree_hash::hash_file(path)?;
        // A cache that cannot be written (a read-only dry run) only costs time later.
        let _ = store
            .db
            .cache_file_hash(&key, meta.len(), mtime_ns, meta.ino(), &h.hash);
        Ok(h)
    }

    /// The content hash of a source: its tree, or only its listed files.
    pub fn hash_source(&self, source: &Source) -> io::Result<Hashed> {
        let mut file_hash = |p: &Path, m: &fs::Metadata| self.cached_file(p, m);
        match &source.files {
            None => tree_hash::hash_tree_with(&source.path, &mut file_hash),
            Some(files) => {
                let mut files: Vec<&String> = files.iter().collect();
                files.sort();
                let mut h = blake3::Hasher::new();
                h.update(b"kdbuild-files-v1\0");
                let mut size = 0;
                for f in files {
                    let p = source.path.join(f);
                    let child = tree_hash::hash_tree_with(&p, &mut file_hash)?;
                    h.update(f.as_bytes());
                    h.update(b"\0");
                    h.update(child.hash.as_bytes());
                    size += child.size;
                }
                Ok(Hashed {
                    hash: ContentHash::from_blake3(h.finalize()),
                    size,
                })
            }
        }
    }
}

impl ContentLookup for StoreLookup<'_> {
    fn source(&mut self, source: &Source) -> Result<ContentHash, PipelineError> {
        let missing = |path: &Path| {
            PipelineError::MissingSource(Box::new(MissingSource {
                loc: source.loc.clone(),
                name: source.name.clone(),
                path: path.to_path_buf(),
                about: source.about.clone(),
                vars: source.env_used.clone(),
            }))
        };
        if !source.path.exists() {
            return Err(missing(&source.path));
        }
        if let Some(files) = &source.files
            && let Some(f) = files.iter().find(|f| !source.path.join(f).exists())
        {
            return Err(missing(&source.path.join(f)));
        }
        let h = self
            .hash_source(source)
            .map_err(|e| PipelineError::SourceHash {
                name: source.name.clone(),
                path: source.path.clone(),
                message: e.to_string(),
            })?;
        if let Some(store) = self.store {
            let _ = store
                .db
                .note_source(&source.name, &h.hash, &source.path.to_string_lossy());
        }
        Ok(h.hash)
    }

    fn script(&mut self, path: &Path) -> Result<ContentHash, PipelineError> {
        let bytes = fs::read(path).map_err(|e| PipelineError::SourceHash {
            name: "script".into(),
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(ContentHash::from_blake3(blake3::hash(&bytes)))
    }
}
