//! The local executor: `kdbuild build` as a child process in its own process group, output to
//! the build log, stopped as a group on interrupt.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::watch;

use super::{Job, JobEnd, builder};
use crate::stage::command::describe_status;

/// Runs builds as child processes of this realizer.
#[derive(Clone, Debug)]
pub struct LocalExecutor {
    /// The kdbuild binary that builds (this one).
    pub exe: PathBuf,
    pub store_root: PathBuf,
}

impl LocalExecutor {
    pub fn new(store_root: &Path) -> std::io::Result<Self> {
        Ok(LocalExecutor {
            exe: std::env::current_exe()?,
            store_root: store_root.to_path_buf(),
        })
    }

    /// Runs one attempt to its end, or until `stop` turns true.
    pub async fn run(&self, job: &Job, mut stop: watch::Receiver<bool>) -> JobEnd {
        if let Some(dir) = job.log.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            return JobEnd::NotStarted(format!("cannot create `{}`: {e}", dir.display()));
        }
        let log = match File::create(&job.log) {
            Ok(f) => f,
            Err(e) => {
                return JobEnd::NotStarted(format!("cannot create `{}`: {e}", job.log.display()));
            }
        };
        let log2 = match log.try_clone() {
            Ok(f) => f,
            Err(e) => return JobEnd::NotStarted(e.to_string()),
        };
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--store")
            .arg(&self.store_root)
            .arg("build")
            .arg(job.drv_hash.to_string())
            .arg("--out")
            .arg(&job.staging)
            .arg("--result")
            .arg(&job.result)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return JobEnd::NotStarted(format!("cannot start `{}`: {e}", self.exe.display()));
            }
        };
        let pgid = child.id().map(|p| p as i32);
        tokio::select! {
            status = child.wait() => {
                let status = match status {
                    Ok(s) => describe_status(s),
                    Err(e) => e.to_string(),
                };
                JobEnd::Exited { status, result: builder::read_result(&job.result) }
            }
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                if let Some(pg) = pgid {
                    stop_group(pg, &mut child).await;
                }
                JobEnd::Interrupted
            }
        }
    }
}

/// SIGTERM to the whole group, SIGKILL after a grace period.
async fn stop_group(pgid: i32, child: &mut tokio::process::Child) {
    // SAFETY: kill(2) with a negative pid signals the process group we created.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait().await;
    }
    // Whatever of the group outlived its leader goes too.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}
