//! Bad input, each with its documented outcome (`reader` module table): skipped and counted,
//! kept as UNK and counted, or an error that names file, line and field — never a panic.

mod data_support;

use std::path::Path;

use kdbuild::train::data::format::preset;
use kdbuild::train::data::options::{DatasetConfig, StageConfig};
use kdbuild::train::data::preprocess::{self, PreprocessError};
use kdbuild::train::data::reader::{ReadError, ReadOptions, ReadStats, read_all, read_bytes};
use serde_json::json;

use data_support::{ctt_csv, put, synthetic};

const HEADER: &str = "timestamp,arbitration_id,data_field,attack\n";

/// `n` good can-train-and-test rows.
fn good_rows(n: usize) -> String {
    (0..n)
        .map(|i| format!("{i}.0,1{:02X},0102030405060708,0\n", i % 7))
        .collect()
}

fn lenient() -> ReadOptions {
    ReadOptions {
        malformed_threshold: 1.0,
        ..Default::default()
    }
}

fn ctt(
    text: &str,
    opts: &ReadOptions,
) -> Result<(Vec<kdbuild::train::data::frame::Frame>, ReadStats), ReadError> {
    read_bytes(
        &preset("can-train-and-test").unwrap(),
        text.as_bytes(),
        opts,
    )
}

#[test]
fn truncated_line_is_skipped_and_counted() {
    let text = format!("{HEADER}{}5.0,1E5,46\n{}", good_rows(3), good_rows(2));
    let (frames, s) = ctt(&text, &lenient()).unwrap();
    assert_eq!(frames.len(), 5);
    assert_eq!((s.rows, s.malformed), (6, 1));
    assert_eq!(s.malformed_examples[0].line, 5);
    assert_eq!(s.malformed_examples[0].field, "row");
    assert!(
        s.malformed_examples[0]
            .message
            .contains("expected 4 fields, found 3")
    );
    // A truncated last line without its newline, too.
    let (frames, s) = ctt(&format!("{HEADER}{}9.0,1E", good_rows(2)), &lenient()).unwrap();
    assert_eq!((frames.len(), s.malformed), (2, 1));
}

