//! Leak-freedom (spec §2.3–§2.5, §8.6–§8.8): copies are read once, no validation window
//! shares a frame with a training window or sits in its embargo, test files identical to
//! training files are dropped and reported, unseen IDs map to UNK.

mod data_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kdbuild::train::data::graphs::GraphSet;
use kdbuild::train::data::options::{DatasetConfig, StageConfig};
use kdbuild::train::data::preprocess::{self, Output};
use serde_json::{Value, json};

use data_support::{Row, ctt_csv, put, synthetic};

fn run(root: &Path, dataset: Value, stage: Value) -> Output {
    preprocess::preprocess(
        root,
        &DatasetConfig::from_json(&dataset).unwrap(),
        &StageConfig::from_json(&stage).unwrap(),
        2,
    )
    .unwrap()
}

fn folders() -> Value {
    json!({"format": "can-train-and-test", "layout": "folders"})
}

fn trace(n: usize, seed: u64, attack: bool) -> String {
    let attack = if attack { n / 4..n / 2 } else { 0..0 };
    ctt_csv(&synthetic(
        n,
        &[0x10, 0x20, 0x30, 0x40, 0x50, 0x60],
        attack,
        0x0,
        seed,
    ))
}

/// The graphs of a set, without the per-file bookkeeping (whose names and indices differ).
fn content(s: &GraphSet) -> GraphSet {
    let mut c = s.clone();
    c.files.clear();
    c.file.clear();
    c
}

#[test]
fn a_file_in_both_train_folders_is_read_once() {
    let with = tempfile::tempdir().unwrap();
    let without = tempfile::tempdir().unwrap();
    for d in [with.path(), without.path()] {
        put(
            d,
            "train_01_attack_free/normal-1.csv",
            trace(20_000, 1, false).as_bytes(),
        );
        put(
            d,
            "train_02_with_attacks/attack-1.csv",
            trace(20_000, 2, true).as_bytes(),
        );
        put(d, "test_01/t.csv", trace(5_000, 3, true).as_bytes());
    }
    put(
        with.path(),
        "train_02_with_attacks/normal-1.csv",
        trace(20_000, 1, false).as_bytes(),
    );
    let stage = json!({"profile": "paper"});
    let a = run(with.path(), folders(), stage.clone());
    let b = run(without.path(), folders(), stage);
    let m = &a.manifest;
    assert_eq!(m.duplicates.len(), 1);
    assert_eq!(m.duplicates[0].path, "train_02_with_attacks/normal-1.csv");
    assert_eq!(m.duplicates[0].same_as, "train_01_attack_free/normal-1.csv");
    let dup = m
        .files
        .iter()
        .find(|f| f.path == "train_02_with_attacks/normal-1.csv")
        .unwrap();
    assert_eq!(dup.status, "duplicate");
    assert!(dup.read.is_none(), "a duplicate is not read");
    assert_eq!(m.totals.files_read, 3);
    for split in ["train", "val", "test_01"] {
        assert_eq!(
            m.splits[split].windows, b.manifest.splits[split].windows,
            "{split}"
        );
        assert!(
            content(&a.sets[split]) == content(&b.sets[split]),
            "{split} differs"
        );
    }
}

/// Frames `[kS, kS+W']` (the successor of the last row included) of each window in `set`,
/// per file.
fn frames_by_file(set: &GraphSet, w: usize, s: usize) -> BTreeMap<u32, Vec<(usize, usize)>> {
    let mut out: BTreeMap<u32, Vec<(usize, usize)>> = BTreeMap::new();
    for g in 0..set.len() {
        let k = set.window[g] as usize;
        out.entry(set.file[g]).or_default().push((k * s, k * s + w));
    }
    out
}

#[test]
fn no_validation_window_overlaps_a_training_window_or_its_embargo() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..4 {
        put(
            d.path(),
            &format!("train_01/f{i}.csv"),
            trace(12_000 + 997 * i, 10 + i as u64, i % 2 == 0).as_bytes(),
        );
    }
    put(d.path(), "test_01/t.csv", trace(3_000, 99, true).as_bytes());
    for (w, s) in [(100usize, 100usize), (100, 50), (100, 30), (50, 80)] {
        for seed in [1u64, 42, 7, 1234] {
            let out = run(
                d.path(),
                folders(),
                json!({"window": w, "stride": s, "seed": seed, "profile": "paper"}),
            );
            let e = out.manifest.config.embargo_windows;
            assert_eq!(e, if w > s { w.div_ceil(s) } else { 1 });
            let train = frames_by_file(&out.sets["train"], w, s);
            let val = frames_by_file(&out.sets["val"], w, s);
            assert!(!val.is_empty());
            for (file, vs) in &val {
                let ts = train.get(file).cloned().unwrap_or_default();
                for &(va, vb) in vs {
                    for &(ta, tb) in &ts {
                        assert!(
                            vb < ta || tb < va,
                            "W={w} S={s} seed={seed}: file {file}: val frames {va}..={vb} overlap train {ta}..={tb}"
                        );
                        // Outside the embargo: at least e windows between them.
                        let (kv, kt) = (va / s, ta / s);
                        assert!(
                            kv.abs_diff(kt) > e,
                            "W={w} S={s}: train window {kt} is within the embargo of val window {kv}"
                        );
                    }
                }
                // One contiguous validation block per file.
                let ks: Vec<usize> = vs.iter().map(|(a, _)| a / s).collect();
                assert_eq!(ks.last().unwrap() - ks[0] + 1, ks.len());
            }
        }
    }
}

