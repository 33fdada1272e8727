//! Field-level differences between two derivations of the same target: what the dry run's
//! reasons and `kdbuild explain` report (cargo's `DirtyReason`, one enum for both).

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use super::{Builder, Derivation, Input};

/// One hashed difference between the derivation a result was built from and the one the
/// pipeline asks for now.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A configuration key (dotted path) was added, removed or changed.
    Config {
        key: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    /// An input derivation has a different hash (it was changed or rebuilt).
    Input { name: String, detail: String },
    /// A source dataset's content or reading config changed.
    Source { name: String, detail: String },
    /// A script file of a `command` stage changed.
    Script { name: String },
    /// The stage kind's code identity changed (its sources or crate versions).
    Code { detail: String },
    /// The command line, environment or kind changed.
    Builder { detail: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "(absent)".to_string(),
        };
        match self {
            Change::Config { key, old, new } => {
                write!(
                    f,
                    "config key `{key}` changed: {} -> {}",
                    show(old),
                    show(new)
                )
            }
            Change::Input { name, detail } => write!(f, "input `{name}` {detail}"),
            Change::Source { name, detail } => write!(f, "source `{name}` {detail}"),
            Change::Script { name } => write!(f, "script `{name}` changed"),
            Change::Code { detail } => write!(f, "code changed: {detail}"),
            Change::Builder { detail } => write!(f, "builder changed: {detail}"),
        }
    }
}

/// The hashed differences from `old` to `new`, in a stable order. Empty iff the two hash
/// alike (given equal names and stages).
pub fn diff(old: &Derivation, new: &Derivation) -> Vec<Change> {
    let mut out = Vec::new();
    if old.kind != new.kind {
        out.push(Change::Builder {
            detail: format!("kind `{}` -> `{}`", old.kind, new.kind),
        });
    }
    if old.builder != new.builder {
        out.push(Change::Builder {
            detail: builder_detail(&old.builder, &new.builder),
        });
    }
    config_diff("", Some(&old.config), Some(&new.config), &mut out);
    inputs_diff(old, new, &mut out);
    let scripts: BTreeSet<&String> = old.scripts.keys().chain(new.scripts.keys()).collect();
    for name in scripts {
        if old.scripts.get(name) != new.scripts.get(name) {
            out.push(Change::Script { name: name.clone() });
        }
    }
    if old.code != new.code {
        let mut parts = Vec::new();
        if old.code.digest != new.code.digest {
            parts.push("source digest".to_string());
        }
        let crates: BTreeSet<&String> = old
            .code
            .crates
            .keys()
            .chain(new.code.crates.keys())
            .collect();
        for c in crates {
            let (a, b) = (old.code.crates.get(c), new.code.crates.get(c));
            if a != b {
                parts.push(format!(
                    "{c} {} -> {}",
                    a.map_or("(none)", String::as_str),
                    b.map_or("(none)", String::as_str)
                ));
            }
        }
        out.push(Change::Code {
            detail: parts.join(", "),
        });
    }
    out
}

fn builder_detail(old: &Builder, new: &Builder) -> String {
    match (old, new) {
        (Builder::Command { argv: a, env: ea }, Builder::Command { argv: b, env: eb }) => {
            if a != b {
                format!("command `{}` -> `{}`", a.join(" "), b.join(" "))
            } else {
                let keys: BTreeSet<&String> = ea.keys().chain(eb.keys()).collect();
                let changed: Vec<&str> = keys
                    .into_iter()
                    .filter(|k| ea.get(*k) != eb.get(*k))
                    .map(String::as_str)
                    .collect();
                format!("environment {}", changed.join(", "))
            }
        }
        _ => "entry point".to_string(),
    }
}

