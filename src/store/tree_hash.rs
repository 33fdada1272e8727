//! Content hashes of files and trees: a blake3 Merkle hash (kdbuild's narHash).
//!
//! - a regular file: blake3 of its bytes (so a single file's hash equals `b3sum`'s);
//! - a tree: blake3 over `"kdbuild-tree-v1\0"` and, for each entry sorted by name bytes, the
//!   name, a NUL, a type tag (`f` file, `x` executable file, `l` symlink, `d` directory) and the
//!   entry's 32-byte hash; a symlink's hash is blake3 of its target.
//!
//! Permissions other than the executable bit, times and owners never enter the hash.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::hash::ContentHash;

const TREE_TAG: &[u8] = b"kdbuild-tree-v1\0";
/// Files at least this large are hashed memory-mapped on all cores, as `b3sum` does.
/// Smaller ones are read: mapping and unmapping a small file (page faults, a TLB flush)
/// costs more than copying it out of the page cache.
const MMAP_THRESHOLD: u64 = 1 << 20;

/// A content hash and the number of bytes it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hashed {
    pub hash: ContentHash,
    pub size: u64,
}

/// Hashes one regular file's bytes.
pub fn hash_file(path: &Path) -> io::Result<Hashed> {
    let len = fs::metadata(path)?.len();
    hash_file_of_len(path, len)
}

/// Hashes a regular file whose length the caller has from its metadata.
fn hash_file_of_len(path: &Path, len: u64) -> io::Result<Hashed> {
    use std::io::Read;
    let mut h = blake3::Hasher::new();
    let mut size = len;
    if len >= MMAP_THRESHOLD {
        h.update_mmap_rayon(path)?;
    } else {
        // Read into a buffer this thread keeps, not a new one per file.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut f = fs::File::open(path)?;
        BUF.with_borrow_mut(|buf| -> io::Result<()> {
            buf.clear();
            buf.reserve(len as usize + 1);
            f.read_to_end(buf)?;
            h.update(buf);
            size = buf.len() as u64;
            Ok(())
        })?;
    }
    Ok(Hashed {
        hash: ContentHash::from_blake3(h.finalize()),
        size,
    })
}

/// Hashes a file or a tree. `file_hash` computes (or looks up) the hash of one regular file,
/// which lets sources use the store's stat-keyed cache.
pub fn hash_tree_with(
    path: &Path,
    file_hash: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<Hashed>,
) -> io::Result<Hashed> {
    let meta = fs::symlink_metadata(path)?;
    hash_entry(path, &meta, file_hash, &mut |_, _| {})
}

/// Hashes a tree, reading every file, and shows `visit` every entry (the top included) with
/// its metadata: `verify` checks permissions in the same walk that hashes.
pub fn hash_tree_visit(
    path: &Path,
    visit: &mut dyn FnMut(&Path, &fs::Metadata),
) -> io::Result<Hashed> {
    let meta = fs::symlink_metadata(path)?;
    hash_entry(path, &meta, &mut |p, m| hash_file_of_len(p, m.len()), visit)
}

/// One entry, whose metadata the caller already has (each entry is `lstat`ed once).
fn hash_entry(
    path: &Path,
    meta: &fs::Metadata,
    file_hash: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<Hashed>,
    visit: &mut dyn FnMut(&Path, &fs::Metadata),
) -> io::Result<Hashed> {
    visit(path, meta);
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(path)?;
        let bytes = target.as_os_str().as_encoded_bytes();
        return Ok(Hashed {
            hash: ContentHash::from_blake3(blake3::hash(bytes)),
            size: bytes.len() as u64,
        });
    }
    if ft.is_file() {
        return file_hash(path, meta);
    }
    if !ft.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "`{}` is neither a file, a directory nor a symlink",
                path.display()
            ),
        ));
    }
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(path)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut h = blake3::Hasher::new();
    h.update(TREE_TAG);
    let mut size = 0;
    for e in entries {
        let p = e.path();
        // `fstatat` on the open directory (no symlinks followed): no path lookup from `/`.
        let m = e.metadata()?;
        let tag: &[u8] = if m.file_type().is_symlink() {
            b"l"
        } else if m.is_dir() {
            b"d"
        } else if m.permissions().mode() & 0o111 != 0 {
            b"x"
        } else {
            b"f"
        };
        let child = hash_entry(&p, &m, file_hash, visit)?;
        h.update(e.file_name().as_encoded_bytes());
        h.update(b"\0");
        h.update(tag);
        h.update(child.hash.as_bytes());
        size += child.size;
    }
    Ok(Hashed {
        hash: ContentHash::from_blake3(h.finalize()),
        size,
    })
}

