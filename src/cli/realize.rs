//! `kdbuild realize TARGET|GLOB...`: build what is missing, reuse what is built.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::context::{Context, ExecutorKind};
use super::output::{RealizeReporter, print_json};
use crate::Error;
use crate::pipeline::Pipeline;
use crate::realize::slurm::{OnInterrupt, SlurmOptions};
use crate::realize::{self, ExecutorChoice, Options, Plan};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Target names or glob patterns (quote globs: 'student-*-eval').
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Show what would be built and why; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Builds at once (default 1); with `--executor slurm`, the most jobs queued at once
    /// (default: the profile's `max_queued`).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Go on with independent builds after a failure.
    #[arg(short, long)]
    pub keep_going: bool,
    /// Rebuild the named targets even if they are valid.
    #[arg(long)]
    pub rebuild: bool,
    /// Rebuild every target of this stage in the closure (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub rebuild_stage: Vec<String>,
    /// Where result links go.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Make no result links.
    #[arg(long)]
    pub no_link: bool,
    /// `--executor slurm`: return once every derivation is queued; a later `kdbuild
    /// realize` re-attaches to the jobs and registers their outputs.
    #[arg(long)]
    pub detach: bool,
    /// `--executor slurm`: on Ctrl-C cancel this realize's jobs without asking (without
    /// it, a terminal is asked; elsewhere the jobs stay queued).
    #[arg(long)]
    pub cancel_on_interrupt: bool,
    /// With `-n`: say why each changed input changed, recursively (as `kdbuild explain`).
    #[arg(long, requires = "dry_run")]
    pub explain: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let slurm = ctx.executor == ExecutorKind::Slurm;
    if !slurm && (args.detach || args.cancel_on_interrupt) {
        return Err(Error::Usage(format!(
            "`{}` needs `--executor slurm`",
            if args.detach {
                "--detach"
            } else {
                "--cancel-on-interrupt"
            }
        )));
    }
    if args.jobs == Some(0) {
        return Err(Error::Usage("`-j` must be at least 1".into()));
    }
    let executor = if slurm && !args.dry_run {
        let profile = ctx.slurm_profile()?;
        ExecutorChoice::Slurm(Box::new(SlurmOptions {
            max_queued: args.jobs.unwrap_or(profile.max_queued),
            profile,
            detach: args.detach,
            on_interrupt: if args.cancel_on_interrupt {
                OnInterrupt::Cancel
            } else {
                OnInterrupt::Ask
            },
        }))
    } else {
        ExecutorChoice::Local
    };
    let (pipeline, registry) = ctx.load()?;
    let roots = pipeline.select(&args.targets)?;
    let mut forced: HashSet<usize> = HashSet::new();
    if args.rebuild {
        forced.extend(roots.iter().copied());
    }
    for stage in &args.rebuild_stage {
        forced.extend(pipeline.stage_targets(stage)?.iter().copied());
    }

    if args.dry_run {
        let store = ctx.open_store_read_only()?;
        let plan = ctx.plan(&pipeline, &registry, &roots, &forced, store.as_ref())?;
        print_plan(ctx, &pipeline, &plan, store.as_ref(), args.explain)?;
        return Ok(());
    }

    let store = ctx.open_store()?;
    // Held until the result links (themselves roots) are made.
    let (plan, _temp_roots) = ctx.plan_rooted(&pipeline, &registry, &roots, &forced, &store)?;
    let store = Arc::new(Mutex::new(store));
    let registry = Arc::new(registry);
    let mut reporter = RealizeReporter::new();
    let summary = realize::run(
        store.clone(),
        &pipeline,
        &plan,
        &registry,
        &Options {
            jobs: args.jobs.unwrap_or(1),
            keep_going: args.keep_going,
            executor,
        },
        &mut reporter,
    )?;

    // Result links for every requested target that is now valid.
    let store = store.lock().expect("store lock");
    let mut valid_roots = Vec::new();
    for &r in &plan.roots {
        let node = &plan.inst.nodes[r];
        if store.db.is_valid(&node.path).unwrap_or(false) {
            valid_roots.push(r);
            if !args.no_link {
                crate::realize::results::link_result(&store, &args.results, &node.path).map_err(
                    |e| {
                        Error::Environment(format!(
                            "cannot link result `{}`: {e}",
                            pipeline.targets[node.target].name
                        ))
                    },
                )?;
            }
        }
    }
    if ctx.json {
        print_json(&json!({
            "built": summary.built,
            "failed": summary.failed,
            "skipped": summary.skipped,
            "queued": summary.queued,
            "results": valid_roots.iter().map(|&r| {
                let n = &plan.inst.nodes[r];
                json!({"target": pipeline.targets[n.target].name, "path": store.path_of(&n.path)})
            }).collect::<Vec<_>>(),
        }));
    } else {
        // The store paths on stdout (for scripts); where to look on stderr (for people).
        for &r in &valid_roots {
            println!("{}", store.path_of(&plan.inst.nodes[r].path).display());
        }
        if !args.no_link && !valid_roots.is_empty() {
            for &r in &valid_roots {
                let name = &pipeline.targets[plan.inst.nodes[r].target].name;
                let link = args.results.join(name);
                let metrics = link.join("metrics.json");
                if store
                    .path_of(&plan.inst.nodes[r].path)
                    .join("metrics.json")
                    .exists()
                {
                    eprintln!(
                        "result: {} (metrics: {})",
                        link.display(),
                        metrics.display()
                    );
                } else {
                    eprintln!("result: {}", link.display());
                }
            }
        }
    }
    if summary.interrupted {
        return Err(Error::Interrupted);
    }
    if !summary.failed.is_empty() {
        let skipped = if summary.skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; {} skipped because an input failed",
                summary.skipped.len()
            )
        };
        return Err(Error::BuildFailed(format!(
            "{} build{} failed: {}{skipped}; rerun `kdbuild realize` to build only what is missing",
            summary.failed.len(),
            if summary.failed.len() == 1 { "" } else { "s" },
            summary.failed.join(", ")
        )));
    }
    if summary.built == 0 && summary.already_valid == 0 && ctx.verbose {
        eprintln!("nothing to build");
    }
    Ok(())
}

