//! The sbatch script of one build attempt: `#SBATCH` lines from the stage's resources and the
//! profile, then one `exec` of `kdbuild build`.
//!
//! Nothing in it is ever interpreted by a shell except the last line, and every word of that
//! line is single-quoted. The `#SBATCH` lines are read by sbatch's own parser, which splits
//! on blanks, groups double-quoted text, takes `\` as an escape and `#` as the start of a
//! comment: every value is therefore written inside double quotes with `\` and `"` escaped
//! (checked against slurm-wlm 22.05: a job name of `a b "q" 'x' $(touch f) `id` #c \` arrives
//! intact, and nothing runs). A newline would end the `#SBATCH` line and start a shell
//! line, so values with control characters are refused. In `--output` a `%` is a pattern
//! (`%j`), so a literal one is doubled; and a `\` anywhere in it turns patterns off and is
//! itself dropped (slurm-wlm 22.05), so a log path with a backslash cannot be said to SLURM
//! at all: then SLURM's output goes to `/dev/null` and the script sends its own output to
//! the log (`exec >'…' 2>&1`), losing only slurmstepd's own lines.

use std::fmt::Write as _;
use std::path::Path;

use crate::derivation::Resources;
use crate::pipeline::resources::{check_sbatch_flag, format_slurm_time};

use super::profile::Profile;

/// Why a script could not be written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScriptError {
    #[error("{what} `{value}` contains a control character (a newline would end the #SBATCH line)")]
    ControlChar { what: String, value: String },
    #[error("{what} `{}` is not valid UTF-8", .path)]
    NotUtf8 { what: String, path: String },
    #[error("sbatch flag `{flag}`: {message}")]
    BadFlag { flag: String, message: String },
}

/// Everything one attempt's script is made from.
#[derive(Debug)]
pub struct JobScript<'a> {
    /// The target name; the job is named `kd-<target>`.
    pub target: &'a str,
    pub attempt: u32,
    /// SLURM writes the job's stdout and stderr here (the store's build log).
    pub log: &'a Path,
    /// The job's working directory (on the shared file system).
    pub workdir: &'a Path,
    /// The stage's resources (never hashed).
    pub resources: &'a Resources,
    /// The memory of this attempt in MiB (the stage's, grown after OUT_OF_MEMORY).
    pub mem_mb: Option<u64>,
    pub profile: &'a Profile,
    /// Job ids this job waits for (`afterok`).
    pub dependencies: &'a [String],
    /// The command the job runs: program and arguments.
    pub command: &'a [String],
}

/// Quotes a value for an `#SBATCH` line: `"…"` with `\` and `"` escaped.
pub fn sbatch_quote(what: &str, value: &str) -> Result<String, ScriptError> {
    if value.chars().any(char::is_control) {
        return Err(ScriptError::ControlChar {
            what: what.to_string(),
            value: value.escape_debug().to_string(),
        });
    }
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    Ok(s)
}

/// Quotes one word for a POSIX shell: `'…'`, with `'` written as `'\''`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn path_str<'p>(what: &str, p: &'p Path) -> Result<&'p str, ScriptError> {
    p.to_str().ok_or_else(|| ScriptError::NotUtf8 {
        what: what.to_string(),
        path: p.display().to_string(),
    })
}

