//! `kdbuild verify [--check-contents] [--repair]`: check that the database is true to the
//! disk (`store::verify`) and, with `--repair`, rebuild what is broken from the derivation
//! files (`realize::repair`). Exit code 0 when the store is (or was made) consistent, 3
//! when problems remain.

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::context::Context;
use super::output::{RealizeReporter, print_json};
use super::path_info::human;
use super::resolve::existing_store_rw;
use crate::Error;
use crate::derivation::Derivation;
use crate::hash::DrvHash;
use crate::realize::Options;
use crate::realize::repair::{RepairReport, repair};
use crate::stage::Registry;
use crate::store::roots::StoreLock;
use crate::store::verify::{VerifyOptions, VerifyReport, verify};
use crate::store::{Store, StoreError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Re-hash every valid path's content (reads every byte).
    #[arg(long)]
    pub check_contents: bool,
    /// Fix what is found: rebuild broken paths from their derivations, re-record rows,
    /// remove strays.
    #[arg(long)]
    pub repair: bool,
    /// Builds at once while repairing.
    #[arg(short, long, default_value_t = 1)]
    pub jobs: usize,
}

fn check(store: &Store, registry: &Registry, contents: bool) -> Result<VerifyReport, StoreError> {
    verify(
        store,
        &VerifyOptions {
            check_contents: contents,
            threads: 0,
        },
        &|d: &Derivation| {
            registry
                .get(&d.kind)
                .map(|k| k.references(d))
                .unwrap_or_default()
        },
    )
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let store = existing_store_rw(ctx)?;
    let root = store.root().to_path_buf();
    // Shared: gc must not delete what is being checked or rebuilt; realizers may go on.
    let _lock = StoreLock::shared(&root, &mut || {
        eprintln!("waiting for a running `kdbuild gc` to finish")
    })?;
    let registry = Registry::builtin();
    let first = check(&store, &registry, args.check_contents)?;
    let show = |r: &VerifyReport| {
        if ctx.json {
            return;
        }
        for p in &r.problems {
            println!("{}\t{p}", p.kind());
        }
    };
    if !ctx.json {
        eprintln!(
            "checked {} valid path{}{}",
            first.checked,
            if first.checked == 1 { "" } else { "s" },
            if args.check_contents {
                format!(", {} hashed", human(first.bytes_hashed))
            } else {
                String::new()
            }
        );
    }
    show(&first);
    if first.ok() || !args.repair {
        if ctx.json {
            print_json(&json!({
                "checked": first.checked,
                "bytes_hashed": first.bytes_hashed,
                "problems": first.problems,
                "repair": null,
                "remaining": first.problems,
            }));
        }
        if first.ok() {
            return Ok(());
        }
        return Err(Error::Environment(format!(
            "{} problem{} in the store; `kdbuild verify{} --repair` fixes them",
            first.problems.len(),
            if first.problems.len() == 1 { "" } else { "s" },
            if args.check_contents {
                " --check-contents"
            } else {
                ""
            }
        )));
    }

    // Repair. Derivation files that are gone may still come from the current pipeline.
    let pipeline = ctx.load().ok();
    let known = |h: &DrvHash| -> Option<Derivation> {
        let (p, reg) = pipeline.as_ref()?;
        let name = first
            .problems
            .iter()
            .map(|x| x.path())
            .find(|x| x.starts_with(&h.to_string()))?
            .get(crate::hash::DRV_HASH_CHARS + 1..)?;
        let t = p.find(name)?;
        let inst = ctx.instantiate(p, reg, &[t], None).ok()?;
        let n = inst.node_of(t)?;
        (inst.nodes[n].hash == *h).then(|| inst.derivation(p, n))
    };
    let store = Arc::new(Mutex::new(store));
    let mut reporter = RealizeReporter::new();
    let fixed = repair(
        store.clone(),
        &first,
        &Arc::new(registry),
        &Options {
            jobs: args.jobs,
            keep_going: true,
            // Repairs build on this machine: a broken path is fixed where it is checked.
            executor: crate::realize::ExecutorChoice::Local,
        },
        &mut reporter,
        &known,
    )?;
    if fixed.interrupted {
        return Err(Error::Interrupted);
    }
    let store = store.lock().expect("store lock");
    let after = check(&store, &Registry::builtin(), args.check_contents)?;
    if ctx.json {
        print_json(&json!({
            "checked": first.checked,
            "bytes_hashed": first.bytes_hashed,
            "problems": first.problems,
            "repair": fixed,
            "remaining": after.problems,
        }));
    } else {
        print_repair(&root, &fixed);
    }
    if after.ok() {
        if !ctx.json {
            eprintln!("the store is consistent");
        }
        return Ok(());
    }
    show(&after);
    Err(Error::Environment(format!(
        "{} problem{} remain after repair",
        after.problems.len(),
        if after.problems.len() == 1 { "" } else { "s" }
    )))
}

fn print_repair(root: &std::path::Path, r: &RepairReport) {
    let p = |what: &str, v: &[String]| {
        for x in v {
            println!("{what}\t{}", root.join(x).display());
        }
    };
    p("rebuilt", &r.rebuilt);
    for x in &r.not_reproducible {
        println!(
            "differs\t{}: the rebuild's content hash differs from the one recorded (the build is not bit-for-bit reproducible)",
            root.join(x).display()
        );
    }
    p("sealed", &r.sealed);
    for x in &r.records {
        println!("recorded\tderivation {x}");
    }
    for (a, b) in &r.references {
        println!(
            "recorded\t{} -> {}",
            root.join(a).display(),
            root.join(b).display()
        );
    }
    for x in &r.derivations {
        println!("rewrote\tdrv/{x}.json");
    }
    p("removed", &r.removed);
    p("invalidated", &r.invalidated);
    for (x, why) in &r.failed {
        println!("failed\t{}: {why}", root.join(x).display());
    }
}
