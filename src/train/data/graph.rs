//! One window → one graph (spec §3.2–§3.4): nodes, edges, the 11 node features, the optional
//! 11 edge features, and the graph and node labels.
//!
//! [`GraphBuilder`] keeps its scratch buffers between windows (a dense local-index table over
//! the vocabulary, per-node sums), so building a graph allocates nothing once warm: this runs
//! once per window of every file.
//!
//! Features are computed in `f64` and stored as `f32`.

use super::graphs::{EDGE_FEATURES, GraphSet, NODE_FEATURES};

const NONE: u32 = u32::MAX;

/// One built graph, borrowed from the builder until the next window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowGraph {
    /// Vocabulary index of each node, ascending (the local index is the position).
    pub nodes: Vec<u32>,
    /// `[N, 11]`, spec §3.3.
    pub x: Vec<f32>,
    /// 1 iff a row with that node as source is an attack.
    pub node_y: Vec<u8>,
    /// Distinct `(src, dst)` local pairs, sorted.
    pub edges: Vec<(u32, u32)>,
    /// `[E, 11]`, spec §3.4, when asked for.
    pub edge_attr: Vec<f32>,
    /// 1 iff any row is an attack.
    pub y: u8,
}

/// Builds graphs from windows, reusing its buffers.
pub struct GraphBuilder {
    /// Configured window size `W` (also for partial windows).
    window: usize,
    edge_features: bool,
    /// vocabulary index → local index, [`NONE`] outside the current window.
    local: Vec<u32>,
    count: Vec<u32>,
    tgt_count: Vec<u32>,
    sums: Vec<[u32; 8]>,
    last_pos: Vec<u32>,
    attack: Vec<bool>,
    keys: Vec<(u64, u32)>,
    pub graph: WindowGraph,
}

impl GraphBuilder {
    /// A builder for a vocabulary of `num_ids` indices (UNK included) and window size `W`.
    pub fn new(num_ids: usize, window: usize, edge_features: bool) -> Self {
        GraphBuilder {
            window,
            edge_features,
            local: vec![NONE; num_ids],
            count: Vec::new(),
            tgt_count: Vec::new(),
            sums: Vec::new(),
            last_pos: Vec::new(),
            attack: Vec::new(),
            keys: Vec::new(),
            graph: WindowGraph::default(),
        }
    }

