//! Models and trainers in candle: GATConv, GAT, VGAE, fusion, distillation, metrics (spec §4–§6).
//!
//! | module | job |
//! |---|---|
//! | [`init`] | seeded parameters ([`init::ParamStore`]) and sub-seeds |
//! | [`layers`] | embedding, linear, BatchNorm, LayerNorm, dropout, mean pool |
//! | [`batch`] | PyG-style graph batching, UNK replacement, attention edge lists; [`batch::Splits`], [`batch::Scoring`] (eval-mode passes, one `impl` beside each model) |
//! | [`gatconv`] | `GATConv` (composed `index_add` kernel and a fused custom op) |
//! | [`gat`], [`vgae`], [`fusion`] | the three models, PyTorch names |
//! | [`kd`] | weighted CE and the distillation losses |
//! | [`curriculum`] | the GAT's per-epoch sampling |
//! | [`metrics`] | evaluation metrics and their JSON/CSV forms |
//! | [`checkpoint`] | safetensors with PyTorch names and metadata, best-epoch snapshots |
//! | [`optim`] | AdamW with global-norm clipping |
//! | [`config`] | what stage configurations share: profiles, sizes, devices, key validation (each stage's own config lives in its trainer) |
//! | [`progress`] | per-epoch progress bar or plain lines, `train_log.csv` |
//! | [`train_vgae`], [`train_gat`], [`train_fusion`], [`eval`] | the four stages |
//! | [`synth`] | synthetic CAN-like graph sets for tests and benchmarks |
//!
//! # Determinism
//! Every random draw comes from `rand_chacha` seeded by `hash(seed, purpose)` ([`init`]);
//! nothing uses candle's unseedable generator. Aggregations run in a fixed order. candle's
//! CPU matmul is multi-threaded (gemm over rayon, `RAYON_NUM_THREADS`); results are
//! reproducible for a fixed thread count, which stages record as provenance.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod curriculum;
pub mod eval;
pub mod fusion;
pub mod gat;
pub mod gatconv;
pub mod init;
pub mod kd;
pub mod layers;
pub mod metrics;
pub mod optim;
pub mod progress;
pub mod synth;
pub mod train_fusion;
pub mod train_gat;
pub mod train_vgae;
pub mod vgae;

use std::path::PathBuf;

use thiserror::Error;

use crate::train::data::graphs::GraphSetError;

/// Why training or evaluation failed.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Graphs(#[from] GraphSetError),
    /// The data cannot be trained on (no attack windows for the curriculum, ids outside the
    /// vocabulary, …).
    #[error("{0}")]
    Data(String),
    /// A configuration value is wrong.
    #[error("{0}")]
    Config(String),
    /// A checkpoint is missing, malformed or does not fit the model.
    #[error("checkpoint `{}`: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Keeps freed memory in the process instead of returning it to the kernel (glibc `mallopt`;
/// 32 MiB is the largest mmap threshold glibc accepts):
/// candle allocates a fresh buffer for every tensor, and with glibc's defaults large ones are
/// `mmap`ed and page-faulted in anew on every step (about a tenth of a GAT step's time).
/// Process-wide and idempotent; called by every trainer and evaluation.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; both values are valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    });
}

impl TrainError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
        move |source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