/// Writes the script.
pub fn render(job: &JobScript) -> Result<String, ScriptError> {
    let mut lines: Vec<(String, String)> = Vec::new(); // (what, flag)
    let mut opt = |what: &str, flag: String| lines.push((what.to_string(), flag));
    opt("job name", format!("--job-name=kd-{}", job.target));
    let log = path_str("log path", job.log)?;
    let redirect = log.contains('\\');
    if redirect {
        opt("log path", "--output=/dev/null".into());
    } else {
        opt("log path", format!("--output={}", log.replace('%', "%%")));
    }
    opt(
        "working directory",
        format!("--chdir={}", path_str("working directory", job.workdir)?),
    );
    let r = job.resources;
    if let Some(t) = r.time_s {
        opt("time", format!("--time={}", format_slurm_time(t)));
    }
    if let Some(m) = job.mem_mb {
        opt("mem", format!("--mem={m}M"));
    }
    if let Some(c) = r.cpus {
        opt("cpus", format!("--cpus-per-task={c}"));
    }
    if let Some(g) = r.gpus.filter(|&g| g > 0) {
        opt("gpus", format!("--gpus={g}"));
    }
    let p = job.profile;
    if let Some(v) = r.partition.as_ref().or(p.partition.as_ref()) {
        opt("partition", format!("--partition={v}"));
    }
    if let Some(v) = r.account.as_ref().or(p.account.as_ref()) {
        opt("account", format!("--account={v}"));
    }
    if let Some(v) = &p.qos {
        opt("qos", format!("--qos={v}"));
    }
    if let Some(v) = &p.mail_type {
        opt("mail_type", format!("--mail-type={v}"));
    }
    if let Some(v) = &p.mail_user {
        opt("mail_user", format!("--mail-user={v}"));
    }
    for f in p.sbatch.iter().chain(&r.sbatch) {
        check_sbatch_flag(f).map_err(|message| ScriptError::BadFlag {
            flag: f.clone(),
            message,
        })?;
        opt("sbatch flag", f.clone());
    }
    if !job.dependencies.is_empty() {
        opt(
            "dependency",
            format!("--dependency=afterok:{}", job.dependencies.join(":")),
        );
        opt("dependency", "--kill-on-invalid-dep=yes".into());
    }

    let mut s = String::from("#!/bin/sh\n");
    let _ = writeln!(
        s,
        "# kdbuild: build of `{}`, attempt {} (generated; sbatch reads the #SBATCH lines)",
        job.target, job.attempt
    );
    for (what, flag) in &lines {
        let _ = writeln!(s, "#SBATCH {}", sbatch_quote(what, flag)?);
    }
    if redirect {
        let _ = writeln!(s, "exec >{} 2>&1", shell_quote(log));
    }
    let words: Vec<String> = job.command.iter().map(|w| shell_quote(w)).collect();
    let _ = writeln!(s, "exec {}", words.join(" "));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn resources() -> Resources {
        Resources {
            cpus: Some(4),
            mem_mb: Some(2048),
            gpus: Some(1),
            time_s: Some(6 * 3600),
            partition: Some("gpu".into()),
            account: None,
            sbatch: vec!["--constraint=a100".into()],
            retries: Some(2),
            mem_growth: None,
        }
    }

    fn render_with(r: &Resources, p: &Profile, deps: &[String], cmd: &[String]) -> String {
        let log = PathBuf::from("/store/log/h/1.log");
        let wd = PathBuf::from("/store/tmp");
        render(&JobScript {
            target: "teacher-alpha-train",
            attempt: 1,
            log: &log,
            workdir: &wd,
            resources: r,
            mem_mb: r.mem_mb,
            profile: p,
            dependencies: deps,
            command: cmd,
        })
        .unwrap()
    }

    #[test]
    fn sbatch_lines_come_from_resources_and_profile() {
        let p = Profile {
            account: Some("PAS1".into()),
            partition: Some("cpu".into()),
            qos: Some("normal".into()),
            mail_type: Some("END,FAIL".into()),
            mail_user: Some("me@example.org".into()),
            sbatch: vec!["--exclusive".into()],
            ..Profile::default()
        };
        let s = render_with(
            &resources(),
            &p,
            &["11".into(), "12".into()],
            &["/store/bin/x-kdbuild".into(), "build".into()],
        );
        let expected = r#"#!/bin/sh
# kdbuild: build of `teacher-alpha-train`, attempt 1 (generated; sbatch reads the #SBATCH lines)
#SBATCH "--job-name=kd-teacher-alpha-train"
#SBATCH "--output=/store/log/h/1.log"
#SBATCH "--chdir=/store/tmp"
#SBATCH "--time=0-06:00:00"
#SBATCH "--mem=2048M"
#SBATCH "--cpus-per-task=4"
#SBATCH "--gpus=1"
#SBATCH "--partition=gpu"
#SBATCH "--account=PAS1"
#SBATCH "--qos=normal"
#SBATCH "--mail-type=END,FAIL"
#SBATCH "--mail-user=me@example.org"
#SBATCH "--exclusive"
#SBATCH "--constraint=a100"
#SBATCH "--dependency=afterok:11:12"
#SBATCH "--kill-on-invalid-dep=yes"
exec '/store/bin/x-kdbuild' 'build'
"#;
        assert_eq!(s, expected, "the stage's partition wins over the profile's");
    }

    #[test]
    fn no_resources_no_lines() {
        let s = render_with(
            &Resources::default(),
            &Profile::default(),
            &[],
            &["kdbuild".into()],
        );
        assert_eq!(s.lines().filter(|l| l.starts_with("#SBATCH")).count(), 3);
        assert!(!s.contains("dependency"));
    }

    #[test]
    fn hostile_values_are_quoted_for_sbatch_and_the_shell() {
        let evil = r#"a b "q" 'x' $(touch /tmp/pwned) `id` #c \ end"#;
        assert_eq!(
            sbatch_quote("v", evil).unwrap(),
            r#""a b \"q\" 'x' $(touch /tmp/pwned) `id` #c \\ end""#
        );
        assert_eq!(
            shell_quote(evil),
            r#"'a b "q" '\''x'\'' $(touch /tmp/pwned) `id` #c \ end'"#
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let r = Resources {
            account: Some(evil.into()),
            ..Resources::default()
        };
        let s = render_with(
            &r,
            &Profile::default(),
            &[],
            &["/st ore/bin/k".into(), evil.into()],
        );
        // The only line a shell reads is the exec line, and its words are single-quoted.
        let shell_lines: Vec<&str> = s.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(shell_lines.len(), 1, "{s}");
        assert!(
            shell_lines[0].starts_with("exec '/st ore/bin/k' 'a b"),
            "{s}"
        );
    }

    #[test]
    fn control_characters_are_refused() {
        let r = Resources {
            partition: Some("gpu\necho pwned".into()),
            ..Resources::default()
        };
        let log = PathBuf::from("/l");
        let e = render(&JobScript {
            target: "t",
            attempt: 1,
            log: &log,
            workdir: &log,
            resources: &r,
            mem_mb: None,
            profile: &Profile::default(),
            dependencies: &[],
            command: &["k".into()],
        })
        .unwrap_err();
        assert!(matches!(e, ScriptError::ControlChar { .. }), "{e}");
    }

    #[test]
    fn percent_in_the_log_path_is_literal() {
        let log = PathBuf::from("/st%ore/log/1.log");
        let wd = PathBuf::from("/st%ore/tmp");
        let s = render(&JobScript {
            target: "t",
            attempt: 1,
            log: &log,
            workdir: &wd,
            resources: &Resources::default(),
            mem_mb: None,
            profile: &Profile::default(),
            dependencies: &[],
            command: &["k".into()],
        })
        .unwrap();
        assert!(
            s.contains(r#"#SBATCH "--output=/st%%ore/log/1.log""#),
            "{s}"
        );
        assert!(s.contains(r#"#SBATCH "--chdir=/st%ore/tmp""#), "{s}");

        let log = PathBuf::from(r"/st\ore/log/1.log");
        let s = render(&JobScript {
            target: "t",
            attempt: 1,
            log: &log,
            workdir: &wd,
            resources: &Resources::default(),
            mem_mb: None,
            profile: &Profile::default(),
            dependencies: &[],
            command: &["k".into()],
        })
        .unwrap();
        assert!(s.contains(r#"#SBATCH "--output=/dev/null""#), "{s}");
        assert!(
            s.contains("exec >'/st\\ore/log/1.log' 2>&1\nexec 'k'\n"),
            "{s}"
        );
    }

    #[test]
    fn reserved_flags_are_refused() {
        let r = Resources {
            sbatch: vec!["--output=/elsewhere".into()],
            ..Resources::default()
        };
        let log = PathBuf::from("/l");
        let e = render(&JobScript {
            target: "t",
            attempt: 1,
            log: &log,
            workdir: &log,
            resources: &r,
            mem_mb: None,
            profile: &Profile::default(),
            dependencies: &[],
            command: &["k".into()],
        })
        .unwrap_err();
        assert!(matches!(e, ScriptError::BadFlag { .. }), "{e}");
    }
}
