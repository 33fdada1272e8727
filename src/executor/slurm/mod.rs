//! The SLURM executor: one `sbatch` job per derivation, the whole DAG queued at once.
//!
//! - [`script`] writes a job's script (`#SBATCH` lines from the stage's resources and the
//!   [`profile`], every value quoted); the job runs `kdbuild build` with a copy of the
//!   running binary placed in the store ([`install_binary`]), so the nodes run exactly the
//!   code that computed the hashes.
//! - [`SlurmClient`] submits, polls and cancels. A poll is one `squeue` call for all jobs
//!   ([`squeue`]); only jobs slurmctld has already forgotten are looked up in `sacct` or the
//!   jobcomp file ([`sacct`]), again in one call. Commands run through a
//!   [`runner::CommandRunner`], so the parsing is unit-tested against recorded outputs.
//! - The scheduling (dependencies, re-attaching, retries, registration) is the realizer's:
//!   see `realize::slurm`.
//!
//! The store must be on a file system the nodes share: a job writes its staging directory,
//! its log and its result record there, and moves a successful output to its store path
//! (unregistered; only the realizer writes the database) so that jobs that depend on it
//! read it where a local build would.

pub mod profile;
pub mod runner;
pub mod sacct;
pub mod script;
pub mod squeue;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use profile::Profile;
pub use runner::{CmdOutput, CommandRunner, RecordedRunner, SystemRunner};

/// A SLURM job state, as `squeue`/`sacct` name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    Configuring,
    Running,
    Completing,
    Suspended,
    Requeued,
    Completed,
    Failed,
    Timeout,
    OutOfMemory,
    NodeFail,
    Cancelled,
    Preempted,
    BootFail,
    Deadline,
    /// Anything else SLURM may say (`REVOKED`, `SPECIAL_EXIT`, `STOPPED`, …).
    Other(String),
}

impl JobState {
    /// Reads SLURM's name for a state (`CANCELLED by 0` and `CANCELLED+` too).
    pub fn parse(s: &str) -> JobState {
        let word = s
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches('+');
        match word {
            "PENDING" | "PD" => JobState::Pending,
            "CONFIGURING" | "CF" => JobState::Configuring,
            "RUNNING" | "R" => JobState::Running,
            "COMPLETING" | "CG" => JobState::Completing,
            "SUSPENDED" | "S" => JobState::Suspended,
            "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RQ" => JobState::Requeued,
            "COMPLETED" | "CD" => JobState::Completed,
            "FAILED" | "F" => JobState::Failed,
            "TIMEOUT" | "TO" => JobState::Timeout,
            "OUT_OF_MEMORY" | "OOM" => JobState::OutOfMemory,
            "NODE_FAIL" | "NF" => JobState::NodeFail,
            "CANCELLED" | "CA" => JobState::Cancelled,
            "PREEMPTED" | "PR" => JobState::Preempted,
            "BOOT_FAIL" | "BF" => JobState::BootFail,
            "DEADLINE" | "DL" => JobState::Deadline,
            other => JobState::Other(other.to_string()),
        }
    }

