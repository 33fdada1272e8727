//! The two configuration tables of a preprocess: how to *read* a dataset (the source's
//! `config` in the pipeline file, hashed with its content) and how to *cut* it (the
//! preprocess stage's `config`). Unknown keys are errors that name the key.
//!
//! Dataset (`[sources.NAME] config = { … }`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `format` | (required) | a preset name or a mapping table ([`super::format`]) |
//! | `layout` | `folders` | `folders`, `streams` or `manifest` ([`super::layout`]) |
//! | `files` | | `manifest` only: `[{ path, role, format?, assume_label? }]` |
//! | `assume_label` | | `normal` or `attack`, for files that carry no label |
//! | `drop_test_overlaps` | `true` | drop test files identical to a training file |
//! | `malformed_threshold` | `0.01` | share of malformed rows above which a file is an error |
//!
//! Stage (`[stages.preprocess] config = { … }`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `seed` | 42 | top-level seed; the split draws from `hash(seed, "split")` |
//! | `profile` | `quick` | `quick` ⇒ `max_windows_per_file = 200`; `paper` ⇒ no cap |
//! | `window`, `stride` | 100, 100 | `W` (≥ 2) and `S` (≥ 1) |
//! | `split` | `block` | mode for `train` files: `block` or `file` |
//! | `val_fraction` | 0.2 | |
//! | `embargo_windows` | 1 | raised to `ceil(W/S)` when windows overlap |
//! | `stream_fractions` | `[0.6, 0.2, 0.2]` | train/val/test shares of each stream |
//! | `split_axis` | `rows` | `rows` or `time` (streams) |
//! | `max_windows_per_file` | by profile | first K windows of each file; 0 = all |
//! | `edge_features` | `false` | also write the 11 edge features (spec §3.4) |

use serde_json::Value;

use super::cfg::{ConfigError, Table};
use super::format::{Format, parse_format};
use super::layout::{Layout, ListedFile, Role};
use super::reader::DEFAULT_MALFORMED_THRESHOLD;
use super::split::{Axis, Mode};
use super::window::Geometry;

/// Keys of the dataset (source) configuration.
pub const DATASET_KEYS: &[&str] = &[
    "format",
    "layout",
    "files",
    "assume_label",
    "drop_test_overlaps",
    "malformed_threshold",
];

/// Keys of the preprocess stage configuration.
pub const STAGE_KEYS: &[&str] = &[
    "seed",
    "profile",
    "window",
    "stride",
    "split",
    "val_fraction",
    "embargo_windows",
    "stream_fractions",
    "split_axis",
    "max_windows_per_file",
    "edge_features",
];

/// How to read a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetConfig {
    pub format: Format,
    pub layout: Layout,
    pub assume_label: Option<bool>,
    pub drop_test_overlaps: bool,
    pub malformed_threshold: f64,
}

fn assume(t: &Table, key: &str) -> Result<Option<bool>, ConfigError> {
    Ok(t.choice(key, &["normal", "attack"])?.map(|s| s == "attack"))
}

