//! A bounded fuzz of the pipeline parser: random and mutated TOML fed to
//! `Pipeline::load_bytes` must never panic, and every error must be located (file, a line
//! inside the file, a column). Cases: `KDBUILD_FUZZ_CASES` (default 3000 per property, under a second), so
//! CI stays fast; a long run is `KDBUILD_FUZZ_CASES=200000 cargo test --release --test
//! fuzz_pipeline`.

mod common;

use std::path::Path;
use std::sync::Mutex;

use kdbuild::pipeline::{Pipeline, PipelineError};
use kdbuild::stage::Registry;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Real pipelines to mutate.
fn corpus() -> Vec<String> {
    vec![
        common::DAG_PIPELINE.to_string(),
        common::KDGAT_SHAPE.to_string(),
        include_str!("../pipelines/demo.toml").to_string(),
        include_str!("../pipelines/kdgat.toml").to_string(),
    ]
}

/// Words the pipeline language uses, so that generated files get past the TOML parser into
/// the loader's own checks.
const KEYS: &[&str] = &[
    "pipeline",
    "name",
    "root",
    "vars",
    "description",
    "sources",
    "path",
    "about",
    "config",
    "files",
    "matrix",
    "dataset",
    "variant",
    "defaults",
    "resources",
    "stages",
    "target",
    "kind",
    "command",
    "scripts",
    "inputs",
    "when",
    "config_by",
    "env",
    "pass_env",
    "exclude",
    "cpus",
    "mem",
    "gpus",
    "time",
    "partition",
    "account",
    "sbatch",
    "retries",
    "mem_growth",
    "data",
    "teacher",
    "model",
    "raw",
    "train",
    "eval",
    "prep",
];
const VALUES: &[&str] = &[
    "\"{dataset}-prep\"",
    "\"{variant}-{dataset}-train\"",
    "\"source:{dataset}\"",
    "\"source:alpha\"",
    "\"command\"",
    "\"kdgat.gat\"",
    "\"{in.data}\"",
    "\"{in.teacher?}\"",
    "\"{out}\"",
    "\"{config.lr}\"",
    "\"{{\"",
    "\"{\"",
    "\"}\"",
    "\"${data}\"",
    "\"${KDBUILD_DATA:-data}\"",
    "\"${\"",
    "\"64G\"",
    "\"6h\"",
    "\"1-00:00:00\"",
    "\"-1\"",
    "\"..\"",
    "\"a/b\"",
    "\"\"",
    "1",
    "-1",
    "0",
    "1e-3",
    "1e309",
    "nan",
    "inf",
    "true",
    "[]",
    "[\"a\", \"b\"]",
    "[\"sh\", \"-c\", \"echo {target} > {out}/o\"]",
    "{}",
    "{ target = \"teacher-{dataset}-train\", when = { variant = \"student\" } }",
    "{ dataset = \"beta\" }",
    "1979-05-27T07:32:00Z",
    "'''\nmulti\n'''",
];

fn key() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(KEYS), 1..=3).prop_map(|k| k.join("."))
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (key(), prop::sample::select(VALUES)).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => key().prop_map(|k| format!("[{k}]")),
        1 => key().prop_map(|k| format!("[[{k}]]")),
        1 => "[ -~]{0,40}",
        1 => Just(String::new()),
    ]
}

/// A file made of pipeline-language lines (mostly rejected by the TOML layer).
fn lines() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(line(), 0..40).prop_map(|l| l.join("\n").into_bytes())
}

fn pick(v: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(v)
}

