//! The crate-level error: every module's error, with the kind that decides the exit code and
//! wording — the user's input, the environment, a failed build, or a bug.

use thiserror::Error;

use crate::executor::slurm::SlurmError;
use crate::executor::slurm::profile::ProfileError;
use crate::pipeline::PipelineError;
use crate::realize::RealizeError;
use crate::store::StoreError;

/// Whose problem an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a pipeline file, a target name, a flag. Exit code 2.
    User,
    /// The machine: a missing program, a full disk, an unreadable store. Exit code 3.
    Environment,
    /// A build failed. Exit code 1.
    Build,
    /// Interrupted by Ctrl-C or SIGTERM. Exit code 130.
    Interrupted,
    /// A bug in kdbuild. Exit code 101.
    Internal,
}

impl ErrorKind {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Build => 1,
            ErrorKind::User => 2,
            ErrorKind::Environment => 3,
            ErrorKind::Interrupted => 130,
            ErrorKind::Internal => 101,
        }
    }
}

#[derive(Debug, Error)]
pub enum Error {
    /// Boxed: pipeline errors carry locations and are large.
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Realize(#[from] RealizeError),
    /// A SLURM profile that does not read.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// SLURM's commands failed or are missing.
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    /// A command-line mistake the parser could not catch.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    BuildFailed(String),
    #[error("interrupted: nothing from the interrupted builds was registered")]
    Interrupted,
    #[error("{0}")]
    Environment(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Pipeline(p) => match **p {
                PipelineError::Read { .. } | PipelineError::SourceHash { .. } => {
                    ErrorKind::Environment
                }
                _ => ErrorKind::User,
            },
            Error::Usage(_) => ErrorKind::User,
            Error::Profile(ProfileError::Read { .. }) => ErrorKind::Environment,
            Error::Profile(_) => ErrorKind::User,
            Error::Slurm(_) => ErrorKind::Environment,
            Error::Realize(RealizeError::LiveJobs { .. }) => ErrorKind::User,
            Error::Store(StoreError::NoDerivation(_)) => ErrorKind::User,
            Error::Store(StoreError::Register { .. }) => ErrorKind::Internal,
            Error::Store(_) | Error::Realize(_) | Error::Environment(_) => ErrorKind::Environment,
            Error::BuildFailed(_) => ErrorKind::Build,
            Error::Interrupted => ErrorKind::Interrupted,
        }
    }
}

impl From<PipelineError> for Error {
    fn from(e: PipelineError) -> Self {
        Error::Pipeline(Box::new(e))
    }
}
