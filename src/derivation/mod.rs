//! Derivations: one fully resolved build step, and the hash that names its store path.
//!
//! A derivation is pure data. Its hash is blake3 over the canonical encoding
//! ([`canonical`]) of the fields marked *hashed* below, truncated to 160 bits and written in
//! nix-base32 ([`DrvHash`]). Nothing here does IO: input hashes come in as values, as snix's
//! `nix-compat` takes a lookup function instead of reading the store.
//!
//! # What is hashed, and what is only recorded
//!
//! | #  | field | hashed | why |
//! |----|-------|--------|-----|
//! | 1  | schema version [`SCHEMA`] | ✓ | changing the encoding is a deliberate, versioned act |
//! | 2  | `name` (target name) | ✓ | it is part of the store path |
//! | 3  | `stage` (stage name in the pipeline) | ✓ | two stages with equal settings stay apart |
//! | 4  | `kind` (stage kind, e.g. `command`, `kdgat.gat`) | ✓ | the builder that runs |
//! | 5  | `builder` (argv and environment of a `command`; entry point of a built-in) | ✓ | what runs |
//! | 6  | `config` (canonical stage configuration, matrix choices merged in) | ✓ | results depend on it |
//! | 7  | `inputs` (drv hashes of input derivations; content hash and config of sources) | ✓ | results depend on them |
//! | 8  | `scripts` (content hashes of the script files a `command` lists) | ✓ | editing a script rebuilds |
//! | 9  | `code` (digest of the sources a built-in kind runs + locked crate versions) | ✓ | editing one trainer rebuilds its stage only |
//! | –  | `recorded.resources` (cpus, mem, gpus, time, partition, account, sbatch flags, retries) | | raising a limit must not retrain |
//! | –  | `recorded.source_paths`, `recorded.script_paths` (absolute paths) | | moving the store or checkout keeps every hash |
//! | –  | `recorded.pass_env` (names of impure environment variables passed through) | | like Nix's `impureEnvVars` |
//! | –  | executor, job id, host, times, exit status, peak memory, binary digest | | provenance, kept in the store's build records |
//!
//! Device class (`cpu`/`cuda`) is a config key where results depend on it, so it is hashed
//! through `config`; the GPU model is provenance.

pub mod canonical;
pub mod diff;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::hash::{ContentHash, DrvHash};
use crate::store_path::{NameError, StorePath};

pub use canonical::CanonicalError;
pub use diff::{Change, diff};

/// Version of the hashed encoding; mixed into every hash (field 1). Bump it, and the golden
/// tests with it, whenever the hashed fields or their encoding change.
pub const SCHEMA: &str = "kdbuild.drv.v1";

/// How a derivation's output is produced (hashed field 5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Builder {
    /// A stage kind compiled into kdbuild, run in-process by `kdbuild build`.
    Builtin { entry: String },
    /// An external program. `argv` keeps the build-time placeholders `{out}`, `{in.NAME}` and
    /// `{script.NAME}`, which depend on where the store is and are resolved by the builder.
    Command {
        argv: Vec<String>,
        env: BTreeMap<String, String>,
    },
}

/// One named input of a derivation (hashed field 7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// The output of another derivation, by identity.
    Derivation { hash: DrvHash, name: String },
    /// A source dataset, a fixed-output derivation: its content hash is its identity. `config`
    /// says how consumers should read it (format, layout) and is hashed with it.
    Source {
        name: String,
        content: ContentHash,
        config: Value,
    },
}

impl Input {
    /// The store path of a derivation input; `None` for sources, which live outside the store.
    pub fn store_path(&self) -> Option<StorePath> {
        match self {
            Input::Derivation { hash, name } => StorePath::new(*hash, name).ok(),
            Input::Source { .. } => None,
        }
    }
}

/// The identity of the code a stage runs (hashed field 9).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeIdentity {
    /// blake3 (hex) of the source files the stage kind runs, computed when kdbuild is compiled.
    pub digest: String,
    /// Locked versions of the crates those sources use, e.g. `candle-core = 0.11.1`.
    pub crates: BTreeMap<String, String>,
}

/// Per-stage resources: where and how big a build runs. Never hashed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Time limit in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Extra `sbatch` flags, passed as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch: Vec<String>,
    /// How often a failed build is retried (SLURM executor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Factor applied to `mem_mb` on each retry after OUT_OF_MEMORY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_growth: Option<f64>,
}

/// What is recorded with a derivation but not hashed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    #[serde(default)]
    pub resources: Resources,
    /// Where each source input lives on this machine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_paths: BTreeMap<String, PathBuf>,
    /// Where each script of a `command` lives on this machine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub script_paths: BTreeMap<String, PathBuf>,
    /// Environment variables passed through from the caller, unhashed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
}

