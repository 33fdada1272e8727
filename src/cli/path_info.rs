//! `kdbuild path-info TARGET|PATH... [-r] [-S] [--json]`: valid store paths, first column the
//! store path, then content hash, size, registration time and deriver.

use std::collections::BTreeSet;

use serde_json::json;

use super::context::Context;
use super::output::print_json;
use super::show_derivation::parse_drv_ref;
use crate::Error;
use crate::store::{PathInfo, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Target names, globs or store paths.
    #[arg(required = true)]
    pub what: Vec<String>,
    /// Include the closure: everything the paths refer to, recursively.
    #[arg(short, long)]
    pub recursive: bool,
    /// Also print each path's closure size.
    #[arg(short = 'S', long)]
    pub closure_size: bool,
}

/// Resolves arguments to store path names (`<hash>-<name>`).
fn resolve(ctx: &Context, store: &Store, what: &[String]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut targets = Vec::new();
    for w in what {
        match parse_drv_ref(w) {
            Some(_) => out.push(
                w.trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or(w)
                    .to_string(),
            ),
            None => targets.push(w.clone()),
        }
    }
    if !targets.is_empty() {
        let (pipeline, registry) = ctx.load()?;
        let roots = pipeline.select(&targets)?;
        let inst = ctx.instantiate(&pipeline, &registry, &roots, Some(store))?;
        for r in roots {
            out.push(
                inst.nodes[inst.node_of(r).expect("root in closure")]
                    .path
                    .to_string(),
            );
        }
    }
    Ok(out)
}

/// The closure of `paths` over references (the paths included).
pub fn closure(store: &Store, paths: &[String]) -> Result<BTreeSet<String>, Error> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = paths.to_vec();
    while let Some(p) = stack.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let refs = store
            .db
            .references(&p)
            .map_err(|e| crate::store::StoreError::db(store.root(), e))?;
        stack.extend(refs.into_iter().map(|(r, _)| r));
    }
    Ok(seen)
}

fn info(store: &Store, p: &str) -> Result<PathInfo, Error> {
    store
        .db
        .path_info(p)
        .map_err(|e| crate::store::StoreError::db(store.root(), e))?
        .ok_or_else(|| {
            Error::Usage(format!(
                "`{p}` is not valid in this store (build it with `kdbuild realize`)"
            ))
        })
}

/// A byte count for people: `1.5 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let store = ctx
        .open_store_read_only()?
        .ok_or_else(|| Error::Usage(format!("there is no store at `{}`", ctx.store.display())))?;
    let named = resolve(ctx, &store, &args.what)?;
    let paths: Vec<String> = if args.recursive {
        closure(&store, &named)?.into_iter().collect()
    } else {
        named
    };
    let mut rows = Vec::new();
    for p in &paths {
        let i = info(&store, p)?;
        let closure_size = if args.closure_size {
            let mut total = 0;
            for q in closure(&store, std::slice::from_ref(p))? {
                total += info(&store, &q)?.size;
            }
            Some(total)
        } else {
            None
        };
        rows.push((i, closure_size));
    }
    if ctx.json {
        print_json(&json!(rows
            .iter()
            .map(|(i, cs)| json!({
                "path": store.root().join(&i.path),
                "content_hash": i.content_hash.to_string(),
                "size": i.size,
                "closure_size": cs,
                "registered_at": i.registered_at,
                "deriver": i.drv_hash,
                "target": i.target,
                "references": store.db.references(&i.path).unwrap_or_default()
                    .into_iter().map(|(r, reason)| json!({"path": store.root().join(r), "input": reason}))
                    .collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()));
        return Ok(());
    }
    for (i, cs) in rows {
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(i.registered_at.max(0) as u64),
        );
        let mut line = format!(
            "{}\t{}\t{}",
            store.root().join(&i.path).display(),
            i.content_hash,
            human(i.size)
        );
        if let Some(c) = cs {
            line.push_str(&format!("\tclosure {}", human(c)));
        }
        line.push_str(&format!("\t{when}\tderiver {}", i.drv_hash));
        println!("{line}");
    }
    Ok(())
}
