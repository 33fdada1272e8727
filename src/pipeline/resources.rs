//! Resources as written (`mem = "64G"`, `time = "6h"`) → validated [`Resources`].
//!
//! Memory: a number of MiB, or a number with a unit `K M G T` (binary, as SLURM reads them).
//! Time: a number of minutes, `30m`, `6h`, `2h30m`, `90s`, `1d`, or SLURM's own forms
//! `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`.
//! Names (`partition`, `account`) and extra `sbatch` flags are checked here too, so that a
//! value that could never work on a cluster is a located error when the pipeline loads, not
//! a failed submission later: no blanks or control characters in names, flags written as one
//! `--name=value` word each, and none of the flags kdbuild sets itself.

use crate::derivation::Resources;

use super::spec::ResourcesSpec;

/// A resource value that does not parse: which key, and what was expected.
#[derive(Debug, PartialEq)]
pub struct ResourceError {
    pub key: &'static str,
    pub message: String,
}

/// Merges `over` onto `base` (per key, `over` wins) and validates the result.
pub fn resolve(
    base: Option<&ResourcesSpec>,
    over: Option<&ResourcesSpec>,
) -> Result<Resources, ResourceError> {
    let d = ResourcesSpec::default();
    let b = base.unwrap_or(&d);
    let o = over.unwrap_or(&d);
    let mem = o.mem.as_ref().or(b.mem.as_ref());
    let time = o.time.as_ref().or(b.time.as_ref());
    let gpus = o.gpus.or(b.gpus);
    let cpus = o.cpus.or(b.cpus);
    if cpus == Some(0) {
        return Err(ResourceError {
            key: "cpus",
            message: "must be at least 1".into(),
        });
    }
    if cpus.is_some_and(|c| c > 4096) {
        return Err(ResourceError {
            key: "cpus",
            message: format!(
                "{} CPUs for one task is not plausible (at most 4096)",
                cpus.unwrap_or(0)
            ),
        });
    }
    if gpus.is_some_and(|g| g > 64) {
        return Err(ResourceError {
            key: "gpus",
            message: format!(
                "{} GPUs for one job is not plausible (at most 64)",
                gpus.unwrap_or(0)
            ),
        });
    }
    let mem_growth = o.mem_growth.or(b.mem_growth);
    if let Some(g) = mem_growth
        && !(g.is_finite() && (1.0..=16.0).contains(&g))
    {
        return Err(ResourceError {
            key: "mem_growth",
            message: format!("{g} is not a factor between 1 and 16"),
        });
    }
    let partition = o.partition.clone().or_else(|| b.partition.clone());
    let account = o.account.clone().or_else(|| b.account.clone());
    for (key, v) in [("partition", &partition), ("account", &account)] {
        if let Some(v) = v {
            check_name(v).map_err(|message| ResourceError { key, message })?;
        }
    }
    let sbatch = o
        .sbatch
        .clone()
        .or_else(|| b.sbatch.clone())
        .unwrap_or_default();
    for f in &sbatch {
        check_sbatch_flag(f).map_err(|m| ResourceError {
            key: "sbatch",
            message: format!("`{f}`: {m}"),
        })?;
    }
    Ok(Resources {
        cpus,
        mem_mb: mem.map(parse_mem).transpose().map_err(|m| ResourceError {
            key: "mem",
            message: m,
        })?,
        gpus,
        time_s: time
            .map(parse_time)
            .transpose()
            .map_err(|m| ResourceError {
                key: "time",
                message: m,
            })?,
        partition,
        account,
        sbatch,
        retries: o.retries.or(b.retries),
        mem_growth,
    })
}

/// Flags that kdbuild sets itself (the log, the dependencies, the working directory, the
/// one job per derivation), so a stage or profile may not: (long name, short form).
pub const RESERVED_SBATCH_FLAGS: &[(&str, &str)] = &[
    ("output", "-o"),
    ("error", "-e"),
    ("input", "-i"),
    ("job-name", "-J"),
    ("dependency", "-d"),
    ("kill-on-invalid-dep", ""),
    ("chdir", "-D"),
    ("array", "-a"),
    ("wrap", ""),
    ("parsable", ""),
];