/// One `[stages.X]` table with random templates, kinds, inputs, configs and resources.
fn stage() -> impl Strategy<Value = String> {
    (
        pick(&["prep", "train", "eval", "gat", "s-1", "bad name"]),
        pick(&[
            "{dataset}-prep",
            "{variant}-{dataset}-train",
            "{variant}-{dataset}-eval",
            "{dataset}-{stage}",
            "fixed",
            "{nope}-x",
            "{dataset",
            "a/b",
            "",
        ]),
        pick(&["command", "kdgat.gat", "kdgat.preprocess", "kdgat.eval", "nope"]),
        pick(&[
            "[\"sh\", \"-c\", \"echo {target} > {out}/o\"]",
            "[\"sh\", \"{script.s}\", \"{in.data}\", \"{in.teacher?}\", \"{config.lr}\"]",
            "[\"{in.nope}\"]",
            "[]",
            "\"sh\"",
        ]),
        prop::collection::vec(
            (
                pick(&["data", "teacher", "model", "raw", "in put"]),
                pick(&[
                    "\"{dataset}-prep\"",
                    "\"teacher-{dataset}-train\"",
                    "\"{variant}-{dataset}-train\"",
                    "\"source:{dataset}\"",
                    "\"source:nope\"",
                    "\"missing-target\"",
                    "{ target = \"teacher-{dataset}-train\", when = { variant = \"student\" } }",
                    "{ target = \"{dataset}-prep\", when = { nope = \"x\" } }",
                    "{ when = {} }",
                    "3",
                ]),
            ),
            0..4,
        ),
        pick(&[
            "",
            "config = { lr = 1e-3, epochs = 3 }",
            "config = { lr = nan }",
            "config_by.variant.student = { lr = 5e-4 }",
            "config_by.nope.x = { a = 1 }",
            "scripts = { s = \"s.sh\" }",
            "env = { A = \"{config.lr}\" }",
            "pass_env = [\"HOME\"]",
            "matrix = { dataset = [\"alpha\"] }",
            "exclude = [{ dataset = \"beta\", variant = \"student\" }]",
            "exclude = [{ nope = \"x\" }]",
        ]),
        pick(&[
            "",
            "resources = { cpus = 2, mem = \"1G\", time = \"10m\" }",
            "resources = { mem = \"lots\" }",
            "resources = { time = \"-5m\", gpus = -1 }",
            "resources = { retries = 2, mem_growth = 1.5, sbatch = [\"--x\"] }",
        ]),
    )
        .prop_map(|(name, target, kind, command, inputs, extra, res)| {
            let mut t = format!(
                "[stages.\"{name}\"]\ntarget = \"{target}\"\nkind = \"{kind}\"\ncommand = {command}\n"
            );
            let mut seen = std::collections::HashSet::new();
            for (k, v) in inputs {
                if seen.insert(k) {
                    t.push_str(&format!("inputs.\"{k}\" = {v}\n"));
                }
            }
            t.push_str(extra);
            t.push('\n');
            t.push_str(res);
            t.push('\n');
            t
        })
}

