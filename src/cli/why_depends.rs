//! `kdbuild why-depends A B [--all] [--build]`: the chain of references from A to B, each edge
//! named by the input it goes through, like `nix why-depends`:
//!
//! ```text
//! student-demo-eval --gat--> student-demo-gat --teacher--> teacher-demo-gat
//! ```
//!
//! Runtime references (what a valid output needs to run) by default; `--build` walks
//! build-time inputs (what a derivation was built from), which reach sources too. A is a
//! target (its current result, or its latest one) or a store path; B is a target (any store
//! path of that target matches), a store path, or `source:NAME` (which implies `--build`).

use std::collections::HashMap;

use serde_json::json;

use super::context::Context;
use super::output::print_json;
use super::resolve::{Named, db_err, existing_store, resolve};
use crate::Error;
use crate::derivation::Input;
use crate::store::Store;
use crate::store::closure::{Edge, why_depends};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The path that depends: a target or a store path.
    pub from: String,
    /// What it depends on: a target, a store path, or `source:NAME`.
    pub to: String,
    /// Show every chain, not only a shortest one.
    #[arg(short, long)]
    pub all: bool,
    /// Walk build-time inputs instead of runtime references.
    #[arg(long)]
    pub build: bool,
}

/// At most this many chains are shown with `--all`.
const MAX_CHAINS: usize = 1000;

/// The display name of a node: the target name of a store path, or `source:NAME`.
fn short(n: &str) -> &str {
    if n.starts_with("source:") {
        n
    } else {
        n.get(crate::hash::DRV_HASH_CHARS + 1..).unwrap_or(n)
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let store = existing_store(ctx)?;
    let build = args.build || args.to.starts_with("source:");
    let from = resolve_from(ctx, &store, &args.from, build)?;

    // B: a source, a store path (exact), or a target (any of its store paths).
    let to = args.to.clone();
    let is_target: Box<dyn Fn(&str) -> bool> = if to.starts_with("source:") {
        Box::new(move |n: &str| n == to)
    } else if crate::cli::show_derivation::parse_drv_ref(&to).is_some() {
        let Named::Path(p) = resolve(ctx, &store, &to)? else {
            unreachable!("store paths resolve to paths")
        };
        Box::new(move |n: &str| n == p)
    } else {
        let (pipeline, _) = ctx.load()?;
        let name = pipeline.targets[pipeline.target(&to)?].name.clone();
        Box::new(move |n: &str| !n.starts_with("source:") && short(n) == name)
    };

    // Build-time edges for derivations the database never recorded (never attempted):
    // from the pipeline's instantiation of A, when A is a target.
    let mut planned: HashMap<String, Vec<(String, String)>> = HashMap::new();
    if build && let Named::Target { name, .. } = &from.0 {
        let (pipeline, registry) = ctx.load()?;
        let t = pipeline.target(name)?;
        let inst = ctx.instantiate(&pipeline, &registry, &[t], Some(&store))?;
        for i in 0..inst.nodes.len() {
            let d = inst.derivation(&pipeline, i);
            planned.insert(inst.nodes[i].path.to_string(), input_edges(&d));
        }
    }
    let mut edges = |n: &str| -> Result<Vec<(String, String)>, Error> {
        if n.starts_with("source:") {
            return Ok(Vec::new());
        }
        if !build {
            return Ok(store
                .db
                .references(n)
                .map_err(db_err(&store))?
                .into_iter()
                .collect());
        }
        let hash = n.get(..crate::hash::DRV_HASH_CHARS).unwrap_or(n);
        let rows = store.db.drv_inputs(hash).map_err(db_err(&store))?;
        if !rows.is_empty() {
            return Ok(rows
                .into_iter()
                .map(|(name, input)| (input, name))
                .collect());
        }
        if let Some(e) = planned.get(n) {
            return Ok(e.clone());
        }
        match hash.parse().map(|h| store.read_derivation(&h)) {
            Ok(Ok(d)) => Ok(input_edges(&d)),
            _ => Ok(Vec::new()),
        }
    };
    let found = why_depends(&from.1, &*is_target, &mut edges, args.all, MAX_CHAINS)?;

    let root = store.root();
    if ctx.json {
        let edge = |e: &Edge| {
            let full = |n: &str| {
                if n.starts_with("source:") {
                    n.to_string()
                } else {
                    root.join(n).display().to_string()
                }
            };
            json!({"from": full(&e.from), "to": full(&e.to), "input": e.reason})
        };
        print_json(&json!({
            "from": root.join(&from.1),
            "to": args.to,
            "build": build,
            "chains": found.chains.iter().map(|c| c.iter().map(edge).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "truncated": found.truncated,
        }));
        return Ok(());
    }
    if found.chains.is_empty() {
        println!(
            "`{}` does not depend on `{}`{}",
            short(&from.1),
            args.to,
            if build {
                " (not even at build time)"
            } else {
                " at run time (try --build for build-time inputs)"
            }
        );
        return Ok(());
    }
    if ctx.verbose {
        println!("{}", root.join(&from.1).display());
    }
    for chain in &found.chains {
        let mut line = short(&from.1).to_string();
        for e in chain {
            line.push_str(&format!(" --{}--> {}", e.reason, short(&e.to)));
        }
        println!("{line}");
        if ctx.verbose {
            for e in chain {
                let to = if e.to.starts_with("source:") {
                    e.to.clone()
                } else {
                    root.join(&e.to).display().to_string()
                };
                println!("  --{}--> {to}", e.reason);
            }
        }
    }
    if found.truncated {
        eprintln!("(only the first {MAX_CHAINS} chains are shown)");
    }
    Ok(())
}

/// A derivation's inputs as edges: (store path or `source:NAME`, input name).
fn input_edges(d: &crate::derivation::Derivation) -> Vec<(String, String)> {
    d.inputs
        .iter()
        .map(|(name, input)| match input {
            Input::Derivation { .. } => (
                input
                    .store_path()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                name.clone(),
            ),
            Input::Source { name: s, .. } => (format!("source:{s}"), name.clone()),
        })
        .collect()
}

/// Resolves A to a store path name. A target's current result when it is valid, else its
/// latest valid result (said on stderr); with `build`, its current derivation even if it
/// was never built.
fn resolve_from(
    ctx: &Context,
    store: &Store,
    what: &str,
    build: bool,
) -> Result<(Named, String), Error> {
    let named = resolve(ctx, store, what)?;
    let Named::Target { name, path } = &named else {
        let p = named.path().to_string();
        return Ok((named, p));
    };
    let valid = store.db.path_info(path).map_err(db_err(store))?.is_some();
    if valid || build {
        let p = path.clone();
        return Ok((named, p));
    }
    match store
        .db
        .latest_valid_for_target(name)
        .map_err(db_err(store))?
    {
        Some(latest) => {
            eprintln!(
                "`{name}` is not built as the pipeline now asks; using its latest result {}",
                store.root().join(&latest.path).display()
            );
            Ok((named, latest.path))
        }
        None => Err(Error::Usage(format!(
            "`{name}` has no valid result in this store: realize it first, or use --build"
        ))),
    }
}
