//! The SLURM profile: a site's settings that are not a stage's resources — account,
//! partition, QOS, mail, extra sbatch flags, how often to poll, how many jobs to queue.
//!
//! Read from `--profile FILE` (env `KDBUILD_PROFILE`), else from `kdbuild.toml` beside the
//! pipeline file if there is one; without either, the defaults. Like the pipeline, unknown
//! keys and bad values are errors that name the file, line, column and key.
//!
//! ```toml
//! [slurm]
//! account = "PAS1234"           # --account, unless the stage's resources name one
//! partition = "gpu"             # --partition, likewise
//! qos = "normal"                # --qos
//! mail_type = "END,FAIL"        # --mail-type
//! mail_user = "me@example.org"  # --mail-user
//! sbatch = ["--constraint=a100"]   # extra flags for every job (before the stage's own)
//! poll_interval = "30s"         # the longest wait between two polls (they start at 1 s)
//! max_queued = 200              # the most jobs in the queue at once
//! latency_wait = "10s"          # how long a finished job's files may take to appear here
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::pipeline::error::{Location, did_you_mean};
use crate::pipeline::resources::{check_name, check_sbatch_flag};

/// The file looked for beside the pipeline when no `--profile` is given.
pub const PROFILE_FILE_NAME: &str = "kdbuild.toml";

/// The SLURM settings of a site.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub account: Option<String>,
    pub partition: Option<String>,
    pub qos: Option<String>,
    pub mail_type: Option<String>,
    pub mail_user: Option<String>,
    /// Extra sbatch flags for every job, before the stage's own.
    pub sbatch: Vec<String>,
    /// The longest wait between two polls; polls start at [`Profile::MIN_POLL`] and back off.
    pub poll_interval: Duration,
    /// The most jobs this realizer keeps queued or running at once.
    pub max_queued: usize,
    /// How long a finished job's result record may take to become visible here (a shared
    /// file system's attribute cache can lag behind the node that wrote it).
    pub latency_wait: Duration,
    /// The file it was read from, if any.
    pub source: Option<PathBuf>,
}

impl Profile {
    /// The first wait between polls; it doubles while nothing changes, up to `poll_interval`.
    pub const MIN_POLL: Duration = Duration::from_millis(500);
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            account: None,
            partition: None,
            qos: None,
            mail_type: None,
            mail_user: None,
            sbatch: Vec::new(),
            poll_interval: Duration::from_secs(30),
            max_queued: 200,
            latency_wait: Duration::from_secs(10),
            source: None,
        }
    }
}

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{loc}: {message}")]
    Syntax { loc: Location, message: String },
    #[error("{loc}: `{key}`: {message}")]
    Invalid {
        loc: Location,
        key: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    slurm: Option<SlurmSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlurmSpec {
    account: Option<Spanned<String>>,
    partition: Option<Spanned<String>>,
    qos: Option<Spanned<String>>,
    mail_type: Option<Spanned<String>>,
    mail_user: Option<Spanned<String>>,
    #[serde(default)]
    sbatch: Vec<Spanned<String>>,
    poll_interval: Option<Spanned<toml::Value>>,
    max_queued: Option<Spanned<i64>>,
    latency_wait: Option<Spanned<toml::Value>>,
}

/// The profile to use: `explicit` if given, else `kdbuild.toml` beside `pipeline` if it
/// exists, else the defaults.
pub fn find(explicit: Option<&Path>, pipeline: &Path) -> Result<Profile, ProfileError> {
    if let Some(p) = explicit {
        return load(p);
    }
    let beside = pipeline
        .parent()
        .unwrap_or(Path::new("."))
        .join(PROFILE_FILE_NAME);
    if beside.is_file() {
        return load(&beside);
    }
    Ok(Profile::default())
}

/// Reads a profile file.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let src = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &src)
}