#[test]
fn too_many_malformed_rows_is_an_error_naming_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    // 2 bad rows of 102: above the default 1%.
    let text = format!(
        "{HEADER}{}1.0,1E5,0102,7\n{}2.0,1E5\n",
        good_rows(50),
        good_rows(50)
    );
    let p = put(d.path(), "bad.csv", text.as_bytes());
    let e = read_all(
        &preset("can-train-and-test").unwrap(),
        &p,
        &ReadOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            ReadError::TooManyMalformed {
                malformed: 2,
                rows: 102,
                line: 52,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("bad.csv") && msg.contains("line 52") && msg.contains("`attack`"),
        "{msg}"
    );
    assert!(msg.contains("expected a label"), "{msg}");
    // 1 bad row of 101 is under 1%: read, and counted.
    let text = format!("{HEADER}{}1.0,1E5,0102,7\n{}", good_rows(50), good_rows(50));
    let p = put(d.path(), "ok.csv", text.as_bytes());
    let (_, s) = read_all(
        &preset("can-train-and-test").unwrap(),
        &p,
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(s.malformed, 1);
}

#[test]
fn non_hex_id_is_kept_as_unk_and_counted() {
    let text = format!("{HEADER}1.0,XYZ,01,0\n2.0,na,01,0\n3.0,,01,0\n4.0,1E5,01,0\n");
    let (frames, s) = ctt(&text, &lenient()).unwrap();
    assert_eq!(frames.len(), 4);
    assert_eq!(s.unparsable_ids, 3);
    assert_eq!(s.malformed, 0);
    assert!(frames[..3].iter().all(|f| f.id.is_none()));
}

#[test]
fn payload_longer_than_8_bytes_keeps_the_first_8_and_is_counted() {
    let text = format!("{HEADER}1.0,1E5,00112233445566778899AABB,0\n");
    let (frames, s) = ctt(&text, &lenient()).unwrap();
    assert_eq!(
        frames[0].bytes,
        [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]
    );
    assert_eq!(frames[0].len, 8);
    assert_eq!(s.long_payloads, 1);
    assert_eq!(s.malformed, 0);
    // A payload that is not hex is malformed.
    let (_, s) = ctt(&format!("{HEADER}1.0,1E5,01ZZ,0\n"), &lenient()).unwrap();
    assert_eq!(
        (s.malformed, s.malformed_examples[0].field.as_str()),
        (1, "data_field")
    );
}

#[test]
fn unknown_label_value_is_skipped_when_both_lists_are_given() {
    let (frames, s) = ctt(
        &format!("{HEADER}1.0,1E5,01,yes\n2.0,1E5,01,1\n"),
        &lenient(),
    )
    .unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(s.malformed_examples[0].field, "attack");
    assert!(s.malformed_examples[0].message.contains("\"yes\""));
    // With only a normal list (J1939), any other value is an attack.
    let j = "timestamp,iface,can_id,dlc,data,label\n0.0,can0,217058307,8,1804FA2BFFFFFFFF,normal\n0.1,can0,217058307,8,1804FA2BFFFFFFFF,something_new\n";
    let mapping = json!({"kind": "csv", "id": {"col": "can_id", "base": "dec"}, "payload": {"col": "data"},
                         "dlc": {"col": "dlc"}, "label": {"col": "label", "normal": ["normal"]}});
    let f = kdbuild::train::data::format::parse_format("format", &mapping).unwrap();
    let (frames, _) = read_bytes(&f, j.as_bytes(), &lenient()).unwrap();
    assert_eq!(
        frames.iter().map(|f| f.label).collect::<Vec<_>>(),
        [false, true]
    );
}

#[test]
fn empty_file_gives_no_frames_and_a_warning() {
    for text in ["", HEADER, "\n\n"] {
        let (frames, s) = ctt(text, &ReadOptions::default()).unwrap();
        assert!(frames.is_empty());
        assert_eq!(s.malformed, 0);
    }
    let (frames, _) =
        read_bytes(&preset("candump").unwrap(), b"", &ReadOptions::default()).unwrap();
    assert!(frames.is_empty());

    // In a dataset: the empty file is reported; a dataset with no training window is an error.
    let d = tempfile::tempdir().unwrap();
    put(d.path(), "train_01/empty.csv", b"");
    put(
        d.path(),
        "train_01/good.csv",
        ctt_csv(&synthetic(3000, &[1, 2, 3], 0..0, 0, 1)).as_bytes(),
    );
    put(
        d.path(),
        "test_01/t.csv",
        ctt_csv(&synthetic(500, &[1, 2, 3], 0..500, 0, 2)).as_bytes(),
    );
    let cfg = DatasetConfig::from_json(&json!({"format": "can-train-and-test"})).unwrap();
    let m = preprocess::preprocess(d.path(), &cfg, &StageConfig::default(), 1)
        .unwrap()
        .manifest;
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("train_01/empty.csv") && w.contains("no frames")),
        "{:?}",
        m.warnings
    );
    std::fs::remove_file(d.path().join("train_01/good.csv")).unwrap();
    let e = preprocess::preprocess(d.path(), &cfg, &StageConfig::default(), 1).unwrap_err();
    assert!(
        matches!(e, PreprocessError::NoTrainingWindows { .. }),
        "{e}"
    );
}

