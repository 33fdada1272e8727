//! Property tests of the readers, bounded for CI (a fixed number of small cases): arbitrary
//! bytes never panic and give consistent counts; well-formed rows round-trip exactly.

use std::fmt::Write as _;

use kdbuild::train::data::format::{Format, parse_format, preset};
use kdbuild::train::data::frame::Frame;
use kdbuild::train::data::reader::{ReadOptions, read_bytes};
use proptest::prelude::*;
use serde_json::json;

fn lenient(assume: Option<bool>) -> ReadOptions {
    ReadOptions {
        assume_label: assume,
        malformed_threshold: 1.0,
        ..Default::default()
    }
}

fn formats() -> Vec<Format> {
    let mut f: Vec<Format> = kdbuild::train::data::format::PRESETS
        .iter()
        .map(|p| preset(p).unwrap())
        .collect();
    f.push(
        parse_format(
            "format",
            &json!({"kind": "csv", "header": false, "delimiter": ";",
                    "id": {"col": 0, "base": "dec"}, "bytes": {"cols": [1, 2, 3], "base": "hex"},
                    "label": {"col": 4, "attack": ["a"]}}),
        )
        .unwrap(),
    );
    f
}

/// Whatever a reader returns, its counts agree with its frames.
fn consistent(text: &[u8]) {
    for f in formats() {
        for assume in [None, Some(false)] {
            // Ok or a typed error; a panic fails the test.
            if let Ok((frames, s)) = read_bytes(&f, text, &lenient(assume)) {
                assert_eq!(s.frames as usize, frames.len(), "{}", f.name);
                assert!(
                    s.malformed + s.frames + s.error_frames <= s.rows.max(s.frames),
                    "{}: {s:?}",
                    f.name
                );
                assert!(s.malformed_examples.len() <= 5);
                assert!(frames.iter().all(|f| f.len <= 8));
                assert!(frames.iter().all(|f| f.id.is_none_or(|i| i <= 0x1FFF_FFFF)));
            }
        }
    }
}

/// Text built from the characters the formats use, so that parsing gets past the first field.
fn texty() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("0"), Just("1"), Just("7F"), Just("18FCF200"), Just("0x1E5"), Just("na"),
            Just(","), Just(";"), Just(" "), Just("\n"), Just("\r\n"), Just("#"), Just("##"),
            Just("("), Just(")"), Just("["), Just("]"), Just("."), Just("R"), Just("T"),
            Just("true"), Just("remote request"), Just("\""), Just("\u{feff}"), Just("DEADBEEF"),
            Just("Timestamp:"), Just("ID:"), Just("DLC:"), Just("can0"), Just("-1"), Just("9e-06"),
            Just("timestamp,arbitration_id,data_field,attack\n"),
            Just("ID,DATA_0,DATA_1,DATA_2,DATA_3,DATA_4,DATA_5,DATA_6,DATA_7,label,category,specific_class\n"),
        ],
        0..80,
    )
    .prop_map(|v| v.concat())
}

#[derive(Clone, Debug)]
struct Gen {
    ts: f64,
    id: u32,
    bytes: Vec<u8>,
    label: bool,
}

fn gen_frames(max_id: u32) -> impl Strategy<Value = Vec<Gen>> {
    proptest::collection::vec(
        (
            0.0f64..2e9,
            0..=max_id,
            proptest::collection::vec(any::<u8>(), 0..=8),
            any::<bool>(),
        )
            .prop_map(|(ts, id, bytes, label)| Gen {
                ts,
                id,
                bytes,
                label,
            }),
        0..40,
    )
}

