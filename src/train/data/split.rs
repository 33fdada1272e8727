//! Leak-free splits (spec §2.4): whole blocks of a stream's window sequence, never random
//! windows, with `e` embargo windows between a validation block and the training windows
//! around it, so that no validation window shares a row with a training window.
//!
//! - `train` files, mode `block`: a file with `n < 10` windows is all train; otherwise a block
//!   of `v = max(1, round(val_fraction·n))` windows starting at `s ~ U[0, n−v]`, drawn from
//!   a generator keyed by `(seed, "split", file hash)`, is validation; `e` windows on each side
//!   belong to no split.
//! - `train` files, mode `file`: attack-free and attack-containing files are shuffled apart
//!   and moved to validation until each group's validation windows reach `val_fraction`,
//!   keeping at least one file per group in train.
//! - `stream` files are cut in order into `[train | e | val | e | test]` by
//!   `stream_fractions`, by window index (`axis = rows`) or by time (`axis = time`: cuts at
//!   `t_min + f·(t_max − t_min)`, a window belonging to the segment of its first frame).
//! - `test:<name>` files put every window into split `<name>`.
//!
//! `e` = `embargo_windows`, raised to `ceil(W/S)` when windows overlap.

use rand::Rng;
use rand::seq::SliceRandom;
use thiserror::Error;

use super::seed;

/// The split index of the training split.
pub const TRAIN: u16 = 0;
/// The split index of the validation split.
pub const VAL: u16 = 1;
/// A window in no split (embargo).
pub const EMBARGO: u16 = u16::MAX;

/// How `train` files are split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Block,
    File,
}

/// How `stream` files are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Rows,
    Time,
}

/// The split settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitConfig {
    pub mode: Mode,
    pub val_fraction: f64,
    /// Already raised to `ceil(W/S)` for overlapping windows.
    pub embargo: usize,
    /// train / val / test shares of each stream.
    pub stream_fractions: [f64; 3],
    pub axis: Axis,
    pub seed: u64,
}

/// What kind of file a split input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Train,
    Stream {
        /// Split index of `test_streams`.
        test: u16,
    },
    Test {
        split: u16,
    },
}

/// One file as the splitter sees it.
#[derive(Clone, Debug)]
pub struct SplitFile {
    pub kind: Kind,
    /// Content hash: keys the block position, so a file's split does not depend on the others.
    pub hash: [u8; 32],
    pub windows: usize,
    pub has_attack: bool,
    /// For `axis = time`: each window's first-frame timestamp.
    pub window_ts: Vec<Option<f64>>,
}

#[derive(Debug, Error, PartialEq)]
pub enum SplitError {
    #[error(
        "file #{file} has no timestamps, so it cannot be cut by time (use `split_axis = \"rows\"`)"
    )]
    NoTimestamps { file: usize },
}

/// The result: per file, per window, the split index (or [`EMBARGO`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignment {
    pub windows: Vec<Vec<u16>>,
    pub warnings: Vec<String>,
}

/// Assigns every window of every file to a split.
pub fn assign(files: &[SplitFile], cfg: &SplitConfig) -> Result<Assignment, SplitError> {
    let mut out = Assignment {
        windows: Vec::with_capacity(files.len()),
        warnings: Vec::new(),
    };
    for (i, f) in files.iter().enumerate() {
        let a = match f.kind {
            Kind::Test { split } => vec![split; f.windows],
            Kind::Stream { test } => match cfg.axis {
                Axis::Rows => stream_rows(f.windows, cfg, test),
                Axis::Time => stream_time(&f.window_ts, cfg, test)
                    .ok_or(SplitError::NoTimestamps { file: i })?,
            },
            Kind::Train => match cfg.mode {
                Mode::Block => block(f.windows, cfg, &f.hash),
                // Filled in below, once all files are known.
                Mode::File => vec![TRAIN; f.windows],
            },
        };
        out.windows.push(a);
    }
    if cfg.mode == Mode::File {
        file_mode(files, cfg, &mut out);
    }
    Ok(out)
}

/// Block mode for one training file.
pub fn block(n: usize, cfg: &SplitConfig, hash: &[u8; 32]) -> Vec<u16> {
    let mut a = vec![TRAIN; n];
    if n < 10 {
        return a;
    }
    let v = ((cfg.val_fraction * n as f64).round() as usize).clamp(1, n);
    let mut rng = seed::rng(cfg.seed, "split", hash);
    let s = rng.random_range(0..=n - v);
    for w in &mut a[s..s + v] {
        *w = VAL;
    }
    for w in &mut a[s.saturating_sub(cfg.embargo)..s] {
        *w = EMBARGO;
    }
    for w in &mut a[s + v..(s + v + cfg.embargo).min(n)] {
        *w = EMBARGO;
    }
    a
}

/// Segments 0/1/2 → train/val/test, with `e` embargo windows at the start of each later
/// segment.
fn segments_to_splits(seg: &[u8], e: usize, test: u16) -> Vec<u16> {
    let mut out = Vec::with_capacity(seg.len());
    let mut since_change = usize::MAX;
    let mut prev = 0u8;
    for &s in seg {
        if s != prev {
            since_change = 0;
            prev = s;
        }
        let split = match s {
            0 => TRAIN,
            1 => VAL,
            _ => test,
        };
        out.push(if since_change < e { EMBARGO } else { split });
        since_change = since_change.saturating_add(1);
    }
    out
}

fn stream_rows(n: usize, cfg: &SplitConfig, test: u16) -> Vec<u16> {
    let [f0, f1, _] = cfg.stream_fractions;
    let b1 = ((f0 * n as f64).round() as usize).min(n);
    let b2 = (((f0 + f1) * n as f64).round() as usize).clamp(b1, n);
    let seg: Vec<u8> = (0..n)
        .map(|k| {
            if k < b1 {
                0
            } else if k < b2 {
                1
            } else {
                2
            }
        })
        .collect();
    segments_to_splits(&seg, cfg.embargo, test)
}

