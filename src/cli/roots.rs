//! `kdbuild roots list|add|remove`: the GC roots — pinned store paths, result links, and the
//! temporary roots of running realizers and builds.

use serde_json::json;

use super::context::Context;
use super::output::print_json;
use super::resolve::{existing_store, existing_store_rw, resolve};
use crate::Error;
use crate::store::roots::{self, RootError};
use crate::store_path::StorePath;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: RootsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RootsCommand {
    /// List every root and the store path it keeps.
    List,
    /// Pin a valid store path as a root: a target's current result, or a store path.
    Add {
        /// A target name or a store path.
        what: String,
        /// The root's name (default: the target name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a pinned root (its paths become garbage unless another root keeps them).
    Remove {
        /// The root's name.
        name: String,
    },
}

fn root_err(e: RootError) -> Error {
    match e {
        RootError::Store(s) => Error::Store(s),
        other => Error::Usage(other.to_string()),
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    match args.command {
        RootsCommand::List => list(ctx),
        RootsCommand::Add { what, name } => {
            let store = existing_store_rw(ctx)?;
            let named = resolve(ctx, &store, &what)?;
            let path: StorePath = named
                .path()
                .parse()
                .map_err(|e: crate::store_path::NameError| Error::Usage(e.to_string()))?;
            let name = name.unwrap_or_else(|| path.name().to_string());
            let link = roots::add_pinned(&store, &name, &path, &mut || {
                eprintln!("waiting for a running `kdbuild gc` to finish")
            })
            .map_err(root_err)?;
            println!("{} -> {}", link.display(), store.path_of(&path).display());
            Ok(())
        }
        RootsCommand::Remove { name } => {
            let store = existing_store(ctx)?;
            roots::remove_pinned(store.root(), &name).map_err(root_err)
        }
    }
}

fn list(ctx: &Context) -> Result<(), Error> {
    let store = existing_store(ctx)?;
    let root = store.root();
    let pinned = roots::pinned(root)?;
    let indirect = roots::indirect(root)?;
    let temp = roots::read_temp_roots(root)?;
    let mut jobs: std::collections::BTreeMap<String, usize> = Default::default();
    for (origin, _) in roots::job_roots(&store)? {
        *jobs.entry(origin).or_default() += 1;
    }
    if ctx.json {
        print_json(&json!({
            "pinned": pinned.iter().map(|p| json!({
                "name": p.name,
                "path": p.path.as_ref().map(|x| root.join(x)),
            })).collect::<Vec<_>>(),
            "links": indirect.iter().map(|i| json!({
                "link": i.link,
                "path": i.path.as_ref().map(|x| root.join(x)),
            })).collect::<Vec<_>>(),
            "temporary": temp.live.iter().map(|(f, paths)| json!({
                "holder": f,
                "paths": paths.len(),
            })).collect::<Vec<_>>(),
            "jobs": jobs.iter().map(|(j, n)| json!({"job": j, "paths": n})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    for p in &pinned {
        match &p.path {
            Some(x) => println!("pinned\t{}\t{}", p.name, root.join(x).display()),
            None => println!("pinned\t{}\t(points outside the store)", p.name),
        }
    }
    for i in &indirect {
        match &i.path {
            Some(x) => println!("link\t{}\t{}", i.link.display(), root.join(x).display()),
            None => println!(
                "link\t{}\t(gone or elsewhere: not a root)",
                i.link.display()
            ),
        }
    }
    for (holder, paths) in &temp.live {
        println!("temporary\t{holder}\t{} paths", paths.len());
    }
    for (job, paths) in &jobs {
        println!("slurm\t{job}\t{paths} paths (an unsettled job's output and inputs)");
    }
    Ok(())
}