/// Checks one extra `sbatch` flag: one `--name=value` (or `-x`) word, no control characters,
/// not one that kdbuild sets itself.
pub fn check_sbatch_flag(flag: &str) -> Result<(), String> {
    if flag.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    if !flag.starts_with('-') || flag.len() < 2 {
        return Err(
            "expected a flag such as \"--constraint=a100\" (one flag per string, values after `=`)"
                .into(),
        );
    }
    let reserved = if let Some(long) = flag.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or_default();
        RESERVED_SBATCH_FLAGS.iter().find(|(l, _)| *l == name)
    } else {
        let short = flag.get(..2).unwrap_or(flag);
        RESERVED_SBATCH_FLAGS.iter().find(|(_, s)| *s == short)
    };
    match reserved {
        Some((name, _)) => Err(format!("kdbuild sets `--{name}` itself")),
        None => Ok(()),
    }
}

/// Checks a SLURM name (partition, account, qos): non-empty, no blanks or control characters.
pub fn check_name(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = v.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}`: SLURM names contain no {}",
            v.escape_debug(),
            if c.is_control() {
                "control characters"
            } else {
                "blanks"
            }
        ));
    }
    Ok(())
}

/// Memory in MiB.
pub fn parse_mem(v: &toml::Value) -> Result<u64, String> {
    let expected = "expected MiB as a number, or a number with K, M, G or T (e.g. \"64G\")";
    match v {
        toml::Value::Integer(i) if *i > 0 => Ok(*i as u64),
        toml::Value::String(s) => {
            let t = s.trim();
            let (num, unit) = t.split_at(
                t.find(|c: char| !c.is_ascii_digit() && c != '.')
                    .unwrap_or(t.len()),
            );
            let n: f64 = num.parse().map_err(|_| format!("`{s}`: {expected}"))?;
            let factor = match unit.trim().to_ascii_uppercase().trim_end_matches('B') {
                "" | "M" => 1.0,
                "K" => 1.0 / 1024.0,
                "G" => 1024.0,
                "T" => 1024.0 * 1024.0,
                _ => return Err(format!("`{s}`: {expected}")),
            };
            let mb = (n * factor).ceil();
            if mb < 1.0 {
                return Err(format!("`{s}`: less than 1 MiB"));
            }
            Ok(mb as u64)
        }
        other => Err(format!("`{other}`: {expected}")),
    }
}

/// Time limit in seconds.
pub fn parse_time(v: &toml::Value) -> Result<u64, String> {
    let expected = "expected minutes as a number, \"30m\", \"6h\", \"2h30m\", \"1d\", \"HH:MM:SS\" or \"D-HH:MM:SS\"";
    match v {
        toml::Value::Integer(i) if *i > 0 => Ok(*i as u64 * 60),
        toml::Value::String(s) => {
            parse_time_str(s.trim()).ok_or_else(|| format!("`{s}`: {expected}"))
        }
        other => Err(format!("`{other}`: {expected}")),
    }
}

fn parse_time_str(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    if s.contains(':') || s.contains('-') {
        let (days, rest) = match s.split_once('-') {
            Some((d, r)) => (d.parse::<u64>().ok()?, r),
            None => (0, s),
        };
        let parts: Vec<u64> = rest
            .split(':')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<_>>()?;
        let has_days = s.contains('-');
        let (h, m, sec) = match (has_days, parts.as_slice()) {
            (false, [m, sec]) => (0, *m, *sec),
            (_, [h, m, sec]) => (*h, *m, *sec),
            (true, [h]) => (*h, 0, 0),
            (true, [h, m]) => (*h, *m, 0),
            _ => return None,
        };
        if m >= 60 && (has_days || parts.len() == 3) || sec >= 60 {
            return None;
        }
        let total = ((days * 24 + h) * 60 + m) * 60 + sec;
        return (total > 0).then_some(total);
    }
    // unit form: 2h30m, 90s, 1d
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            'd' => 86400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    (total > 0).then_some(total)
}

/// Seconds → SLURM's `D-HH:MM:SS`.
pub fn format_slurm_time(secs: u64) -> String {
    let (d, r) = (secs / 86400, secs % 86400);
    format!("{d}-{:02}:{:02}:{:02}", r / 3600, (r % 3600) / 60, r % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> toml::Value {
        toml::Value::String(v.into())
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_mem(&s("64G")), Ok(65536));
        assert_eq!(parse_mem(&s("512M")), Ok(512));
        assert_eq!(parse_mem(&s("1T")), Ok(1048576));
        assert_eq!(parse_mem(&s("1.5GB")), Ok(1536));
        assert_eq!(parse_mem(&toml::Value::Integer(100)), Ok(100));
        assert!(parse_mem(&s("64X")).is_err());
        assert!(parse_mem(&s("lots")).is_err());
        assert!(parse_mem(&toml::Value::Integer(-1)).is_err());
    }

    #[test]
    fn time_formats() {
        assert_eq!(parse_time(&s("6h")), Ok(21600));
        assert_eq!(parse_time(&s("2h30m")), Ok(9000));
        assert_eq!(parse_time(&s("90s")), Ok(90));
        assert_eq!(parse_time(&s("1d")), Ok(86400));
        assert_eq!(parse_time(&s("01:00:00")), Ok(3600));
        assert_eq!(parse_time(&s("10:30")), Ok(630));
        assert_eq!(parse_time(&s("1-00:00:00")), Ok(86400));
        assert_eq!(parse_time(&s("2-12")), Ok(216000));
        assert_eq!(parse_time(&toml::Value::Integer(30)), Ok(1800));
        for bad in ["", "6x", "1:99:00", "h", "1-2-3", "0m"] {
            assert!(parse_time(&s(bad)).is_err(), "{bad}");
        }
        assert_eq!(format_slurm_time(21600), "0-06:00:00");
    }

    #[test]
    fn stage_values_override_defaults() {
        let base = ResourcesSpec {
            cpus: Some(2),
            mem: Some(s("1G")),
            ..Default::default()
        };
        let over = ResourcesSpec {
            mem: Some(s("2G")),
            ..Default::default()
        };
        let r = resolve(Some(&base), Some(&over)).unwrap();
        assert_eq!((r.cpus, r.mem_mb), (Some(2), Some(2048)));
        let bad = ResourcesSpec {
            time: Some(s("soon")),
            ..Default::default()
        };
        assert_eq!(resolve(None, Some(&bad)).unwrap_err().key, "time");
    }

    #[test]
    fn names_flags_and_counts_are_checked() {
        let with = |f: fn(&mut ResourcesSpec)| {
            let mut r = ResourcesSpec::default();
            f(&mut r);
            resolve(None, Some(&r))
        };
        assert_eq!(
            with(|r| r.partition = Some("gpu nodes".into()))
                .unwrap_err()
                .key,
            "partition"
        );
        assert_eq!(
            with(|r| r.account = Some("a\necho x".into()))
                .unwrap_err()
                .key,
            "account"
        );
        assert_eq!(with(|r| r.gpus = Some(65)).unwrap_err().key, "gpus");
        assert_eq!(with(|r| r.cpus = Some(0)).unwrap_err().key, "cpus");
        assert_eq!(with(|r| r.cpus = Some(100_000)).unwrap_err().key, "cpus");
        let e = with(|r| r.sbatch = Some(vec!["--output=/x".into()])).unwrap_err();
        assert_eq!(e.key, "sbatch");
        assert!(
            e.message.contains("sets `--output` itself"),
            "{}",
            e.message
        );
        assert!(with(|r| r.sbatch = Some(vec!["-o".into()])).is_err());
        assert!(with(|r| r.sbatch = Some(vec!["exclusive".into()])).is_err());
        assert!(
            with(|r| r.sbatch = Some(vec!["--constraint=a100".into(), "--exclusive".into()]))
                .is_ok()
        );
        assert!(with(|r| r.partition = Some("gpu,gpu2".into())).is_ok());
    }
}
