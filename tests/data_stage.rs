//! The `kdgat.preprocess` stage: the library run on the shipped demo, the same through the
//! engine's `StageKind::build` with a hand-made derivation, config checks at instantiation,
//! and the pipeline's sources (missing data fails before anything builds; the other real sets
//! preprocess end to end).

mod data_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kdbuild::derivation::{Builder, CodeIdentity, Derivation, Input, Recorded, Resources};
use kdbuild::hash::ContentHash;
use kdbuild::pipeline::{ContentLookup, Pipeline, PipelineError, instantiate};
use kdbuild::stage::kdgat::preprocess::Preprocess;
use kdbuild::stage::{BuildContext, Registry, StageError, StageKind};
use kdbuild::store::source::StoreLookup;
use kdbuild::train::data::graphs::GraphSet;
use kdbuild::train::data::manifest::Manifest;
use kdbuild::train::data::options::{DatasetConfig, StageConfig};
use kdbuild::train::data::preprocess;
use kdbuild::train::data::vocab::Vocab;
use serde_json::{Value, json};

use data_support::{repo, shared_data};

fn demo_config() -> Value {
    json!({"format": "can-train-and-test", "layout": "folders"})
}

fn read_manifest(dir: &Path) -> Manifest {
    Manifest::from_json(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// The shipped demo: every split has attacks, copies are read once, the test overlap is
/// dropped, and it stays small.
#[test]
fn demo_has_attacks_in_every_split() {
    let out = tempfile::tempdir().unwrap();
    let m = preprocess::run(
        &repo().join("data/demo"),
        &DatasetConfig::from_json(&demo_config()).unwrap(),
        &StageConfig::default(),
        out.path(),
        2,
    )
    .unwrap();
    let names: Vec<&str> = m.splits.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["train", "val", "test_01_known_vehicle_known_attack"]
    );
    for (name, s) in &m.splits {
        assert!(s.attack > 0, "split {name} has no attack windows");
        assert!(s.normal > 0, "split {name} has no normal windows");
        let set = GraphSet::load(&out.path().join(&s.path)).unwrap();
        assert_eq!(set.len(), s.windows);
        assert_eq!(set.y.iter().filter(|&&y| y == 1).count(), s.attack);
        // Vocabulary indices are in range.
        for g in 0..set.len() {
            let x = set.graph(g).x;
            assert!(x.chunks(11).all(|r| (r[0] as u32) < m.num_ids));
        }
    }
    assert_eq!(m.totals.windows, 750, "files: {:#?}", m.files);
    assert_eq!(m.duplicates.len(), 2);
    assert_eq!(m.test_overlaps.len(), 1);
    assert!(m.test_overlaps[0].dropped);
    assert_eq!(m.splits["test_01_known_vehicle_known_attack"].windows, 200);
    assert_eq!(m.splits["test_01_known_vehicle_known_attack"].attack, 75);
    let dos = m
        .files
        .iter()
        .find(|f| f.path == "train_02_with_attacks/DoS_rows-002000-017001.csv")
        .unwrap();
    assert_eq!(dos.windows, 150);
    let vocab: Vocab =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("vocab.json")).unwrap())
            .unwrap();
    assert_eq!(vocab.num_ids, m.num_ids);
    assert_eq!(vocab.unk, m.num_ids - 1);
    // What the trainers load is what was built.
    let loaded = preprocess::load(out.path()).unwrap();
    let built = preprocess::preprocess(
        &repo().join("data/demo"),
        &DatasetConfig::from_json(&demo_config()).unwrap(),
        &StageConfig::default(),
        1,
    )
    .unwrap();
    assert!(loaded == built, "load(write(x)) != x");
    println!(
        "demo: {} windows; {:?}",
        m.totals.windows,
        m.splits
            .iter()
            .map(|(k, s)| (k.clone(), s.windows, s.attack))
            .collect::<Vec<_>>()
    );
}

fn derivation(config: Value, source_config: Value, cpus: u32) -> Derivation {
    Derivation {
        name: "demo-preprocess".into(),
        stage: "preprocess".into(),
        kind: "kdgat.preprocess".into(),
        builder: Builder::Builtin {
            entry: "kdgat.preprocess".into(),
        },
        config,
        inputs: [(
            "raw".to_string(),
            Input::Source {
                name: "demo".into(),
                content: ContentHash([0; 32]),
                config: source_config,
            },
        )]
        .into(),
        scripts: BTreeMap::new(),
        code: Preprocess.code_identity(),
        recorded: Recorded {
            resources: Resources {
                cpus: Some(cpus),
                ..Default::default()
            },
            ..Default::default()
        },
    }
}

