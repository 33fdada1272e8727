//! `kdbuild build DRV` (internal): what the realizer runs in a build's staging directory.

use std::path::PathBuf;

use super::context::Context;
use crate::Error;
use crate::executor::builder::run_build;
use crate::hash::DrvHash;
use crate::stage::Registry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The derivation hash.
    pub drv: String,
    /// The staging directory to build into.
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write the result record, last.
    #[arg(long)]
    pub result: PathBuf,
    /// On success, move the output to its store path (unregistered), for builds whose
    /// dependents run on other machines (SLURM jobs).
    #[arg(long)]
    pub publish: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let hash: DrvHash = args
        .drv
        .parse()
        .map_err(|e: crate::hash::HashParseError| Error::Usage(e.to_string()))?;
    let registry = Registry::builtin();
    let ok = run_build(
        &ctx.store,
        &hash,
        &args.out,
        &args.result,
        &registry,
        args.publish,
    )
    .map_err(|e| match e {
        crate::executor::builder::BuildSetupError::Store(s) => Error::Store(s),
        other => Error::BuildFailed(other.to_string()),
    })?;
    if ok {
        Ok(())
    } else {
        Err(Error::BuildFailed(format!("build of {hash} failed")))
    }
}
