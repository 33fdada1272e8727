//! Synthetic CAN-like graph sets, for tests and benchmarks that must not depend on the
//! preprocess stage or on downloaded data.
//!
//! [`window_graphs`] turns a stream of frames into window graphs following spec §3.1–§3.3
//! (rows `(v_i, v_{i+1}, bytes_i)`, nodes by vocabulary index, distinct sorted edges, the 11
//! node features, column 9's raw-count quirk included). It is a fixture builder: the
//! preprocess stage owns the real one. [`stream`] simulates a periodic bus with optional DoS
//! (ID 0 floods) or fuzzing (random IDs and payloads) injections.

use rand::Rng as _;
use rand::SeedableRng;

use super::batch::Splits;
use super::init::Rng;
use crate::train::data::graphs::{GraphSet, NODE_FEATURES};

/// One frame, its ID already mapped to a vocabulary index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame {
    pub id: u32,
    pub bytes: [u8; 8],
    pub len: u8,
    pub attack: bool,
}

/// Appends the windows of one stream to `set` (spec §3.1: `m = n−1` rows; a single partial
/// window if `1 ≤ m < w`; else `⌊(m−w)/s⌋+1` windows).
pub fn window_graphs(frames: &[Frame], w: usize, s: usize, file: u32, set: &mut GraphSet) {
    if frames.len() < 2 {
        return;
    }
    let m = frames.len() - 1;
    let count = if m < w { 1 } else { (m - w) / s + 1 };
    for k in 0..count {
        let start = k * s;
        let end = (start + w).min(m);
        push_window(frames, start, end, w, file, k as u32, set);
    }
}

fn push_window(
    frames: &[Frame],
    start: usize,
    end: usize,
    w: usize,
    file: u32,
    window: u32,
    set: &mut GraphSet,
) {
    let rows: Vec<(u32, u32, &Frame)> = (start..end)
        .map(|i| (frames[i].id, frames[i + 1].id, &frames[i]))
        .collect();
    let mut nodes: Vec<u32> = rows.iter().flat_map(|r| [r.0, r.1]).collect();
    nodes.sort();
    nodes.dedup();
    let local = |v: u32| nodes.binary_search(&v).expect("node present") as u32;
    let n = nodes.len();
    let mut count = vec![0usize; n];
    let mut sums = vec![[0f64; 8]; n];
    let mut last = vec![0usize; n];
    let mut node_y = vec![0u8; n];
    for (pos, (src, _, f)) in rows.iter().enumerate() {
        let a = local(*src) as usize;
        count[a] += 1;
        for (s, &b) in sums[a].iter_mut().zip(&f.bytes).take(f.len as usize) {
            *s += b as f64 / 255.0;
        }
        last[a] = pos;
        if f.attack {
            node_y[a] = 1;
        }
    }
    let (cmin, cmax) = (
        *count.iter().min().expect("nodes"),
        *count.iter().max().expect("nodes"),
    );
    let mut x = vec![0f32; n * NODE_FEATURES];
    for a in 0..n {
        let row = &mut x[a * NODE_FEATURES..(a + 1) * NODE_FEATURES];
        row[0] = nodes[a] as f32;
        if count[a] > 0 {
            for j in 0..8 {
                row[1 + j] = (sums[a][j] / count[a] as f64) as f32;
            }
            row[10] = last[a] as f32 / (w.max(2) - 1) as f32;
        }
        row[9] = if cmax == cmin {
            count[a] as f32
        } else {
            (count[a] - cmin) as f32 / (cmax - cmin) as f32
        };
    }
    let mut edges: Vec<(u32, u32)> = rows.iter().map(|r| (local(r.0), local(r.1))).collect();
    edges.sort();
    edges.dedup();
    let y = rows.iter().any(|r| r.2.attack) as u8;
    set.push(&x, &node_y, &edges, None, y, file, window);
}

/// Kinds of injected traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    None,
    /// Bursts of ID 0 with an all-zero payload (can-train-and-test DoS).
    Dos,
    /// Bursts of random IDs (UNK included) with random payloads.
    Fuzzing,
}