/// Whole pipelines: header, sources, matrix and stages, each drawn from good and bad
/// choices, so that most cases reach the loader's own checks.
fn generated() -> impl Strategy<Value = Vec<u8>> {
    (
        pick(&[
            "[pipeline]\nname = \"g\"\n",
            "[pipeline]\nname = \"g\"\nvars = { data = \"${KDBUILD_DATA:-data}\" }\n",
            "[pipeline]\nname = \"g\"\nvars = { data = \"${UNSET}\" }\n",
            "[pipeline]\nname = \"bad name\"\n",
            "",
        ]),
        pick(&[
            "",
            "[sources.alpha]\npath = \"data/alpha\"\n[sources.beta]\npath = \"${data}/beta\"\nfiles = [\"b.csv\"]\n",
            "[sources.alpha]\npath = \"\"\n",
        ]),
        pick(&[
            "",
            "[matrix]\ndataset = [\"alpha\", \"beta\"]\nvariant = [\"teacher\", \"student\"]\n",
            "[matrix]\ndataset = [\"alpha\", \"alpha\"]\n",
            "[matrix]\ndataset = []\n",
            "[matrix]\ndataset = [\"a/b\"]\n",
        ]),
        prop::collection::vec(stage(), 0..5),
    )
        .prop_map(|(header, sources, matrix, stages)| {
            let mut seen = std::collections::HashSet::new();
            let stages: Vec<String> = stages
                .into_iter()
                .filter(|s| seen.insert(s.lines().next().unwrap_or("").to_string()))
                .collect();
            format!("{header}{sources}{matrix}{}", stages.join("\n")).into_bytes()
        })
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipByte(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    DropLine(usize),
    DupLine(usize),
    SwapLines(usize, usize),
    ReplaceLine(usize, String),
    ReplaceWord(usize, &'static str),
    ReplaceValue(usize, &'static str),
}

/// Byte-level mutations break the TOML; line- and word-level ones mostly keep it valid and
/// reach the loader's checks, so they weigh more.
fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::FlipByte(a, b)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        1 => (any::<usize>(), 1usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        4 => any::<usize>().prop_map(Mutation::DropLine),
        2 => any::<usize>().prop_map(Mutation::DupLine),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        3 => (any::<usize>(), line()).prop_map(|(a, l)| Mutation::ReplaceLine(a, l)),
        4 => (any::<usize>(), prop::sample::select(KEYS))
            .prop_map(|(a, w)| Mutation::ReplaceWord(a, w)),
        4 => (any::<usize>(), prop::sample::select(VALUES))
            .prop_map(|(a, v)| Mutation::ReplaceValue(a, v)),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    for m in muts {
        let n = b.len().max(1);
        match m {
            Mutation::FlipByte(i, x) => {
                if !b.is_empty() {
                    let i = i % b.len();
                    b[i] ^= x | 1;
                }
            }
            Mutation::Insert(i, bytes) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, k) => {
                let i = i % n;
                let j = (i + k).min(b.len());
                if i < j {
                    b.drain(i..j);
                }
            }
            Mutation::Truncate(i) => b.truncate(i % n),
            _ => {
                let s = String::from_utf8_lossy(&b).into_owned();
                let mut lines: Vec<String> = s.lines().map(String::from).collect();
                if lines.is_empty() {
                    continue;
                }
                let l = lines.len();
                match m {
                    Mutation::DropLine(i) => {
                        lines.remove(i % l);
                    }
                    Mutation::DupLine(i) => {
                        let x = lines[i % l].clone();
                        lines.insert(i % l, x);
                    }
                    Mutation::SwapLines(i, j) => lines.swap(i % l, j % l),
                    Mutation::ReplaceLine(i, x) => lines[i % l] = x.clone(),
                    Mutation::ReplaceWord(i, w) => {
                        let line = &mut lines[i % l];
                        if let Some((k, v)) = line.split_once('=') {
                            let k = k.trim();
                            let new_k = match k.rsplit_once('.') {
                                Some((head, _)) => format!("{head}.{w}"),
                                None => w.to_string(),
                            };
                            *line = format!("{new_k} ={v}");
                        }
                    }
                    Mutation::ReplaceValue(i, v) => {
                        let line = &mut lines[i % l];
                        if let Some((k, _)) = line.split_once('=') {
                            *line = format!("{k}= {v}");
                        }
                    }
                    _ => unreachable!(),
                }
                b = lines.join("\n").into_bytes();
            }
        }
    }
    b
}

/// How many cases ended how (printed with `--nocapture`, to see that the fuzz reaches past
/// the TOML syntax into the loader's own checks).
static OUTCOMES: Mutex<[usize; 5]> = Mutex::new([0; 5]);

fn count(i: usize) {
    OUTCOMES.lock().unwrap()[i] += 1;
}

fn report(what: &str) {
    let o = *OUTCOMES.lock().unwrap();
    eprintln!(
        "{what}: loaded {}, syntax errors {}, semantic errors {}, cycles {}, not UTF-8 {}",
        o[0], o[1], o[2], o[3], o[4]
    );
}

/// Loads `bytes`; panics (failing the property) unless it loads or fails with a located
/// error.
fn check(dir: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let file = dir.join("fuzz.toml");
    let registry = Registry::builtin();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Pipeline::load_bytes(&file, bytes, &registry, &|_| None).map(|p| p.targets.len())
    }));
    let Ok(result) = result else {
        return Err(TestCaseError::fail(format!(
            "the loader panicked on:\n{}",
            String::from_utf8_lossy(bytes)
        )));
    };
    let Err(e) = result else {
        count(0);
        return Ok(());
    };
    count(match &e {
        PipelineError::Syntax { .. } => 1,
        PipelineError::Cycle { .. } => 3,
        PipelineError::NotUtf8 { .. } => 4,
        _ => 2,
    });
    let loc = match &e {
        PipelineError::NotUtf8 { loc }
        | PipelineError::Syntax { loc, .. }
        | PipelineError::Invalid { loc, .. }
        | PipelineError::Cycle { loc, .. } => loc.clone(),
        PipelineError::MissingSource(m) => m.loc.clone(),
        other => {
            return Err(TestCaseError::fail(format!(
                "an error without a location: {other}\nfor:\n{}",
                String::from_utf8_lossy(bytes)
            )));
        }
    };
    let lines = bytes.iter().filter(|&&c| c == b'\n').count() + 1;
    prop_assert_eq!(&loc.file, &file);
    prop_assert!(
        loc.line >= 1 && loc.line <= lines && loc.column >= 1,
        "location {} outside the file ({} lines) for error {}",
        loc,
        lines,
        e
    );
    let shown = e.to_string();
    prop_assert!(
        shown.starts_with(&format!("{}:{}:{}", file.display(), loc.line, loc.column)),
        "the message does not start with its location: {}",
        shown
    );
    Ok(())
}

fn cases() -> u32 {
    std::env::var("KDBUILD_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn mutated_pipelines_never_panic_and_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus();
    for text in &corpus {
        // The unmutated files load.
        check(dir.path(), text.as_bytes()).unwrap();
    }
    let n = corpus.len();
    runner()
        .run(
            &(0..n, prop::collection::vec(mutation(), 1..6)),
            |(i, muts)| check(dir.path(), &apply(&corpus[i], &muts)),
        )
        .unwrap();
    report("mutated (with the generated cases if run together)");
}

#[test]
fn generated_pipelines_never_panic_and_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.sh"), "true").unwrap();
    runner()
        .run(&generated(), |bytes| check(dir.path(), &bytes))
        .unwrap();
    runner()
        .run(&lines(), |bytes| check(dir.path(), &bytes))
        .unwrap();
    report("generated (with the mutated cases if run together)");
}