    /// Builds the graph of one window. `v` holds the vocabulary indices of the window's frames
    /// *and* the successor of its last row (`rows + 1` values); `bytes` and `labels` are the
    /// rows' (source frames'). Every value of `v` must be `< num_ids`.
    pub fn build(&mut self, v: &[u32], bytes: &[[u8; 8]], labels: &[bool]) -> &WindowGraph {
        let m = bytes.len();
        debug_assert_eq!(v.len(), m + 1);
        debug_assert_eq!(labels.len(), m);
        let g = &mut self.graph;
        g.nodes.clear();
        for &id in v {
            let slot = &mut self.local[id as usize];
            if *slot == NONE {
                *slot = 0;
                g.nodes.push(id);
            }
        }
        g.nodes.sort_unstable();
        let n = g.nodes.len();
        for (i, &id) in g.nodes.iter().enumerate() {
            self.local[id as usize] = i as u32;
        }
        self.count.clear();
        self.count.resize(n, 0);
        self.tgt_count.clear();
        self.tgt_count.resize(n, 0);
        self.sums.clear();
        self.sums.resize(n, [0; 8]);
        self.last_pos.clear();
        self.last_pos.resize(n, 0);
        self.attack.clear();
        self.attack.resize(n, false);
        self.keys.clear();
        for r in 0..m {
            let a = self.local[v[r] as usize] as usize;
            let b = self.local[v[r + 1] as usize];
            self.count[a] += 1;
            self.tgt_count[b as usize] += 1;
            let s = &mut self.sums[a];
            for (acc, &byte) in s.iter_mut().zip(&bytes[r]) {
                *acc += byte as u32;
            }
            self.last_pos[a] = r as u32;
            self.attack[a] |= labels[r];
            self.keys.push(((a as u64) << 32 | b as u64, r as u32));
        }

        // Node features (§3.3).
        let w = self.window as f64;
        let (cmin, cmax) = self
            .count
            .iter()
            .fold((u32::MAX, 0), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        g.x.clear();
        g.x.reserve(n * NODE_FEATURES);
        g.node_y.clear();
        for i in 0..n {
            let c = self.count[i];
            g.x.push(g.nodes[i] as f32);
            for j in 0..8 {
                let mean = if c > 0 {
                    self.sums[i][j] as f64 / c as f64 / 255.0
                } else {
                    0.0
                };
                g.x.push(mean as f32);
            }
            let col9 = if cmax == cmin {
                c as f64
            } else {
                (c - cmin) as f64 / (cmax - cmin) as f64
            };
            g.x.push(col9 as f32);
            let col10 = if c > 0 {
                self.last_pos[i] as f64 / (w - 1.0)
            } else {
                0.0
            };
            g.x.push(col10 as f32);
            g.node_y.push(self.attack[i] as u8);
        }
        g.y = labels.iter().any(|&l| l) as u8;

        // Edges (§3.2): distinct pairs, sorted; positions sorted within each.
        self.keys.sort_unstable();
        g.edges.clear();
        g.edge_attr.clear();
        let mut i = 0;
        while i < self.keys.len() {
            let key = self.keys[i].0;
            let mut j = i + 1;
            while j < self.keys.len() && self.keys[j].0 == key {
                j += 1;
            }
            g.edges.push(((key >> 32) as u32, key as u32));
            i = j;
        }
        if self.edge_features {
            let mut i = 0;
            let mut e = 0;
            while i < self.keys.len() {
                let key = self.keys[i].0;
                let mut j = i + 1;
                while j < self.keys.len() && self.keys[j].0 == key {
                    j += 1;
                }
                let (a, b) = g.edges[e];
                let pos = &self.keys[i..j];
                let k = pos.len() as f64;
                let (mean_g, std_g, inv) = if pos.len() > 1 {
                    let ng = (pos.len() - 1) as f64;
                    let gap = |p: &[(u64, u32)]| (p[1].1 - p[0].1) as f64;
                    let mean = pos.windows(2).map(gap).sum::<f64>() / ng;
                    let var = pos
                        .windows(2)
                        .map(|p| (gap(p) - mean) * (gap(p) - mean))
                        .sum::<f64>()
                        / ng;
                    let sd = var.sqrt();
                    (mean, sd, 1.0 / (1.0 + sd))
                } else {
                    (0.0, 0.0, 0.0)
                };
                let first = pos[0].1 as f64;
                let last = pos[pos.len() - 1].1 as f64;
                let reverse = a == b || g.edges.binary_search(&(b, a)).is_ok();
                let deg = |u: u32| (self.count[u as usize] + self.tgt_count[u as usize]) as f64;
                let (da, db) = (deg(a), deg(b));
                let feats = [
                    k,
                    k / w,
                    mean_g,
                    std_g,
                    inv,
                    first / w,
                    last / w,
                    (last - first) / w,
                    reverse as u8 as f64,
                    da * db,
                    da / db.max(1e-8),
                ];
                g.edge_attr.extend(feats.iter().map(|&f| f as f32));
                debug_assert_eq!(feats.len(), EDGE_FEATURES);
                e += 1;
                i = j;
            }
        }

        // Reset the local table for the next window.
        for &id in &g.nodes {
            self.local[id as usize] = NONE;
        }
        &self.graph
    }

    /// Builds a window and appends it to `set`.
    pub fn push(
        &mut self,
        set: &mut GraphSet,
        v: &[u32],
        bytes: &[[u8; 8]],
        labels: &[bool],
        file: u32,
        window: u32,
    ) {
        let edge_features = self.edge_features;
        let g = self.build(v, bytes, labels);
        set.push(
            &g.x,
            &g.node_y,
            &g.edges,
            edge_features.then_some(&g.edge_attr[..]),
            g.y,
            file,
            window,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    /// Spec §3.5, the worked example.
    #[test]
    fn worked_example() {
        // IDs 0x10,0x20,0x10,0x10,0x30 with vocabulary {0x10→0, 0x20→1, 0x30→2}.
        let v = [0u32, 1, 0, 0, 2];
        let mut p = [[0u8; 8]; 4];
        p[0][0] = 0xFF;
        p[1][0] = 0x01;
        p[1][1] = 0x02;
        p[2][0] = 0x00;
        p[3][0] = 0xFF;
        let labels = [false, false, true, false];
        let mut b = GraphBuilder::new(3, 4, true);
        let g = b.build(&v, &p, &labels).clone();
        assert_eq!(g.nodes, vec![0, 1, 2]);
        assert_eq!(g.edges, vec![(0, 0), (0, 1), (0, 2), (1, 0)]);
        assert_eq!(g.y, 1);
        assert_eq!(g.node_y, vec![1, 0, 0]);
        let x = |i: usize| &g.x[i * 11..(i + 1) * 11];
        close(
            x(0),
            &[
                0.0,
                510.0 / 3.0 / 255.0,
                0.,
                0.,
                0.,
                0.,
                0.,
                0.,
                0.,
                1.0,
                1.0,
            ],
        );
        close(
            x(1),
            &[
                1.0,
                1.0 / 255.0,
                2.0 / 255.0,
                0.,
                0.,
                0.,
                0.,
                0.,
                0.,
                1.0 / 3.0,
                1.0 / 3.0,
            ],
        );
        close(x(2), &[2.0, 0., 0., 0., 0., 0., 0., 0., 0., 0., 0.]);
        let e = |i: usize| &g.edge_attr[i * 11..(i + 1) * 11];
        close(e(0), &[1., 0.25, 0., 0., 0., 0.5, 0.5, 0., 1., 25., 1.]);
        close(e(1), &[1., 0.25, 0., 0., 0., 0., 0., 0., 1., 10., 2.5]);
        // (0,2): row 3, deg(2) = 1, no 2→0.
        close(e(2), &[1., 0.25, 0., 0., 0., 0.75, 0.75, 0., 0., 5., 5.]);
        // (1,0): row 1, 0→1 exists.
        close(e(3), &[1., 0.25, 0., 0., 0., 0.25, 0.25, 0., 1., 10., 0.4]);
    }

    #[test]
    fn repeated_edge_gaps_and_uniform_counts() {
        // A one-ID flood: one node, a self-loop at rows 0,1,2; uniform counts → raw c.
        let mut b = GraphBuilder::new(2, 4, true);
        let g = b.build(&[0, 0, 0, 0], &[[0; 8]; 3], &[false; 3]).clone();
        assert_eq!(g.edges, vec![(0, 0)]);
        assert_eq!(g.x[9], 3.0);
        // Partial window: col 10 still divides by W−1 = 3.
        assert!((g.x[10] - 2.0 / 3.0).abs() < 1e-7);
        close(
            &g.edge_attr,
            &[3., 0.75, 1., 0., 1., 0., 0.5, 0.5, 1., 36., 1.],
        );
        // The builder's table is clean for the next window.
        let g2 = b.build(&[1, 0], &[[0; 8]], &[true]).clone();
        assert_eq!(g2.nodes, vec![0, 1]);
        assert_eq!(g2.edges, vec![(1, 0)]);
    }
}