/// A simulated stream of `frames` frames over IDs `1..num_ids−1` (0 is reserved for DoS,
/// `num_ids−1` is UNK): each ID has a period; attack bursts cover about `attack_share` of the
/// stream, in bursts of 50–150 frames where every other frame is injected.
pub fn stream(
    num_ids: usize,
    frames: usize,
    attack: Attack,
    attack_share: f64,
    seed: u64,
) -> Vec<Frame> {
    assert!(num_ids >= 4, "need ids 0, UNK and at least two normal ids");
    let mut rng = Rng::seed_from_u64(seed);
    let normal: Vec<u32> = (1..num_ids as u32 - 1).collect();
    // A vehicle's schedule: periods 1..=8 ticks, fixed payload pattern per ID.
    let periods: Vec<usize> = normal.iter().map(|_| rng.random_range(1..=8)).collect();
    let lens: Vec<u8> = normal.iter().map(|_| rng.random_range(2..=8)).collect();
    let base: Vec<[u8; 8]> = normal.iter().map(|_| rng.random()).collect();
    let mut out = Vec::with_capacity(frames);
    let mut tick = 0usize;
    let mut burst_left = 0usize;
    while out.len() < frames {
        for (k, &id) in normal.iter().enumerate() {
            if !(tick + k).is_multiple_of(periods[k]) || out.len() >= frames {
                continue;
            }
            if burst_left == 0
                && attack != Attack::None
                && rng.random::<f64>() < attack_share / 100.0
            {
                burst_left = rng.random_range(50..150);
            }
            if burst_left > 0 {
                burst_left -= 1;
                if burst_left.is_multiple_of(2) {
                    out.push(match attack {
                        Attack::Dos => Frame {
                            id: 0,
                            bytes: [0; 8],
                            len: 8,
                            attack: true,
                        },
                        _ => Frame {
                            id: rng.random_range(0..num_ids as u32),
                            bytes: rng.random(),
                            len: 8,
                            attack: true,
                        },
                    });
                    if out.len() >= frames {
                        break;
                    }
                }
            }
            let mut bytes = base[k];
            bytes[0] = bytes[0].wrapping_add((tick % 16) as u8);
            out.push(Frame {
                id,
                bytes,
                len: lens[k],
                attack: false,
            });
        }
        tick += 1;
    }
    out.truncate(frames);
    out
}

/// Splits built from simulated streams: `train` (two streams: attack-free and with attacks),
/// `val`, and two test splits (`test_01_dos`, `test_02_fuzzing`), windows of `w` rows.
pub fn splits(num_ids: usize, windows_per_stream: usize, w: usize, seed: u64) -> Splits {
    let n = windows_per_stream * w + 1;
    let mut train = GraphSet::new();
    train.files = vec!["train/attack-free.csv".into(), "train/dos.csv".into()];
    window_graphs(
        &stream(num_ids, n, Attack::None, 0.0, seed),
        w,
        w,
        0,
        &mut train,
    );
    window_graphs(
        &stream(num_ids, n, Attack::Dos, 1.0, seed + 1),
        w,
        w,
        1,
        &mut train,
    );
    let mut val = GraphSet::new();
    val.files = vec!["train/dos.csv".into()];
    window_graphs(
        &stream(num_ids, n / 2, Attack::Dos, 1.0, seed + 2),
        w,
        w,
        0,
        &mut val,
    );
    let mut dos = GraphSet::new();
    dos.files = vec!["test/dos-1.csv".into(), "test/normal.csv".into()];
    window_graphs(
        &stream(num_ids, n / 2, Attack::Dos, 1.0, seed + 3),
        w,
        w,
        0,
        &mut dos,
    );
    window_graphs(
        &stream(num_ids, n / 4, Attack::None, 0.0, seed + 4),
        w,
        w,
        1,
        &mut dos,
    );
    let mut fuzz = GraphSet::new();
    fuzz.files = vec!["test/fuzzing-1.csv".into()];
    window_graphs(
        &stream(num_ids, n / 2, Attack::Fuzzing, 1.0, seed + 5),
        w,
        w,
        0,
        &mut fuzz,
    );
    Splits {
        train,
        val,
        tests: vec![
            ("test_01_dos".into(), dos),
            ("test_02_fuzzing".into(), fuzz),
        ],
        num_ids,
        vocab_sha256: "synthetic".into(),
    }
}

/// A minimal reader for the `can-train-and-test` CSV layout
/// (`timestamp,arbitration_id,data_field,attack`, hex IDs and payloads), for benchmarks and
/// tests on the sample file; the preprocess stage owns the real readers (spec §2).
/// Returns `(id, bytes, len, attack)` per row; malformed rows are skipped.
pub fn read_ctt_csv(text: &str) -> Vec<(u32, [u8; 8], u8, bool)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 4 {
            continue;
        }
        let Ok(id) = u32::from_str_radix(f[1].trim(), 16) else {
            continue;
        };
        let hex = f[2].trim();
        let hex = if hex.len() % 2 == 1 {
            format!("0{hex}")
        } else {
            hex.to_string()
        };
        let mut bytes = [0u8; 8];
        let len = (hex.len() / 2).min(8);
        let mut ok = true;
        for (j, b) in bytes.iter_mut().enumerate().take(len) {
            match u8::from_str_radix(&hex[2 * j..2 * j + 2], 16) {
                Ok(v) => *b = v,
                Err(_) => ok = false,
            }
        }
        if ok {
            out.push((id, bytes, len as u8, f[3].trim() == "1"));
        }
    }
    out
}

