//! Conformance on real files (spec §8.2, §8.3, §8.11): every preset parses its file under
//! `shared/data/can` with the row and label counts of that folder's `SOURCES.md`; the DoS-1
//! figures; the worked example; a hand-checked window. Tests that need `../shared` print that
//! they skip when it is absent, and fail when `CI=true`.

mod data_support;

use std::collections::BTreeMap;
use std::path::Path;

use kdbuild::train::data::format::{Format, parse_format, preset};
use kdbuild::train::data::frame::Frame;
use kdbuild::train::data::graph::GraphBuilder;
use kdbuild::train::data::options::{DatasetConfig, StageConfig};
use kdbuild::train::data::preprocess;
use kdbuild::train::data::reader::{ReadOptions, ReadStats, read_all};
use kdbuild::train::data::vocab::Vocab;
use kdbuild::train::data::window::{Geometry, NO_ID, Stream};
use serde_json::json;

use data_support::shared_data;

fn read(format: &Format, path: &Path, assume_normal: bool) -> (Vec<Frame>, ReadStats) {
    let opts = ReadOptions {
        assume_label: assume_normal.then_some(false),
        ..Default::default()
    };
    read_all(format, path, &opts).unwrap_or_else(|e| panic!("{e}"))
}

fn attacks(frames: &[Frame]) -> usize {
    frames.iter().filter(|f| f.label).count()
}

/// Frames per ID.
fn by_id(frames: &[Frame]) -> BTreeMap<u32, usize> {
    let mut m = BTreeMap::new();
    for f in frames {
        *m.entry(f.id.unwrap_or(NO_ID)).or_insert(0) += 1;
    }
    m
}

fn close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() < 1e-6,
            "{what}: column {i}: got {g}, want {w}"
        );
    }
}

#[test]
fn can_train_and_test_dos1() {
    let Some(d) = shared_data("can_train_and_test_dos1") else {
        return;
    };
    let path = d.join("can-train-and-test/DoS-1.csv");
    let (frames, stats) = read(&preset("can-train-and-test").unwrap(), &path, false);
    assert_eq!(stats.rows, 90_169);
    assert_eq!(frames.len(), 90_169);
    assert_eq!(stats.malformed, 0);
    assert_eq!(attacks(&frames), 9_139);
    assert_eq!(frames.len() - attacks(&frames), 81_030);
    let ids = by_id(&frames);
    assert_eq!(ids.len(), 52);
    // All attack rows are the DoS flood of ID 000 with eight zero bytes.
    assert!(
        frames
            .iter()
            .filter(|f| f.label)
            .all(|f| f.id == Some(0) && f.bytes == [0; 8] && f.len == 8)
    );
    // CRLF: the first row parsed exactly.
    assert_eq!(frames[0].ts, Some(1_672_531_200.0));
    assert_eq!(frames[0].id, Some(0x1E5));
    assert_eq!(
        frames[0].bytes,
        [0x46, 0x01, 0x96, 0xE0, 0x01, 0xFE, 0x67, 0x01]
    );
    // Payload lengths 2..8 bytes (DLC = digits/2); a 5-byte row.
    assert_eq!((frames[3].id, frames[3].len), (Some(0x2F9), 5));
    assert_eq!(stats.non_monotonic_ts, 0);
}