/// `None` if no window has a timestamp.
fn stream_time(ts: &[Option<f64>], cfg: &SplitConfig, test: u16) -> Option<Vec<u16>> {
    if ts.is_empty() {
        return Some(Vec::new());
    }
    let (lo, hi) = ts
        .iter()
        .flatten()
        .fold(None, |acc: Option<(f64, f64)>, &t| {
            Some(acc.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
        })?;
    let [f0, f1, _] = cfg.stream_fractions;
    let c1 = lo + f0 * (hi - lo);
    let c2 = lo + (f0 + f1) * (hi - lo);
    // Segments never go back: a window whose timestamp steps back stays in the current one.
    let mut cur = 0u8;
    let seg: Vec<u8> = ts
        .iter()
        .map(|t| {
            if let Some(t) = t {
                let s = if *t < c1 {
                    0
                } else if *t < c2 {
                    1
                } else {
                    2
                };
                cur = cur.max(s);
            }
            cur
        })
        .collect();
    Some(segments_to_splits(&seg, cfg.embargo, test))
}

fn file_mode(files: &[SplitFile], cfg: &SplitConfig, out: &mut Assignment) {
    for (attack, purpose) in [(false, "split.file.normal"), (true, "split.file.attack")] {
        let mut group: Vec<usize> = files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind == Kind::Train && f.has_attack == attack)
            .map(|(i, _)| i)
            .collect();
        let name = if attack {
            "attack-containing"
        } else {
            "attack-free"
        };
        if group.len() == 1 {
            out.warnings.push(format!(
                "split mode `file`: the {name} group has one file, which stays in train (no {name} validation windows)"
            ));
            continue;
        }
        if group.is_empty() {
            continue;
        }
        let total: usize = group.iter().map(|&i| files[i].windows).sum();
        let target = cfg.val_fraction * total as f64;
        group.shuffle(&mut seed::rng(cfg.seed, purpose, b""));
        let mut in_val = 0usize;
        let mut left = group.len();
        for &i in &group {
            if in_val as f64 >= target || left <= 1 {
                break;
            }
            out.windows[i].iter_mut().for_each(|w| *w = VAL);
            in_val += files[i].windows;
            left -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SplitConfig {
        SplitConfig {
            mode: Mode::Block,
            val_fraction: 0.2,
            embargo: 1,
            stream_fractions: [0.6, 0.2, 0.2],
            axis: Axis::Rows,
            seed: 42,
        }
    }

    #[test]
    fn block_has_one_val_block_with_embargo_on_both_sides() {
        for seed in 0..50 {
            let c = SplitConfig { seed, ..cfg() };
            let a = block(100, &c, &[seed as u8; 32]);
            let val: Vec<usize> = (0..100).filter(|&k| a[k] == VAL).collect();
            assert_eq!(val.len(), 20);
            assert_eq!(val.last().unwrap() - val[0], 19, "one contiguous block");
            for (k, &s) in a.iter().enumerate() {
                if s == TRAIN {
                    // No training window within the embargo of a validation window.
                    assert!(val.iter().all(|&v| v.abs_diff(k) > c.embargo));
                }
            }
        }
        assert_eq!(block(9, &cfg(), &[0; 32]), vec![TRAIN; 9]);
    }

    #[test]
    fn another_seed_moves_the_block() {
        let a = block(200, &cfg(), &[1; 32]);
        let b = block(200, &SplitConfig { seed: 7, ..cfg() }, &[1; 32]);
        assert_ne!(a, b);
        assert_eq!(a, block(200, &cfg(), &[1; 32]));
    }

    #[test]
    fn stream_cut_in_order() {
        let a = stream_rows(20, &cfg(), 2);
        let want: Vec<u16> = [
            vec![TRAIN; 12],
            vec![EMBARGO],
            vec![VAL; 3],
            vec![EMBARGO],
            vec![2; 3],
        ]
        .concat();
        assert_eq!(a, want);
        let ts: Vec<Option<f64>> = (0..10).map(|k| Some(k as f64)).collect();
        let c = SplitConfig {
            axis: Axis::Time,
            embargo: 0,
            ..cfg()
        };
        // Cuts at 5.4 and 7.2.
        assert_eq!(
            stream_time(&ts, &c, 5).unwrap(),
            vec![0, 0, 0, 0, 0, 0, 1, 1, 5, 5]
        );
        assert_eq!(stream_time(&[None, None], &c, 5), None);
    }

    #[test]
    fn file_mode_keeps_one_file_per_group_in_train() {
        let f = |attack: bool, windows| SplitFile {
            kind: Kind::Train,
            hash: [0; 32],
            windows,
            has_attack: attack,
            window_ts: vec![],
        };
        let files = vec![
            f(false, 10),
            f(false, 10),
            f(false, 10),
            f(true, 10),
            f(true, 50),
        ];
        let a = assign(
            &files,
            &SplitConfig {
                mode: Mode::File,
                ..cfg()
            },
        )
        .unwrap();
        let val_files = |r: std::ops::Range<usize>| r.filter(|&i| a.windows[i][0] == VAL).count();
        assert_eq!(val_files(0..3), 1);
        assert_eq!(val_files(3..5), 1);
        let lone = assign(
            &files[..4],
            &SplitConfig {
                mode: Mode::File,
                ..cfg()
            },
        )
        .unwrap();
        assert_eq!(lone.warnings.len(), 1);
        assert_eq!(lone.windows[3], vec![TRAIN; 10]);
    }
}
