//! `kdbuild status [--wait]`: the SLURM jobs of this store that no realizer has settled yet
//! (queued, running, or ended and waiting to be registered), with their states from one
//! `squeue` call. Changes nothing: `kdbuild realize` registers what finished.

use std::time::Duration;

use serde_json::json;

use super::context::Context;
use super::output::print_json;
use crate::Error;
use crate::executor::slurm::{JobStatus, Profile, SlurmClient};
use crate::store::JobRow;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Wait until every listed job has ended, then list them again.
    #[arg(long)]
    pub wait: bool,
}

/// One row of the listing: the job as recorded, and what SLURM says now.
struct Line {
    row: JobRow,
    status: Option<JobStatus>,
}

impl Line {
    fn state(&self) -> String {
        self.status
            .as_ref()
            .map(|s| s.state.to_string())
            .unwrap_or_else(|| self.row.state.clone())
    }

    fn ended(&self) -> bool {
        match &self.status {
            Some(s) => s.state.is_terminal(),
            // SLURM does not know it any more: it ended long ago.
            None => true,
        }
    }

    fn note(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.status {
            if let Some(r) = &s.reason {
                parts.push(r.clone());
            }
            if let Some(e) = &s.elapsed
                && s.state.has_started()
            {
                parts.push(format!("ran {e}"));
            }
        }
        if self.ended() {
            parts.push("ended: `kdbuild realize` registers it".into());
        } else if !self.row.depends_on.is_empty() {
            parts.push(format!("after {}", self.row.depends_on.join(",")));
        }
        parts.join("; ")
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let Some(store) = ctx.open_store_read_only()? else {
        return Err(Error::Usage(format!(
            "there is no store at `{}`",
            ctx.store.display()
        )));
    };
    let rows = if store.db.has_jobs_table() {
        store.db.unsettled_jobs().map_err(|e| {
            Error::Store(crate::store::StoreError::Db {
                path: store.root().join("db.sqlite"),
                source: e,
            })
        })?
    } else {
        Vec::new()
    };
    let client = SlurmClient::system();
    let max_wait = ctx
        .slurm_profile()
        .map(|p| p.poll_interval)
        .unwrap_or(Duration::from_secs(30));
    let mut wait = Profile::MIN_POLL;
    let lines = loop {
        let states = if rows.is_empty() {
            Default::default()
        } else {
            let ids: Vec<String> = rows.iter().map(|r| r.job_id.clone()).collect();
            client.query(&ids)?
        };
        let lines: Vec<Line> = rows
            .iter()
            .map(|r| Line {
                row: r.clone(),
                status: states.get(&r.job_id).cloned(),
            })
            .collect();
        if !args.wait || lines.iter().all(Line::ended) {
            break lines;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(max_wait);
    };
    if ctx.json {
        print_json(&json!(
            lines
                .iter()
                .map(|l| json!({
                    "job_id": l.row.job_id,
                    "state": l.state(),
                    "target": l.row.target,
                    "drv_hash": l.row.drv_hash,
                    "attempt": l.row.attempt,
                    "submitted_at": l.row.submitted_at,
                    "depends_on": l.row.depends_on,
                    "reason": l.status.as_ref().and_then(|s| s.reason.clone()),
                    "ended": l.ended(),
                    "log": l.row.log_path,
                }))
                .collect::<Vec<_>>()
        ));
        return Ok(());
    }
    if lines.is_empty() {
        println!("no SLURM jobs in flight");
        return Ok(());
    }
    let width = lines.iter().map(|l| l.row.target.len()).max().unwrap_or(6);
    println!(
        "{:<10} {:<14} {:<width$} {:>7}  NOTE",
        "JOB", "STATE", "TARGET", "ATTEMPT"
    );
    for l in &lines {
        println!(
            "{:<10} {:<14} {:<width$} {:>7}  {}",
            l.row.job_id,
            l.state(),
            l.row.target,
            l.row.attempt,
            l.note()
        );
    }
    Ok(())
}