fn check(got: &[Frame], want: &[Gen], with_ts: bool) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.id, Some(w.id));
        assert_eq!(g.label, w.label);
        assert_eq!(g.len as usize, w.bytes.len());
        assert_eq!(&g.bytes[..w.bytes.len()], &w.bytes[..]);
        assert!(g.bytes[w.bytes.len()..].iter().all(|&b| b == 0));
        if with_ts {
            assert_eq!(g.ts, Some(w.ts));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        consistent(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in texty()) {
        consistent(text.as_bytes());
    }

    #[test]
    fn can_train_and_test_rows_round_trip(frames in gen_frames(0x7FF), crlf in any::<bool>()) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut s = format!("timestamp,arbitration_id,data_field,attack{nl}");
        for f in &frames {
            let hex: String = f.bytes.iter().map(|b| format!("{b:02X}")).collect();
            let _ = write!(s, "{},{:03X},{hex},{}{nl}", f.ts, f.id, f.label as u8);
        }
        let (got, st) = read_bytes(&preset("can-train-and-test").unwrap(), s.as_bytes(), &ReadOptions::default()).unwrap();
        prop_assert_eq!(st.malformed, 0);
        check(&got, &frames, true);
    }

    #[test]
    fn candump_log_rows_round_trip(frames in gen_frames(0x1FFF_FFFF)) {
        let mut s = String::new();
        for f in &frames {
            let hex: String = f.bytes.iter().map(|b| format!("{b:02x}")).collect();
            let id = if f.id <= 0x7FF { format!("{:03X}", f.id) } else { format!("{:08X}", f.id) };
            let _ = writeln!(s, "({:.6}) vcan0 {id}#{hex} {}", f.ts, if f.label { "attack" } else { "normal" });
        }
        let (got, st) = read_bytes(&preset("candump").unwrap(), s.as_bytes(), &ReadOptions::default()).unwrap();
        prop_assert_eq!(st.malformed, 0);
        check(&got, &frames, false);
    }

    #[test]
    fn candump_default_rows_round_trip(frames in gen_frames(0x1FFF_FFFF)) {
        let mut s = String::new();
        for f in &frames {
            let bytes: Vec<String> = f.bytes.iter().map(|b| format!("{b:02X}")).collect();
            let _ = writeln!(s, "  can0  {:08X}   [{}]  {}", f.id, f.bytes.len(), bytes.join(" "));
        }
        let want: Vec<Gen> = frames.iter().map(|f| Gen { label: false, ..f.clone() }).collect();
        let (got, _) = read_bytes(&preset("candump").unwrap(), s.as_bytes(), &lenient(Some(false))).unwrap();
        check(&got, &want, false);
    }

    #[test]
    fn cic_iov_decimal_rows_round_trip(frames in gen_frames(0x7FF)) {
        let mut s = String::from("ID,DATA_0,DATA_1,DATA_2,DATA_3,DATA_4,DATA_5,DATA_6,DATA_7,label,category,specific_class\n");
        let want: Vec<Gen> = frames.iter().map(|f| {
            let mut b = f.bytes.clone();
            b.resize(8, 0);
            Gen { bytes: b, ..f.clone() }
        }).collect();
        for f in &want {
            let cols: Vec<String> = f.bytes.iter().map(|b| b.to_string()).collect();
            let (l, c) = if f.label { ("ATTACK", "DoS") } else { ("BENIGN", "BENIGN") };
            let _ = writeln!(s, "{},{},{l},{c},{c}", f.id, cols.join(","));
        }
        let (got, st) = read_bytes(&preset("cic-iov2024").unwrap(), s.as_bytes(), &ReadOptions::default()).unwrap();
        prop_assert_eq!(st.malformed, 0);
        check(&got, &want, false);
    }

    #[test]
    fn hcrl_rows_round_trip(frames in gen_frames(0x7FF)) {
        let mut s = String::new();
        for f in &frames {
            let bytes: Vec<String> = f.bytes.iter().map(|b| format!("{b:02x}")).collect();
            let sep = if bytes.is_empty() { "" } else { "," };
            let _ = writeln!(s, "{},{:04x},{}{sep}{},{}", f.ts, f.id, f.bytes.len(), bytes.join(","), if f.label { "T" } else { "R" });
        }
        let (got, st) = read_bytes(&preset("hcrl-car-hacking").unwrap(), s.as_bytes(), &ReadOptions::default()).unwrap();
        prop_assert_eq!(st.malformed, 0);
        check(&got, &frames, true);
    }

    /// The whole preprocess on arbitrary little datasets: a result or a typed error.
    #[test]
    fn preprocess_never_panics(
        a in texty(), b in texty(), t in texty(),
        w in 2usize..6, st in 1usize..6, mode in prop_oneof![Just("block"), Just("file")],
    ) {
        let d = tempfile::tempdir().unwrap();
        let head = "timestamp,arbitration_id,data_field,attack\n";
        for (rel, body) in [("train_01/a.csv", &a), ("train_02/b.csv", &b), ("test_01/t.csv", &t)] {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("{head}{body}")).unwrap();
        }
        let dataset = kdbuild::train::data::options::DatasetConfig::from_json(
            &json!({"format": "can-train-and-test", "malformed_threshold": 1.0})).unwrap();
        let stage = kdbuild::train::data::options::StageConfig::from_json(
            &json!({"window": w, "stride": st, "split": mode, "edge_features": true})).unwrap();
        if let Ok(o) = kdbuild::train::data::preprocess::preprocess(d.path(), &dataset, &stage, 2) {
            for set in o.sets.values() {
                prop_assert!(set.check().is_ok());
            }
        }
    }
}