    /// SLURM's name.
    pub fn as_str(&self) -> &str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Configuring => "CONFIGURING",
            JobState::Running => "RUNNING",
            JobState::Completing => "COMPLETING",
            JobState::Suspended => "SUSPENDED",
            JobState::Requeued => "REQUEUED",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Timeout => "TIMEOUT",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::NodeFail => "NODE_FAIL",
            JobState::Cancelled => "CANCELLED",
            JobState::Preempted => "PREEMPTED",
            JobState::BootFail => "BOOT_FAIL",
            JobState::Deadline => "DEADLINE",
            JobState::Other(s) => s,
        }
    }

    /// Whether the job has ended for good (a COMPLETING job may still fail; a requeued one
    /// will run again).
    pub fn is_terminal(&self) -> bool {
        match self {
            JobState::Pending
            | JobState::Configuring
            | JobState::Running
            | JobState::Completing
            | JobState::Suspended
            | JobState::Requeued => false,
            JobState::Other(s) => matches!(s.as_str(), "REVOKED"),
            _ => true,
        }
    }

    /// Whether the job has started on a node.
    pub fn has_started(&self) -> bool {
        !matches!(self, JobState::Pending | JobState::Requeued)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one poll knows about a job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobStatus {
    pub state: JobState,
    /// SLURM's reason (why pending, or why it ended: `DependencyNeverSatisfied`, `TimeLimit`).
    pub reason: Option<String>,
    /// `exit:signal` (from `sacct` or the jobcomp file; `squeue` does not say).
    pub exit_code: Option<String>,
    /// Time used, as SLURM writes it.
    pub elapsed: Option<String>,
    pub nodes: Option<String>,
}

impl Default for JobStatus {
    fn default() -> Self {
        JobStatus {
            state: JobState::Other("UNKNOWN".into()),
            reason: None,
            exit_code: None,
            elapsed: None,
            nodes: None,
        }
    }
}

/// Why talking to SLURM failed.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "`{program}` is not on PATH: `--executor slurm` needs SLURM's client commands (sbatch, squeue, scancel) on this machine"
    )]
    NotInstalled { program: String },
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` failed ({}): {}", describe_exit(*status), stderr.trim())]
    Failed {
        program: String,
        status: i32,
        stderr: String,
    },
    #[error("`{program}` printed something unexpected: `{}`", output.trim())]
    BadOutput { program: String, output: String },
    #[error("cannot place the kdbuild binary in the store at `{}`: {source}", path.display())]
    Binary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn describe_exit(status: i32) -> String {
    if status < 0 {
        "killed by a signal".into()
    } else {
        format!("exit code {status}")
    }
}

/// Submits, polls and cancels jobs through SLURM's client commands.
pub struct SlurmClient {
    runner: Arc<dyn CommandRunner>,
    /// Whether `sacct` works here; `None` until it was first needed.
    accounting: Mutex<Option<bool>>,
    /// The jobcomp file, from `scontrol show config`; `None` until first needed.
    jobcomp: Mutex<Option<Option<String>>>,
}

impl SlurmClient {
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        SlurmClient {
            runner,
            accounting: Mutex::new(None),
            jobcomp: Mutex::new(None),
        }
    }

    /// The client for this machine's SLURM.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemRunner))
    }

    fn run(&self, program: &str, args: &[String]) -> Result<CmdOutput, SlurmError> {
        self.runner.run(program, args).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SlurmError::NotInstalled {
                    program: program.into(),
                }
            } else {
                SlurmError::Spawn {
                    program: program.into(),
                    source: e,
                }
            }
        })
    }

    fn run_ok(&self, program: &str, args: &[String]) -> Result<String, SlurmError> {
        let out = self.run(program, args)?;
        if out.status != 0 {
            return Err(SlurmError::Failed {
                program: program.into(),
                status: out.status,
                stderr: out.stderr,
            });
        }
        Ok(out.stdout)
    }

    /// Checks that SLURM's commands are here and its controller answers.
    pub fn check(&self) -> Result<(), SlurmError> {
        self.run_ok("sbatch", &["--version".into()])?;
        self.run_ok("squeue", &["--noheader".into(), "--jobs=1".into()])
            .or_else(|e| match &e {
                SlurmError::Failed { stderr, .. } if squeue::means_none_known(stderr) => {
                    Ok(String::new())
                }
                _ => Err(e),
            })?;
        Ok(())
    }

    /// Submits a script; returns the job id.
    pub fn submit(&self, script: &Path) -> Result<String, SlurmError> {
        let out = self.run_ok(
            "sbatch",
            &["--parsable".into(), script.display().to_string()],
        )?;
        // `--parsable` prints `jobid` or `jobid;cluster`, possibly after warnings.
        let line = out
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let id = line.split(';').next().unwrap_or("").trim();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(SlurmError::BadOutput {
                program: "sbatch".into(),
                output: out,
            });
        }
        Ok(id.to_string())
    }

    /// Cancels jobs, in one `scancel` call.
    pub fn cancel(&self, ids: &[String]) -> Result<(), SlurmError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.run_ok("scancel", ids)?;
        Ok(())
    }

    /// The states of `ids`: one `squeue` call; for the ids it no longer knows, one `sacct`
    /// call where accounting runs, else the jobcomp file. Ids found nowhere are left out.
    pub fn query(&self, ids: &[String]) -> Result<HashMap<String, JobStatus>, SlurmError> {
        let mut found: HashMap<String, JobStatus> = HashMap::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let out = self.run("squeue", &squeue::args(ids))?;
        if out.status == 0 {
            found.extend(squeue::parse(&out.stdout));
        } else if !squeue::means_none_known(&out.stderr) {
            return Err(SlurmError::Failed {
                program: "squeue".into(),
                status: out.status,
                stderr: out.stderr,
            });
        }
        let missing: Vec<String> = ids
            .iter()
            .filter(|i| !found.contains_key(*i))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        if *self.accounting.lock().expect("accounting") != Some(false) {
            let out = self.run("sacct", &sacct::args(&missing))?;
            if out.status == 0 {
                *self.accounting.lock().expect("accounting") = Some(true);
                found.extend(
                    sacct::parse(&out.stdout)
                        .into_iter()
                        .filter(|(_, s)| s.state.is_terminal()),
                );
            } else if sacct::accounting_disabled(&out.stderr) {
                *self.accounting.lock().expect("accounting") = Some(false);
            }
        }
        let missing: Vec<String> = missing
            .into_iter()
            .filter(|i| !found.contains_key(i))
            .collect();
        if missing.is_empty() || *self.accounting.lock().expect("accounting") == Some(true) {
            return Ok(found);
        }
        let file = {
            let mut jc = self.jobcomp.lock().expect("jobcomp");
            if jc.is_none() {
                let cfg = self
                    .run_ok("scontrol", &["show".into(), "config".into()])
                    .unwrap_or_default();
                *jc = Some(sacct::jobcomp_file(&cfg));
            }
            jc.clone().flatten()
        };
        if let Some(f) = file
            && let Ok(text) = std::fs::read_to_string(&f)
        {
            found.extend(sacct::parse_jobcomp(&text, &missing));
        }
        Ok(found)
    }
}

/// Places a copy of the running binary in the store, named by its content
/// (`<store>/bin/<blake3>-kdbuild`), and returns its path and digest. Jobs run this copy: a
/// rebuilt kdbuild never changes what queued jobs run, and every job's binary is recorded.
pub fn install_binary(store_root: &Path) -> Result<(PathBuf, String), SlurmError> {
    let exe = std::env::current_exe().map_err(|source| SlurmError::Binary {
        path: store_root.join("bin"),
        source,
    })?;
    install_binary_from(&exe, store_root)
}

/// [`install_binary`] for a given executable.
pub fn install_binary_from(exe: &Path, store_root: &Path) -> Result<(PathBuf, String), SlurmError> {
    let bin = store_root.join("bin");
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SlurmError::Binary { path, source }
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(exe).map_err(err(exe))?;
    let digest = hasher.finalize().to_hex().to_string();
    let dest = bin.join(format!("{digest}-kdbuild"));
    if dest.is_file() {
        return Ok((dest, digest));
    }
    std::fs::create_dir_all(&bin).map_err(err(&bin))?;
    let tmp = bin.join(format!(".{digest}.tmp{}", std::process::id()));
    std::fs::copy(exe, &tmp).map_err(err(&tmp))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555)).map_err(err(&tmp))?;
    std::fs::rename(&tmp, &dest).map_err(err(&dest))?;
    Ok((dest, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_classify() {
        for (s, st, term) in [
            ("PENDING", JobState::Pending, false),
            ("RUNNING", JobState::Running, false),
            ("COMPLETING", JobState::Completing, false),
            ("COMPLETED", JobState::Completed, true),
            ("FAILED", JobState::Failed, true),
            ("TIMEOUT", JobState::Timeout, true),
            ("OUT_OF_MEMORY", JobState::OutOfMemory, true),
            ("NODE_FAIL", JobState::NodeFail, true),
            ("CANCELLED by 1000", JobState::Cancelled, true),
            ("CANCELLED+", JobState::Cancelled, true),
            ("PREEMPTED", JobState::Preempted, true),
            ("REQUEUED", JobState::Requeued, false),
        ] {
            let p = JobState::parse(s);
            assert_eq!(p, st, "{s}");
            assert_eq!(p.is_terminal(), term, "{s}");
        }
        assert_eq!(JobState::OutOfMemory.to_string(), "OUT_OF_MEMORY");
        assert_eq!(JobState::parse("SPECIAL_EXIT").as_str(), "SPECIAL_EXIT");
    }

    #[test]
    fn one_poll_is_one_squeue_call_for_all_jobs() {
        let r = Arc::new(RecordedRunner::new().answer(
            "squeue",
            CmdOutput::ok(
                "1|RUNNING|None|0:05|vm\n2|PENDING|Dependency|0:00|\n3|COMPLETED|None|0:01|vm\n",
            ),
        ));
        let c = SlurmClient::new(r.clone());
        let ids: Vec<String> = ["1", "2", "3"].iter().map(|s| s.to_string()).collect();
        let q = c.query(&ids).unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(q["2"].reason.as_deref(), Some("Dependency"));
        assert_eq!(r.count("squeue"), 1);
        assert_eq!(r.calls().len(), 1, "nothing else was asked");
    }

    #[test]
    fn forgotten_jobs_come_from_sacct() {
        let r = Arc::new(
            RecordedRunner::new()
                .answer("squeue", CmdOutput::ok("1|RUNNING|None|0:05|vm\n"))
                .answer(
                    "sacct",
                    CmdOutput::ok(
                        "2|OUT_OF_MEMORY|0:125|None|00:00:03|vm\n3|FAILED|3:0|None|00:00:01|vm\n",
                    ),
                ),
        );
        let c = SlurmClient::new(r.clone());
        let ids: Vec<String> = ["1", "2", "3", "4"].iter().map(|s| s.to_string()).collect();
        let q = c.query(&ids).unwrap();
        assert_eq!(q["2"].state, JobState::OutOfMemory);
        assert_eq!(q["3"].exit_code.as_deref(), Some("3:0"));
        assert!(!q.contains_key("4"));
        let sacct_calls: Vec<_> = r
            .calls()
            .into_iter()
            .filter(|(p, _)| p == "sacct")
            .collect();
        assert_eq!(sacct_calls.len(), 1);
        assert!(
            sacct_calls[0].1.contains(&"--jobs=2,3,4".to_string()),
            "only the missing ids"
        );
    }

    #[test]
    fn without_accounting_the_jobcomp_file_answers() {
        let d = tempfile::tempdir().unwrap();
        let jc = d.path().join("jobcomp.log");
        std::fs::write(
            &jc,
            "JobId=7 UserId=root(0) Name=kd-x JobState=TIMEOUT NodeList=vm ExitCode=0:0\n",
        )
        .unwrap();
        let r = Arc::new(
            RecordedRunner::new()
                .answer("squeue", CmdOutput::ok(""))
                .answer(
                    "sacct",
                    CmdOutput::failed(1, "sacct: error: Slurm accounting storage is disabled\n"),
                )
                .answer(
                    "scontrol",
                    CmdOutput::ok(&format!(
                        "JobCompLoc = {}\nJobCompType = jobcomp/filetxt\n",
                        jc.display()
                    )),
                ),
        );
        let c = SlurmClient::new(r.clone());
        let q = c.query(&["7".to_string()]).unwrap();
        assert_eq!(q["7"].state, JobState::Timeout);
        // A second poll asks neither sacct nor scontrol again.
        c.query(&["7".to_string()]).unwrap();
        assert_eq!(r.count("sacct"), 1);
        assert_eq!(r.count("scontrol"), 1);
        assert_eq!(r.count("squeue"), 2);
    }

    #[test]
    fn submit_reads_the_job_id() {
        let r = Arc::new(
            RecordedRunner::new()
                .answer("sbatch", CmdOutput::ok("42\n"))
                .answer("sbatch", CmdOutput::ok("sbatch: warning: x\n43;cluster\n"))
                .answer(
                    "sbatch",
                    CmdOutput::failed(
                        1,
                        "sbatch: error: Batch job submission failed: Invalid account\n",
                    ),
                ),
        );
        let c = SlurmClient::new(r);
        assert_eq!(c.submit(Path::new("/s")).unwrap(), "42");
        assert_eq!(c.submit(Path::new("/s")).unwrap(), "43");
        let e = c.submit(Path::new("/s")).unwrap_err().to_string();
        assert!(e.contains("Invalid account"), "{e}");
    }

    #[test]
    fn a_missing_sbatch_is_named() {
        let c = SlurmClient::new(Arc::new(RecordedRunner::new()));
        let e = c.check().unwrap_err();
        assert!(matches!(e, SlurmError::NotInstalled { .. }), "{e}");
    }

    #[test]
    fn the_binary_is_placed_once_by_content() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("kd");
        std::fs::write(&exe, b"binary").unwrap();
        let store = d.path().join("store");
        let (p, digest) = install_binary_from(&exe, &store).unwrap();
        assert_eq!(p, store.join("bin").join(format!("{digest}-kdbuild")));
        assert_eq!(digest, blake3::hash(b"binary").to_hex().to_string());
        let (p2, _) = install_binary_from(&exe, &store).unwrap();
        assert_eq!(p, p2);
        assert_eq!(std::fs::read_dir(store.join("bin")).unwrap().count(), 1);
    }
}
