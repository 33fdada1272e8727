//! `kdbuild gc [--dry-run] [--max-freed SIZE] [--runtime-only]`: delete every store path no
//! root needs (see `store::gc` for what is kept and why).

use serde_json::json;

use super::context::Context;
use super::output::print_json;
use super::path_info::human;
use super::resolve::existing_store_rw;
use crate::Error;
use crate::store::gc::{GcOptions, collect};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Say what would be deleted; delete nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Stop once this much was freed (`10G`, `512M`, `100K`, or bytes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_freed: Option<u64>,
    /// Keep only what kept paths refer to at run time; collect build-time inputs that
    /// nothing refers to (a kept student's teacher, its preprocessed data). By default they
    /// are kept, for provenance.
    #[arg(long)]
    pub runtime_only: bool,
}

/// Parses a size: a number with an optional binary suffix K, M, G or T (`KiB`, `MB`… are
/// read alike).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. `10G`, `512M`, `4096`)"))?;
    let mult: u64 = match unit
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches('i')
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}`: unknown size unit `{unit}` (use K, M, G or T)"
            ));
        }
    };
    Ok((n * mult as f64) as u64)
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let mut store = existing_store_rw(ctx)?;
    let opts = GcOptions {
        dry_run: args.dry_run,
        max_freed: args.max_freed,
        keep_build_inputs: !args.runtime_only,
    };
    let r = collect(&mut store, &opts, &mut || {
        eprintln!("waiting for the store lock (a realize is starting, or a verify runs)")
    })?;
    let root = store.root();
    if ctx.json {
        let list = |v: &[(String, u64)]| {
            v.iter()
                .map(|(p, b)| json!({"path": root.join(p), "bytes": b}))
                .collect::<Vec<_>>()
        };
        print_json(&json!({
            "dry_run": args.dry_run,
            "roots": r.roots,
            "live": r.live,
            "deleted": list(&r.deleted),
            "freed_bytes": r.freed_paths_bytes(),
            "derivations": r.derivations,
            "staging": list(&r.staging),
            "strays": list(&r.strays),
            "other_freed_bytes": r.freed_other_bytes(),
            "busy": r.busy,
            "stale_roots": r.stale_roots,
            "mark_ms": r.mark_ms,
            "sweep_ms": r.sweep_ms,
            "sweep_steps_ms": r.sweep_steps.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }));
        return Ok(());
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleting"
    };
    if args.dry_run || ctx.verbose {
        let tmp = root.join("tmp");
        let listed = r
            .deleted
            .iter()
            .chain(&r.strays)
            .map(|(p, _)| root.join(p))
            .chain(r.staging.iter().map(|(p, _)| tmp.join(p)));
        for path in listed {
            println!("{verb} {}", path.display());
        }
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    println!(
        "{} {} ({}), {}, {} and {} ({}); {} kept from {}{}",
        if args.dry_run { "would free" } else { "freed" },
        plural(r.deleted.len(), "store path", "store paths"),
        human(r.freed_paths_bytes()),
        plural(r.derivations, "derivation", "derivations"),
        plural(r.staging.len(), "staging directory", "staging directories"),
        plural(r.strays.len(), "stray", "strays"),
        human(r.freed_other_bytes()),
        plural(r.live, "valid path", "valid paths"),
        plural(r.roots, "root", "roots"),
        if r.busy > 0 {
            format!("; {} in use by running builds left alone", r.busy)
        } else {
            String::new()
        }
    );
    if ctx.verbose {
        let steps: Vec<String> = r
            .sweep_steps
            .iter()
            .map(|(k, v)| format!("{k} {v} ms"))
            .collect();
        eprintln!(
            "mark {} ms, sweep {} ms ({})",
            r.mark_ms,
            r.sweep_ms,
            steps.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2mb"), Ok(2 << 20));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("3X").is_err());
    }
}