fn build(drv: &Derivation, raw: &Path, out: &Path) -> Result<(), StageError> {
    let ctx = BuildContext {
        drv,
        drv_hash: drv.hash().unwrap(),
        out,
        inputs: [("raw".to_string(), raw.to_path_buf())].into(),
    };
    Preprocess.build(&ctx)
}

/// Every file of an output directory, relative path → bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// The engine's kind builds the same bytes as the library, whatever the thread count, and
/// the output layout is the documented one.
#[test]
fn stage_kind_builds_deterministically() {
    let config = json!({"seed": 42, "profile": "quick"});
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let raw = repo().join("data/demo");
    build(
        &derivation(config.clone(), demo_config(), 1),
        &raw,
        a.path(),
    )
    .unwrap();
    build(&derivation(config, demo_config(), 3), &raw, b.path()).unwrap();
    let (ta, tb) = (tree(a.path()), tree(b.path()));
    let names: Vec<String> = ta.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "graphs/test_01_known_vehicle_known_attack.safetensors",
            "graphs/train.safetensors",
            "graphs/val.safetensors",
            "manifest.json",
            "vocab.json"
        ]
    );
    assert!(ta == tb, "outputs differ between 1 and 3 threads");
    // Another seed moves the validation blocks (spec §8.8).
    let c = tempfile::tempdir().unwrap();
    build(
        &derivation(json!({"seed": 7}), demo_config(), 2),
        &raw,
        c.path(),
    )
    .unwrap();
    let (ma, mc) = (read_manifest(a.path()), read_manifest(c.path()));
    let val_windows = |m: &Manifest| -> Vec<(String, usize)> {
        m.files
            .iter()
            .map(|f| (f.path.clone(), f.splits.get("val").copied().unwrap_or(0)))
            .collect()
    };
    assert_eq!(
        val_windows(&ma),
        val_windows(&mc),
        "block sizes do not depend on the seed"
    );
    let va = GraphSet::load(&a.path().join("graphs/val.safetensors")).unwrap();
    let vc = GraphSet::load(&c.path().join("graphs/val.safetensors")).unwrap();
    assert_ne!(
        va.window, vc.window,
        "seed 7 drew the same validation blocks as seed 42"
    );
}

#[test]
fn stage_errors_are_located() {
    let e = Preprocess
        .check(&json!({"windw": 100}), &["raw"])
        .unwrap_err();
    assert!(e.contains("`windw`") && e.contains("unknown key"), "{e}");
    let e = Preprocess
        .check(&json!({"window": 0}), &["raw"])
        .unwrap_err();
    assert!(e.contains("`window`"), "{e}");
    let e = Preprocess.check(&json!({}), &["data"]).unwrap_err();
    assert!(e.contains("`raw`"), "{e}");
    assert!(
        Preprocess
            .check(
                &json!({"profile": "paper", "edge_features": true}),
                &["raw"]
            )
            .is_ok()
    );

    // A bad reading config fails the build naming the source and the key.
    let out = tempfile::tempdir().unwrap();
    let drv = derivation(
        json!({}),
        json!({"format": "can-train-and-test", "layot": "folders"}),
        1,
    );
    let e = build(&drv, &repo().join("data/demo"), out.path()).unwrap_err();
    assert!(
        e.to_string().contains("source `demo`") && e.to_string().contains("`layot`"),
        "{e}"
    );
}

/// A stand-in for the model kinds (registered by other modules), so the pipeline file loads.
struct Stub(&'static str);

impl StageKind for Stub {
    fn name(&self) -> &'static str {
        self.0
    }
    fn code_identity(&self) -> CodeIdentity {
        CodeIdentity::default()
    }
    fn build(&self, _: &BuildContext) -> Result<(), StageError> {
        Err(StageError::Failed("stub".into()))
    }
}

fn registry() -> Registry {
    let mut r = Registry::builtin();
    for k in ["kdgat.vgae", "kdgat.gat", "kdgat.dqn", "kdgat.eval"] {
        if r.get(k).is_none() {
            r.register(Box::new(Stub(k)));
        }
    }
    r
}

fn load(env: &dyn Fn(&str) -> Option<String>) -> Pipeline {
    let file = repo().join("pipelines/kdgat.toml");
    let bytes = std::fs::read(&file).unwrap();
    Pipeline::load_bytes(&file, &bytes, &registry(), env).unwrap()
}

