//! Turning a command-line argument into a store path: a target name (resolved through the
//! pipeline to its current derivation's path) or a store path given as `<hash>-<name>`, as an
//! absolute path, or as a bare derivation hash.

use super::context::Context;
use super::show_derivation::parse_drv_ref;
use crate::Error;
use crate::store::{Store, StoreError};

/// What an argument named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// A target of the pipeline: its name and the store path of its current derivation.
    Target { name: String, path: String },
    /// A store path given directly.
    Path(String),
}

impl Named {
    /// The store path name (`<hash>-<name>`).
    pub fn path(&self) -> &str {
        match self {
            Named::Target { path, .. } | Named::Path(path) => path,
        }
    }
}

/// Resolves `what`. A store path is taken as given; anything else must be a target.
pub fn resolve(ctx: &Context, store: &Store, what: &str) -> Result<Named, Error> {
    if let Some(hash) = parse_drv_ref(what) {
        let base = what
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(what);
        if base.len() > crate::hash::DRV_HASH_CHARS {
            return Ok(Named::Path(base.to_string()));
        }
        // A bare hash: the valid path of that derivation, or its recorded target.
        let h = hash.to_string();
        let found: Option<String> = store
            .db
            .conn()
            .query_row(
                "SELECT path FROM valid_paths WHERE drv_hash = ?1 UNION ALL
                 SELECT drv_hash || '-' || target FROM derivations WHERE drv_hash = ?1 LIMIT 1",
                [&h],
                |r| r.get(0),
            )
            .ok();
        if let Some(p) = found {
            return Ok(Named::Path(p));
        }
        let d = store.read_derivation(&hash)?;
        return Ok(Named::Path(format!("{h}-{}", d.name)));
    }
    let (pipeline, registry) = ctx.load()?;
    let t = pipeline.target(what)?;
    let inst = ctx.instantiate(&pipeline, &registry, &[t], Some(store))?;
    let node = &inst.nodes[inst.node_of(t).expect("the root is in its closure")];
    Ok(Named::Target {
        name: pipeline.targets[t].name.clone(),
        path: node.path.to_string(),
    })
}

/// Opens the store for reading, or says there is none.
pub fn existing_store(ctx: &Context) -> Result<Store, Error> {
    ctx.open_store_read_only()?
        .ok_or_else(|| Error::Usage(format!("there is no store at `{}`", ctx.store.display())))
}

/// Opens an existing store for writing, or says there is none (gc, roots and verify never
/// create a store).
pub fn existing_store_rw(ctx: &Context) -> Result<Store, Error> {
    if !ctx.store.join("db.sqlite").exists() {
        return Err(Error::Usage(format!(
            "there is no store at `{}`",
            ctx.store.display()
        )));
    }
    ctx.open_store()
}

/// A database error of `store`.
pub fn db_err(store: &Store) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Store(StoreError::db(store.root(), e))
}