impl DatasetConfig {
    /// Parses a source's `config` table.
    pub fn from_json(v: &Value) -> Result<Self, ConfigError> {
        let t = Table::of("", v)?;
        t.only(DATASET_KEYS)?;
        let format = match t.get("format") {
            Some(f) => parse_format("format", f)?,
            None => {
                return Err(ConfigError::new(
                    "format",
                    format!(
                        "missing: name a preset ({}) or give a mapping table",
                        super::format::PRESETS.join(", ")
                    ),
                ));
            }
        };
        let layout = match t.choice("layout", &["folders", "streams", "manifest"])? {
            None | Some("folders") => Layout::Folders,
            Some("streams") => Layout::Streams,
            Some(_) => {
                let Some(Value::Array(items)) = t.get("files") else {
                    return Err(ConfigError::new(
                        "files",
                        "the `manifest` layout needs `files = [{ path = …, role = … }, …]`",
                    ));
                };
                let mut list = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let it = Table::of(&format!("files[{i}]"), item)?;
                    it.only(&["path", "role", "format", "assume_label"])?;
                    let path = it
                        .str("path")?
                        .ok_or_else(|| ConfigError::new(it.key("path"), "missing"))?;
                    let role_s = it
                        .str("role")?
                        .ok_or_else(|| ConfigError::new(it.key("role"), "missing"))?;
                    let role = Role::parse(role_s).ok_or_else(|| {
                        ConfigError::new(
                            it.key("role"),
                            format!("`{role_s}` is not `train`, `stream` or `test:<name>` (name: letters, digits, `_-.`; not train/val/test_streams)"),
                        )
                    })?;
                    let format = it
                        .get("format")
                        .map(|f| parse_format(&it.key("format"), f))
                        .transpose()?;
                    list.push(ListedFile {
                        path: path.to_string(),
                        role,
                        format,
                        assume_label: assume(&it, "assume_label")?,
                    });
                }
                if list.is_empty() {
                    return Err(ConfigError::new("files", "lists no file"));
                }
                Layout::Manifest(list)
            }
        };
        if !matches!(layout, Layout::Manifest(_)) && t.get("files").is_some() {
            return Err(ConfigError::new(
                "files",
                "only the `manifest` layout takes a file list",
            ));
        }
        let malformed_threshold = t
            .f64("malformed_threshold")?
            .unwrap_or(DEFAULT_MALFORMED_THRESHOLD);
        if !(0.0..=1.0).contains(&malformed_threshold) {
            return Err(ConfigError::new(
                "malformed_threshold",
                format!("expected a share between 0 and 1, got {malformed_threshold}"),
            ));
        }
        Ok(DatasetConfig {
            format,
            layout,
            assume_label: assume(&t, "assume_label")?,
            drop_test_overlaps: t.bool("drop_test_overlaps")?.unwrap_or(true),
            malformed_threshold,
        })
    }
}

/// How to cut a dataset into graphs and splits.
#[derive(Clone, Debug, PartialEq)]
pub struct StageConfig {
    pub seed: u64,
    pub profile: String,
    pub geometry: Geometry,
    pub mode: Mode,
    pub val_fraction: f64,
    /// As configured (the splitter raises it for overlapping windows).
    pub embargo_windows: usize,
    pub stream_fractions: [f64; 3],
    pub axis: Axis,
    /// `None` = every window.
    pub max_windows_per_file: Option<usize>,
    pub edge_features: bool,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig::from_json(&Value::Object(Default::default())).expect("the defaults are valid")
    }
}