fn instantiate_one(p: &Pipeline, target: &str) -> Result<Derivation, PipelineError> {
    let t = p.target(target)?;
    let mut lookup = StoreLookup { store: None };
    let lookup: &mut dyn ContentLookup = &mut lookup;
    let inst = instantiate(p, &registry(), &[t], lookup)?;
    let n = inst.node_of(t).unwrap();
    Ok(inst.derivation(p, n))
}

/// The v1.5 sets are declared at `${KDBUILD_DATA}/can-train-and-test-v1.5/<name>`: when that
/// data is absent, instantiating a target that needs it fails (before anything builds) with
/// where the data comes from and which variable to set.
#[test]
fn missing_datasets_fail_before_building() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().display().to_string();
    let with_var = load(&|n| (n == "KDBUILD_DATA").then(|| dir.clone()));
    let unset = load(&|_| None);
    for p in [&with_var, &unset] {
        for set in ["hcrl_ch", "hcrl_sa", "set_01", "set_02", "set_03", "set_04"] {
            let target = format!("{set}-preprocess");
            let e = instantiate_one(p, &target).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, PipelineError::MissingSource(_)), "{msg}");
            assert!(msg.contains("can-train-and-test-v1.5"), "{msg}");
            assert!(msg.contains("bitbucket.org/brooke-lampe"), "{msg}");
            assert!(msg.contains("KDBUILD_DATA"), "{msg}");
            if set == "hcrl_ch" {
                println!("{msg}");
            }
            // A model target needing the set fails the same way.
            let e = instantiate_one(p, &format!("teacher-{set}-eval")).unwrap_err();
            assert!(matches!(e, PipelineError::MissingSource(_)));
        }
    }
    // Every source's reading config is valid, whether or not its data is here.
    for (name, s) in &with_var.sources {
        DatasetConfig::from_json(&s.config)
            .unwrap_or_else(|e| panic!("source `{name}`: config key {e}"));
    }
    // Every preprocess target's stage config passes the kind's check.
    for t in with_var
        .targets
        .iter()
        .filter(|t| with_var.stages[t.stage].kind == "kdgat.preprocess")
    {
        Preprocess.check(&t.config, &["raw"]).unwrap();
    }
}

/// `demo-preprocess` instantiates from the pipeline file and builds through the kind.
#[test]
fn demo_target_builds_from_the_pipeline() {
    let p = load(&|_| None);
    let drv = instantiate_one(&p, "demo-preprocess").unwrap();
    let raw = drv.recorded.source_paths["raw"].clone();
    let out = tempfile::tempdir().unwrap();
    build(&drv, &raw, out.path()).unwrap();
    let m = read_manifest(out.path());
    assert!(m.splits.values().all(|s| s.attack > 0));
}

/// The other real sets of `shared/data/can` preprocess end to end through the pipeline's own
/// source configs (skipped when the data is absent; a failure under CI=true).
#[test]
fn other_real_sets_preprocess_end_to_end() {
    let Some(data) = shared_data("other_real_sets_preprocess_end_to_end") else {
        return;
    };
    let dir = data.display().to_string();
    let p = load(&|n| (n == "KDBUILD_DATA").then(|| dir.clone()));
    for (set, streams) in [("daga", 4), ("cic_iov2024", 6), ("j1939", 3)] {
        let drv = instantiate_one(&p, &format!("{set}-preprocess")).unwrap();
        let raw = drv.recorded.source_paths["raw"].clone();
        let out = tempfile::tempdir().unwrap();
        build(&drv, &raw, out.path()).unwrap_or_else(|e| panic!("{set}: {e}"));
        let m = read_manifest(out.path());
        assert_eq!(m.totals.files_read, streams, "{set}");
        let names: Vec<&str> = m.splits.keys().map(String::as_str).collect();
        assert_eq!(names, ["train", "val", "test_streams"], "{set}");
        for (name, s) in &m.splits {
            assert!(s.windows > 0, "{set}: split {name} is empty");
            GraphSet::load(&out.path().join(&s.path)).unwrap();
        }
        println!(
            "{set}: num_ids {}; {:?}",
            m.num_ids,
            m.splits
                .iter()
                .map(|(k, s)| (k.clone(), s.windows, s.attack, s.unk_row_rate))
                .collect::<Vec<_>>()
        );
    }
}