/// Spec §8.3, by the low-level path: one training file, no validation.
#[test]
fn dos1_spec_figures() {
    let Some(d) = shared_data("dos1_spec_figures") else {
        return;
    };
    let path = d.join("can-train-and-test/DoS-1.csv");
    let (frames, _) = read(&preset("can-train-and-test").unwrap(), &path, false);
    let mut s = Stream::default();
    frames.iter().for_each(|f| s.push(f));
    let g = Geometry {
        window: 100,
        stride: 100,
    };
    let n = g.num_windows(s.len());
    assert_eq!(n, 901);
    assert_eq!(g.trailing_rows(s.len()), 68);
    let mut ids = Vec::new();
    for k in 0..n {
        let r = g.rows(k, s.len());
        ids.extend_from_slice(&s.ids[r.start..=r.end]);
    }
    let vocab = Vocab::new(ids);
    assert_eq!(vocab.ids.len(), 52);
    assert_eq!(vocab.num_ids, 53);
    let v = vocab.map(&s.ids);
    let mut b = GraphBuilder::new(vocab.num_ids as usize, 100, true);
    let mut attack = 0;
    for k in 0..n {
        let r = g.rows(k, s.len());
        let graph = b.build(
            &v[r.start..=r.end],
            &s.bytes[r.clone()],
            &s.labels[r.clone()],
        );
        attack += graph.y as usize;
        if k == 0 {
            assert_eq!(graph.nodes.len(), 29);
            assert_eq!(graph.edges.len(), 62);
        }
        // No window has uniform source counts: column 9 spans exactly [0, 1].
        let col9: Vec<f32> = graph.x.chunks(11).map(|x| x[9]).collect();
        let lo = col9.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = col9.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!((lo, hi), (0.0, 1.0), "window {k} has uniform source counts");
        assert!(graph.edges.len() <= 100 && graph.nodes.len() <= 53);
    }
    assert_eq!(attack, 197);
}

/// Spec §8.3 again, through the whole preprocess: the file as the only `train` file with no
/// validation (split mode `file`: a lone file stays in train).
#[test]
fn dos1_spec_figures_through_preprocess() {
    let Some(d) = shared_data("dos1_spec_figures_through_preprocess") else {
        return;
    };
    let dataset = DatasetConfig::from_json(&json!({
        "format": "can-train-and-test",
        "layout": "manifest",
        "files": [{"path": "DoS-1.csv", "role": "train"}],
    }))
    .unwrap();
    let stage = StageConfig::from_json(&json!({"profile": "paper", "split": "file"})).unwrap();
    let out = preprocess::preprocess(&d.join("can-train-and-test"), &dataset, &stage, 2).unwrap();
    let m = &out.manifest;
    assert_eq!(m.num_ids, 53);
    assert_eq!(out.vocab.ids.len(), 52);
    assert_eq!(m.splits["train"].windows, 901);
    assert_eq!(m.splits["train"].attack, 197);
    assert_eq!(m.splits["val"].windows, 0);
    assert_eq!(m.files[0].trailing_rows, 68);
    assert_eq!(m.files[0].read.as_ref().unwrap().rows, 90_169);
    let train = &out.sets["train"];
    let g0 = train.graph(0);
    assert_eq!((g0.num_nodes(), g0.edge_src.len()), (29, 62));
    assert_eq!(m.splits["train"].unk_row_rate, 0.0);
}

