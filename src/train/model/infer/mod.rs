//! The inference engine: the whole evaluation-mode pipeline — batching, VGAE scores, GAT
//! logits and pooled embedding, the fusion state, the fusion model and the fused rule — on
//! weights packed once and buffers reused from batch to batch.
//!
//! It computes the same function as the candle models in evaluation mode
//! ([`Scoring::states`](crate::train::model::batch::Scoring::states) and
//! [`FusionModel::score`]) for CPU models without edge features, within float rounding: the
//! sums run in another order (tested in `tests` below on real data). What it changes is
//! the cost per window: no tensor allocated or zero-filled per operation, the first layer of
//! each model a per-ID table plus a 10-wide product, BatchNorm, bias and activation one
//! epilogue, and matrix products by register-tiled AVX-512 or AVX2 microkernels
//! ([`kernels`]) chosen at run time. Results do not depend on the instruction set or the
//! batch size (see [`kernels`]).
//!
//! | module | job |
//! |---|---|
//! | [`kernels`] | ISA detection, packed weights, matrix-product microkernels, vector math |
//! | [`conv`] | one packed `GATConv` layer (edge softmax, aggregation, epilogue) |
//! | [`nets`] | the VGAE, GAT and fusion model packed from trained candle models |

// Lane loops index several fixed-size arrays by the same lane, and short copies stay loops
// (a `copy_from_slice` of a few values is a `memcpy` call): both written so they vectorise.
#![allow(clippy::needless_range_loop, clippy::manual_memcpy)]

pub mod conv;
pub mod kernels;
pub mod nets;

use super::gatconv::Csr;
use kernels::{ABuf, Isa};
use nets::{FusionNet, GatBufs, GatNet, VgaeBufs, VgaeNet};

use super::TrainError;
use super::fusion::{FusionModel, State, state};
use super::gat::Gat;
use super::vgae::Vgae;
use crate::train::data::graphs::{GraphSet, NODE_FEATURES};

/// Scratch buffers shared by the layers of a pass.
#[derive(Default)]
pub struct Scratch {
    pub(crate) a: ABuf,
    pub(crate) b: ABuf,
    pub(crate) h: ABuf,
    pub(crate) scores: Vec<f32>,
}

/// Everything one batch needs, kept between batches so that steady state allocates nothing.
#[derive(Default)]
pub struct Workspace {
    ids: Vec<u32>,
    feats: Vec<f32>,
    src: Vec<u32>,
    dst: Vec<u32>,
    starts: Vec<usize>,
    csr: Csr,
    scratch: Scratch,
    vgae: VgaeBufs,
    gat: GatBufs,
    z: Vec<f32>,
}

/// A teacher's or student's three models, packed for inference.
pub struct Engine {
    isa: Isa,
    vgae: VgaeNet,
    gat: GatNet,
    fusion: FusionNet,
    /// Graphs per batch (results do not depend on it).
    pub batch_graphs: usize,
}

impl Engine {
    /// Packs trained models for the best instruction set of this CPU.
    pub fn new(vgae: &Vgae, gat: &Gat, fusion: &FusionModel) -> Result<Engine, TrainError> {
        Self::with_isa(vgae, gat, fusion, Isa::detect())
    }

    /// Packs trained models for `isa` (tests compare instruction sets).
    pub fn with_isa(
        vgae: &Vgae,
        gat: &Gat,
        fusion: &FusionModel,
        isa: Isa,
    ) -> Result<Engine, TrainError> {
        if !isa.is_available() {
            return Err(TrainError::Config(format!(
                "this CPU cannot run the {} kernels",
                isa.as_str()
            )));
        }
        if vgae.cfg.num_ids != gat.cfg.num_ids {
            return Err(TrainError::Config(format!(
                "the VGAE knows {} ids and the GAT {}",
                vgae.cfg.num_ids, gat.cfg.num_ids
            )));
        }
        Ok(Engine {
            isa,
            vgae: VgaeNet::new(vgae)?,
            gat: GatNet::new(gat)?,
            fusion: FusionNet::new(fusion)?,
            batch_graphs: 16,
        })
    }

    /// Whether the engine can stand in for the candle models: CPU tensors, no edge features.
    pub fn applies(vgae: &Vgae, gat: &Gat) -> bool {
        vgae.cfg.edge_dim == 0 && gat.cfg.edge_dim == 0 && vgae.cfg.num_ids == gat.cfg.num_ids
    }

