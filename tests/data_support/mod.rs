//! Shared helpers of the `data_*` integration tests.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real CAN files (`<repo>/../shared/data/can`, or `$KDBUILD_SHARED_DATA`). `None` (with a
/// printed notice) when absent; absent data is a failure when `CI=true`.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KDBUILD_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/can"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{test}: the real CAN data is missing at `{}` and CI=true (set KDBUILD_SHARED_DATA)",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: real CAN data not found at `{}` (set KDBUILD_SHARED_DATA to run it)",
        dir.display()
    );
    None
}

/// A frame for synthetic files.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub ts: f64,
    pub id: u32,
    pub data: [u8; 8],
    pub len: usize,
    pub attack: bool,
}

/// A deterministic synthetic trace: `n` frames over `ids` IDs, attacks (ID `attack_id`)
/// injected in rows `attack` (a range of frame indices), with a seed mixing the IDs.
pub fn synthetic(
    n: usize,
    ids: &[u32],
    attack: std::ops::Range<usize>,
    attack_id: u32,
    seed: u64,
) -> Vec<Row> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let r = next();
            let is_attack = attack.contains(&i) && r % 3 == 0;
            let id = if is_attack {
                attack_id
            } else {
                ids[(r as usize >> 8) % ids.len()]
            };
            let mut data = [0u8; 8];
            for (k, b) in data.iter_mut().enumerate() {
                *b = if is_attack { 0 } else { (r >> (8 * k)) as u8 };
            }
            Row {
                ts: 1_000.0 + i as f64 * 0.001,
                id,
                data,
                len: 8,
                attack: is_attack,
            }
        })
        .collect()
}

/// `rows` in the can-train-and-test format (LF).
pub fn ctt_csv(rows: &[Row]) -> String {
    let mut s = String::from("timestamp,arbitration_id,data_field,attack\n");
    for r in rows {
        let _ = write!(s, "{},{:03X},", r.ts, r.id);
        for b in &r.data[..r.len] {
            let _ = write!(s, "{b:02X}");
        }
        let _ = writeln!(s, ",{}", r.attack as u8);
    }
    s
}

/// Writes `text` to `dir/rel`, creating folders.
pub fn put(dir: &Path, rel: &str, text: &[u8]) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}
