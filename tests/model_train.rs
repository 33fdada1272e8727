//! Library-level training tests of the KD-GAT stages on small synthetic data: the whole chain
//! trains, distils, evaluates and writes its outputs; the same configuration gives a
//! byte-identical `metrics.json`; the curriculum logs what it drew; the UNK row is trained.

use std::path::Path;

use candle_core::{Device, IndexOp};
use kdbuild::train::model::batch::{Scoring, Splits};
use kdbuild::train::model::config::Size;
use kdbuild::train::model::eval::{DataInfo, Evaluation, RunLabels, evaluate};
use kdbuild::train::model::fusion::load_fusion;
use kdbuild::train::model::gat::load_gat;
use kdbuild::train::model::gat::{Gat, GatConfig};
use kdbuild::train::model::init::{ParamStore, sub_seed};
use kdbuild::train::model::progress::Report;
use kdbuild::train::model::train_fusion::FusionStageConfig;
use kdbuild::train::model::train_gat::GatStageConfig;
use kdbuild::train::model::train_vgae::VgaeStageConfig;
use kdbuild::train::model::vgae::load_vgae;
use kdbuild::train::model::{synth, train_fusion, train_gat, train_vgae};
use serde_json::{Value, json};

fn data() -> Splits {
    synth::splits(12, 60, 50, 7)
}

/// A short quick-profile configuration.
fn cfg(size: &str, kd: bool) -> Value {
    json!({"size": size, "kd": kd, "epochs": 3, "batch_graphs": 32, "seed": 5})
}

fn labels(variant: &str) -> RunLabels {
    RunLabels {
        dataset: "synthetic".into(),
        variant: variant.into(),
        seed: 5,
        profile: "quick".into(),
        config_sha256: "0".repeat(32),
    }
}

/// VGAE → GAT → fusion → eval for one variant, writing every output under `dir`.
fn chain(
    data: &Splits,
    size: &str,
    teacher: Option<(&Path, &Path)>,
    fusion: Value,
    dir: &Path,
) -> Evaluation {
    let kd = teacher.is_some();
    let dev = Device::Cpu;
    let tv = teacher.map(|(v, _)| load_vgae(&v.join("model.safetensors"), &dev).unwrap());
    let tg = teacher.map(|(_, g)| load_gat(&g.join("model.safetensors"), &dev).unwrap());
    let vd = dir.join("vgae");
    let gd = dir.join("gat");
    let fd = dir.join("dqn");
    for d in [&vd, &gd, &fd] {
        std::fs::create_dir_all(d).unwrap();
    }
    let v = train_vgae::train_vgae(
        &VgaeStageConfig::from_json(&cfg(size, kd)).unwrap(),
        data,
        tv.as_ref().map(|t| &t.1),
        Report::Silent,
    )
    .unwrap();
    v.write(&vd, data, json!({})).unwrap();
    // Later stages read the models back from disk, as the engine's stages do.
    let (_, vgae) = load_vgae(&vd.join("model.safetensors"), &dev).unwrap();
    let g = train_gat::train_gat(
        &GatStageConfig::from_json(&cfg(size, kd)).unwrap(),
        data,
        &vgae,
        tg.as_ref().map(|t| &t.1),
        Report::Silent,
    )
    .unwrap();
    g.write(&gd, data, json!({})).unwrap();
    let (_, gat) = load_gat(&gd.join("model.safetensors"), &dev).unwrap();
    let mut fc = fusion;
    fc["size"] = json!(size);
    fc["seed"] = json!(5);
    let f = train_fusion::train_fusion(
        &FusionStageConfig::from_json(&fc).unwrap(),
        data,
        &vgae,
        &gat,
        Report::Silent,
    )
    .unwrap();
    f.write(&fd, data, json!({})).unwrap();
    let fusion = load_fusion(&fd.join("model.safetensors"), &dev).unwrap();
    let scoring = Scoring {
        device: dev,
        num_ids: data.num_ids,
        batch_graphs: 256,
    };
    let e = evaluate(
        data,
        &vgae,
        &gat,
        &fusion,
        &scoring,
        &labels(size),
        &DataInfo::default(),
    )
    .unwrap();
    e.write(dir).unwrap();
    e
}

