//! The canonical JSON encoding that derivation hashes are computed over.
//!
//! Rules (changing any of them changes every hash, so it comes with a new
//! [`SCHEMA`](super::SCHEMA)):
//! - objects: keys sorted by their UTF-8 bytes, no whitespace anywhere;
//! - numbers: integers as integers; a float with no fractional part and magnitude below 2^53
//!   as that integer (`1.0` ≡ `1`); other floats in the shortest form that reads back to the
//!   same `f64` (`1e-3` ≡ `0.001` ≡ `0.0010`); NaN and infinities are rejected;
//! - strings: JSON escapes as `serde_json` writes them.

use serde_json::Value;
use thiserror::Error;

/// A value that has no canonical encoding.
#[derive(Debug, Error, PartialEq)]
pub enum CanonicalError {
    #[error("`{path}` is {value}: only finite numbers can be hashed")]
    NonFinite { path: String, value: f64 },
}

/// Largest integer that an `f64` represents exactly.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// Writes `v` canonically.
pub fn to_string(v: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(256);
    write(v, &mut out, &mut String::new())?;
    Ok(out)
}

/// Appends `v`, canonically, to `out`.
pub fn write_value(v: &Value, out: &mut String) -> Result<(), CanonicalError> {
    write(v, out, &mut String::new())
}

/// Normalises a value in place so that writing it with any JSON writer is canonical for
/// numbers (objects are still sorted only by [`to_string`]).
pub fn normalise(v: &mut Value) -> Result<(), CanonicalError> {
    fn go(v: &mut Value, path: &mut String) -> Result<(), CanonicalError> {
        match v {
            Value::Number(n) => {
                if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                    *v = normalise_float(f, path)?;
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    go(item, path)?;
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    let len = path.len();
                    push_key(path, k);
                    go(item, path)?;
                    path.truncate(len);
                }
            }
            _ => {}
        }
        Ok(())
    }
    go(v, &mut String::new())
}

fn push_key(path: &mut String, k: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(k);
}

fn normalise_float(f: f64, path: &str) -> Result<Value, CanonicalError> {
    if !f.is_finite() {
        return Err(CanonicalError::NonFinite {
            path: path.to_string(),
            value: f,
        });
    }
    if f.fract() == 0.0 && f.abs() < EXACT_INT {
        // -0.0 becomes 0 here too.
        return Ok(Value::from(f as i64));
    }
    Ok(Value::from(f))
}

fn write(v: &Value, out: &mut String, path: &mut String) -> Result<(), CanonicalError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match normalise_float(f, path)? {
                    Value::Number(m) => out.push_str(&m.to_string()),
                    _ => unreachable!("normalise_float returns numbers"),
                }
            } else {
                out.push_str(&n.to_string());
            }
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                write(item, out, path)?;
                path.truncate(len);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                let len = path.len();
                push_key(path, k);
                write(&map[k], out, path)?;
                path.truncate(len);
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Appends `s` as a JSON string, escaped exactly as `serde_json` escapes it.
pub fn write_str(s: &str, out: &mut String) {
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json's string escaping is fixed by the JSON spec and stable across versions.
    out.push_str(&serde_json::to_string(s).expect("strings always serialise"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [3, {"z": 0, "y": 1}], "c": null}});
        assert_eq!(
            to_string(&v).unwrap(),
            r#"{"a":{"c":null,"d":[3,{"y":1,"z":0}]},"b":1}"#
        );
    }

    #[test]
    fn numbers_are_normalised() {
        assert_eq!(to_string(&json!(1.0)).unwrap(), "1");
        assert_eq!(to_string(&json!(-0.0)).unwrap(), "0");
        assert_eq!(
            to_string(&json!(1e-3)).unwrap(),
            to_string(&json!(0.0010)).unwrap()
        );
        assert_eq!(to_string(&json!(0.5)).unwrap(), "0.5");
        assert_eq!(to_string(&json!(2e20)).unwrap(), "2e+20");
    }

    #[test]
    fn non_finite_numbers_name_their_path() {
        let v = json!({"opt": {"lr": 1.0}});
        let mut v2 = v.clone();
        v2["opt"]["lr"] = Value::from(1.0);
        assert!(to_string(&v2).is_ok());
        let err = normalise_float(f64::INFINITY, "opt.lr").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`opt.lr` is inf: only finite numbers can be hashed"
        );
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(to_string(&json!("a\"b\n")).unwrap(), r#""a\"b\n""#);
    }
}