/// One fully resolved build step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Derivation {
    pub name: String,
    pub stage: String,
    pub kind: String,
    pub builder: Builder,
    pub config: Value,
    pub inputs: BTreeMap<String, Input>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scripts: BTreeMap<String, ContentHash>,
    pub code: CodeIdentity,
    #[serde(default)]
    pub recorded: Recorded,
}

impl Derivation {
    /// The value whose canonical encoding is hashed: fields 1–9 of the module table, and
    /// nothing from `recorded`.
    pub fn hashed_value(&self) -> Value {
        json!({
            "schema": SCHEMA,                    // 1
            "name": self.name,                   // 2
            "stage": self.stage,                 // 3
            "kind": self.kind,                   // 4
            "builder": self.builder,             // 5
            "config": self.config,               // 6
            "inputs": self.inputs,               // 7
            "scripts": self.scripts,             // 8
            "code": self.code,                   // 9
        })
    }

    /// The canonical bytes that are hashed: the canonical encoding of [`hashed_value`]
    /// (`Derivation::hashed_value`), written directly, keys in sorted order, without building
    /// the intermediate JSON tree (planning hashes tens of thousands of derivations). A test
    /// checks that both ways give the same bytes.
    pub fn canonical(&self) -> Result<String, CanonicalError> {
        use canonical::{write_str, write_value};
        let mut o = String::with_capacity(512);
        let key = |o: &mut String, k: &str, first: bool| {
            if !first {
                o.push(',');
            }
            write_str(k, o);
            o.push(':');
        };
        let string_map = |o: &mut String, m: &BTreeMap<String, String>| {
            o.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                key(o, k, i == 0);
                write_str(v, o);
            }
            o.push('}');
        };
        o.push('{');
        // builder (5)
        key(&mut o, "builder", true);
        match &self.builder {
            Builder::Builtin { entry } => {
                o.push('{');
                key(&mut o, "entry", true);
                write_str(entry, &mut o);
                key(&mut o, "type", false);
                write_str("builtin", &mut o);
                o.push('}');
            }
            Builder::Command { argv, env } => {
                o.push('{');
                key(&mut o, "argv", true);
                o.push('[');
                for (i, a) in argv.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    write_str(a, &mut o);
                }
                o.push(']');
                key(&mut o, "env", false);
                string_map(&mut o, env);
                key(&mut o, "type", false);
                write_str("command", &mut o);
                o.push('}');
            }
        }
        // code (9)
        key(&mut o, "code", false);
        o.push('{');
        key(&mut o, "crates", true);
        string_map(&mut o, &self.code.crates);
        key(&mut o, "digest", false);
        write_str(&self.code.digest, &mut o);
        o.push('}');
        // config (6)
        key(&mut o, "config", false);
        write_value(&self.config, &mut o)?;
        // inputs (7)
        key(&mut o, "inputs", false);
        o.push('{');
        for (i, (name, input)) in self.inputs.iter().enumerate() {
            key(&mut o, name, i == 0);
            o.push('{');
            match input {
                Input::Derivation { hash, name } => {
                    key(&mut o, "hash", true);
                    write_str(&crate::hash::nix_base32_encode(hash.as_bytes()), &mut o);
                    key(&mut o, "name", false);
                    write_str(name, &mut o);
                    key(&mut o, "type", false);
                    write_str("derivation", &mut o);
                }
                Input::Source {
                    name,
                    content,
                    config,
                } => {
                    key(&mut o, "config", true);
                    write_value(config, &mut o)?;
                    key(&mut o, "content", false);
                    write_str(&content.to_string(), &mut o);
                    key(&mut o, "name", false);
                    write_str(name, &mut o);
                    key(&mut o, "type", false);
                    write_str("source", &mut o);
                }
            }
            o.push('}');
        }
        o.push('}');
        // kind (4), name (2), schema (1), scripts (8), stage (3)
        key(&mut o, "kind", false);
        write_str(&self.kind, &mut o);
        key(&mut o, "name", false);
        write_str(&self.name, &mut o);
        key(&mut o, "schema", false);
        write_str(SCHEMA, &mut o);
        key(&mut o, "scripts", false);
        o.push('{');
        for (i, (k, v)) in self.scripts.iter().enumerate() {
            key(&mut o, k, i == 0);
            write_str(&v.to_string(), &mut o);
        }
        o.push('}');
        key(&mut o, "stage", false);
        write_str(&self.stage, &mut o);
        o.push('}');
        Ok(o)
    }

    /// The derivation hash.
    pub fn hash(&self) -> Result<DrvHash, CanonicalError> {
        Ok(DrvHash::of_canonical(self.canonical()?.as_bytes()))
    }

    /// The store path this derivation builds.
    pub fn store_path(&self) -> Result<StorePath, DerivationError> {
        Ok(StorePath::new(self.hash()?, &self.name)?)
    }

    /// Derivation inputs (not sources), by input name.
    pub fn input_paths(&self) -> impl Iterator<Item = (&str, StorePath)> {
        self.inputs
            .iter()
            .filter_map(|(k, i)| i.store_path().map(|p| (k.as_str(), p)))
    }
}