#[test]
fn small_chain_is_deterministic_and_complete() {
    let data = data();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ea = chain(&data, "small", None, json!({}), a.path());
    chain(&data, "small", None, json!({}), b.path());
    let ja = std::fs::read(a.path().join("metrics.json")).unwrap();
    let jb = std::fs::read(b.path().join("metrics.json")).unwrap();
    assert_eq!(ja, jb, "metrics.json differs between two identical runs");
    for f in [
        "model.safetensors",
        "config.json",
        "train_log.csv",
        "metrics.json",
    ] {
        for stage in ["vgae", "gat", "dqn"] {
            assert!(a.path().join(stage).join(f).exists(), "{stage}/{f}");
        }
    }
    // The models themselves are byte-identical too.
    for stage in ["vgae", "gat", "dqn"] {
        let p = |d: &Path| std::fs::read(d.join(stage).join("model.safetensors")).unwrap();
        assert_eq!(p(a.path()), p(b.path()), "{stage} weights differ");
    }
    let log = std::fs::read_to_string(a.path().join("gat/train_log.csv")).unwrap();
    assert!(log.starts_with(
        "stage,step,train_loss,val_loss,criterion,best,ratio,percentile,epsilon,lr,seconds\n"
    ));
    // Every test split and every file has metrics; the schema keys come in spec order.
    let j = &ea.json;
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "schema",
            "dataset",
            "variant",
            "seed",
            "profile",
            "fusion_method",
            "config_sha256",
            "data",
            "models"
        ]
    );
    for model in ["vgae", "gat", "fusion"] {
        let splits: Vec<&str> = j["models"][model]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(splits, ["val", "test_01_dos", "test_02_fuzzing"]);
        let files = j["models"][model]["test_01_dos"]["files"]
            .as_object()
            .unwrap();
        assert_eq!(files.len(), 2);
        // The normal-only file has a null recall.
        assert!(files["test/normal.csv"]["recall"].is_null());
    }
    assert_eq!(j["models"]["vgae"]["val"]["threshold_method"], "youden_val");
    let csv = std::fs::read_to_string(a.path().join("metrics.csv")).unwrap();
    assert!(csv.starts_with("dataset,variant,seed,model,split,file,metric,value\n"));
    assert!(csv.contains(",gat,test_01_dos,test/normal.csv,recall,\n"));
    // The synthetic DoS is easy: the GAT must have learnt it.
    let f1 = ea.metric("gat", "test_01_dos", "f1").unwrap();
    assert!(f1 > 0.8, "GAT test F1 {f1}");
}

#[test]
fn teacher_and_distilled_student() {
    let data = data();
    let t = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let et = chain(&data, "large", None, json!({"method": "mlp"}), t.path());
    let es = chain(
        &data,
        "small",
        Some((&t.path().join("vgae"), &t.path().join("gat"))),
        json!({"method": "fixed"}),
        s.path(),
    );
    assert_eq!(et.json["fusion_method"], "mlp");
    assert_eq!(es.json["fusion_method"], "fixed");
    // The distilled student's checkpoint holds only the student (no KD projection).
    let meta =
        kdbuild::train::model::checkpoint::read_metadata(&s.path().join("vgae/model.safetensors"))
            .unwrap();
    assert_eq!(meta["kdgat.size"], "small");
    let (store, _) = load_vgae(&s.path().join("vgae/model.safetensors"), &Device::Cpu).unwrap();
    assert!(
        store
            .all()
            .iter()
            .all(|(k, _)| !k.starts_with("projection"))
    );
    assert_eq!(store.num_params(), 38 * data.num_ids + 8046);
}

#[test]
fn curriculum_logs_n_and_the_unk_row_trains() {
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    let v = train_vgae::train_vgae(
        &VgaeStageConfig::from_json(&cfg("small", false)).unwrap(),
        &data,
        None,
        Report::Silent,
    )
    .unwrap();
    let mut c = cfg("small", false);
    c["epochs"] = json!(4);
    c["unk_dropout"] = json!(0.2);
    let gc = GatStageConfig::from_json(&c).unwrap();
    let g = train_gat::train_gat(&gc, &data, &v.model, None, Report::Silent).unwrap();
    g.write(dir.path(), &data, json!({})).unwrap();
    let na = data.train.y.iter().filter(|&&y| y == 1).count();
    let nm = data.train.len() - na;
    let csv = std::fs::read_to_string(dir.path().join("curriculum.csv")).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let (ratio, n) = (r[1], r[3] as usize);
        assert_eq!(n, ((ratio * na as f64).round() as usize).min(nm));
    }
    assert_ne!(rows[0][3], rows[1][3], "n must change between epochs");
    // The UNK row (last) moved away from its seeded initial value.
    let init = ParamStore::new(sub_seed(5, "init:gat"), &Device::Cpu);
    Gat::new(
        &GatConfig::for_size(Size::Small, data.num_ids),
        init.var_builder(),
    )
    .unwrap();
    let unk = data.num_ids - 1;
    let row = |s: &ParamStore| {
        s.get("id_embedding.weight")
            .unwrap()
            .as_tensor()
            .i(unk)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let before = row(&init);
    let after = row(&g.store);
    let moved: f32 = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).sum();
    assert!(moved > 1e-3, "UNK row did not change: {moved}");
}