#[test]
fn stream_splits_do_not_share_frames() {
    let d = tempfile::tempdir().unwrap();
    put(d.path(), "a.csv", trace(30_000, 5, true).as_bytes());
    put(d.path(), "b.csv", trace(25_000, 6, true).as_bytes());
    for axis in ["rows", "time"] {
        let out = run(
            d.path(),
            json!({"format": "can-train-and-test", "layout": "streams"}),
            json!({"profile": "paper", "split_axis": axis, "window": 100, "stride": 50}),
        );
        let (w, s) = (100, 50);
        let parts: Vec<BTreeMap<u32, Vec<(usize, usize)>>> = ["train", "val", "test_streams"]
            .iter()
            .map(|n| frames_by_file(&out.sets[*n], w, s))
            .collect();
        for i in 0..3 {
            for j in i + 1..3 {
                for (file, a) in &parts[i] {
                    for &(a0, a1) in a {
                        for &(b0, b1) in parts[j].get(file).map(Vec::as_slice).unwrap_or(&[]) {
                            assert!(
                                a1 < b0 || b1 < a0,
                                "{axis}: splits {i} and {j} share frames"
                            );
                            assert!(a0 < b0, "{axis}: split {j} comes before split {i}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_test_file_identical_to_a_training_file_is_dropped_and_reported() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        "train_01/a.csv",
        trace(10_000, 1, false).as_bytes(),
    );
    put(
        d.path(),
        "train_01/b.csv",
        trace(10_000, 2, true).as_bytes(),
    );
    put(
        d.path(),
        "test_01/own.csv",
        trace(4_000, 3, true).as_bytes(),
    );
    put(
        d.path(),
        "test_01/copy-of-b.csv",
        trace(10_000, 2, true).as_bytes(),
    );
    put(
        d.path(),
        "test_01/own-again.csv",
        trace(4_000, 3, true).as_bytes(),
    );
    put(
        d.path(),
        "test_02/own.csv",
        trace(4_000, 3, true).as_bytes(),
    );
    let out = run(d.path(), folders(), json!({"profile": "paper"}));
    let m = &out.manifest;
    assert_eq!(m.test_overlaps.len(), 1);
    let o = &m.test_overlaps[0];
    assert_eq!(
        (
            o.path.as_str(),
            o.split.as_str(),
            o.same_as.as_str(),
            o.dropped
        ),
        ("test_01/copy-of-b.csv", "test_01", "train_01/b.csv", true)
    );
    let f = m
        .files
        .iter()
        .find(|f| f.path == "test_01/copy-of-b.csv")
        .unwrap();
    assert_eq!(f.status, "test_overlap_dropped");
    assert!(
        !out.sets["test_01"]
            .files
            .contains(&"test_01/copy-of-b.csv".to_string())
    );
    // A copy within one test folder is read once; the copy in another folder is kept.
    assert_eq!(m.duplicates.len(), 1);
    assert_eq!(m.duplicates[0].path, "test_01/own.csv");
    assert_eq!(m.duplicates[0].same_as, "test_01/own-again.csv");
    assert_eq!(m.splits["test_01"].windows, 39);
    assert_eq!(m.splits["test_02"].windows, 39);
    // With drop_test_overlaps = false it stays, reported.
    let keep = run(
        d.path(),
        json!({"format": "can-train-and-test", "drop_test_overlaps": false}),
        json!({"profile": "paper"}),
    );
    assert!(!keep.manifest.test_overlaps[0].dropped);
    assert_eq!(keep.manifest.splits["test_01"].windows, 39 + 99);
}

/// Spec §8.7: an ID seen only outside training maps to UNK = num_ids − 1 and shows in that
/// split's unk_row_rate; training has none.
#[test]
fn unseen_ids_map_to_unk() {
    let d = tempfile::tempdir().unwrap();
    let mut rows: Vec<Row> = synthetic(10_000, &[0x10, 0x20, 0x30], 2_000..3_000, 0x0, 8);
    // 0x7A only in the validation segment [60%, 80%), 0x7B only in the test segment.
    for r in rows.iter_mut().skip(6_500).step_by(10).take(100) {
        r.id = 0x7A;
    }
    for r in rows.iter_mut().skip(9_000).step_by(10).take(50) {
        r.id = 0x7B;
    }
    put(d.path(), "trace.csv", ctt_csv(&rows).as_bytes());
    let out = run(
        d.path(),
        json!({"format": "can-train-and-test", "layout": "streams"}),
        json!({"profile": "paper"}),
    );
    let m = &out.manifest;
    assert!(!out.vocab.ids.contains(&0x7A) && !out.vocab.ids.contains(&0x7B));
    assert_eq!(m.unk, m.num_ids - 1);
    assert_eq!(m.splits["train"].unk_row_rate, 0.0);
    assert!(
        (m.splits["val"].unk_row_rate - 100.0 / 1_900.0).abs() < 1e-9,
        "{}",
        m.splits["val"].unk_row_rate
    );
    assert!(m.splits["test_streams"].unk_row_rate > 0.0);
    let unk_nodes: BTreeSet<u32> = out.sets["test_streams"]
        .x
        .chunks(11)
        .map(|x| x[0] as u32)
        .filter(|&v| v == m.unk)
        .collect();
    assert_eq!(unk_nodes.len(), 1);
}