fn zip_with(path: &Path, members: &[(&str, &[u8])]) {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn zip_with_two_data_members_is_an_error_naming_them() {
    let d = tempfile::tempdir().unwrap();
    let rows = ctt_csv(&synthetic(300, &[1, 2], 0..0, 0, 3));
    std::fs::create_dir_all(d.path().join("train_01")).unwrap();
    let z = d.path().join("train_01/two.csv.zip");
    zip_with(
        &z,
        &[
            ("a.csv", rows.as_bytes()),
            ("b.csv", rows.as_bytes()),
            ("__MACOSX/._a.csv", b"x"),
        ],
    );
    let e = read_all(
        &preset("can-train-and-test").unwrap(),
        &z,
        &ReadOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ReadError::ZipMembers { ref members, .. } if members == &["a.csv", "b.csv"]),
        "{msg}"
    );
    assert!(msg.contains("two.csv.zip"), "{msg}");
    // Through the preprocess, the error still names the archive.
    let cfg = DatasetConfig::from_json(&json!({"format": "can-train-and-test"})).unwrap();
    let e = preprocess::preprocess(d.path(), &cfg, &StageConfig::default(), 1).unwrap_err();
    assert!(e.to_string().contains("two.csv.zip"), "{e}");
    // One data member plus macOS metadata is read in place.
    let one = d.path().join("one.csv.zip");
    zip_with(
        &one,
        &[
            ("__MACOSX/._a.csv", b"x"),
            ("a.csv", rows.as_bytes()),
            (".hidden", b"y"),
        ],
    );
    let (frames, _) = read_all(
        &preset("can-train-and-test").unwrap(),
        &one,
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(frames.len(), 300);
}

#[test]
fn crlf_and_bom_read_as_usual() {
    let lf = format!("{HEADER}1.0,1E5,0102,0\n2.0,0C1,FF,1\n");
    let crlf = format!("\u{feff}{}", lf.replace('\n', "\r\n"));
    let (a, _) = ctt(&lf, &ReadOptions::default()).unwrap();
    let (b, s) = ctt(&crlf, &ReadOptions::default()).unwrap();
    assert_eq!(a, b);
    assert_eq!((s.rows, s.malformed), (2, 0));
    // Headerless (HCRL) with a BOM: the first field is still the timestamp.
    let h = "\u{feff}1.5,0316,2,05,21,R\r\n";
    let (f, s) = read_bytes(
        &preset("hcrl-car-hacking").unwrap(),
        h.as_bytes(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!((f[0].ts, f[0].id, s.malformed), (Some(1.5), Some(0x316), 0));
    // candump with BOM and CRLF.
    let c = "\u{feff}(1.0) can0 123#0102 0\r\n(2.0) can0 124#03 1\r\n";
    let (f, s) = read_bytes(
        &preset("candump").unwrap(),
        c.as_bytes(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!((f.len(), s.malformed), (2, 0));
    assert_eq!((f[0].id, f[1].label), (Some(0x123), true));
    // Quoted fields (RFC 4180), as in J1939's `pgn_label`.
    let q = "timestamp,arbitration_id,data_field,attack\n\"1.0\",\"1E5\",\"01,02\",0\n";
    let (f, s) = ctt(q, &lenient()).unwrap();
    assert_eq!(
        (f.len(), s.malformed),
        (0, 1),
        "a comma is not a payload separator"
    );
    let q = "timestamp,arbitration_id,data_field,attack\n\"1.0\",\"1E5\",\"01 02\",\"0\"\n";
    let (f, _) = ctt(q, &lenient()).unwrap();
    assert_eq!(&f[0].bytes[..2], &[1, 2]);
}

#[test]
fn a_29_bit_id_in_an_11_bit_format_is_skipped_and_counted() {
    let (frames, s) = ctt(
        &format!("{HEADER}1.0,18FCF200,01,0\n2.0,7FF,01,0\n3.0,800,01,0\n"),
        &lenient(),
    )
    .unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].id, Some(0x7FF));
    assert_eq!(s.malformed, 2);
    assert_eq!(s.malformed_examples[0].field, "arbitration_id");
    assert!(
        s.malformed_examples[0].message.contains("11 bits"),
        "{}",
        s.malformed_examples[0].message
    );
    // In a 29-bit format the same ID is fine; wider than 29 bits is not.
    let c = "(1.0) can0 18FCF200#01 0\n(1.0) can0 3FFFFFFF#01 0\n";
    let (f, s) = read_bytes(&preset("candump").unwrap(), c.as_bytes(), &lenient()).unwrap();
    assert_eq!(f.len(), 1);
    // 0x3FFFFFFF has the error flag (0x20000000) set: an error frame, skipped and counted.
    assert_eq!((s.error_frames, s.malformed), (1, 0));
}
