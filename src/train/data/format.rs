//! Formats: the named presets of spec §2.2 and the generic CSV mapping they are instances of.
//!
//! A dataset names its format in the pipeline file, either as a preset string or as a table:
//!
//! ```toml
//! config = { format = "can-train-and-test", layout = "folders" }
//! # or, for a new dataset, with no code:
//! [sources.mine.config.format]
//! kind = "csv"
//! delimiter = ","
//! header = true
//! id        = { col = "arbitration_id", base = "hex" }      # "hex" | "dec"; bits = 11 | 29
//! payload   = { col = "data_field" }                        # one hex field, or instead:
//! # bytes   = { cols = ["D0","D1","D2","D3","D4","D5","D6","D7"], base = "dec" }
//! dlc       = { col = "DLC", unit = "bytes" }               # optional; "bytes" | "bits"
//! label     = { col = "attack", attack = ["1"], normal = ["0"], case_insensitive = true }
//! timestamp = { col = "timestamp" }                         # optional
//! extensions = ["csv"]
//! ```
//!
//! Columns are header names, or 0-based indices (required when `header = false`). Every preset
//! except `candump` is such a mapping ([`preset`]); `hcrl-car-hacking` adds a byte *run*
//! (`bytes = { start = 3 }`, DLC fields long) and `label.after_payload = true`.
//! The `can-train-and-test` preset declares 11-bit IDs (v1.5 vocabularies stay within 2,048
//! IDs): a wider ID there is a malformed row; a mapping with `id.bits = 29` lifts that.
//! A preset may also be given as a table, `{ kind = "<preset>", extensions = [...] }`, and
//! `candump` takes its label tokens there (`attack = [...]`, `normal = [...]`).

use serde_json::Value;

use super::cfg::{ConfigError, Table};
use super::frame::{Base, MAX_ID_11, MAX_ID_29};

/// The preset names, in documentation order.
pub const PRESETS: &[&str] = &[
    "can-train-and-test",
    "hcrl-car-hacking",
    "candump",
    "daga",
    "cic-iov2024",
    "j1939",
];

/// A column, by header name or by 0-based index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Col {
    Name(String),
    Index(usize),
}

impl std::fmt::Display for Col {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Col::Name(n) => write!(f, "{n}"),
            Col::Index(i) => write!(f, "#{i}"),
        }
    }
}

/// How the ID is written.
#[derive(Clone, Debug, PartialEq)]
pub struct IdSpec {
    pub col: Col,
    pub base: Base,
    /// The largest valid ID: [`MAX_ID_11`] for 11-bit formats, [`MAX_ID_29`] otherwise.
    pub max: u32,
}

/// Where the payload is.
#[derive(Clone, Debug, PartialEq)]
pub enum PayloadSpec {
    /// One hex field (`0102…`), spec §2.1 hex rules.
    Hex { col: Col },
    /// One column per byte; an empty cell is an absent byte.
    Columns { cols: Vec<Col>, base: Base },
    /// DLC consecutive fields starting at index `start` (HCRL originals).
    Run { start: usize, base: Base },
}

/// DLC unit: DAGA writes the payload length in bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DlcUnit {
    Bytes,
    Bits,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DlcSpec {
    pub col: Col,
    pub unit: DlcUnit,
}

/// Where the label is.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelPos {
    Col(Col),
    /// The field right after the payload run (HCRL: field `3+DLC`).
    AfterPayload,
}

/// Which label values mean attack and which normal. With both lists, any other value makes
/// the row malformed; with one list, every other value is the other class.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelValues {
    pub attack: Vec<String>,
    pub normal: Vec<String>,
    pub case_insensitive: bool,
}

impl LabelValues {
    /// `Some(true)` = attack, `Some(false)` = normal, `None` = not a known value.
    #[inline]
    pub fn classify(&self, v: &[u8]) -> Option<bool> {
        let eq = |s: &String| {
            if self.case_insensitive {
                s.as_bytes().eq_ignore_ascii_case(v)
            } else {
                s.as_bytes() == v
            }
        };
        if self.attack.iter().any(eq) {
            return Some(true);
        }
        if self.normal.iter().any(eq) {
            return Some(false);
        }
        match (self.attack.is_empty(), self.normal.is_empty()) {
            (false, true) => Some(false),
            (true, false) => Some(true),
            _ => None,
        }
    }

