//! Reading configuration tables (JSON values, as the engine hands them over) with errors that
//! name the key, so a typo in the pipeline file is reported as ``format.id.base`` and not as a
//! bare "invalid type".

use serde_json::{Map, Value};
use thiserror::Error;

/// A configuration mistake, located by its dotted key.
#[derive(Clone, Debug, Error, PartialEq)]
#[error("`{key}`: {message}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `format.label.attack`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A table being read: remembers its dotted prefix, and which keys are allowed.
pub struct Table<'a> {
    pub prefix: String,
    pub map: &'a Map<String, Value>,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

impl<'a> Table<'a> {
    /// `v` as a table at `prefix`.
    pub fn of(prefix: &str, v: &'a Value) -> Result<Table<'a>, ConfigError> {
        match v {
            Value::Object(map) => Ok(Table {
                prefix: prefix.to_string(),
                map,
            }),
            other => Err(ConfigError::new(
                if prefix.is_empty() {
                    "(config)"
                } else {
                    prefix
                },
                format!("expected a table, got {}", kind(other)),
            )),
        }
    }

    /// The dotted key of `key` inside this table.
    pub fn key(&self, key: &str) -> String {
        join(&self.prefix, key)
    }

    /// Fails on the first key not in `allowed`, naming it and the allowed keys.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        for k in self.map.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(ConfigError::new(
                    self.key(k),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a string, got {}", kind(v)),
            )),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected true or false, got {}", kind(v)),
            )),
        }
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a non-negative integer, got {v}"),
            )),
        }
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a number, got {}", kind(v)),
            )),
        }
    }

    pub fn table(&self, key: &str) -> Result<Option<Table<'a>>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => Table::of(&self.key(key), v).map(Some),
        }
    }

    /// A list of strings; a single string is accepted as a one-element list.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    // Label values such as `1` are often written as numbers.
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(ConfigError::new(
                        format!("{}[{i}]", self.key(key)),
                        format!("expected a string, got {}", kind(other)),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a list of strings, got {}", kind(v)),
            )),
        }
    }

    pub fn f64s(&self, key: &str) -> Result<Option<Vec<f64>>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64().ok_or_else(|| {
                        ConfigError::new(
                            format!("{}[{i}]", self.key(key)),
                            format!("expected a number, got {}", kind(v)),
                        )
                    })
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a list of numbers, got {}", kind(v)),
            )),
        }
    }

    /// A string that must be one of `choices`.
    pub fn choice(&self, key: &str, choices: &[&str]) -> Result<Option<&'a str>, ConfigError> {
        match self.str(key)? {
            None => Ok(None),
            Some(s) if choices.contains(&s) => Ok(Some(s)),
            Some(s) => Err(ConfigError::new(
                self.key(key),
                format!("`{s}` is not one of: {}", choices.join(", ")),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_key() {
        let v = json!({"a": {"b": 3, "c": "x"}});
        let t = Table::of("", &v).unwrap();
        let a = t.table("a").unwrap().unwrap();
        assert_eq!(a.str("b").unwrap_err().key, "a.b");
        assert_eq!(a.only(&["b"]).unwrap_err().key, "a.c");
        assert_eq!(a.choice("c", &["y"]).unwrap_err().key, "a.c");
        assert_eq!(a.u64("b").unwrap(), Some(3));
    }
}
