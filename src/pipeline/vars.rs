//! Path variables: `${name}` names a pipeline variable or an environment variable, and
//! `${NAME:-default}` gives a default when the environment variable is unset or empty
//! (shell semantics).

use std::collections::BTreeMap;

/// A string with its variables expanded, and the environment variables it read.
#[derive(Debug, PartialEq)]
pub struct Expanded {
    pub value: String,
    pub env_used: Vec<String>,
}

/// Expands `${…}` in `s`. Pipeline variables (`vars`, already expanded) win over the
/// environment; `env` is a lookup so tests need not touch the process environment.
pub fn expand(
    s: &str,
    vars: &BTreeMap<String, Expanded>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, String> {
    let mut out = String::with_capacity(s.len());
    let mut env_used = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
        let body = &after[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{body}}}` is not a variable name"));
        }
        if let Some(v) = vars.get(name) {
            out.push_str(&v.value);
            env_used.extend(v.env_used.iter().cloned());
        } else {
            env_used.push(name.to_string());
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "`${{{name}}}` is neither a pipeline variable nor a set environment variable"
                    ));
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    env_used.dedup();
    Ok(Expanded {
        value: out,
        env_used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        (n == "SET").then(|| "/set".to_string())
    }

    #[test]
    fn defaults_and_environment() {
        let none = BTreeMap::new();
        assert_eq!(
            expand("${UNSET:-data}/x", &none, &env).unwrap().value,
            "data/x"
        );
        assert_eq!(
            expand("${SET:-data}/x", &none, &env).unwrap().value,
            "/set/x"
        );
        assert!(expand("${UNSET}", &none, &env).is_err());
        assert!(expand("${oops", &none, &env).is_err());
    }

    #[test]
    fn pipeline_vars_carry_their_environment_names() {
        let mut vars = BTreeMap::new();
        vars.insert(
            "data".to_string(),
            expand("${KDBUILD_DATA:-data}", &BTreeMap::new(), &env).unwrap(),
        );
        let e = expand("${data}/hcrl", &vars, &env).unwrap();
        assert_eq!(e.value, "data/hcrl");
        assert_eq!(e.env_used, vec!["KDBUILD_DATA".to_string()]);
    }
}