    /// The instruction set the engine runs with.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Fusion states (spec §5.6) of graphs `idx` of `set`.
    pub fn states(
        &self,
        ws: &mut Workspace,
        set: &GraphSet,
        idx: &[usize],
    ) -> Result<Vec<State>, TrainError> {
        super::flush_denormals();
        let mut out = Vec::with_capacity(idx.len());
        for chunk in idx.chunks(self.batch_graphs.max(1)) {
            self.batch_states(ws, set, chunk, &mut out)?;
        }
        Ok(out)
    }

    /// `(score, attack)` of each state by the fusion model and the fused rule.
    pub fn score(&self, ws: &mut Workspace, states: &[State]) -> Vec<(f32, bool)> {
        let mut out = Vec::with_capacity(states.len());
        for c in states.chunks(256) {
            out.extend(self.fusion.score(self.isa, c, &mut ws.scratch));
        }
        out
    }

    /// One batch, with the whole pass (everything but the microkernels, which dispatch on
    /// their own) compiled for the engine's instruction set: the same operations in the same
    /// order, so the same bits (Rust never fuses a multiply and an add on its own).
    fn batch_states(
        &self,
        ws: &mut Workspace,
        set: &GraphSet,
        idx: &[usize],
        out: &mut Vec<State>,
    ) -> Result<(), TrainError> {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an engine only holds an ISA this CPU has (`Engine::with_isa`).
            Isa::Avx512 => unsafe { self.batch_states_avx512(ws, set, idx, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { self.batch_states_avx2(ws, set, idx, out) },
            _ => self.batch_states_any(ws, set, idx, out),
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F/VL/BW/DQ and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    unsafe fn batch_states_avx512(
        &self,
        ws: &mut Workspace,
        set: &GraphSet,
        idx: &[usize],
        out: &mut Vec<State>,
    ) -> Result<(), TrainError> {
        self.batch_states_any(ws, set, idx, out)
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn batch_states_avx2(
        &self,
        ws: &mut Workspace,
        set: &GraphSet,
        idx: &[usize],
        out: &mut Vec<State>,
    ) -> Result<(), TrainError> {
        self.batch_states_any(ws, set, idx, out)
    }

    #[inline(always)]
    fn batch_states_any(
        &self,
        ws: &mut Workspace,
        set: &GraphSet,
        idx: &[usize],
        out: &mut Vec<State>,
    ) -> Result<(), TrainError> {
        let num_ids = self.vgae.num_ids;
        ws.ids.clear();
        ws.feats.clear();
        ws.src.clear();
        ws.dst.clear();
        ws.starts.clear();
        ws.starts.push(0);
        for &g in idx {
            let gr = set.graph(g);
            let offset = ws.ids.len() as u32;
            for row in gr.x.chunks_exact(NODE_FEATURES) {
                let v = row[0];
                if !(v >= 0.0 && (v as usize) < num_ids && v.fract() == 0.0) {
                    return Err(TrainError::Data(format!(
                        "graph {g} has node id {v}, outside the vocabulary of {num_ids} ids"
                    )));
                }
                ws.ids.push(v as u32);
                ws.feats.extend_from_slice(&row[1..]);
            }
            for (&s, &d) in gr.edge_src.iter().zip(gr.edge_dst) {
                ws.src.push(s + offset);
                ws.dst.push(d + offset);
            }
            ws.starts.push(ws.ids.len());
        }
        let n = ws.ids.len();
        ws.csr.rebuild(n, &ws.src, &ws.dst);
        self.vgae.forward(
            self.isa,
            &ws.csr,
            &ws.feats,
            &ws.ids,
            (&ws.src, &ws.dst),
            &mut ws.scratch,
            &mut ws.vgae,
        );
        self.gat.forward(
            self.isa,
            &ws.csr,
            &ws.feats,
            &ws.ids,
            &ws.starts,
            &mut ws.scratch,
            &mut ws.gat,
        );
        let (lat, ldm) = (self.vgae.latent, self.vgae.mu_stride());
        let (jk, ldl) = (self.gat.jk_dim(), self.gat.logit_stride());
        let v = &ws.vgae;
        let mu = v.mu.as_slice();
        let logits = ws.gat.logits.as_slice();
        for b in 0..idx.len() {
            let (s, e) = (ws.starts[b], ws.starts[b + 1]);
            let cnt = (e - s).max(1) as f32;
            let mean = |x: &[f32], per: f32| x[s..e].iter().sum::<f32>() / (cnt * per);
            ws.z.clear();
            for i in s..e {
                ws.z.extend_from_slice(&mu[i * ldm..i * ldm + lat]);
            }
            out.push(state(
                mean(&v.recon, 10.0),
                mean(&v.nbr, num_ids as f32),
                mean(&v.canid, 1.0),
                &ws.z,
                [logits[b * ldl], logits[b * ldl + 1]],
                &ws.gat.g[b * jk..(b + 1) * jk],
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