/// A window of the real file checked by hand: the first five frames with `W = 4`.
#[test]
fn hand_checked_window() {
    let Some(d) = shared_data("hand_checked_window") else {
        return;
    };
    let path = d.join("can-train-and-test/DoS-1.csv");
    let (frames, _) = read(&preset("can-train-and-test").unwrap(), &path, false);
    let vocab = Vocab::new(frames.iter().filter_map(|f| f.id));
    // The five frames: 1E5, 1E9, 0F9, 2F9, 199 — ranks 21, 22, 5, 27, 14 among the 52 IDs.
    let ids: Vec<u32> = frames[..5].iter().map(|f| f.id.unwrap()).collect();
    assert_eq!(ids, [0x1E5, 0x1E9, 0x0F9, 0x2F9, 0x199]);
    let v = vocab.map(&ids);
    assert_eq!(v, [21, 22, 5, 27, 14]);
    let bytes: Vec<[u8; 8]> = frames[..4].iter().map(|f| f.bytes).collect();
    let labels = [false; 4];
    let mut b = GraphBuilder::new(53, 4, false);
    let g = b.build(&v, &bytes, &labels).clone();
    // Nodes by vocabulary index; 199 (14) is target-only (successor of the last row).
    assert_eq!(g.nodes, [5, 14, 21, 22, 27]);
    // Rows 1E5→1E9, 1E9→0F9, 0F9→2F9, 2F9→199 in local indices, sorted.
    assert_eq!(g.edges, [(0, 4), (2, 3), (3, 0), (4, 1)]);
    assert_eq!(g.y, 0);
    let x = |i: usize| &g.x[i * 11..(i + 1) * 11];
    // Each source has c = 1 and the target-only node c = 0: min 0, max 1, so column 9 is 1
    // for sources and 0 for 199. Column 10 = row / (W−1).
    // 0F9 (row 2): 01 B3 40 03 16 7D 33 FA.
    let b255 = |v: [u32; 8]| v.map(|b| b as f64 / 255.0);
    let row = |idx: f64, by: [u32; 8], c9: f64, c10: f64| {
        let mut r = vec![idx];
        r.extend(b255(by));
        r.extend([c9, c10]);
        r
    };
    close(
        x(0),
        &row(
            5.0,
            [0x01, 0xB3, 0x40, 0x03, 0x16, 0x7D, 0x33, 0xFA],
            1.0,
            2.0 / 3.0,
        ),
        "0F9",
    );
    close(x(1), &row(14.0, [0; 8], 0.0, 0.0), "199 (target-only)");
    // 1E5 (row 0): 46 01 96 E0 01 FE 67 01.
    close(
        x(2),
        &row(
            21.0,
            [0x46, 0x01, 0x96, 0xE0, 0x01, 0xFE, 0x67, 0x01],
            1.0,
            0.0,
        ),
        "1E5",
    );
    // 1E9 (row 1): 00 10 00 0C 00 58 00 00.
    close(
        x(3),
        &row(
            22.0,
            [0x00, 0x10, 0x00, 0x0C, 0x00, 0x58, 0x00, 0x00],
            1.0,
            1.0 / 3.0,
        ),
        "1E9",
    );
    // 2F9 (row 3): 93 01 00 00 00 — five bytes, the rest absent (0).
    close(
        x(4),
        &row(27.0, [0x93, 0x01, 0, 0, 0, 0, 0, 0], 1.0, 1.0),
        "2F9",
    );

    // Window 0 at W = S = 100, node 1E5, against an independent (Python) computation.
    let vall = vocab.map(
        &frames[..101]
            .iter()
            .map(|f| f.id.unwrap())
            .collect::<Vec<_>>(),
    );
    let bytes: Vec<[u8; 8]> = frames[..100].iter().map(|f| f.bytes).collect();
    let mut b = GraphBuilder::new(53, 100, false);
    let g = b.build(&vall, &bytes, &[false; 100]).clone();
    let i = g.nodes.iter().position(|&n| n == 21).unwrap();
    close(
        &g.x[i * 11..(i + 1) * 11],
        &[
            21.0,
            70.0 / 255.0,
            1.0 / 255.0,
            0.490_631_808_278_867_1,
            0.711_111_111_111_111_1,
            1.0 / 255.0,
            254.0 / 255.0,
            0.506_753_812_636_165_6,
            1.0 / 255.0,
            1.0,
            1.0,
        ],
        "window 0, node 1E5",
    );
}

/// (file, rows, attack rows, frames per ID).
type Expected<'a> = (&'a str, usize, usize, &'a [(u32, usize)]);

#[test]
fn cic_iov2024_every_file() {
    let Some(d) = shared_data("cic_iov2024_every_file") else {
        return;
    };
    let f = preset("cic-iov2024").unwrap();
    let dir = d.join("cic-iov2024");
    // (file, rows, attack rows, frames per ID) from its SOURCES.md.
    let want: &[Expected] = &[
        ("decimal_DoS.csv", 74_663, 74_663, &[(291, 74_663)]),
        ("decimal_spoofing-GAS.csv", 9_991, 9_991, &[(513, 9_991)]),
        (
            "decimal_spoofing-RPM.csv",
            54_900,
            54_900,
            &[(476, 34_937), (513, 19_963)],
        ),
        (
            "decimal_spoofing-SPEED.csv",
            24_951,
            24_951,
            &[(344, 19_962), (513, 4_989)],
        ),
        (
            "decimal_spoofing-STEERING_WHEEL.csv",
            19_977,
            19_977,
            &[(128, 19_977)],
        ),
        ("decimal_benign.csv.zip", 1_223_737, 0, &[]),
    ];
    for (file, rows, attack, ids) in want {
        let (frames, stats) = read(&f, &dir.join(file), false);
        assert_eq!(
            (stats.rows as usize, frames.len()),
            (*rows, *rows),
            "{file}"
        );
        assert_eq!(attacks(&frames), *attack, "{file}");
        assert_eq!(stats.malformed, 0, "{file}");
        assert!(
            frames.iter().all(|f| f.len == 8 && f.ts.is_none()),
            "{file}"
        );
        if !ids.is_empty() {
            let got: Vec<(u32, usize)> = by_id(&frames).into_iter().collect();
            assert_eq!(got, *ids, "{file}");
        }
    }
}

