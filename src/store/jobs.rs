//! The `jobs` table: batch jobs (SLURM) submitted for derivations, so that a realizer that
//! detached, was interrupted or crashed can be followed by one that re-attaches: it never
//! submits a derivation that has a live job, and registers what finished meanwhile.
//!
//! A job is *unsettled* until a realizer has dealt with its end: registered its output,
//! recorded its failure, or cancelled it. Only realizers write this table; `kdbuild status`
//! reads it.

use rusqlite::{OptionalExtension, params};

use super::db::{Db, now_ms};

/// One submitted job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobRow {
    pub drv_hash: String,
    pub target: String,
    pub executor: String,
    pub job_id: String,
    pub attempt: u32,
    /// The last state a realizer saw.
    pub state: String,
    pub settled: bool,
    pub submitted_at: i64,
    pub ended_at: Option<i64>,
    pub staging: String,
    pub log_path: String,
    pub result_path: String,
    pub mem_mb: Option<u64>,
    /// Job ids it waits for.
    pub depends_on: Vec<String>,
    /// blake3 of the kdbuild binary it runs.
    pub binary: Option<String>,
    pub note: Option<String>,
}

const COLUMNS: &str =
    "drv_hash, target, executor, job_id, attempt, state, settled, submitted_at, ended_at,
     staging, log_path, result_path, mem_mb, depends_on, binary, note";

fn row(r: &rusqlite::Row) -> rusqlite::Result<JobRow> {
    let deps: String = r.get(13)?;
    Ok(JobRow {
        drv_hash: r.get(0)?,
        target: r.get(1)?,
        executor: r.get(2)?,
        job_id: r.get(3)?,
        attempt: r.get(4)?,
        state: r.get(5)?,
        settled: r.get::<_, i64>(6)? != 0,
        submitted_at: r.get(7)?,
        ended_at: r.get(8)?,
        staging: r.get(9)?,
        log_path: r.get(10)?,
        result_path: r.get(11)?,
        mem_mb: r.get::<_, Option<i64>>(12)?.map(|m| m as u64),
        depends_on: deps
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        binary: r.get(14)?,
        note: r.get(15)?,
    })
}

impl Db {
    /// Whether this database has the jobs table (a read-only store opened before its first
    /// migration to schema 2 has not).
    pub fn has_jobs_table(&self) -> bool {
        self.conn()
            .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'")
            .and_then(|mut s| s.exists([]))
            .unwrap_or(false)
    }

    /// Records a submitted job.
    pub fn insert_job(&self, j: &JobRow) -> rusqlite::Result<()> {
        self.conn().execute(
            &format!(
                "INSERT INTO jobs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
            ),
            params![
                j.drv_hash,
                j.target,
                j.executor,
                j.job_id,
                j.attempt,
                j.state,
                j.settled as i64,
                j.submitted_at,
                j.ended_at,
                j.staging,
                j.log_path,
                j.result_path,
                j.mem_mb.map(|m| m as i64),
                j.depends_on.join(","),
                j.binary,
                j.note
            ],
        )?;
        Ok(())
    }

    /// The newest unsettled job of a derivation, if any.
    pub fn unsettled_job(&self, drv_hash: &str) -> rusqlite::Result<Option<JobRow>> {
        let mut st = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE drv_hash = ?1 AND settled = 0 ORDER BY id DESC LIMIT 1"
        ))?;
        st.query_row([drv_hash], row).optional()
    }

    /// Every unsettled job, oldest first.
    pub fn unsettled_jobs(&self) -> rusqlite::Result<Vec<JobRow>> {
        let mut st = self.conn().prepare(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE settled = 0 ORDER BY id"
        ))?;
        st.query_map([], row)?.collect()
    }

    /// Every job of a derivation, oldest first.
    pub fn jobs_of(&self, drv_hash: &str) -> rusqlite::Result<Vec<JobRow>> {
        let mut st = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE drv_hash = ?1 ORDER BY id"
        ))?;
        st.query_map([drv_hash], row)?.collect()
    }

    /// Notes the state a poll saw (`ended`: it is terminal).
    pub fn update_job_state(&self, job_id: &str, state: &str, ended: bool) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE jobs SET state = ?2, ended_at = CASE WHEN ?3 THEN COALESCE(ended_at, ?4) ELSE ended_at END
                 WHERE job_id = ?1 AND settled = 0",
            )?
            .execute(params![job_id, state, ended, now_ms()])?;
        Ok(())
    }

    /// Marks a job as dealt with: its end is registered or recorded, or it was cancelled.
    pub fn settle_job(&self, job_id: &str, state: &str, note: &str) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE jobs SET settled = 1, state = ?2, note = ?3, ended_at = COALESCE(ended_at, ?4)
                 WHERE job_id = ?1 AND settled = 0",
            )?
            .execute(params![job_id, state, note, now_ms()])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_recorded_found_and_settled() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(&d.path().join("db.sqlite")).unwrap();
        assert!(db.has_jobs_table());
        let j = JobRow {
            drv_hash: "h".into(),
            target: "t".into(),
            executor: "slurm".into(),
            job_id: "12".into(),
            attempt: 1,
            state: "PENDING".into(),
            submitted_at: 1,
            staging: "/s".into(),
            log_path: "/l".into(),
            result_path: "/r".into(),
            mem_mb: Some(100),
            depends_on: vec!["10".into(), "11".into()],
            ..Default::default()
        };
        db.insert_job(&j).unwrap();
        assert_eq!(
            db.next_attempt("h").unwrap(),
            2,
            "a job counts as an attempt"
        );
        assert_eq!(db.unsettled_job("h").unwrap().unwrap(), j);
        db.update_job_state("12", "OUT_OF_MEMORY", true).unwrap();
        let u = db.unsettled_jobs().unwrap();
        assert_eq!(u[0].state, "OUT_OF_MEMORY");
        assert!(u[0].ended_at.is_some());
        db.settle_job("12", "OUT_OF_MEMORY", "failed").unwrap();
        assert!(db.unsettled_job("h").unwrap().is_none());
        assert_eq!(db.jobs_of("h").unwrap()[0].note.as_deref(), Some("failed"));
    }
}