/// Splits one can-train-and-test stream into interleaved blocks of 20 windows: of every five
/// blocks, three go to `train`, one to `val`, one to `test` (no embargo; adjacent blocks are
/// similar, so this measures fit, not generalisation). The vocabulary is built from the train
/// rows' IDs, UNK last. A stand-in for the preprocess stage in benchmarks and learning tests.
pub fn stream_splits(rows: &[(u32, [u8; 8], u8, bool)], w: usize, name: &str) -> Splits {
    let n_windows = rows.len().saturating_sub(1) / w;
    let part_of = |k: usize| match (k / 20) % 5 {
        0..=2 => 0,
        3 => 1,
        _ => 2,
    };
    let mut ids: Vec<u32> = (0..n_windows)
        .filter(|&k| part_of(k) == 0)
        .flat_map(|k| rows[k * w..=k * w + w].iter().map(|r| r.0))
        .collect();
    ids.sort();
    ids.dedup();
    let unk = ids.len() as u32;
    let frames: Vec<Frame> = rows
        .iter()
        .map(|r| Frame {
            id: ids.binary_search(&r.0).map(|i| i as u32).unwrap_or(unk),
            bytes: r.1,
            len: r.2,
            attack: r.3,
        })
        .collect();
    let mut whole = GraphSet::new();
    window_graphs(&frames, w, w, 0, &mut whole);
    let mut parts = [GraphSet::new(), GraphSet::new(), GraphSet::new()];
    for p in &mut parts {
        p.files = vec![name.to_string()];
    }
    for k in 0..whole.len() {
        let g = whole.graph(k);
        let edges: Vec<(u32, u32)> = g
            .edge_src
            .iter()
            .copied()
            .zip(g.edge_dst.iter().copied())
            .collect();
        parts[part_of(k)].push(g.x, g.node_y, &edges, None, g.y, 0, k as u32);
    }
    let [train, val, test] = parts;
    Splits {
        train,
        val,
        tests: vec![("test".into(), test)],
        num_ids: ids.len() + 1,
        vocab_sha256: "stream".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §3.5's worked example (node features only; edge features are the preprocess
    /// stage's).
    #[test]
    fn worked_example() {
        let f = |id, bytes: &[u8], attack| {
            let mut b = [0u8; 8];
            b[..bytes.len()].copy_from_slice(bytes);
            Frame {
                id,
                bytes: b,
                len: bytes.len() as u8,
                attack,
            }
        };
        let frames = [
            f(0, &[0xFF], false),
            f(1, &[0x01, 0x02], false),
            f(0, &[0x00], true),
            f(0, &[0xFF], false),
            f(2, &[], false),
        ];
        let mut s = GraphSet::new();
        window_graphs(&frames, 4, 4, 0, &mut s);
        assert_eq!(s.len(), 1);
        let g = s.graph(0);
        assert_eq!(g.y, 1);
        let edges: Vec<(u32, u32)> = g
            .edge_src
            .iter()
            .copied()
            .zip(g.edge_dst.iter().copied())
            .collect();
        assert_eq!(edges, vec![(0, 0), (0, 1), (0, 2), (1, 0)]);
        let x = |n: usize, c: usize| g.x[n * NODE_FEATURES + c];
        assert!((x(0, 1) - 0.6667).abs() < 1e-4 && x(0, 9) == 1.0 && x(0, 10) == 1.0);
        assert!((x(1, 1) - 1.0 / 255.0).abs() < 1e-6 && (x(1, 2) - 2.0 / 255.0).abs() < 1e-6);
        assert!((x(1, 9) - 1.0 / 3.0).abs() < 1e-6 && (x(1, 10) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!((x(2, 0), x(2, 9), x(2, 10)), (2.0, 0.0, 0.0));
    }

    #[test]
    fn synthetic_splits_have_both_classes() {
        let s = splits(12, 40, 50, 1);
        for set in [&s.train, &s.val, &s.tests[0].1] {
            assert!(set.y.contains(&1) && set.y.contains(&0));
            set.check().unwrap();
        }
    }
}