/// The dry run's report: each derivation to build, with its store path and reasons, and with
/// `explain` why each changed input changed.
fn print_plan(
    ctx: &Context,
    pipeline: &Pipeline,
    plan: &Plan,
    store: Option<&crate::store::Store>,
    explain: bool,
) -> Result<(), Error> {
    let to_build = plan.to_build();
    let root = store
        .map(|s| s.root().to_path_buf())
        .unwrap_or_else(|| std::path::absolute(&ctx.store).unwrap_or(ctx.store.clone()));
    if ctx.json {
        let items: Vec<_> = to_build
            .iter()
            .map(|&i| {
                let n = &plan.inst.nodes[i];
                json!({
                    "target": plan.inst.name(pipeline, i),
                    "path": root.join(n.path.to_string()),
                    "reasons": plan.nodes[i].reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!({ "to_build": items }));
        return Ok(());
    }
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if to_build.is_empty() {
        let _ = writeln!(out, "nothing to build: every requested target is valid");
        return Ok(());
    }
    let _ = writeln!(
        out,
        "would build {} derivation{}:",
        to_build.len(),
        if to_build.len() == 1 { "" } else { "s" }
    );
    for &i in &to_build {
        let n = &plan.inst.nodes[i];
        let _ = writeln!(out, "  {}", plan.inst.name(pipeline, i));
        let _ = writeln!(out, "    path: {}", root.join(n.path.to_string()).display());
        let reasons: Vec<String> = plan.nodes[i]
            .reasons
            .iter()
            .map(|r| r.to_string())
            .collect();
        let _ = writeln!(out, "    reason: {}", reasons.join("; "));
        if explain
            && let crate::realize::explain::Explanation::Changed { causes, .. } =
                crate::realize::explain::explain(pipeline, &plan.inst, i, store)?
            && causes
                .iter()
                .any(|c| !c.because.is_empty() || c.note.is_some())
        {
            let mut text = String::new();
            crate::realize::explain::render_causes(&causes, 6, &mut text);
            let _ = writeln!(out, "    explained:");
            let _ = write!(out, "{text}");
        }
    }
    Ok(())
}
