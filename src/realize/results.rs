//! Result links: `results/<target>` → store path after a realize, like Nix's `./result`,
//! each registered as an indirect GC root in `<store>/roots/auto/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::store::Store;
use crate::store_path::StorePath;

/// Points `<dir>/<target>` at `path` (replacing an older link atomically) and registers the
/// link as a root. Returns the link.
pub fn link_result(store: &Store, dir: &Path, path: &StorePath) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let link = std::path::absolute(dir.join(path.name()))?;
    let tmp = dir.join(format!(".{}.tmp{}", path.name(), std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(store.path_of(path), &tmp)?;
    fs::rename(&tmp, &link)?;
    add_indirect_root(store, &link)?;
    Ok(link)
}

/// Registers `link` (a symlink to a store path, anywhere) as a root: `gc` keeps what it
/// points to for as long as the link exists.
pub fn add_indirect_root(store: &Store, link: &Path) -> io::Result<()> {
    let auto = store.root().join("roots").join("auto");
    fs::create_dir_all(&auto)?;
    let key = blake3::hash(link.as_os_str().as_encoded_bytes()).to_hex();
    let entry = auto.join(&key[..32]);
    if fs::read_link(&entry).ok().as_deref() == Some(link) {
        return Ok(());
    }
    let tmp = auto.join(format!(".{}.tmp{}", &key[..32], std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(link, &tmp)?;
    fs::rename(&tmp, &entry)
}
