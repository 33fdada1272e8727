//! The command line: one file per subcommand, each an `Args` struct and a `run` that calls the
//! library. All terminal output goes through [`output`], so `--json`, progress bars and plain
//! lines are decided in one place.

pub mod build;
pub mod context;
pub mod explain;
pub mod gc;
pub mod graph;
pub mod log;
pub mod metrics;
pub mod output;
pub mod path_info;
pub mod realize;
pub mod report;
pub mod resolve;
pub mod roots;
pub mod show_derivation;
pub mod status;
pub mod targets;
pub mod verify;
pub mod why_depends;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::Error;

/// kdbuild: a declarative, Nix-like build system for ML training pipelines.
#[derive(Debug, Parser)]
#[command(name = "kdbuild", version, about, propagate_version = true)]
pub struct Cli {
    /// The store directory.
    #[arg(long, global = true, env = "KDBUILD_STORE", default_value = "store")]
    pub store: PathBuf,
    /// The pipeline file.
    #[arg(long, global = true, env = "KDBUILD_PIPELINE", default_value = context::DEFAULT_PIPELINE)]
    pub pipeline: PathBuf,
    /// Where builds run: `local` (child processes) or `slurm` (one sbatch job per
    /// derivation). Recorded with each build, never hashed.
    #[arg(long, global = true, env = "KDBUILD_EXECUTOR", value_enum, default_value_t = context::ExecutorKind::Local)]
    pub executor: context::ExecutorKind,
    /// The SLURM profile (account, partition, qos, mail, sbatch flags, polling); default:
    /// `kdbuild.toml` beside the pipeline file, if there is one.
    #[arg(long, global = true, env = "KDBUILD_PROFILE", value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Print tables as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Say more.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build targets and everything they need; reuse what is built.
    Realize(realize::Args),
    /// List the pipeline's targets, one per line.
    Targets(targets::Args),
    /// Print a target's derivation as JSON.
    ShowDerivation(show_derivation::Args),
    /// Draw the dependency graph of targets.
    Graph(graph::Args),
    /// Print the build log of a target.
    Log(log::Args),
    /// Show valid store paths: content hash, size, deriver.
    PathInfo(path_info::Args),
    /// Tables of realized evaluations' metrics, or the deltas between two.
    Metrics(metrics::Args),
    /// Write a self-contained HTML report of realized evaluations.
    Report(report::Args),
    /// List the SLURM jobs no realizer has settled yet, with their states.
    Status(status::Args),
    /// Say why a target would be rebuilt: what changed since its result was built.
    Explain(explain::Args),
    /// Show the chain of references from one path to another, with the input of each step.
    WhyDepends(why_depends::Args),
    /// Delete every store path that no root needs.
    Gc(gc::Args),
    /// List, add or remove GC roots.
    Roots(roots::Args),
    /// Check the store database against the disk; `--repair` fixes what it finds.
    Verify(verify::Args),
    /// Build one derivation in a staging directory (internal: the realizer runs this).
    #[command(hide = true)]
    Build(build::Args),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    let ctx = context::Context {
        store: cli.store,
        pipeline: cli.pipeline,
        json: cli.json,
        verbose: cli.verbose,
        executor: cli.executor,
        profile: cli.profile,
    };
    match cli.command {
        Command::Realize(a) => realize::run(&ctx, a),
        Command::Targets(a) => targets::run(&ctx, a),
        Command::ShowDerivation(a) => show_derivation::run(&ctx, a),
        Command::Graph(a) => graph::run(&ctx, a),
        Command::Log(a) => log::run(&ctx, a),
        Command::PathInfo(a) => path_info::run(&ctx, a),
        Command::Metrics(a) => metrics::run(&ctx, a),
        Command::Report(a) => report::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
        Command::Explain(a) => explain::run(&ctx, a),
        Command::WhyDepends(a) => why_depends::run(&ctx, a),
        Command::Gc(a) => gc::run(&ctx, a),
        Command::Roots(a) => roots::run(&ctx, a),
        Command::Verify(a) => verify::run(&ctx, a),
        Command::Build(a) => build::run(&ctx, a),
    }
}
