//! Store path names: `<nix-base32 drv hash, 32 chars>-<target name>`, and the rules for the
//! names that may appear in them.
//!
//! Pure: no IO. The store decides where a [`StorePath`] lives on disk.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::hash::{DRV_HASH_CHARS, DrvHash};

/// Why a name cannot be a stage, target or store path name.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("`{0}` is longer than 200 characters")]
    TooLong(String),
    #[error("`{0}` contains `/`: names become single path components")]
    Slash(String),
    #[error("`{0}` contains `..`: names may not climb out of the store")]
    DotDot(String),
    #[error("`{0}` starts with `.`: names may not be hidden files")]
    LeadingDot(String),
    #[error("`{name}` contains `{ch}`: names may use letters, digits and `_ - . + =` only")]
    BadChar { name: String, ch: char },
    #[error("`{0}` is not a store path name: expected `<32-char hash>-<name>`")]
    NotStorePath(String),
}

/// Checks that `name` can be a stage name, a target name or the name part of a store path.
///
/// Names become single path components and shell words in SLURM scripts, so the allowed set is
/// small and has no quoting hazards: letters, digits, `_ - . + =`, no leading dot, no `..`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 200 {
        return Err(NameError::TooLong(name.to_string()));
    }
    if name.contains('/') {
        return Err(NameError::Slash(name.to_string()));
    }
    if name.contains("..") {
        return Err(NameError::DotDot(name.to_string()));
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot(name.to_string()));
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '=')))
    {
        return Err(NameError::BadChar {
            name: name.to_string(),
            ch,
        });
    }
    Ok(())
}

/// A store path, independent of where the store is: the derivation hash and the target name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    hash: DrvHash,
    name: String,
}

impl StorePath {
    /// Builds a store path; the name must pass [`check_name`].
    pub fn new(hash: DrvHash, name: &str) -> Result<Self, NameError> {
        check_name(name)?;
        Ok(StorePath {
            hash,
            name: name.to_string(),
        })
    }

    pub fn hash(&self) -> DrvHash {
        self.hash
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash, self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl FromStr for StorePath {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NameError::NotStorePath(s.to_string());
        if s.len() < DRV_HASH_CHARS + 2 || s.as_bytes()[DRV_HASH_CHARS] != b'-' {
            return Err(bad());
        }
        let hash: DrvHash = s[..DRV_HASH_CHARS].parse().map_err(|_| bad())?;
        StorePath::new(hash, &s[DRV_HASH_CHARS + 1..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for n in ["teacher-hcrl_sa-dqn", "a", "x.y+z=1", "set_01-preprocess"] {
            check_name(n).unwrap();
        }
    }

    #[test]
    fn bad_names_are_rejected_with_reason() {
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert!(matches!(check_name("a/b"), Err(NameError::Slash(_))));
        assert!(matches!(check_name("a..b"), Err(NameError::DotDot(_))));
        assert!(matches!(
            check_name(".hidden"),
            Err(NameError::LeadingDot(_))
        ));
        assert!(matches!(
            check_name("a b"),
            Err(NameError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            check_name("$(x)"),
            Err(NameError::BadChar { ch: '$', .. })
        ));
    }

    #[test]
    fn store_path_round_trips() {
        let p = StorePath::new(DrvHash::of_canonical(b"x"), "teacher-demo-gat").unwrap();
        let s = p.to_string();
        assert_eq!(s.parse::<StorePath>().unwrap(), p);
        assert!("short-name".parse::<StorePath>().is_err());
    }
}
