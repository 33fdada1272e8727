//! Shared helpers for integration tests: a temporary project (pipeline, scripts, data, store)
//! and the real `kdbuild` binary run against it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary project directory with a store inside.
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// The output of one kdbuild run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the run exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "kdbuild failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

pub fn kdbuild_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kdbuild"))
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// Writes `rel` (creating folders).
    pub fn write(&self, rel: &str, text: &str) -> &Project {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        self
    }

    pub fn write_bytes(&self, rel: &str, bytes: &[u8]) -> &Project {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
        self
    }

    /// A kdbuild command in the project directory, with its store and the given pipeline.
    pub fn cmd(&self, pipeline: &str) -> Command {
        let mut c = Command::new(kdbuild_bin());
        c.current_dir(self.path())
            .env("KDBUILD_STORE", self.store())
            .env("KDBUILD_PIPELINE", self.path().join(pipeline))
            .env_remove("KDBUILD_DATA");
        c
    }

    /// Runs kdbuild with `args`.
    pub fn run(&self, pipeline: &str, args: &[&str]) -> Run {
        Run::from(self.cmd(pipeline).args(args).output().expect("run kdbuild"))
    }

    /// Opens the store database.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.store().join("db.sqlite")).expect("open db")
    }

    /// How many successful builds each target has had.
    pub fn builds(&self) -> BTreeMap<String, i64> {
        if !self.store().join("db.sqlite").exists() {
            return BTreeMap::new();
        }
        let db = self.db();
        let mut st = db
            .prepare(
                "SELECT target, COUNT(*) FROM builds WHERE outcome = 'succeeded' GROUP BY target",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Total successful builds.
    pub fn total_builds(&self) -> i64 {
        self.builds().values().sum()
    }

    /// Targets with a valid path.
    pub fn valid_targets(&self) -> Vec<String> {
        if !self.store().join("db.sqlite").exists() {
            return Vec::new();
        }
        let db = self.db();
        let mut st = db
            .prepare("SELECT target FROM valid_paths ORDER BY target")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Everything that says what the store holds: valid rows, builds and the file tree (minus
    /// SQLite's WAL side files, which readers may touch).
    pub fn snapshot(&self) -> String {
        let mut s = String::new();
        if self.store().join("db.sqlite").exists() {
            let db = self.db();
            for q in [
                "SELECT path, content_hash FROM valid_paths ORDER BY path",
                "SELECT drv_hash, attempt, outcome FROM builds ORDER BY id",
                "SELECT drv_hash FROM derivations ORDER BY drv_hash",
            ] {
                let mut st = db.prepare(q).unwrap();
                let n = st.column_count();
                let rows = st
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| {
                                r.get::<_, rusqlite::types::Value>(i)
                                    .map(|v| format!("{v:?}"))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .unwrap();
                for r in rows {
                    s.push_str(&r.unwrap().join(" "));
                    s.push('\n');
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.store(), &self.store(), &mut files);
        files.retain(|f| !f.starts_with("db.sqlite"));
        files.sort();
        s.push_str(&files.join("\n"));
        s
    }
}

fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let path = e.path();
        out.push(path.strip_prefix(root).unwrap().display().to_string());
        if path.is_dir() && !path.is_symlink() {
            walk(root, &path, out);
        }
    }
}

/// A 3-level pipeline of command stages over a dataset × variant matrix: prep (per dataset) →
/// train (per variant; the student also reads its teacher) → eval. `{fail}` in a data file
/// makes prep fail for that dataset.
pub const DAG_PIPELINE: &str = r#"
[pipeline]
name = "dag"

[sources.alpha]
path = "data/alpha"
about = "test data"

[sources.beta]
path = "data/beta"

[matrix]
dataset = ["alpha", "beta"]
variant = ["teacher", "student"]

[stages.prep]
target = "{dataset}-prep"
kind = "command"
command = ["sh", "{script.prep}", "{in.raw}", "{out}"]
scripts = { prep = "scripts/prep.sh" }
inputs.raw = "source:{dataset}"
resources = { cpus = 1, mem = "100M", time = "5m" }

[stages.train]
target = "{variant}-{dataset}-train"
kind = "command"
command = ["sh", "{script.train}", "{in.data}", "{out}", "{config.scale}", "{in.teacher?}"]
scripts = { train = "scripts/train.sh" }
inputs.data = "{dataset}-prep"
inputs.teacher = { target = "teacher-{dataset}-train", when = { variant = "student" } }
config = { scale = 2 }
config_by.variant.student = { scale = 1 }

[stages.eval]
target = "{variant}-{dataset}-eval"
kind = "command"
command = ["sh", "-c", "cat {in.model}/model > {out}/score && sleep ${{SLEEP}}"]
env = { SLEEP = "{config.sleep}" }
inputs.model = "{variant}-{dataset}-train"
config = { sleep = 0 }
"#;

pub const PREP_SH: &str = r#"set -eu
if grep -q fail "$1"/*; then echo "prep: bad data in $1" >&2; exit 3; fi
cat "$1"/* > "$2/rows"
echo "prep done"
"#;

pub const TRAIN_SH: &str = r#"set -eu
n=$(wc -l < "$1/rows")
echo $((n * $3)) > "$2/model"
if [ -n "${4:-}" ]; then cat "$4/model" >> "$2/model"; fi
"#;

/// A project with [`DAG_PIPELINE`] as `dag.toml`, its scripts and data.
pub fn dag_project() -> Project {
    let p = Project::new();
    p.write("dag.toml", DAG_PIPELINE)
        .write("scripts/prep.sh", PREP_SH)
        .write("scripts/train.sh", TRAIN_SH)
        .write("data/alpha/a.csv", "1\n2\n3\n")
        .write("data/beta/b.csv", "4\n5\n");
    p
}

/// The KD-GAT pipeline's shape with `command` stages (`tests/fixtures/kdgat_shape.toml`).
pub const KDGAT_SHAPE: &str = include_str!("../fixtures/kdgat_shape.toml");

/// A project with [`KDGAT_SHAPE`] as `kdgat.toml` and its `demo` data.
pub fn kdgat_project() -> Project {
    let p = Project::new();
    p.write("kdgat.toml", KDGAT_SHAPE)
        .write("data/demo/train.csv", "0,1,2\n1,2,3\n2,3,4\n")
        .write("data/demo/test.csv", "3,4,5\n");
    p
}

/// Parses a `--json` run's stdout.
pub fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", r.stdout, r.stderr))
}