/// Errors from computing a derivation's identity.
#[derive(Debug, thiserror::Error)]
pub enum DerivationError {
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    #[error(transparent)]
    Name(#[from] NameError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture derivation with every hashed field set.
    fn fixture() -> Derivation {
        let teacher = Derivation {
            name: "teacher-demo-gat".into(),
            stage: "gat".into(),
            kind: "kdgat.gat".into(),
            builder: Builder::Builtin {
                entry: "kdgat.gat".into(),
            },
            config: json!({"lr": 0.003, "epochs": 3, "size": "large"}),
            inputs: BTreeMap::new(),
            scripts: BTreeMap::new(),
            code: CodeIdentity {
                digest: "00".repeat(32),
                crates: [("candle-core".to_string(), "0.11.1".to_string())].into(),
            },
            recorded: Recorded::default(),
        };
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "teacher".to_string(),
            Input::Derivation {
                hash: teacher.hash().unwrap(),
                name: teacher.name.clone(),
            },
        );
        inputs.insert(
            "raw".to_string(),
            Input::Source {
                name: "demo".into(),
                content: ContentHash([7; 32]),
                config: json!({"format": "can-train-and-test"}),
            },
        );
        Derivation {
            name: "student-demo-train".into(),
            stage: "train".into(),
            kind: "command".into(),
            builder: Builder::Command {
                argv: vec!["python3".into(), "{script.train}".into(), "{out}".into()],
                env: [("OMP_NUM_THREADS".to_string(), "1".to_string())].into(),
            },
            config: json!({"epochs": 2, "lr": 1e-3, "nested": {"b": [1, 2.0], "a": true}}),
            inputs,
            scripts: [("train".to_string(), ContentHash([9; 32]))].into(),
            code: CodeIdentity::default(),
            recorded: Recorded::default(),
        }
    }

    /// Golden hashes: these pin the encoding. If one changes, the change to the encoding must
    /// be deliberate, and [`SCHEMA`] must go up with it.
    #[test]
    fn golden_hashes() {
        let d = fixture();
        assert_eq!(
            d.canonical().unwrap(),
            GOLDEN_CANONICAL,
            "canonical encoding changed: bump SCHEMA and re-pin"
        );
        assert_eq!(d.hash().unwrap().to_string(), GOLDEN_HASH);
        let minimal = Derivation {
            name: "x".into(),
            stage: "s".into(),
            kind: "command".into(),
            builder: Builder::Command {
                argv: vec!["true".into()],
                env: BTreeMap::new(),
            },
            config: json!({}),
            inputs: BTreeMap::new(),
            scripts: BTreeMap::new(),
            code: CodeIdentity::default(),
            recorded: Recorded::default(),
        };
        assert_eq!(minimal.hash().unwrap().to_string(), GOLDEN_MINIMAL_HASH);
    }

    #[test]
    fn direct_encoding_equals_the_generic_one() {
        let mut builtin = fixture();
        builtin.builder = Builder::Builtin {
            entry: "kdgat.gat".into(),
        };
        builtin.code.crates.insert("zip".into(), "9.8.2".into());
        builtin.name = "we\"ird\\name\n".into();
        for d in [fixture(), builtin] {
            assert_eq!(
                d.canonical().unwrap(),
                canonical::to_string(&d.hashed_value()).unwrap()
            );
        }
    }

    const GOLDEN_CANONICAL: &str = concat!(
        r#"{"builder":{"argv":["python3","{script.train}","{out}"],"env":{"OMP_NUM_THREADS":"1"},"type":"command"},"#,
        r#""code":{"crates":{},"digest":""},"config":{"epochs":2,"lr":0.001,"nested":{"a":true,"b":[1,2]}},"#,
        r#""inputs":{"raw":{"config":{"format":"can-train-and-test"},"#,
        r#""content":"blake3:0707070707070707070707070707070707070707070707070707070707070707","name":"demo","type":"source"},"#,
        r#""teacher":{"hash":"yiipx00bislkp7a9lkzqi4kl2dlgz0sl","name":"teacher-demo-gat","type":"derivation"}},"#,
        r#""kind":"command","name":"student-demo-train","schema":"kdbuild.drv.v1","#,
        r#""scripts":{"train":"blake3:0909090909090909090909090909090909090909090909090909090909090909"},"stage":"train"}"#
    );
    const GOLDEN_HASH: &str = "b6izwqnvaw3rp580a7m2gjz1k7zkadqx";
    const GOLDEN_MINIMAL_HASH: &str = "nykgad4766pbv2k2j7329mnwqnfc0vxb";