/// Hashes a file or a tree, reading every file.
pub fn hash_tree(path: &Path) -> io::Result<Hashed> {
    hash_tree_with(path, &mut |p, m| hash_file_of_len(p, m.len()))
}

/// Clears the write bits below `path` (and of `path` itself when `include_root`).
pub fn make_read_only(path: &Path, include_root: bool) -> io::Result<()> {
    set_writable(path, false, include_root)
}

/// Restores owner write permission below and on `path`, so that it can be deleted.
pub fn make_writable(path: &Path) -> io::Result<()> {
    set_writable(path, true, true)
}

fn set_writable(path: &Path, writable: bool, include_root: bool) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        // Children first when locking (a read-only dir cannot be listed-and-changed below as
        // non-root), parent first when unlocking.
        if writable && include_root {
            chmod_write(path, &meta, true)?;
        }
        for e in fs::read_dir(path)? {
            set_writable(&e?.path(), writable, true)?;
        }
        if !writable && include_root {
            chmod_write(path, &meta, false)?;
        }
        return Ok(());
    }
    if include_root {
        chmod_write(path, &meta, writable)?;
    }
    Ok(())
}

fn chmod_write(path: &Path, meta: &fs::Metadata, writable: bool) -> io::Result<()> {
    let mode = meta.permissions().mode();
    let new = if writable {
        mode | 0o200
    } else {
        mode & !0o222
    };
    if new != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(new))?;
    }
    Ok(())
}

/// Deletes a file or tree, write-protected or not. Only directories are made writable:
/// unlinking a file needs write permission on its directory, not on the file (this halves
/// the system calls of a gc).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => {
            make_dirs_writable(path, &m)?;
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
    }
}

fn make_dirs_writable(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    chmod_write(path, meta, true)?;
    for e in fs::read_dir(path)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            let p = e.path();
            make_dirs_writable(&p, &fs::symlink_metadata(&p)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_hash_is_plain_blake3() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a");
        fs::write(&f, b"hello").unwrap();
        assert_eq!(
            hash_tree(&f).unwrap().hash,
            ContentHash::from_blake3(blake3::hash(b"hello"))
        );
    }

    #[test]
    fn tree_hash_sees_names_contents_and_exec_bit_only() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        fs::create_dir_all(t.join("sub")).unwrap();
        fs::write(t.join("sub/x"), b"1").unwrap();
        fs::write(t.join("y"), b"2").unwrap();
        let h1 = hash_tree(&t).unwrap();
        assert_eq!(h1.size, 2);

        // mtime changes nothing
        let f = fs::File::options().write(true).open(t.join("y")).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(hash_tree(&t).unwrap(), h1);

        // a flipped byte, a rename, an exec bit each change it
        fs::write(t.join("y"), b"3").unwrap();
        let h2 = hash_tree(&t).unwrap();
        assert_ne!(h2, h1);
        fs::rename(t.join("y"), t.join("z")).unwrap();
        let h3 = hash_tree(&t).unwrap();
        assert_ne!(h3, h2);
        fs::set_permissions(t.join("z"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(hash_tree(&t).unwrap(), h3);
    }

    #[test]
    fn read_only_round_trip_and_removal() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        fs::create_dir_all(t.join("s")).unwrap();
        fs::write(t.join("s/f"), b"x").unwrap();
        make_read_only(&t, true).unwrap();
        let mode = fs::metadata(t.join("s/f")).unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0);
        remove_tree(&t).unwrap();
        assert!(!t.exists());
    }
}
