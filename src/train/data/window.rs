//! Streams and windows (spec §3.1): the compact in-memory form of one file's frames, and
//! which rows each window covers.
//!
//! Row `i` links frame `i` to its successor `i+1` in the same file, so a stream of `n` frames
//! has `m = n−1` rows (the last frame has no successor and only appears as a target). Window
//! `k` is rows `[kS, kS+W)`; rows that do not fill a window at the end are dropped; a stream
//! with `1 ≤ m < W` rows has one partial window.

use std::ops::Range;

use super::frame::Frame;

/// The ID stored for a frame whose ID could not be parsed (it maps to UNK). Valid IDs have at
/// most 29 bits, so this value never collides with one.
pub const NO_ID: u32 = u32::MAX;

/// One file's frames, columnar and compact (13–21 bytes a frame), in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stream {
    /// Raw CAN IDs, [`NO_ID`] for unparsable ones.
    pub ids: Vec<u32>,
    pub bytes: Vec<[u8; 8]>,
    pub labels: Vec<bool>,
    /// Timestamps, `NaN` where a frame has none; empty when no frame has one.
    pub ts: Vec<f64>,
}

impl Stream {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends a frame.
    #[inline]
    pub fn push(&mut self, f: &Frame) {
        match f.ts {
            Some(t) => {
                if self.ts.len() < self.ids.len() {
                    self.ts.resize(self.ids.len(), f64::NAN);
                }
                self.ts.push(t);
            }
            None if !self.ts.is_empty() => self.ts.push(f64::NAN),
            None => {}
        }
        self.ids.push(f.id.unwrap_or(NO_ID));
        self.bytes.push(f.bytes);
        self.labels.push(f.label);
    }

    /// The timestamp of frame `i`, if it has one.
    pub fn ts_at(&self, i: usize) -> Option<f64> {
        self.ts.get(i).copied().filter(|t| !t.is_nan())
    }

    /// The smallest and largest timestamps, if any frame has one.
    pub fn ts_range(&self) -> Option<(f64, f64)> {
        self.ts
            .iter()
            .filter(|t| !t.is_nan())
            .fold(None, |acc, &t| match acc {
                None => Some((t, t)),
                Some((a, b)) => Some((a.min(t), b.max(t))),
            })
    }
}

/// Window size and stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// `W`, rows per window (≥ 2).
    pub window: usize,
    /// `S`, rows between window starts (≥ 1).
    pub stride: usize,
}

impl Geometry {
    /// The number of windows of a stream of `frames` frames.
    pub fn num_windows(&self, frames: usize) -> usize {
        let m = frames.saturating_sub(1);
        if m == 0 {
            0
        } else if m < self.window {
            1
        } else {
            (m - self.window) / self.stride + 1
        }
    }

    /// The rows of window `k` of a stream of `frames` frames (row `r` links frames `r` and
    /// `r+1`).
    pub fn rows(&self, k: usize, frames: usize) -> Range<usize> {
        let m = frames.saturating_sub(1);
        let start = k * self.stride;
        start..(start + self.window).min(m)
    }

    /// Rows of a stream of `frames` frames that no window covers (dropped at the end).
    pub fn trailing_rows(&self, frames: usize) -> usize {
        let m = frames.saturating_sub(1);
        let n = self.num_windows(frames);
        if n == 0 {
            return 0;
        }
        m - self.rows(n - 1, frames).end
    }

    /// Frames to read for the first `k` windows (reading may stop there).
    pub fn frames_for(&self, k: usize) -> u64 {
        if k == 0 {
            return 0;
        }
        ((k - 1) * self.stride + self.window + 1) as u64
    }

    /// Windows that overlap a window `e` apart need `ceil(W/S)` windows of embargo.
    pub fn min_embargo(&self) -> usize {
        if self.window > self.stride {
            self.window.div_ceil(self.stride)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos1_geometry() {
        // 90,169 frames → 90,168 rows → 901 windows, 68 trailing rows (spec §8).
        let g = Geometry {
            window: 100,
            stride: 100,
        };
        assert_eq!(g.num_windows(90_169), 901);
        assert_eq!(g.trailing_rows(90_169), 68);
        assert_eq!(g.rows(900, 90_169), 90_000..90_100);
    }

    #[test]
    fn partial_and_empty() {
        let g = Geometry {
            window: 100,
            stride: 50,
        };
        assert_eq!(g.num_windows(0), 0);
        assert_eq!(g.num_windows(1), 0);
        assert_eq!(g.num_windows(2), 1);
        assert_eq!(g.rows(0, 31), 0..30);
        assert_eq!(g.num_windows(101), 1);
        assert_eq!(g.num_windows(151), 2);
        assert_eq!(g.frames_for(2), 151);
        assert_eq!(g.min_embargo(), 2);
    }

    #[test]
    fn stream_keeps_timestamps_aligned() {
        let mut s = Stream::default();
        let f = |ts| Frame {
            ts,
            id: Some(1),
            bytes: [0; 8],
            len: 0,
            label: false,
        };
        s.push(&f(None));
        s.push(&f(Some(2.0)));
        s.push(&f(None));
        s.push(&f(Some(1.0)));
        assert_eq!(s.ts.len(), 4);
        assert_eq!(s.ts_at(0), None);
        assert_eq!(s.ts_at(3), Some(1.0));
        assert_eq!(s.ts_range(), Some((1.0, 2.0)));
    }
}