#[test]
fn daga_zips_with_dlc_in_bits() {
    let Some(d) = shared_data("daga_zips_with_dlc_in_bits") else {
        return;
    };
    let f = preset("daga").unwrap();
    let dir = d.join("daga-volvo-v40");
    let want: &[(&str, usize, usize, &[u32])] = &[
        ("clean_V40_03.can.zip", 245_144, 0, &[]),
        (
            "DenialOfService_lowestID_V40_03.can.zip",
            254_164,
            13_860,
            &[0x1],
        ),
        ("MessageIDFuzzing_V40_03.can.zip", 245_297, 153, &[0x188]),
        (
            "PayloadFuzzing_ID_1_V40_03.can.zip",
            245_756,
            612,
            &[0x1, 0x8, 0x145, 0x2C5],
        ),
    ];
    for (file, rows, attack, attack_ids) in want {
        let (frames, stats) = read(&f, &dir.join(file), false);
        assert_eq!(
            (stats.rows as usize, frames.len()),
            (*rows, *rows),
            "{file}"
        );
        assert_eq!(stats.malformed, 0, "{file}");
        assert_eq!(attacks(&frames), *attack, "{file}");
        let ids: Vec<u32> = by_id(
            &frames
                .iter()
                .filter(|f| f.label)
                .copied()
                .collect::<Vec<_>>(),
        )
        .into_keys()
        .collect();
        assert_eq!(ids, *attack_ids, "{file}");
        // DLC 64 is in bits: 8 bytes.
        assert!(frames.iter().all(|f| f.len == 8), "{file}");
        assert!(frames.iter().all(|f| f.ts.is_some()), "{file}");
        println!(
            "{file}: non-monotonic timestamp steps {}",
            stats.non_monotonic_ts
        );
    }
}

