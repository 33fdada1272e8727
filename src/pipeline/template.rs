//! `{name}` templates, used for target names, input references and command lines.
//!
//! `{variant}` names a matrix variable; `{config.lr}`, `{in.data}`, `{script.train}` and `{out}`
//! are placeholders of `command` lines. `{{` and `}}` write literal braces. Rendering happens in
//! two passes: instantiation fills what is known then (matrix variables, config values) and
//! keeps the rest; the builder fills `{out}`, `{in.*}` and `{script.*}`, which depend on where
//! the store is and so must not enter the hash.

use thiserror::Error;

/// What a resolver says about one placeholder.
pub enum Resolve {
    /// Replace the placeholder with this text.
    Value(String),
    /// Leave the placeholder for a later pass.
    Keep,
    /// The name is not known: rendering fails with [`TemplateError::Unknown`].
    Unknown,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed `{{` at byte {0} (write `{{{{` for a literal brace)")]
    Unclosed(usize),
    #[error("unmatched `}}` at byte {0} (write `}}}}` for a literal brace)")]
    Unmatched(usize),
    #[error("empty placeholder `{{}}` at byte {0}")]
    Empty(usize),
    #[error("unknown placeholder `{{{0}}}`")]
    Unknown(String),
}

enum Piece<'a> {
    Text(&'a str),
    Brace(char),
    Name(&'a str),
}

fn pieces(tpl: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let bytes = tpl.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                out.push(Piece::Text(&tpl[start..i]));
                out.push(Piece::Brace('{'));
                i += 2;
                start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                out.push(Piece::Text(&tpl[start..i]));
                out.push(Piece::Brace('}'));
                i += 2;
                start = i;
            }
            b'{' => {
                let end = tpl[i + 1..]
                    .find('}')
                    .map(|e| e + i + 1)
                    .ok_or(TemplateError::Unclosed(i))?;
                let name = tpl[i + 1..end].trim();
                if name.is_empty() {
                    return Err(TemplateError::Empty(i));
                }
                if name.contains('{') {
                    return Err(TemplateError::Unclosed(i));
                }
                out.push(Piece::Text(&tpl[start..i]));
                out.push(Piece::Name(name));
                i = end + 1;
                start = i;
            }
            b'}' => return Err(TemplateError::Unmatched(i)),
            _ => i += 1,
        }
    }
    out.push(Piece::Text(&tpl[start..]));
    Ok(out)
}

/// The placeholder names a template uses, in order.
pub fn names(tpl: &str) -> Result<Vec<&str>, TemplateError> {
    Ok(pieces(tpl)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Name(n) => Some(n),
            _ => None,
        })
        .collect())
}

/// Renders `tpl`. With `last_pass`, escaped braces become literal; otherwise they stay escaped
/// (and kept placeholders stay as they are) for the next pass.
pub fn render(
    tpl: &str,
    last_pass: bool,
    mut resolve: impl FnMut(&str) -> Resolve,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(tpl.len() + 16);
    for p in pieces(tpl)? {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Brace(c) => {
                out.push(c);
                if !last_pass {
                    out.push(c);
                }
            }
            Piece::Name(n) => match resolve(n) {
                Resolve::Value(v) => {
                    if last_pass {
                        out.push_str(&v);
                    } else {
                        // A value may itself contain braces; escape them for the next pass.
                        out.push_str(&v.replace('{', "{{").replace('}', "}}"));
                    }
                }
                Resolve::Keep => {
                    out.push('{');
                    out.push_str(n);
                    out.push('}');
                }
                Resolve::Unknown => return Err(TemplateError::Unknown(n.to_string())),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(n: &str) -> Resolve {
        match n {
            "variant" => Resolve::Value("teacher".into()),
            "dataset" => Resolve::Value("demo".into()),
            "out" => Resolve::Keep,
            _ => Resolve::Unknown,
        }
    }

    #[test]
    fn renders_names() {
        assert_eq!(
            render("{variant}-{dataset}-gat", true, vars).unwrap(),
            "teacher-demo-gat"
        );
        assert_eq!(
            names("{variant}-{ dataset }").unwrap(),
            vec!["variant", "dataset"]
        );
    }

    #[test]
    fn two_passes_keep_escapes_and_late_placeholders() {
        let first = render("{out}/{{x}}-{variant}", false, vars).unwrap();
        assert_eq!(first, "{out}/{{x}}-teacher");
        let second = render(&first, true, |n| match n {
            "out" => Resolve::Value("/s/o".into()),
            _ => Resolve::Unknown,
        })
        .unwrap();
        assert_eq!(second, "/s/o/{x}-teacher");
    }

    #[test]
    fn values_with_braces_survive_the_first_pass() {
        let first = render("{variant}", false, |_| Resolve::Value("{a}".into())).unwrap();
        assert_eq!(render(&first, true, |_| Resolve::Unknown).unwrap(), "{a}");
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(
            render("{variant", true, vars),
            Err(TemplateError::Unclosed(0))
        );
        assert_eq!(render("a}", true, vars), Err(TemplateError::Unmatched(1)));
        assert_eq!(render("{}", true, vars), Err(TemplateError::Empty(0)));
        assert_eq!(
            render("{varient}", true, vars),
            Err(TemplateError::Unknown("varient".into()))
        );
    }
}
