//! Models and trainers in candle: GATConv, GAT, VGAE, fusion, distillation, metrics (spec §4–§6).
//!
//! | module | job |
//! |---|---|
//! | [`init`] | seeded parameters ([`init::ParamStore`]) and sub-seeds |
//! | [`layers`] | embedding, linear, BatchNorm, LayerNorm, dropout, mean pool |
//! | [`batch`] | PyG-style graph batching, UNK replacement, attention edge lists; [`batch::Splits`], [`batch::Scoring`] (eval-mode passes, one `impl` beside each model) |
//! | [`gatconv`] | `GATConv` (composed `index_add` kernel and a fused custom op) |
//! | [`infer`] | the inference engine: the evaluation-mode pipeline on packed weights and reused buffers |
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
pub mod infer;
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

/// Process settings for fast, reproducible CPU training; idempotent, called by every trainer,
/// by evaluation and by the benchmarks.
///
/// - **Denormals flushed to zero** (MXCSR FTZ + DAZ) on this thread and candle's worker pool.
///   A model that becomes confident produces subnormal gradients (a GAT step measured 250 ms
///   with normal numbers, 3 s once its loss reached ~1e-7), and x86 handles subnormals about
///   a hundred times slower. Threads inherit the setting from the thread that creates them
///   (pthreads copy the floating-point environment), so the pools candle and gemm create later
///   get it too. Results change only below 1.2e-38.
/// - **Freed memory kept in the process** (glibc `mallopt`; 32 MiB is the largest mmap
///   threshold glibc accepts): candle allocates every tensor anew, and with glibc's defaults
///   large buffers are `mmap`ed and page-faulted in on every step.
pub fn tune_process() {
    flush_denormals();
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; both values are valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
        candle_core::utils::barrier_pool().execute(|_| flush_denormals());
    });
}

/// Sets FTZ and DAZ in this thread's MXCSR (x86-64; a no-op elsewhere).
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    #[allow(deprecated)]
    // SAFETY: only the flush-to-zero (bit 15) and denormals-are-zero (bit 6) bits change.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}

impl TrainError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
        move |source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