    /// What the values are, for error messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.attack.is_empty() {
            parts.push(format!("attack {:?}", self.attack));
        }
        if !self.normal.is_empty() {
            parts.push(format!("normal {:?}", self.normal));
        }
        parts.join(" or ")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LabelSpec {
    pub pos: LabelPos,
    pub values: LabelValues,
}

/// A CSV mapping (spec §2.2, "generic csv").
#[derive(Clone, Debug, PartialEq)]
pub struct CsvMapping {
    pub delimiter: u8,
    pub header: bool,
    pub id: IdSpec,
    pub payload: PayloadSpec,
    pub dlc: Option<DlcSpec>,
    pub label: Option<LabelSpec>,
    pub timestamp: Option<Col>,
}

/// candump options: the label tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct CandumpSpec {
    pub labels: LabelValues,
}

/// What a reader does with a file.
#[derive(Clone, Debug, PartialEq)]
pub enum FormatKind {
    Csv(CsvMapping),
    /// A CSV mapping whose files may instead be HCRL's `normal_run_data.txt` text form
    /// (`Timestamp: … ID: … 000 DLC: n bytes…`), recognised by its first token.
    HcrlCarHacking(CsvMapping),
    Candump(CandumpSpec),
}

/// A resolved format.
#[derive(Clone, Debug, PartialEq)]
pub struct Format {
    /// The preset name, or `csv`.
    pub name: String,
    pub kind: FormatKind,
    /// File extensions (lower case, no dot) that the `folders` and `streams` layouts read.
    pub extensions: Vec<String>,
}

impl Format {
    /// Whether a file name has one of this format's extensions.
    pub fn matches(&self, file_name: &str) -> bool {
        let lower = file_name.to_ascii_lowercase();
        match lower.rsplit_once('.') {
            Some((_, ext)) => self.extensions.iter().any(|e| e == ext),
            None => false,
        }
    }
}

fn name(s: &str) -> Col {
    Col::Name(s.to_string())
}

fn labels(attack: &[&str], normal: &[&str]) -> LabelValues {
    LabelValues {
        attack: attack.iter().map(|s| s.to_string()).collect(),
        normal: normal.iter().map(|s| s.to_string()).collect(),
        case_insensitive: true,
    }
}

fn exts(e: &[&str]) -> Vec<String> {
    e.iter().map(|s| s.to_string()).collect()
}

/// The default candump label tokens (spec §2.2).
pub fn candump_labels() -> LabelValues {
    labels(
        &["1", "T", "true", "attack"],
        &["0", "R", "false", "normal"],
    )
}

/// A preset by name (spec §2.2).
pub fn preset(preset: &str) -> Option<Format> {
    let (kind, extensions) = match preset {
        "can-train-and-test" => (
            FormatKind::Csv(CsvMapping {
                delimiter: b',',
                header: true,
                id: IdSpec {
                    col: name("arbitration_id"),
                    base: Base::Hex,
                    max: MAX_ID_11,
                },
                payload: PayloadSpec::Hex {
                    col: name("data_field"),
                },
                dlc: None,
                label: Some(LabelSpec {
                    pos: LabelPos::Col(name("attack")),
                    values: labels(&["1"], &["0"]),
                }),
                timestamp: Some(name("timestamp")),
            }),
            exts(&["csv", "zip"]),
        ),
        "hcrl-car-hacking" => (
            FormatKind::HcrlCarHacking(CsvMapping {
                delimiter: b',',
                header: false,
                id: IdSpec {
                    col: Col::Index(1),
                    base: Base::Hex,
                    max: MAX_ID_29,
                },
                payload: PayloadSpec::Run {
                    start: 3,
                    base: Base::Hex,
                },
                dlc: Some(DlcSpec {
                    col: Col::Index(2),
                    unit: DlcUnit::Bytes,
                }),
                label: Some(LabelSpec {
                    pos: LabelPos::AfterPayload,
                    values: labels(&["T"], &["R"]),
                }),
                timestamp: Some(Col::Index(0)),
            }),
            exts(&["csv", "txt", "zip"]),
        ),
        "candump" => (
            FormatKind::Candump(CandumpSpec {
                labels: candump_labels(),
            }),
            exts(&["log", "txt", "candump", "zip"]),
        ),
        "daga" => (
            FormatKind::Csv(CsvMapping {
                delimiter: b',',
                header: true,
                id: IdSpec {
                    col: name("CAN_ID"),
                    base: Base::Hex,
                    max: MAX_ID_29,
                },
                payload: PayloadSpec::Hex {
                    col: name("PAYLOAD_HEX"),
                },
                dlc: Some(DlcSpec {
                    col: name("DLC"),
                    unit: DlcUnit::Bits,
                }),
                label: Some(LabelSpec {
                    pos: LabelPos::Col(name("ANOMALY")),
                    values: labels(&["true"], &["false"]),
                }),
                timestamp: Some(name("timestamp")),
            }),
            exts(&["zip", "txt", "csv"]),
        ),
        "cic-iov2024" => (
            FormatKind::Csv(CsvMapping {
                delimiter: b',',
                header: true,
                id: IdSpec {
                    col: name("ID"),
                    base: Base::Dec,
                    max: MAX_ID_29,
                },
                payload: PayloadSpec::Columns {
                    cols: (0..8).map(|i| name(&format!("DATA_{i}"))).collect(),
                    base: Base::Dec,
                },
                dlc: None,
                label: Some(LabelSpec {
                    pos: LabelPos::Col(name("label")),
                    values: labels(&["ATTACK"], &["BENIGN"]),
                }),
                timestamp: None,
            }),
            exts(&["csv", "zip"]),
        ),
        "j1939" => (
            FormatKind::Csv(CsvMapping {
                delimiter: b',',
                header: true,
                id: IdSpec {
                    col: name("can_id"),
                    base: Base::Dec,
                    max: MAX_ID_29,
                },
                payload: PayloadSpec::Hex { col: name("data") },
                dlc: Some(DlcSpec {
                    col: name("dlc"),
                    unit: DlcUnit::Bytes,
                }),
                label: Some(LabelSpec {
                    pos: LabelPos::Col(name("label")),
                    values: labels(&[], &["normal"]),
                }),
                timestamp: Some(name("timestamp")),
            }),
            exts(&["csv", "zip"]),
        ),
        _ => return None,
    };
    Some(Format {
        name: preset.to_string(),
        kind,
        extensions,
    })
}

