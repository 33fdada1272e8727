//! Layouts, roles and de-duplication (spec §2.3): which files of a dataset are read, in what
//! role, and which are dropped because their content was already seen.
//!
//! - `folders`: sub-folders named `train*` give role `train`, `test*` give `test:<folder>`;
//!   files are read non-recursively, in name order, filtered by the format's extensions. Other
//!   folders and files are reported as ignored. There is no file-name filter (*Differs*: \[O1\]
//!   dropped `suppress`/`masquerade` files).
//! - `streams`: every matching file (or the one file the path names) has role `stream`.
//! - `manifest`: an explicit list of `{ path, role, format?, assume_label? }`.
//!
//! De-duplication compares content hashes of the decompressed data ([`super::zip`]):
//! identical training-role (`train`, `stream`) files are read once (the first path in sorted
//! order); a test file identical to a training-role file is dropped from its split (unless
//! `drop_test_overlaps = false`); copies within one test folder are read once; copies in
//! different test folders are kept.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::format::Format;

/// What a file is used for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Train,
    Stream,
    /// Every window goes to the test split of this name.
    Test(String),
}

impl Role {
    /// Parses `train`, `stream` or `test:<name>`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "train" => Some(Role::Train),
            "stream" => Some(Role::Stream),
            _ => {
                let name = s.strip_prefix("test:")?;
                let ok = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                    && !matches!(name, "train" | "val" | "test_streams");
                ok.then(|| Role::Test(name.to_string()))
            }
        }
    }

    /// Whether the role feeds training (and so the vocabulary and de-duplication).
    pub fn is_training(&self) -> bool {
        matches!(self, Role::Train | Role::Stream)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Train => write!(f, "train"),
            Role::Stream => write!(f, "stream"),
            Role::Test(n) => write!(f, "test:{n}"),
        }
    }
}

/// One file of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct InputFile {
    /// Path relative to the dataset root, `/`-separated (what the manifest shows).
    pub rel: String,
    pub path: PathBuf,
    pub role: Role,
    pub format: Format,
    pub assume_label: Option<bool>,
}

/// One entry of a `manifest` layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedFile {
    pub path: String,
    pub role: Role,
    pub format: Option<Format>,
    pub assume_label: Option<bool>,
}