fn inputs_diff(old: &Derivation, new: &Derivation, out: &mut Vec<Change>) {
    let names: BTreeSet<&String> = old.inputs.keys().chain(new.inputs.keys()).collect();
    for name in names {
        let (a, b) = (old.inputs.get(name), new.inputs.get(name));
        if a == b {
            continue;
        }
        let name = name.clone();
        match (a, b) {
            (None, Some(_)) => out.push(Change::Input {
                name,
                detail: "added".into(),
            }),
            (Some(_), None) => out.push(Change::Input {
                name,
                detail: "removed".into(),
            }),
            (
                Some(Input::Source {
                    content: c1,
                    config: k1,
                    ..
                }),
                Some(Input::Source {
                    content: c2,
                    config: k2,
                    ..
                }),
            ) => {
                let detail = if c1 != c2 {
                    "content changed".to_string()
                } else if k1 != k2 {
                    "reading config changed".to_string()
                } else {
                    "renamed".to_string()
                };
                out.push(Change::Source { name, detail });
            }
            (
                Some(Input::Derivation { name: n1, .. }),
                Some(Input::Derivation { name: n2, .. }),
            ) => {
                let detail = if n1 != n2 {
                    format!("now `{n2}` instead of `{n1}`")
                } else {
                    format!("`{n2}` changed")
                };
                out.push(Change::Input { name, detail });
            }
            _ => out.push(Change::Input {
                name,
                detail: "changed kind".into(),
            }),
        }
    }
}

fn config_diff(prefix: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    if a == b {
        return;
    }
    if let (Some(Value::Object(ma)), Some(Value::Object(mb))) = (a, b) {
        let keys: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
        for k in keys {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            config_diff(&key, ma.get(k), mb.get(k), out);
        }
        return;
    }
    // Numbers that canonicalise alike (1 vs 1.0) are not a change.
    if let (Some(x), Some(y)) = (a, b)
        && super::canonical::to_string(x).ok() == super::canonical::to_string(y).ok()
    {
        return;
    }
    out.push(Change::Config {
        key: if prefix.is_empty() {
            "(root)".into()
        } else {
            prefix.to_string()
        },
        old: a.cloned(),
        new: b.cloned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derivation::CodeIdentity;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn base() -> Derivation {
        Derivation {
            name: "t".into(),
            stage: "s".into(),
            kind: "command".into(),
            builder: Builder::Command {
                argv: vec!["true".into()],
                env: BTreeMap::new(),
            },
            config: json!({"opt": {"lr": 0.1, "wd": 0}, "epochs": 3}),
            inputs: BTreeMap::new(),
            scripts: BTreeMap::new(),
            code: CodeIdentity::default(),
            recorded: Default::default(),
        }
    }

    #[test]
    fn config_changes_name_dotted_keys() {
        let a = base();
        let mut b = base();
        b.config["opt"]["lr"] = json!(0.2);
        b.config["seed"] = json!(1);
        let d = diff(&a, &b);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].to_string(), "config key `opt.lr` changed: 0.1 -> 0.2");
        assert_eq!(d[1].to_string(), "config key `seed` changed: (absent) -> 1");
    }

    #[test]
    fn equal_after_canonicalisation_is_no_change() {
        let a = base();
        let mut b = base();
        b.config["epochs"] = json!(3.0);
        assert!(diff(&a, &b).is_empty());
    }

    #[test]
    fn input_and_code_changes_are_reported() {
        let mut a = base();
        let mut b = base();
        a.inputs.insert(
            "data".into(),
            Input::Derivation {
                hash: crate::hash::DrvHash::of_canonical(b"1"),
                name: "p".into(),
            },
        );
        b.inputs.insert(
            "data".into(),
            Input::Derivation {
                hash: crate::hash::DrvHash::of_canonical(b"2"),
                name: "p".into(),
            },
        );
        b.code.digest = "x".into();
        let d = diff(&a, &b);
        assert_eq!(d[0].to_string(), "input `data` `p` changed");
        assert_eq!(d[1].to_string(), "code changed: source digest");
    }
}
