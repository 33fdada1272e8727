//! Executors: where a build runs. `local` runs `kdbuild build` as a child process; the
//! SLURM executor submits the same command as an `sbatch` job.
//!
//! Either way the build writes only its staging directory, its log and, last, its result
//! record; the realizer registers the output afterwards.

pub mod builder;
pub mod local;
pub mod slurm;

use std::path::PathBuf;

use crate::derivation::Resources;
use crate::hash::DrvHash;
use crate::store_path::StorePath;

pub use builder::BuildResult;

/// One build attempt, as the realizer hands it to an executor.
#[derive(Clone, Debug)]
pub struct Job {
    pub drv_hash: DrvHash,
    pub path: StorePath,
    pub attempt: u32,
    pub staging: PathBuf,
    pub log: PathBuf,
    pub result: PathBuf,
    pub resources: Resources,
}

/// How an attempt ended, as far as the executor saw.
#[derive(Clone, Debug)]
pub enum JobEnd {
    /// The build process ended; `result` is its record, `None` if it died before writing one.
    Exited {
        status: String,
        result: Option<BuildResult>,
    },
    /// The realizer was interrupted and stopped the build.
    Interrupted,
    /// The build could not be started.
    NotStarted(String),
}

impl JobEnd {
    /// Whether the build succeeded and said so in its result record.
    pub fn succeeded(&self) -> bool {
        matches!(self, JobEnd::Exited { result: Some(r), .. } if r.succeeded)
    }
}