/// Parses a profile's text (`file` names it in errors).
pub fn parse(file: &Path, src: &str) -> Result<Profile, ProfileError> {
    let spec: FileSpec = toml::from_str(src).map_err(|e| {
        let offset = e.span().map_or(src.len(), |s| s.start);
        let mut message = e.message().trim().to_string();
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((name, tail)) = rest.split_once('`')
        {
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let hint = did_you_mean(name, expected.iter().copied());
            message = format!(
                "unknown key `{name}`{hint}; {}",
                tail.trim_start_matches(", ").trim()
            );
        }
        ProfileError::Syntax {
            loc: Location::of_offset(file, src, offset),
            message,
        }
    })?;
    let mut p = Profile {
        source: Some(file.to_path_buf()),
        ..Profile::default()
    };
    let Some(s) = spec.slurm else {
        return Ok(p);
    };
    let invalid =
        |span: std::ops::Range<usize>, key: &str, message: String| ProfileError::Invalid {
            loc: Location::of_offset(file, src, span.start),
            key: format!("slurm.{key}"),
            message,
        };
    let name = |v: Option<Spanned<String>>, key: &str| -> Result<Option<String>, ProfileError> {
        match v {
            None => Ok(None),
            Some(v) => {
                check_name(v.get_ref()).map_err(|m| invalid(v.span(), key, m))?;
                Ok(Some(v.into_inner()))
            }
        }
    };
    p.account = name(s.account, "account")?;
    p.partition = name(s.partition, "partition")?;
    p.qos = name(s.qos, "qos")?;
    p.mail_type = name(s.mail_type, "mail_type")?;
    p.mail_user = name(s.mail_user, "mail_user")?;
    for f in s.sbatch {
        check_sbatch_flag(f.get_ref())
            .map_err(|m| invalid(f.span(), "sbatch", format!("`{}`: {m}", f.get_ref())))?;
        p.sbatch.push(f.into_inner());
    }
    let duration = |v: Option<Spanned<toml::Value>>,
                    key: &str,
                    default: Duration|
     -> Result<Duration, ProfileError> {
        let Some(v) = v else { return Ok(default) };
        parse_duration(v.get_ref()).map_err(|m| invalid(v.span(), key, m))
    };
    p.poll_interval = duration(s.poll_interval, "poll_interval", p.poll_interval)?;
    if p.poll_interval < Profile::MIN_POLL {
        p.poll_interval = Profile::MIN_POLL;
    }
    p.latency_wait = duration(s.latency_wait, "latency_wait", p.latency_wait)?;
    if let Some(m) = s.max_queued {
        let n = *m.get_ref();
        if !(1..=100_000).contains(&n) {
            return Err(invalid(
                m.span(),
                "max_queued",
                format!("{n} is not a number of jobs between 1 and 100000"),
            ));
        }
        p.max_queued = n as usize;
    }
    Ok(p)
}

/// A duration: seconds as a number, or `"30s"`, `"2m"`, `"500ms"`.
fn parse_duration(v: &toml::Value) -> Result<Duration, String> {
    let expected = "expected seconds as a number, or a duration such as \"30s\", \"2m\", \"500ms\"";
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        toml::Value::Float(f) if f.is_finite() && *f >= 0.0 => Ok(Duration::from_secs_f64(*f)),
        toml::Value::String(s) => {
            humantime::parse_duration(s.trim()).map_err(|_| format!("`{s}`: {expected}"))
        }
        other => Err(format!("`{other}`: {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Profile, ProfileError> {
        parse(Path::new("kdbuild.toml"), src)
    }

    #[test]
    fn reads_every_key() {
        let pr = p(r#"
[slurm]
account = "PAS1234"
partition = "gpu"
qos = "normal"
mail_type = "END,FAIL"
mail_user = "me@example.org"
sbatch = ["--constraint=a100", "--exclusive"]
poll_interval = "5s"
max_queued = 50
latency_wait = 3
"#)
        .unwrap();
        assert_eq!(pr.account.as_deref(), Some("PAS1234"));
        assert_eq!(pr.partition.as_deref(), Some("gpu"));
        assert_eq!(pr.qos.as_deref(), Some("normal"));
        assert_eq!(pr.mail_type.as_deref(), Some("END,FAIL"));
        assert_eq!(pr.mail_user.as_deref(), Some("me@example.org"));
        assert_eq!(pr.sbatch, vec!["--constraint=a100", "--exclusive"]);
        assert_eq!(pr.poll_interval, Duration::from_secs(5));
        assert_eq!(pr.max_queued, 50);
        assert_eq!(pr.latency_wait, Duration::from_secs(3));
        assert_eq!(p("").unwrap().max_queued, 200, "defaults");
    }

    #[test]
    fn errors_are_located() {
        let e = p("[slurm]\npartiton = \"gpu\"\n").unwrap_err().to_string();
        assert!(
            e.starts_with("kdbuild.toml:2:1: unknown key `partiton` (did you mean `partition`?)"),
            "{e}"
        );
        let e = p("[slurm]\naccount = \"a\"\npoll_interval = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("kdbuild.toml:3:17: `slurm.poll_interval`: `soon`"),
            "{e}"
        );
        let e = p("[slurm]\nsbatch = [\"--wrap=rm -rf /\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`slurm.sbatch`") && e.contains("sets `--wrap` itself"),
            "{e}"
        );
        let e = p("[slurm]\nmax_queued = 0\n").unwrap_err().to_string();
        assert!(
            e.starts_with("kdbuild.toml:2:14: `slurm.max_queued`"),
            "{e}"
        );
        let e = p("[slurm]\nqos = \"a b\"\n").unwrap_err().to_string();
        assert!(e.contains("`slurm.qos`"), "{e}");
    }

    #[test]
    fn found_beside_the_pipeline() {
        let d = tempfile::tempdir().unwrap();
        let pipeline = d.path().join("p.toml");
        assert_eq!(find(None, &pipeline).unwrap(), Profile::default());
        std::fs::write(
            d.path().join(PROFILE_FILE_NAME),
            "[slurm]\nqos = \"long\"\n",
        )
        .unwrap();
        assert_eq!(find(None, &pipeline).unwrap().qos.as_deref(), Some("long"));
        let other = d.path().join("other.toml");
        std::fs::write(&other, "[slurm]\nqos = \"short\"\n").unwrap();
        assert_eq!(
            find(Some(&other), &pipeline).unwrap().qos.as_deref(),
            Some("short")
        );
    }
}
