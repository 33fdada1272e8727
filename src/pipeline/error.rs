//! Pipeline errors: each names the file, line, column and key, and suggests the nearest name
//! on a typo.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// A place in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `src`.
    pub fn of_offset(file: &std::path::Path, src: &str, offset: usize) -> Self {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: file.to_path_buf(),
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Why a pipeline could not be loaded or instantiated.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("cannot read pipeline `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{loc}: the file is not valid UTF-8")]
    NotUtf8 { loc: Location },
    #[error("{loc}: {message}")]
    Syntax { loc: Location, message: String },
    /// A semantic mistake at a key: unknown name, bad template, bad value.
    #[error("{loc}: `{key}`: {message}")]
    Invalid {
        loc: Location,
        key: String,
        message: String,
    },
    #[error("{loc}: cyclic inputs: {}", cycle.join(" -> "))]
    Cycle { loc: Location, cycle: Vec<String> },
    #[error("{0}")]
    MissingSource(Box<MissingSource>),
    #[error("cannot hash source `{name}` at `{}`: {message}", path.display())]
    SourceHash {
        name: String,
        path: PathBuf,
        message: String,
    },
    #[error("unknown target `{name}`{}", suggestion_suffix(.suggestion))]
    UnknownTarget {
        name: String,
        suggestion: Option<String>,
    },
    #[error("no target matches `{pattern}`")]
    NoMatch { pattern: String },
}

fn suggestion_suffix(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// A source whose data is not where the pipeline says.
#[derive(Debug)]
pub struct MissingSource {
    pub loc: Location,
    pub name: String,
    pub path: PathBuf,
    pub about: Option<String>,
    /// Environment variables the path was built from, e.g. `KDBUILD_DATA`.
    pub vars: Vec<String>,
}

impl fmt::Display for MissingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: source `{}`: data not found at `{}`",
            self.loc,
            self.name,
            self.path.display()
        )?;
        if let Some(a) = &self.about {
            write!(f, "\n  it comes from: {a}")?;
        }
        if !self.vars.is_empty() {
            let set: Vec<String> = self.vars.iter().map(|v| format!("`{v}`")).collect();
            write!(
                f,
                "\n  set {} to the folder that holds it",
                set.join(" or ")
            )?;
        }
        Ok(())
    }
}

/// The candidate nearest to `name`, if one is near enough to be a likely typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.filter(|(s, _)| *s >= 0.8).map(|(_, c)| c.to_string())
}

/// `" (did you mean `x`?)"` or nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggestion_suffix(&nearest(name, candidates))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let src = "a = 1\nbb = 2\n";
        let l = Location::of_offset(std::path::Path::new("p.toml"), src, 7);
        assert_eq!((l.line, l.column), (2, 2));
        assert_eq!(l.to_string(), "p.toml:2:2");
    }

    #[test]
    fn suggestions_find_typos_only() {
        assert_eq!(
            nearest("tagret", ["target", "kind", "inputs"]),
            Some("target".into())
        );
        assert_eq!(nearest("zzz", ["target", "kind"]), None);
    }
}
