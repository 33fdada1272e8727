//! `kdbuild show-derivation TARGET|HASH`: a derivation as JSON, with its hash and store path.

use serde_json::json;

use super::context::Context;
use super::output::print_json;
use crate::Error;
use crate::hash::DrvHash;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A target name, a derivation hash or a store path.
    pub what: String,
}

/// A derivation hash named by `s`: the hash itself, or a store path (`<hash>-<name>`).
pub fn parse_drv_ref(s: &str) -> Option<DrvHash> {
    let base = s.trim_end_matches('/').rsplit('/').next().unwrap_or(s);
    let hash = base.get(..crate::hash::DRV_HASH_CHARS)?;
    let rest = &base[crate::hash::DRV_HASH_CHARS..];
    if !(rest.is_empty() || rest.starts_with('-')) {
        return None;
    }
    hash.parse().ok()
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let (pipeline, registry) = ctx.load()?;
    let (hash, drv) = match pipeline.find(&args.what) {
        Some(t) => {
            let store = ctx.open_store_read_only()?;
            let inst = ctx.instantiate(&pipeline, &registry, &[t], store.as_ref())?;
            let n = inst.node_of(t).expect("the root is in its closure");
            (inst.nodes[n].hash, inst.derivation(&pipeline, n))
        }
        None => match parse_drv_ref(&args.what) {
            Some(h) => {
                let store = ctx.open_store()?;
                (h, store.read_derivation(&h)?)
            }
            None => {
                pipeline.target(&args.what)?;
                unreachable!("target() fails for unknown names");
            }
        },
    };
    let mut v = serde_json::to_value(&drv).expect("derivations serialise");
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("drv_hash".into(), json!(hash.to_string()));
        m.insert("store_path".into(), json!(format!("{hash}-{}", drv.name)));
    }
    print_json(&v);
    Ok(())
}
