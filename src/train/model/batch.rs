//! Graph batching as PyG does it (spec §3.6): node rows concatenated, each graph's edges offset
//! by its first node, and a `batch` vector of node → graph. A [`Batch`] also carries what every
//! model needs once per batch: the ID column as u32 (with training-time UNK replacement,
//! spec §2.5), the 10 continuous features, the attention edge list ([`GatGraph`], shared by all
//! layers) and, for the VGAE, the neighbourhood target.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rand::Rng as _;

use super::TrainError;
use super::gatconv::GatGraph;
use super::init::Rng;
use crate::train::data::graphs::{EDGE_FEATURES, GraphSet, NODE_FEATURES};

/// What to build besides the node and edge tensors.
pub struct BatchOptions<'a> {
    pub num_ids: usize,
    /// `(probability, generator)`: replace each node's embedding index by UNK (training only).
    pub unk_dropout: Option<(f32, &'a mut Rng)>,
    /// Build the dense `[N, num_ids]` neighbourhood target (VGAE).
    pub nbr_target: bool,
    /// Carry edge features into the attention edge list (`edge_dim > 0`).
    pub edge_attr: bool,
}

impl BatchOptions<'_> {
    /// Evaluation: no UNK replacement.
    pub fn eval(num_ids: usize) -> BatchOptions<'static> {
        BatchOptions {
            num_ids,
            unk_dropout: None,
            nbr_target: false,
            edge_attr: false,
        }
    }
}

/// A batch of graphs on one device.
pub struct Batch {
    pub num_graphs: usize,
    pub num_nodes: usize,
    /// Embedding indices `[N]` (u32), UNK-replaced in training.
    pub ids: Tensor,
    /// True vocabulary indices `[N]` (u32), the CAN-ID targets.
    pub ids_true: Tensor,
    pub ids_true_host: Vec<u32>,
    /// `x[:, 1..11]`, `[N, 10]`.
    pub feats: Tensor,
    /// Node → graph (u32 `[N]`), PyG's `batch`.
    pub graph: Tensor,
    pub graph_host: Vec<u32>,
    /// Nodes per graph.
    pub node_counts: Vec<usize>,
    /// `[B, 1]`, 1 / nodes per graph.
    pub inv_counts: Tensor,
    /// Graph labels.
    pub y: Vec<u8>,
    /// Graph labels as u32 `[B]`.
    pub y_t: Tensor,
    pub gat: Arc<GatGraph>,
    /// `[N, num_ids]`: `T[a, id(b)] = 1` for every window edge `a → b`, self-loops included.
    pub nbr_target: Option<Tensor>,
}

impl Batch {
    /// Batches graphs `idx` of `set`.
    pub fn new(
        set: &GraphSet,
        idx: &[usize],
        device: &Device,
        opts: BatchOptions,
    ) -> Result<Batch, TrainError> {
        let BatchOptions {
            num_ids,
            mut unk_dropout,
            nbr_target,
            edge_attr,
        } = opts;
        let unk = (num_ids - 1) as u32;
        let mut ids = Vec::new();
        let mut ids_true = Vec::new();
        let mut feats = Vec::new();
        let mut graph = Vec::new();
        let mut node_counts = Vec::with_capacity(idx.len());
        let mut src = Vec::new();
        let mut dst = Vec::new();
        let mut attr = Vec::new();
        let mut y = Vec::with_capacity(idx.len());
        let want_attr = edge_attr && set.edge_attr.is_some();
        if edge_attr && !want_attr {
            return Err(TrainError::Data(
                "the model uses edge features (`edge_dim` > 0) but the graphs have none".into(),
            ));
        }
        for (b, &g) in idx.iter().enumerate() {
            let gr = set.graph(g);
            let offset = ids.len() as u32;
            let n = gr.num_nodes();
            for row in gr.x.chunks_exact(NODE_FEATURES) {
                let v = row[0];
                if !(v >= 0.0 && (v as usize) < num_ids && v.fract() == 0.0) {
                    return Err(TrainError::Data(format!(
                        "graph {g} has node id {v}, outside the vocabulary of {num_ids} ids"
                    )));
                }
                let v = v as u32;
                ids_true.push(v);
                let fed = match &mut unk_dropout {
                    Some((p, rng)) if *p > 0.0 => {
                        if rng.random::<f32>() < *p {
                            unk
                        } else {
                            v
                        }
                    }
                    _ => v,
                };
                ids.push(fed);
                feats.extend_from_slice(&row[1..]);
                graph.push(b as u32);
            }
            node_counts.push(n);
            src.extend(gr.edge_src.iter().map(|s| s + offset));
            dst.extend(gr.edge_dst.iter().map(|d| d + offset));
            if want_attr {
                attr.extend_from_slice(gr.edge_attr.expect("checked above"));
            }
            y.push(gr.y);
        }
        let n = ids.len();
        let gat = GatGraph::new(
            n,
            &src,
            &dst,
            want_attr.then_some((&attr[..], EDGE_FEATURES)),
            device,
        )?;
        let nbr_target = if nbr_target {
            let mut t = vec![0f32; n * num_ids];
            for (&a, &b) in src.iter().zip(&dst) {
                t[a as usize * num_ids + ids_true[b as usize] as usize] = 1.0;
            }
            Some(Tensor::from_vec(t, (n, num_ids), device)?)
        } else {
            None
        };
        let inv: Vec<f32> = node_counts.iter().map(|&c| 1.0 / c.max(1) as f32).collect();
        let b = idx.len();
        Ok(Batch {
            num_graphs: b,
            num_nodes: n,
            ids: Tensor::from_slice(&ids, n, device)?,
            ids_true: Tensor::from_slice(&ids_true, n, device)?,
            ids_true_host: ids_true,
            feats: Tensor::from_vec(feats, (n, NODE_FEATURES - 1), device)?,
            graph: Tensor::from_slice(&graph, n, device)?,
            graph_host: graph,
            node_counts,
            inv_counts: Tensor::from_vec(inv, (b, 1), device)?,
            y_t: Tensor::from_iter(y.iter().map(|&v| v as u32), device)?,
            y,
            gat: Arc::new(gat),
            nbr_target,
        })
    }

