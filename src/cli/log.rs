//! `kdbuild log TARGET|HASH`: the log of a target's latest build attempt.

use std::path::PathBuf;

use super::context::Context;
use super::show_derivation::parse_drv_ref;
use crate::Error;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A target name, a derivation hash or a store path.
    pub what: String,
    /// A specific attempt (default: the latest).
    #[arg(long)]
    pub attempt: Option<u32>,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let store = ctx
        .open_store_read_only()?
        .ok_or_else(|| Error::Usage(format!("there is no store at `{}`", ctx.store.display())))?;
    // The current derivation of a target, or a hash given directly.
    let (hash, target) = match parse_drv_ref(&args.what) {
        Some(h) => (Some(h.to_string()), None),
        None => {
            let (pipeline, registry) = ctx.load()?;
            let t = pipeline.target(&args.what)?;
            let inst = ctx.instantiate(&pipeline, &registry, &[t], Some(&store))?;
            let node = &inst.nodes[inst.node_of(t).expect("root in closure")];
            (
                Some(node.hash.to_string()),
                Some(pipeline.targets[t].name.clone()),
            )
        }
    };
    let mut builds = match &hash {
        Some(h) => store.db.builds_of(h).unwrap_or_default(),
        None => Vec::new(),
    };
    // The current derivation never built: fall back to the target's latest build of any hash.
    if builds.is_empty()
        && let Some(t) = &target
    {
        builds = store
            .db
            .conn()
            .prepare("SELECT drv_hash FROM builds WHERE target = ?1 ORDER BY id DESC LIMIT 1")
            .and_then(|mut s| s.query_row([t], |r| r.get::<_, String>(0)))
            .ok()
            .map(|h| store.db.builds_of(&h).unwrap_or_default())
            .unwrap_or_default();
        if !builds.is_empty() {
            eprintln!(
                "note: the current derivation of `{t}` was never built; showing its latest build"
            );
        }
    }
    let build = match args.attempt {
        Some(a) => builds.iter().find(|b| b.attempt == a),
        None => builds.first(),
    }
    .ok_or_else(|| Error::Usage(format!("no build log for `{}`", args.what)))?;
    let log = PathBuf::from(build.log_path.clone().unwrap_or_default());
    let text = std::fs::read(&log)
        .map_err(|e| Error::Environment(format!("cannot read log `{}`: {e}", log.display())))?;
    eprintln!(
        "log of {} attempt {} ({}): {}",
        build.target,
        build.attempt,
        build.outcome,
        log.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().write_all(&text);
    Ok(())
}