/// Resolves the `format` value of a dataset: a preset name or a table (`key` is its dotted
/// path, for errors).
pub fn parse_format(key: &str, v: &Value) -> Result<Format, ConfigError> {
    let unknown_preset = |s: &str| {
        ConfigError::new(
            key,
            format!(
                "unknown format `{s}` (presets: {}; or a table with kind = \"csv\")",
                PRESETS.join(", ")
            ),
        )
    };
    match v {
        Value::String(s) => preset(s).ok_or_else(|| unknown_preset(s)),
        Value::Object(_) => {
            let t = Table::of(key, v)?;
            let kind = t.str("kind")?.ok_or_else(|| {
                ConfigError::new(t.key("kind"), "missing (\"csv\" or a preset name)")
            })?;
            if kind == "csv" {
                return parse_mapping(&t);
            }
            let mut f = preset(kind)
                .ok_or_else(|| ConfigError::new(t.key("kind"), unknown_preset(kind).message))?;
            if let FormatKind::Candump(c) = &mut f.kind {
                t.only(&["kind", "extensions", "attack", "normal", "case_insensitive"])?;
                if let Some(a) = t.strings("attack")? {
                    c.labels.attack = a;
                }
                if let Some(n) = t.strings("normal")? {
                    c.labels.normal = n;
                }
                if let Some(ci) = t.bool("case_insensitive")? {
                    c.labels.case_insensitive = ci;
                }
            } else {
                t.only(&["kind", "extensions"])?;
            }
            if let Some(e) = t.strings("extensions")? {
                f.extensions = normalise_exts(e);
            }
            Ok(f)
        }
        _ => Err(ConfigError::new(
            key,
            "expected a preset name or a table with `kind`",
        )),
    }
}

fn normalise_exts(e: Vec<String>) -> Vec<String> {
    e.into_iter()
        .map(|s| s.trim_start_matches('.').to_ascii_lowercase())
        .collect()
}

fn parse_col(t: &Table, key: &str, header: bool) -> Result<Col, ConfigError> {
    match t.get(key) {
        Some(Value::String(s)) if header => Ok(Col::Name(s.clone())),
        Some(Value::String(_)) => Err(ConfigError::new(
            t.key(key),
            "with `header = false` columns are 0-based indices",
        )),
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            Ok(Col::Index(n.as_u64().unwrap_or(0) as usize))
        }
        Some(other) => Err(ConfigError::new(
            t.key(key),
            format!("expected a column name or a 0-based index, got {other}"),
        )),
        None => Err(ConfigError::new(t.key(key), "missing")),
    }
}