/// How files get their roles.
#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    Folders,
    Streams,
    Manifest(Vec<ListedFile>),
}

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}`: the `folders` layout needs a directory with `train*` and `test*` folders", path.display())]
    NotADirectory { path: PathBuf },
    #[error("`{}`: no file to read (layout `{layout}`, extensions {extensions:?})", path.display())]
    NoFiles {
        path: PathBuf,
        layout: String,
        extensions: Vec<String>,
    },
    #[error("`{}`: listed in the dataset's `files` but not found", path.display())]
    Missing { path: PathBuf },
}

/// The files of a dataset with their roles, and what was ignored (with why).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub files: Vec<InputFile>,
    pub ignored: Vec<String>,
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, LayoutError> {
    let rd = std::fs::read_dir(dir).map_err(|source| LayoutError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|source| LayoutError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        // Follow symlinks: a dataset folder may link to data elsewhere.
        let is_dir = path.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Lists the files of the dataset at `root`.
pub fn plan(
    root: &Path,
    layout: &Layout,
    format: &Format,
    assume_label: Option<bool>,
) -> Result<Plan, LayoutError> {
    let mut p = Plan::default();
    let file = |rel: String, path: PathBuf, role: Role| InputFile {
        rel,
        path,
        role,
        format: format.clone(),
        assume_label,
    };
    match layout {
        Layout::Folders => {
            if !root.is_dir() {
                return Err(LayoutError::NotADirectory {
                    path: root.to_path_buf(),
                });
            }
            for (name, path, is_dir) in sorted_entries(root)? {
                let role = if !is_dir {
                    None
                } else if name.starts_with("train") {
                    Some(Role::Train)
                } else if name.starts_with("test") {
                    Some(Role::Test(name.clone()))
                } else {
                    None
                };
                let Some(role) = role else {
                    p.ignored.push(format!(
                        "{name}{}: not a `train*` or `test*` folder",
                        if is_dir { "/" } else { "" }
                    ));
                    continue;
                };
                for (fname, fpath, fdir) in sorted_entries(&path)? {
                    let rel = format!("{name}/{fname}");
                    if fdir {
                        p.ignored
                            .push(format!("{rel}/: folders are read non-recursively"));
                    } else if !format.matches(&fname) {
                        p.ignored.push(format!(
                            "{rel}: extension not read by format `{}`",
                            format.name
                        ));
                    } else {
                        p.files.push(file(rel, fpath, role.clone()));
                    }
                }
            }
        }
        Layout::Streams => {
            if root.is_file() {
                let name = root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                p.files.push(file(name, root.to_path_buf(), Role::Stream));
            } else {
                for (name, path, is_dir) in sorted_entries(root)? {
                    if is_dir {
                        p.ignored
                            .push(format!("{name}/: folders are read non-recursively"));
                    } else if !format.matches(&name) {
                        p.ignored.push(format!(
                            "{name}: extension not read by format `{}`",
                            format.name
                        ));
                    } else {
                        p.files.push(file(name, path, Role::Stream));
                    }
                }
            }
        }
        Layout::Manifest(list) => {
            for l in list {
                let path = root.join(&l.path);
                if !path.is_file() {
                    return Err(LayoutError::Missing { path });
                }
                p.files.push(InputFile {
                    rel: l.path.clone(),
                    path,
                    role: l.role.clone(),
                    format: l.format.clone().unwrap_or_else(|| format.clone()),
                    assume_label: l.assume_label.or(assume_label),
                });
            }
        }
    }
    if p.files.is_empty() {
        return Err(LayoutError::NoFiles {
            path: root.to_path_buf(),
            layout: match layout {
                Layout::Folders => "folders",
                Layout::Streams => "streams",
                Layout::Manifest(_) => "manifest",
            }
            .into(),
            extensions: format.extensions.clone(),
        });
    }
    Ok(p)
}

/// What de-duplication decided for a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Read,
    /// The same content as file `of` in the same role group; read once, there.
    Duplicate {
        of: usize,
    },
    /// A test file identical to training-role file `of`; `dropped` unless
    /// `drop_test_overlaps = false`.
    TestOverlap {
        of: usize,
        dropped: bool,
    },
}

/// Decides, for files with content hashes `hashes`, which are read (spec §2.3).
pub fn dedup(files: &[InputFile], hashes: &[[u8; 32]], drop_test_overlaps: bool) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| files[a].rel.cmp(&files[b].rel));
    let mut out = vec![Decision::Read; files.len()];
    let mut training: HashMap<[u8; 32], usize> = HashMap::new();
    for &i in &order {
        if files[i].role.is_training() {
            match training.get(&hashes[i]) {
                Some(&of) => out[i] = Decision::Duplicate { of },
                None => {
                    training.insert(hashes[i], i);
                }
            }
        }
    }
    let mut per_test: HashMap<(&str, [u8; 32]), usize> = HashMap::new();
    for &i in &order {
        let Role::Test(name) = &files[i].role else {
            continue;
        };
        if let Some(&of) = training.get(&hashes[i]) {
            out[i] = Decision::TestOverlap {
                of,
                dropped: drop_test_overlaps,
            };
            if drop_test_overlaps {
                continue;
            }
        }
        match per_test.get(&(name.as_str(), hashes[i])) {
            Some(&of) => out[i] = Decision::Duplicate { of },
            None => {
                per_test.insert((name.as_str(), hashes[i]), i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::format::preset;

    fn f(rel: &str, role: Role) -> InputFile {
        InputFile {
            rel: rel.into(),
            path: PathBuf::from(rel),
            role,
            format: preset("can-train-and-test").unwrap(),
            assume_label: None,
        }
    }

    #[test]
    fn roles_parse() {
        assert_eq!(Role::parse("train"), Some(Role::Train));
        assert_eq!(
            Role::parse("test:test_05_suppress"),
            Some(Role::Test("test_05_suppress".into()))
        );
        assert_eq!(Role::parse("test:"), None);
        assert_eq!(Role::parse("test:val"), None);
        assert_eq!(Role::parse("test:a/b"), None);
        assert_eq!(Role::parse("validation"), None);
    }

    #[test]
    fn dedup_rules() {
        let t1 = Role::Test("test_01".into());
        let t2 = Role::Test("test_02".into());
        let files = vec![
            f("train_01_attack_free/a.csv", Role::Train),
            f("train_02_with_attacks/a.csv", Role::Train),
            f("train_02_with_attacks/b.csv", Role::Train),
            f("test_01/a-copy.csv", t1.clone()),
            f("test_01/c.csv", t1.clone()),
            f("test_01/c2.csv", t1),
            f("test_02/c.csv", t2),
        ];
        let h = |b: u8| [b; 32];
        let hashes = vec![h(1), h(1), h(2), h(1), h(3), h(3), h(3)];
        let d = dedup(&files, &hashes, true);
        assert_eq!(
            d,
            vec![
                Decision::Read,
                Decision::Duplicate { of: 0 },
                Decision::Read,
                Decision::TestOverlap {
                    of: 0,
                    dropped: true
                },
                Decision::Read,
                Decision::Duplicate { of: 4 },
                Decision::Read,
            ]
        );
        let keep = dedup(&files, &hashes, false);
        assert_eq!(
            keep[3],
            Decision::TestOverlap {
                of: 0,
                dropped: false
            }
        );
    }
}
