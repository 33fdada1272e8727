//! `manifest.json` of a preprocess output: what was read, what was dropped and why, and what
//! came out — so that leaks, duplicates, dirty files and unseen IDs are visible without
//! opening the tensors. It holds no absolute path, time or host: the same input and config
//! give a byte-identical manifest.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::reader::ReadStats;

/// Version of the manifest layout; bump it when a field changes meaning.
pub const MANIFEST_VERSION: u32 = 1;

/// The whole manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The content hash used for `files[].hash` (spec §0 lets blake3 stand for sha256).
    pub hash: String,
    pub dataset: DatasetSummary,
    pub config: ConfigSummary,
    /// Vocabulary size with UNK (`vocab.json` has the IDs).
    pub num_ids: u32,
    /// The UNK index, `num_ids − 1`.
    pub unk: u32,
    /// Per split, in output order (`train`, `val`, test splits by name, `test_streams`).
    pub splits: IndexMap<String, SplitSummary>,
    /// Every file the layout listed, in listing order.
    pub files: Vec<FileEntry>,
    /// Training-role or same-folder test copies read once (`path` not read, `same_as` read).
    pub duplicates: Vec<Duplicate>,
    /// Test files identical to a training file.
    pub test_overlaps: Vec<TestOverlap>,
    /// Paths the layout did not read, with the reason.
    pub ignored: Vec<String>,
    pub warnings: Vec<String>,
    pub totals: Totals,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub format: String,
    pub layout: String,
    pub drop_test_overlaps: bool,
    pub malformed_threshold: f64,
}

/// The effective stage settings (profile defaults resolved).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub seed: u64,
    pub profile: String,
    pub window: usize,
    pub stride: usize,
    pub split: String,
    pub val_fraction: f64,
    /// The embargo actually used (raised to `ceil(W/S)` for overlapping windows).
    pub embargo_windows: usize,
    pub stream_fractions: [f64; 3],
    pub split_axis: String,
    /// 0 = every window.
    pub max_windows_per_file: usize,
    pub edge_features: bool,
}

/// One split of the output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// `graphs/<name>.safetensors`, relative to the output.
    pub path: String,
    pub windows: usize,
    pub normal: usize,
    pub attack: usize,
    pub nodes: usize,
    pub edges: usize,
    /// Rows of the split's windows.
    pub rows: u64,
    /// Rows whose source frame maps to UNK (unseen in training, or unparsable).
    pub unk_rows: u64,
    /// `unk_rows / rows` (0 for an empty split).
    pub unk_row_rate: f64,
    /// Input files with windows in this split.
    pub files: usize,
}

/// One input file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub role: String,
    pub format: String,
    /// Content hash of the decompressed data (hex).
    pub hash: String,
    /// Decompressed size in bytes.
    pub bytes: u64,
    /// `read`, `duplicate`, `test_overlap_dropped` or `test_overlap_kept`.
    pub status: String,
    /// For duplicates and overlaps: the file with the same content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
    /// Reading counts, for files that were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadStats>,
    /// Windows of the file (after `max_windows_per_file`).
    pub windows: usize,
    /// Rows no window covers at the end of the file.
    pub trailing_rows: usize,
    /// Windows per split; `embargo` counts windows in no split.
    pub splits: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Duplicate {
    pub path: String,
    pub same_as: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TestOverlap {
    pub path: String,
    pub split: String,
    pub same_as: String,
    pub dropped: bool,
}

/// Sums over the files read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub files_listed: usize,
    pub files_read: usize,
    pub rows: u64,
    pub frames: u64,
    pub malformed_rows: u64,
    pub unparsable_ids: u64,
    pub long_payloads: u64,
    pub error_frames: u64,
    pub non_monotonic_ts: u64,
    pub windows: usize,
    pub embargo_windows: usize,
}

impl Manifest {
    /// Reads a manifest (trainers use it to check what they were given).
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}