fn parse_base(t: &Table, key: &str, default: Base) -> Result<Base, ConfigError> {
    Ok(match t.choice(key, &["hex", "dec"])? {
        Some("hex") => Base::Hex,
        Some(_) => Base::Dec,
        None => default,
    })
}

/// The generic `kind = "csv"` mapping.
fn parse_mapping(t: &Table) -> Result<Format, ConfigError> {
    t.only(&[
        "kind",
        "delimiter",
        "header",
        "id",
        "payload",
        "bytes",
        "dlc",
        "label",
        "timestamp",
        "extensions",
    ])?;
    let delimiter = match t.str("delimiter")? {
        None => b',',
        Some("\\t") | Some("tab") => b'\t',
        Some(s) if s.len() == 1 => s.as_bytes()[0],
        Some(s) => {
            return Err(ConfigError::new(
                t.key("delimiter"),
                format!("expected one ASCII character, got {s:?}"),
            ));
        }
    };
    let header = t.bool("header")?.unwrap_or(true);

    let id_t = t.table("id")?.ok_or_else(|| {
        ConfigError::new(
            t.key("id"),
            "missing (e.g. { col = \"id\", base = \"hex\" })",
        )
    })?;
    id_t.only(&["col", "base", "bits"])?;
    let base = match id_t.choice("base", &["hex", "dec"])? {
        Some("hex") => Base::Hex,
        Some(_) => Base::Dec,
        None => {
            return Err(ConfigError::new(
                id_t.key("base"),
                "missing: say \"hex\" or \"dec\" (a decimal-looking ID is also valid hex, so it is never guessed)",
            ));
        }
    };
    let max = match id_t.u64("bits")? {
        None | Some(29) => MAX_ID_29,
        Some(11) => MAX_ID_11,
        Some(b) => {
            return Err(ConfigError::new(
                id_t.key("bits"),
                format!("expected 11 or 29, got {b}"),
            ));
        }
    };
    let id = IdSpec {
        col: parse_col(&id_t, "col", header)?,
        base,
        max,
    };

    let payload = match (t.table("payload")?, t.table("bytes")?) {
        (Some(p), None) => {
            p.only(&["col"])?;
            PayloadSpec::Hex {
                col: parse_col(&p, "col", header)?,
            }
        }
        (None, Some(b)) => {
            b.only(&["cols", "start", "base"])?;
            let base = parse_base(&b, "base", Base::Hex)?;
            match (b.get("cols"), b.u64("start")?) {
                (Some(Value::Array(cols)), None) => {
                    if cols.is_empty() || cols.len() > 8 {
                        return Err(ConfigError::new(b.key("cols"), "expected 1 to 8 columns"));
                    }
                    let mut out = Vec::new();
                    for (i, c) in cols.iter().enumerate() {
                        let wrap = serde_json::json!({ "c": c });
                        let ct = Table::of(&format!("{}[{i}]", b.key("cols")), &wrap)?;
                        out.push(parse_col(&ct, "c", header).map_err(|e| {
                            ConfigError::new(format!("{}[{i}]", b.key("cols")), e.message)
                        })?);
                    }
                    PayloadSpec::Columns { cols: out, base }
                }
                (None, Some(start)) => PayloadSpec::Run {
                    start: start as usize,
                    base,
                },
                _ => {
                    return Err(ConfigError::new(
                        b.key("cols"),
                        "give either `cols` (a list of columns) or `start` (a DLC-long run of fields)",
                    ));
                }
            }
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                t.key("bytes"),
                "give either `payload` (one hex field) or `bytes` (byte columns), not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                t.key("payload"),
                "missing: `payload = { col = … }` or `bytes = { cols = [...] }`",
            ));
        }
    };

    let dlc = match t.table("dlc")? {
        None => None,
        Some(d) => {
            d.only(&["col", "unit"])?;
            Some(DlcSpec {
                col: parse_col(&d, "col", header)?,
                unit: match d.choice("unit", &["bytes", "bits"])? {
                    Some("bits") => DlcUnit::Bits,
                    _ => DlcUnit::Bytes,
                },
            })
        }
    };
    if matches!(payload, PayloadSpec::Run { .. }) && dlc.is_none() {
        return Err(ConfigError::new(
            t.key("dlc"),
            "`bytes.start` needs a `dlc` column (the run is DLC fields long)",
        ));
    }

    let label = match t.table("label")? {
        None => None,
        Some(l) => {
            l.only(&[
                "col",
                "attack",
                "normal",
                "case_insensitive",
                "after_payload",
            ])?;
            let after = l.bool("after_payload")?.unwrap_or(false);
            let pos = if after {
                if !matches!(payload, PayloadSpec::Run { .. }) {
                    return Err(ConfigError::new(
                        l.key("after_payload"),
                        "needs `bytes = { start = … }` (the label follows a DLC-long run)",
                    ));
                }
                if l.get("col").is_some() {
                    return Err(ConfigError::new(
                        l.key("col"),
                        "give either `col` or `after_payload = true`",
                    ));
                }
                LabelPos::AfterPayload
            } else {
                LabelPos::Col(parse_col(&l, "col", header)?)
            };
            let values = LabelValues {
                attack: l.strings("attack")?.unwrap_or_default(),
                normal: l.strings("normal")?.unwrap_or_default(),
                case_insensitive: l.bool("case_insensitive")?.unwrap_or(true),
            };
            if values.attack.is_empty() && values.normal.is_empty() {
                return Err(ConfigError::new(
                    l.key("attack"),
                    "give `attack` or `normal` values (or both)",
                ));
            }
            Some(LabelSpec { pos, values })
        }
    };

    let timestamp = match t.table("timestamp")? {
        None => None,
        Some(ts) => {
            ts.only(&["col"])?;
            Some(parse_col(&ts, "col", header)?)
        }
    };
    let extensions = normalise_exts(
        t.strings("extensions")?
            .unwrap_or_else(|| vec!["csv".into(), "zip".into()]),
    );
    Ok(Format {
        name: "csv".into(),
        kind: FormatKind::Csv(CsvMapping {
            delimiter,
            header,
            id,
            payload,
            dlc,
            label,
            timestamp,
        }),
        extensions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_preset_resolves() {
        for p in PRESETS {
            let f = parse_format("format", &json!(p)).unwrap();
            assert_eq!(f.name, *p);
            assert!(!f.extensions.is_empty());
        }
        let e = parse_format("format", &json!("hcrl")).unwrap_err();
        assert_eq!(e.key, "format");
        assert!(e.message.contains("can-train-and-test"));
    }

    #[test]
    fn generic_mapping_equals_the_preset() {
        let v = json!({
            "kind": "csv",
            "id": {"col": "arbitration_id", "base": "hex", "bits": 11},
            "payload": {"col": "data_field"},
            "label": {"col": "attack", "attack": ["1"], "normal": [0]},
            "timestamp": {"col": "timestamp"},
        });
        let g = parse_format("format", &v).unwrap();
        let p = preset("can-train-and-test").unwrap();
        assert_eq!(g.kind, p.kind);
    }

    #[test]
    fn mapping_errors_name_the_key() {
        let v = json!({"kind": "csv", "id": {"col": "x"}, "payload": {"col": "p"}});
        assert_eq!(parse_format("f", &v).unwrap_err().key, "f.id.base");
        let v = json!({"kind": "csv", "header": false, "id": {"col": "x", "base": "hex"}, "payload": {"col": 1}});
        assert_eq!(parse_format("f", &v).unwrap_err().key, "f.id.col");
        let v = json!({"kind": "csv", "id": {"col": 0, "base": "hex"}, "payload": {"col": 1}, "colour": 1});
        assert_eq!(parse_format("f", &v).unwrap_err().key, "f.colour");
        let v = json!({"kind": "csv", "id": {"col": 0, "base": "hex"}, "bytes": {"cols": [1], "base": "oct"}});
        assert_eq!(parse_format("f", &v).unwrap_err().key, "f.bytes.base");
        let v = json!({"kind": "candump", "attack": ["bad"]});
        let f = parse_format("f", &v).unwrap();
        let FormatKind::Candump(c) = f.kind else {
            panic!("candump")
        };
        assert_eq!(c.labels.classify(b"BAD"), Some(true));
    }

    #[test]
    fn label_lists() {
        let both = labels(&["1"], &["0"]);
        assert_eq!(both.classify(b"1"), Some(true));
        assert_eq!(both.classify(b"0"), Some(false));
        assert_eq!(both.classify(b"2"), None);
        let normal_only = labels(&[], &["normal"]);
        assert_eq!(normal_only.classify(b"NORMAL"), Some(false));
        assert_eq!(normal_only.classify(b"high_torque_command"), Some(true));
    }

    #[test]
    fn extensions_match_case_insensitively() {
        let f = preset("daga").unwrap();
        assert!(f.matches("clean_V40_03.can.ZIP"));
        assert!(!f.matches("README"));
    }
}
