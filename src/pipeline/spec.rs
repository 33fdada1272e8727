//! The pipeline file's types, exactly as written (TOML, unknown keys rejected).
//!
//! ```toml
//! [pipeline]
//! name = "demo"
//! root = ".."                                  # paths are relative to this (default: the file's folder)
//! vars = { data = "${KDBUILD_DATA:-data}" }    # path variables, used as ${data}
//!
//! [sources.tiny]                               # a fixed-output derivation: its content is its identity
//! path = "${data}/tiny"
//! about = "where the data comes from"          # shown when the path is missing
//! config = { format = "csv" }                  # how consumers read it; hashed with the content
//!
//! [matrix]
//! dataset = ["tiny"]
//! variant = ["teacher", "student"]
//!
//! [stages.train]
//! target = "{variant}-{dataset}-train"         # the stage's matrix axes are the variables used here
//! kind = "command"
//! command = ["python3", "{script.train}", "{in.data}", "{out}", "--lr", "{config.lr}"]
//! scripts = { train = "scripts/train.py" }
//! inputs.data = "{dataset}-prep"
//! inputs.teacher = { target = "teacher-{dataset}-train", when = { variant = "student" } }
//! config = { lr = 1e-3 }
//! config_by.variant.student = { lr = 5e-4 }    # merged over `config` for that matrix value
//! resources = { cpus = 16, mem = "64G", gpus = 1, time = "6h" }   # never hashed
//! ```

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;

/// A whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub pipeline: Header,
    #[serde(default)]
    pub sources: IndexMap<String, SourceSpec>,
    #[serde(default)]
    pub matrix: IndexMap<String, Vec<String>>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub stages: IndexMap<String, StageSpec>,
}

/// `[pipeline]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Folder that relative paths start from, relative to the pipeline file.
    #[serde(default)]
    pub root: Option<String>,
    /// Path variables: `${NAME}` in paths; values may use `${ENV:-default}`.
    #[serde(default)]
    pub vars: IndexMap<String, String>,
}

/// `[sources.NAME]`: a dataset whose content hash is its identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A file or a directory.
    pub path: String,
    /// Only these files, relative to `path` (a directory); default: everything below it.
    #[serde(default)]
    pub files: Option<Vec<String>>,
    /// Where the data comes from; said when the path is missing.
    #[serde(default)]
    pub about: Option<String>,
    /// How consumers read it (format, layout); hashed with the content.
    #[serde(default)]
    pub config: Option<toml::Table>,
}

/// `[defaults]`: settings every stage starts from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub resources: Option<ResourcesSpec>,
    #[serde(default)]
    pub pass_env: Vec<String>,
}

/// `[stages.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub target: String,
    pub kind: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Restricts this stage's matrix axes to these values.
    #[serde(default)]
    pub matrix: BTreeMap<String, Vec<String>>,
    /// Matrix combinations this stage skips.
    #[serde(default)]
    pub exclude: Vec<BTreeMap<String, String>>,
    /// Parsed by the loader (see [`InputSpec`]), so that errors can name the key.
    #[serde(default)]
    pub inputs: IndexMap<String, toml::Value>,
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// `config_by.AXIS.VALUE = { … }`: merged over `config` for that matrix value.
    #[serde(default)]
    pub config_by: IndexMap<String, IndexMap<String, toml::Table>>,
    #[serde(default)]
    pub resources: Option<ResourcesSpec>,
    /// `command` only: the argv.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `command` only: script files, hashed by content, used as `{script.NAME}`.
    #[serde(default)]
    pub scripts: BTreeMap<String, String>,
    /// `command` only: environment variables set for the command (hashed).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables passed through from the caller (not hashed).
    #[serde(default)]
    pub pass_env: Vec<String>,
}

/// One input, after parsing: a target or a source, by template, with an optional condition.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub what: InputWhat,
    /// The input exists only where every listed axis has one of the listed values.
    pub when: BTreeMap<String, Vec<String>>,
}

/// What an input names.
#[derive(Debug, Clone)]
pub enum InputWhat {
    /// A target name template, e.g. `teacher-{dataset}-gat`.
    Target(String),
    /// A source name template, written `source:{dataset}` or `{ source = "…" }`.
    Source(String),
}

/// `resources = { … }` as written; validated into `derivation::Resources` by `resources.rs`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    #[serde(default)]
    pub cpus: Option<u32>,
    /// `"64G"`, `"512M"`, `"1T"`, or a number of MiB.
    #[serde(default)]
    pub mem: Option<toml::Value>,
    #[serde(default)]
    pub gpus: Option<u32>,
    /// `"6h"`, `"30m"`, `"2h30m"`, `"1-00:00:00"`, `"HH:MM:SS"`, or a number of minutes.
    #[serde(default)]
    pub time: Option<toml::Value>,
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub sbatch: Option<Vec<String>>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub mem_growth: Option<f64>,
}