    /// Per-graph mean of a per-node quantity `v [N]` weighted by `per_node` elements each
    /// (e.g. 10 for a mean over N×10): `[B]`.
    pub fn graph_mean(&self, v: &Tensor, per_node: usize) -> candle_core::Result<Tensor> {
        let sums =
            Tensor::zeros(self.num_graphs, DType::F32, v.device())?.index_add(&self.graph, v, 0)?;
        sums.broadcast_mul(&(self.inv_counts.squeeze(1)? / per_node as f64)?)
    }
}

/// Consecutive chunks of `order` of at most `size` (the last partial chunk kept, spec §5.1).
pub fn chunks(order: &[usize], size: usize) -> impl Iterator<Item = &[usize]> {
    order.chunks(size.max(1))
}

/// The data a trainer sees: the training pool, val, every test split, and the vocabulary size.
pub struct Splits {
    pub train: GraphSet,
    pub val: GraphSet,
    /// Test splits, sorted by name.
    pub tests: Vec<(String, GraphSet)>,
    pub num_ids: usize,
    /// blake3 (hex) of `vocab.json`, recorded in checkpoints.
    pub vocab_sha256: String,
}

/// `0..set.len()`.
pub fn all(set: &GraphSet) -> Vec<usize> {
    (0..set.len()).collect()
}

/// How evaluation-mode passes batch (no UNK replacement, no generator). The passes themselves
/// are `impl Scoring` blocks beside each model: `vgae_scores` (vgae.rs), `gat_logits` (gat.rs),
/// `states` (fusion.rs).
#[derive(Clone, Debug)]
pub struct Scoring {
    pub device: Device,
    pub num_ids: usize,
    pub batch_graphs: usize,
}

impl Scoring {
    /// An evaluation batch of graphs `idx`.
    pub fn batch(
        &self,
        set: &GraphSet,
        idx: &[usize],
        nbr_target: bool,
        edge_attr: bool,
    ) -> Result<Batch, TrainError> {
        Batch::new(
            set,
            idx,
            &self.device,
            BatchOptions {
                nbr_target,
                edge_attr,
                ..BatchOptions::eval(self.num_ids)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn two_graphs() -> GraphSet {
        let mut s = GraphSet::new();
        let mut x = vec![0f32; 2 * NODE_FEATURES];
        x[0] = 1.0;
        x[NODE_FEATURES] = 2.0;
        s.push(&x, &[0, 0], &[(0, 1), (1, 1)], None, 0, 0, 0);
        let mut x = vec![0f32; 3 * NODE_FEATURES];
        x[NODE_FEATURES] = 1.0;
        x[2 * NODE_FEATURES] = 3.0;
        s.push(&x, &[0, 1, 0], &[(0, 1), (2, 0)], None, 1, 0, 1);
        s
    }

    #[test]
    fn offsets_and_self_loops() {
        let s = two_graphs();
        let b = Batch::new(
            &s,
            &[0, 1],
            &Device::Cpu,
            BatchOptions {
                nbr_target: true,
                ..BatchOptions::eval(4)
            },
        )
        .unwrap();
        assert_eq!(b.num_nodes, 5);
        assert_eq!(b.graph_host, vec![0, 0, 1, 1, 1]);
        assert_eq!(b.ids_true_host, vec![1, 2, 0, 1, 3]);
        // Window edges 0→1, 1→1, 2→3, 4→2; attention: loops replaced, grouped by target.
        assert_eq!(b.gat.dst_ptr, vec![0, 1, 3, 5, 7, 8]);
        assert_eq!(b.gat.src, vec![0, 0, 1, 4, 2, 2, 3, 4]);
        // The neighbourhood target keeps the repeated-ID loop 1→1 (id 2 → id 2).
        let t = b.nbr_target.unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(t[0], vec![0., 0., 1., 0.]);
        assert_eq!(t[1], vec![0., 0., 1., 0.]);
        assert_eq!(t[4], vec![1., 0., 0., 0.]);
        assert_eq!(b.y, vec![0, 1]);
    }

    #[test]
    fn unk_dropout_replaces_inputs_not_targets() {
        let s = two_graphs();
        let mut rng = Rng::seed_from_u64(1);
        let b = Batch::new(
            &s,
            &[0, 1],
            &Device::Cpu,
            BatchOptions {
                unk_dropout: Some((1.0, &mut rng)),
                ..BatchOptions::eval(4)
            },
        )
        .unwrap();
        assert_eq!(b.ids.to_vec1::<u32>().unwrap(), vec![3; 5]);
        assert_eq!(b.ids_true_host, vec![1, 2, 0, 1, 3]);
    }

    #[test]
    fn ids_outside_the_vocabulary_are_an_error() {
        let s = two_graphs();
        assert!(Batch::new(&s, &[1], &Device::Cpu, BatchOptions::eval(3)).is_err());
    }
}