    fn changes_hash(f: impl FnOnce(&mut Derivation)) -> bool {
        let a = fixture();
        let mut b = a.clone();
        f(&mut b);
        a.hash().unwrap() != b.hash().unwrap()
    }

    #[test]
    fn each_hashed_field_changes_the_hash() {
        assert!(changes_hash(|d| d.name = "other".into()), "2 name");
        assert!(changes_hash(|d| d.stage = "other".into()), "3 stage");
        assert!(changes_hash(|d| d.kind = "kdgat.gat".into()), "4 kind");
        assert!(
            changes_hash(|d| if let Builder::Command { argv, .. } = &mut d.builder {
                argv.push("--x".into())
            }),
            "5 builder argv"
        );
        assert!(
            changes_hash(|d| if let Builder::Command { env, .. } = &mut d.builder {
                env.insert("A".into(), "1".into());
            }),
            "5 builder env"
        );
        assert!(
            changes_hash(|d| d.config["lr"] = json!(2e-3)),
            "6 config value"
        );
        assert!(changes_hash(|d| d.config["new"] = json!(1)), "6 config key");
        assert!(
            changes_hash(|d| {
                d.inputs.insert(
                    "teacher".into(),
                    Input::Derivation {
                        hash: DrvHash::of_canonical(b"other"),
                        name: "teacher-demo-gat".into(),
                    },
                );
            }),
            "7 input hash"
        );
        assert!(
            changes_hash(
                |d| if let Some(Input::Source { content, .. }) = d.inputs.get_mut("raw") {
                    *content = ContentHash([8; 32]);
                }
            ),
            "7 source content"
        );
        assert!(
            changes_hash(
                |d| if let Some(Input::Source { config, .. }) = d.inputs.get_mut("raw") {
                    *config = json!({"format": "daga"});
                }
            ),
            "7 source config"
        );
        assert!(
            changes_hash(|d| {
                d.scripts.insert("train".into(), ContentHash([1; 32]));
            }),
            "8 scripts"
        );
        assert!(
            changes_hash(|d| d.code.digest = "ff".repeat(32)),
            "9 code digest"
        );
        assert!(
            changes_hash(|d| {
                d.code.crates.insert("candle-core".into(), "0.12.0".into());
            }),
            "9 crate versions"
        );
    }

    #[test]
    fn recorded_fields_do_not_change_the_hash() {
        assert!(
            !changes_hash(|d| d.recorded.resources.cpus = Some(16)),
            "cpus"
        );
        assert!(
            !changes_hash(|d| d.recorded.resources.mem_mb = Some(65536)),
            "mem"
        );
        assert!(
            !changes_hash(|d| d.recorded.resources.gpus = Some(1)),
            "gpus"
        );
        assert!(
            !changes_hash(|d| d.recorded.resources.time_s = Some(6 * 3600)),
            "time"
        );
        assert!(
            !changes_hash(|d| d.recorded.resources.partition = Some("gpu".into())),
            "partition"
        );
        assert!(
            !changes_hash(|d| d.recorded.resources.account = Some("PAS".into())),
            "account"
        );
        assert!(
            !changes_hash(|d| d.recorded.resources.sbatch.push("--exclusive".into())),
            "sbatch flags"
        );
        assert!(
            !changes_hash(|d| d.recorded.resources.retries = Some(2)),
            "retries"
        );
        assert!(
            !changes_hash(|d| {
                d.recorded
                    .source_paths
                    .insert("raw".into(), "/elsewhere/data".into());
            }),
            "source location"
        );
        assert!(
            !changes_hash(|d| {
                d.recorded
                    .script_paths
                    .insert("train".into(), "/moved/checkout/train.py".into());
            }),
            "script location"
        );
        assert!(
            !changes_hash(|d| d.recorded.pass_env.push("CUDA_VISIBLE_DEVICES".into())),
            "pass_env"
        );
    }

    #[test]
    fn equivalent_configs_hash_alike() {
        assert!(
            !changes_hash(|d| d.config["lr"] = json!(0.0010)),
            "1e-3 == 0.0010"
        );
        assert!(
            !changes_hash(|d| d.config["epochs"] = json!(2.0)),
            "2 == 2.0"
        );
    }

    #[test]
    fn derivation_json_round_trips() {
        let d = fixture();
        let s = serde_json::to_string(&d).unwrap();
        let back: Derivation = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.hash().unwrap(), d.hash().unwrap());
    }
}