impl StageConfig {
    /// Parses the preprocess stage's `config` table.
    pub fn from_json(v: &Value) -> Result<Self, ConfigError> {
        let t = Table::of("", v)?;
        t.only(STAGE_KEYS)?;
        let profile = t.choice("profile", &["quick", "paper"])?.unwrap_or("quick");
        let window = t.u64("window")?.unwrap_or(100);
        if !(2..=1_000_000).contains(&window) {
            return Err(ConfigError::new(
                "window",
                format!("expected 2 to 1000000 rows, got {window}"),
            ));
        }
        let stride = t.u64("stride")?.unwrap_or(100);
        if !(1..=1_000_000).contains(&stride) {
            return Err(ConfigError::new(
                "stride",
                format!("expected 1 to 1000000 rows, got {stride}"),
            ));
        }
        let val_fraction = t.f64("val_fraction")?.unwrap_or(0.2);
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(ConfigError::new(
                "val_fraction",
                format!("expected a share strictly between 0 and 1, got {val_fraction}"),
            ));
        }
        let sf = t.f64s("stream_fractions")?.unwrap_or(vec![0.6, 0.2, 0.2]);
        let stream_fractions: [f64; 3] = match sf.as_slice() {
            [a, b, c]
                if [*a, *b, *c].iter().all(|x| *x >= 0.0) && ((a + b + c) - 1.0).abs() < 1e-6 =>
            {
                [*a, *b, *c]
            }
            _ => {
                return Err(ConfigError::new(
                    "stream_fractions",
                    format!("expected three non-negative shares summing to 1, got {sf:?}"),
                ));
            }
        };
        let max_windows_per_file = match t.u64("max_windows_per_file")? {
            Some(0) => None,
            Some(k) => Some(k as usize),
            None if profile == "quick" => Some(200),
            None => None,
        };
        Ok(StageConfig {
            seed: t.u64("seed")?.unwrap_or(42),
            profile: profile.to_string(),
            geometry: Geometry {
                window: window as usize,
                stride: stride as usize,
            },
            mode: match t.choice("split", &["block", "file"])? {
                Some("file") => Mode::File,
                _ => Mode::Block,
            },
            val_fraction,
            embargo_windows: t.u64("embargo_windows")?.unwrap_or(1) as usize,
            stream_fractions,
            axis: match t.choice("split_axis", &["rows", "time"])? {
                Some("time") => Axis::Time,
                _ => Axis::Rows,
            },
            max_windows_per_file,
            edge_features: t.bool("edge_features")?.unwrap_or(false),
        })
    }

    /// The embargo the splitter uses: `embargo_windows`, raised to `ceil(W/S)` when windows
    /// overlap.
    pub fn embargo(&self) -> usize {
        self.embargo_windows.max(self.geometry.min_embargo())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn profiles_set_the_window_cap() {
        assert_eq!(StageConfig::default().max_windows_per_file, Some(200));
        let p = StageConfig::from_json(&json!({"profile": "paper"})).unwrap();
        assert_eq!(p.max_windows_per_file, None);
        let q = StageConfig::from_json(&json!({"profile": "quick", "max_windows_per_file": 0}))
            .unwrap();
        assert_eq!(q.max_windows_per_file, None);
        let o = StageConfig::from_json(&json!({"window": 100, "stride": 50})).unwrap();
        assert_eq!(o.embargo(), 2);
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        assert_eq!(
            StageConfig::from_json(&json!({"windows": 3}))
                .unwrap_err()
                .key,
            "windows"
        );
        assert_eq!(
            StageConfig::from_json(&json!({"window": 1}))
                .unwrap_err()
                .key,
            "window"
        );
        assert_eq!(
            StageConfig::from_json(&json!({"split": "random"}))
                .unwrap_err()
                .key,
            "split"
        );
        assert_eq!(
            StageConfig::from_json(&json!({"stream_fractions": [0.5, 0.2]}))
                .unwrap_err()
                .key,
            "stream_fractions"
        );
        assert_eq!(
            DatasetConfig::from_json(&json!({})).unwrap_err().key,
            "format"
        );
        assert_eq!(
            DatasetConfig::from_json(&json!({"format": "daga", "layout": "tree"}))
                .unwrap_err()
                .key,
            "layout"
        );
        let e = DatasetConfig::from_json(&json!({"format": "j1939", "layout": "manifest", "files": [{"path": "a", "role": "tests"}]})).unwrap_err();
        assert_eq!(e.key, "files[0].role");
    }

    #[test]
    fn manifest_layout_with_per_file_formats() {
        let d = DatasetConfig::from_json(&json!({
            "format": "j1939",
            "layout": "manifest",
            "files": [
                {"path": "labeled_TSC1.csv", "role": "stream"},
                {"path": "normal.log", "role": "stream", "format": "candump", "assume_label": "normal"},
            ],
        }))
        .unwrap();
        let Layout::Manifest(l) = d.layout else {
            panic!("manifest")
        };
        assert_eq!(l[1].format.as_ref().unwrap().name, "candump");
        assert_eq!(l[1].assume_label, Some(false));
    }
}
