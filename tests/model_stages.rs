//! The KD-GAT stage kinds driven through the engine's `StageKind` interface on a fake
//! preprocess output (synthetic graphs in the layout `kdgat.preprocess` writes): every kind
//! builds, writes its outputs, and declares the runtime references of its module docs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kdbuild::derivation::{Builder, CodeIdentity, Derivation, Input};
use kdbuild::hash::DrvHash;
use kdbuild::stage::{BuildContext, Registry};
use kdbuild::train::model::synth;
use serde_json::{Value, json};

/// Writes a preprocess-like output: `graphs/<split>.safetensors`, `vocab.json`, `manifest.json`.
fn fake_preprocess(dir: &Path) {
    let s = synth::splits(12, 60, 50, 3);
    let g = dir.join("graphs");
    std::fs::create_dir_all(&g).unwrap();
    s.train.save(&g.join("train.safetensors")).unwrap();
    s.val.save(&g.join("val.safetensors")).unwrap();
    for (name, set) in &s.tests {
        set.save(&g.join(format!("{name}.safetensors"))).unwrap();
    }
    let ids: Vec<u32> = (0..11).map(|i| 0x100 + i).collect();
    std::fs::write(
        dir.join("vocab.json"),
        json!({"ids": ids, "unk": 11}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        json!({"window": 50, "stride": 50,
               "split": {"mode": "block", "val_fraction": 0.2, "embargo_windows": 1},
               "unk_row_rate": {"val": 0.0, "test_02_fuzzing": 0.01},
               "duplicates_dropped": [], "test_overlaps_dropped": []})
        .to_string(),
    )
    .unwrap();
}

fn drv(name: &str, kind: &str, config: Value, inputs: &[&str]) -> Derivation {
    let mut ins = BTreeMap::new();
    for (k, i) in inputs.iter().enumerate() {
        ins.insert(
            i.to_string(),
            Input::Derivation {
                hash: DrvHash::of_canonical(format!("{name}{k}").as_bytes()),
                name: format!("dep-{i}"),
            },
        );
    }
    Derivation {
        name: name.into(),
        stage: kind.trim_start_matches("kdgat.").into(),
        kind: kind.into(),
        builder: Builder::Builtin { entry: kind.into() },
        config,
        inputs: ins,
        scripts: BTreeMap::new(),
        code: CodeIdentity::default(),
        recorded: Default::default(),
    }
}

/// Checks and builds one derivation into `root/<name>`; returns the output dir.
fn build(root: &Path, d: &Derivation, inputs: &[(&str, PathBuf)]) -> PathBuf {
    let reg = Registry::builtin();
    let kind = reg.get(&d.kind).expect("kind registered");
    let names: Vec<&str> = inputs.iter().map(|(n, _)| *n).collect();
    kind.check(&d.config, &names).unwrap();
    let out = root.join(&d.name);
    std::fs::create_dir_all(&out).unwrap();
    let ctx = BuildContext {
        drv: d,
        drv_hash: d.hash().unwrap(),
        out: &out,
        inputs: inputs
            .iter()
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect(),
    };
    kind.build(&ctx).unwrap();
    out
}

#[test]
fn teacher_and_student_chains_build_through_the_engine_interface() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("demo-preprocess");
    fake_preprocess(&data);
    let quick = |extra: Value| {
        let mut c = json!({"seed": 42, "profile": "quick", "device": "cpu", "epochs": 2, "batch_graphs": 32});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let mut outs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (variant, size, kd) in [("teacher", "large", false), ("student", "small", true)] {
        let t = |s: &str| format!("{variant}-demo-{s}");
        let mut vin = vec![("data", data.clone())];
        let mut gin = vec![("data", data.clone())];
        if kd {
            vin.push(("teacher", outs["teacher-demo-vgae"].clone()));
            gin.push(("teacher", outs["teacher-demo-gat"].clone()));
        }
        let vd = drv(
            &t("vgae"),
            "kdgat.vgae",
            quick(json!({"size": size, "kd": kd})),
            &vin.iter().map(|x| x.0).collect::<Vec<_>>(),
        );
        let v = build(root, &vd, &vin);
        gin.push(("vgae", v.clone()));
        let gd = drv(
            &t("gat"),
            "kdgat.gat",
            quick(json!({"size": size, "kd": kd})),
            &gin.iter().map(|x| x.0).collect::<Vec<_>>(),
        );
        let g = build(root, &gd, &gin);
        let din = vec![
            ("data", data.clone()),
            ("vgae", v.clone()),
            ("gat", g.clone()),
        ];
        let dd = drv(
            &t("dqn"),
            "kdgat.dqn",
            json!({"size": size, "episodes": 3}),
            &["data", "vgae", "gat"],
        );
        let q = build(root, &dd, &din);
        let mut ein = din.clone();
        ein.push(("dqn", q.clone()));
        let ed = drv(
            &t("eval"),
            "kdgat.eval",
            json!({"seed": 42}),
            &["data", "vgae", "gat", "dqn"],
        );
        let e = build(root, &ed, &ein);
        for (dir, files) in [
            (
                &v,
                &[
                    "model.safetensors",
                    "config.json",
                    "train_log.csv",
                    "metrics.json",
                    "vocab.json",
                ][..],
            ),
            (
                &g,
                &[
                    "model.safetensors",
                    "config.json",
                    "train_log.csv",
                    "metrics.json",
                    "curriculum.csv",
                ][..],
            ),
            (
                &q,
                &[
                    "model.safetensors",
                    "config.json",
                    "train_log.csv",
                    "metrics.json",
                ][..],
            ),
            (&e, &["metrics.json", "metrics.csv", "config.json"][..]),
        ] {
            for f in files {
                assert!(dir.join(f).exists(), "{} lacks {f}", dir.display());
            }
        }
        let m: Value =
            serde_json::from_slice(&std::fs::read(e.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(m["dataset"], "demo");
        assert_eq!(m["variant"], variant);
        assert_eq!(m["config_sha256"], ed.hash().unwrap().to_string());
        assert_eq!(m["data"]["window"], 50);
        assert_eq!(m["data"]["unk_row_rate"]["test_02_fuzzing"], 0.01);
        assert!(m["data"]["unk_row_rate"]["test_01_dos"].is_null());
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(v.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["provenance"]["device"], "cpu");
        assert!(cfg["provenance"]["threads"].as_u64().unwrap() >= 1);
        let reg = Registry::builtin();
        let refs = |d: &Derivation| reg.get(&d.kind).unwrap().references(d);
        // A distilled student refers to its teacher (its config.json names it); others to nothing.
        let teacher_refs: Vec<String> = if vd.inputs.contains_key("teacher") {
            vec!["teacher".into()]
        } else {
            vec![]
        };
        assert_eq!(refs(&vd), teacher_refs);
        assert_eq!(refs(&gd), teacher_refs);
        assert_eq!(refs(&dd), ["vgae", "gat"]);
        assert_eq!(refs(&ed), ["data", "vgae", "gat", "dqn"]);
        outs.insert(t("vgae"), v);
        outs.insert(t("gat"), g);
    }
}

#[test]
fn checks_refuse_bad_configs_at_instantiation() {
    let reg = Registry::builtin();
    let gat = reg.get("kdgat.gat").unwrap();
    let e = gat
        .check(&json!({"size": "large", "epocs": 3}), &["data", "vgae"])
        .unwrap_err();
    assert!(e.contains("`epocs`") && e.contains("`epochs`"), "{e}");
    let vgae = reg.get("kdgat.vgae").unwrap();
    assert!(
        vgae.check(&json!({"size": "small", "kd": true}), &["data"])
            .is_err()
    );
    let dqn = reg.get("kdgat.dqn").unwrap();
    assert!(
        dqn.check(
            &json!({"size": "small", "method": "mlp"}),
            &["data", "vgae", "gat"]
        )
        .is_ok()
    );
}