#[test]
fn j1939_labelled_csv_and_candump_log() {
    let Some(d) = shared_data("j1939_labelled_csv_and_candump_log") else {
        return;
    };
    let dir = d.join("j1939-systemscyber");
    let f = preset("j1939").unwrap();
    for (file, rows, attack) in [
        ("labeled_TSC1.csv", 21_568, 923),
        ("labeled_address_claim.csv", 15_723, 2),
    ] {
        let (frames, stats) = read(&f, &dir.join(file), false);
        assert_eq!((stats.rows as usize, frames.len()), (rows, rows), "{file}");
        assert_eq!(stats.malformed, 0, "{file}");
        assert_eq!(attacks(&frames), attack, "{file}");
        // Decimal 29-bit IDs.
        assert!(
            frames
                .iter()
                .all(|f| f.id.is_some_and(|i| i <= 0x1FFF_FFFF))
        );
    }
    // The first row: can_id 217058307 (decimal), data 1804FA2BFFFFFFFF.
    let (frames, _) = read(&f, &dir.join("labeled_TSC1.csv"), false);
    assert_eq!(frames[0].id, Some(217_058_307));
    assert_eq!(
        frames[0].bytes,
        [0x18, 0x04, 0xFA, 0x2B, 0xFF, 0xFF, 0xFF, 0xFF]
    );

    // candump default form, unlabelled: needs assume_label.
    let c = preset("candump").unwrap();
    let log = dir.join("normal.log");
    assert!(read_all(&c, &log, &ReadOptions::default()).is_err());
    let (frames, stats) = read(&c, &log, true);
    assert_eq!(frames.len(), 19_957);
    assert_eq!(stats.malformed, 0);
    assert_eq!(attacks(&frames), 0);
    assert_eq!(frames[0].id, Some(0x18FC_F200));
    assert_eq!(frames[0].ts, Some(0.0));
    assert_eq!(
        frames[0].bytes,
        [0xE1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    );
}

/// The generic CSV mapping reads the real files exactly as the presets do, so a new dataset
/// needs no code.
#[test]
fn generic_mapping_equals_presets_on_real_files() {
    let Some(d) = shared_data("generic_mapping_equals_presets_on_real_files") else {
        return;
    };
    let cases = [
        (
            "can-train-and-test/DoS-1.csv",
            "can-train-and-test",
            json!({"kind": "csv", "header": true,
                   "id": {"col": "arbitration_id", "base": "hex", "bits": 11},
                   "payload": {"col": "data_field"},
                   "label": {"col": "attack", "attack": ["1"], "normal": ["0"]},
                   "timestamp": {"col": "timestamp"}}),
        ),
        (
            "cic-iov2024/decimal_spoofing-RPM.csv",
            "cic-iov2024",
            json!({"kind": "csv",
                   "id": {"col": "ID", "base": "dec"},
                   "bytes": {"cols": ["DATA_0","DATA_1","DATA_2","DATA_3","DATA_4","DATA_5","DATA_6","DATA_7"], "base": "dec"},
                   "label": {"col": "label", "attack": ["ATTACK"], "normal": ["BENIGN"]}}),
        ),
        (
            "daga-volvo-v40/MessageIDFuzzing_V40_03.can.zip",
            "daga",
            json!({"kind": "csv",
                   "id": {"col": "CAN_ID", "base": "hex"},
                   "payload": {"col": "PAYLOAD_HEX"},
                   "dlc": {"col": "DLC", "unit": "bits"},
                   "label": {"col": "ANOMALY", "attack": ["true"], "normal": ["false"]},
                   "timestamp": {"col": "timestamp"}}),
        ),
        (
            "j1939-systemscyber/labeled_TSC1.csv",
            "j1939",
            // Columns by 0-based index work with a header too.
            json!({"kind": "csv",
                   "id": {"col": 2, "base": "dec"},
                   "payload": {"col": 4},
                   "dlc": {"col": 3},
                   "label": {"col": 13, "normal": ["normal"]},
                   "timestamp": {"col": 0}}),
        ),
    ];
    for (file, name, mapping) in cases {
        let p = d.join(file);
        let (a, _) = read(&preset(name).unwrap(), &p, false);
        let (b, _) = read(&parse_format("format", &mapping).unwrap(), &p, false);
        assert_eq!(a.len(), b.len(), "{file}");
        assert!(
            a == b,
            "{file}: the mapping reads other frames than preset `{name}`"
        );
    }
}

/// HCRL Car-Hacking originals are not in `shared/data/can` (the pipeline reads them through
/// can-train-and-test v1.5): their shapes are checked on rows in the published layout.
#[test]
fn hcrl_car_hacking_rows() {
    use kdbuild::train::data::reader::read_bytes;
    let f = preset("hcrl-car-hacking").unwrap();
    let csv = "1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R\r\n\
               1478198376.389636,018f,8,fe,5b,00,00,00,3c,00,00,R\r\n\
               1478198376.389864,0000,8,00,00,00,00,00,00,00,00,T\r\n\
               1478198376.390000,05f0,2,01,00,R\r\n";
    let (frames, stats) = read_bytes(&f, csv.as_bytes(), &ReadOptions::default()).unwrap();
    assert_eq!(frames.len(), 4);
    assert_eq!(stats.malformed, 0);
    assert_eq!(
        frames.iter().map(|f| f.label).collect::<Vec<_>>(),
        [false, false, true, false]
    );
    assert_eq!(
        (frames[3].id, frames[3].len, frames[3].bytes[0]),
        (Some(0x5F0), 2, 1)
    );
    let txt = "Timestamp: 1479121434.850202        ID: 0350    000    DLC: 8    05 28 84 66 6d 00 00 a2\n";
    let (frames, _) = read_bytes(
        &f,
        txt.as_bytes(),
        &ReadOptions {
            assume_label: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        frames[0].bytes,
        [0x05, 0x28, 0x84, 0x66, 0x6d, 0x00, 0x00, 0xa2]
    );
}
