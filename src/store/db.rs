//! The store database (SQLite, modelled on Nix's): valid paths, references, derivations,
//! build records and the source-hash cache.
//!
//! - WAL mode with a busy timeout, so several `kdbuild` processes share one store.
//! - Migrations are append-only and keyed by `PRAGMA user_version`.
//! - A path is valid iff it has a row in `valid_paths`; nothing else counts.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::StoreError;
use crate::hash::{ContentHash, DrvHash};
use crate::store_path::StorePath;

/// Append-only schema migrations; `user_version` = how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema
    r#"
    CREATE TABLE valid_paths (
        id            INTEGER PRIMARY KEY,
        path          TEXT NOT NULL UNIQUE,   -- "<drv hash>-<target>"
        drv_hash      TEXT NOT NULL,
        target        TEXT NOT NULL,
        content_hash  TEXT NOT NULL,          -- "blake3:<hex>"
        size          INTEGER NOT NULL,       -- bytes of file content
        registered_at INTEGER NOT NULL,       -- unix ms
        build_id      INTEGER                 -- the build that produced it
    );
    CREATE INDEX valid_paths_target ON valid_paths(target, registered_at);
    CREATE TABLE refs (
        referrer  INTEGER NOT NULL REFERENCES valid_paths(id) ON DELETE CASCADE,
        reference TEXT NOT NULL,              -- store path it needs at run time
        reason    TEXT NOT NULL,              -- the input name it comes through
        PRIMARY KEY (referrer, reference, reason)
    );
    CREATE INDEX refs_reference ON refs(reference);
    CREATE TABLE derivations (
        drv_hash   TEXT PRIMARY KEY,
        target     TEXT NOT NULL,
        stage      TEXT NOT NULL,
        kind       TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE drv_inputs (
        drv_hash  TEXT NOT NULL,
        name      TEXT NOT NULL,              -- input name
        input     TEXT NOT NULL,              -- store path of a derivation input, or "source:<name>"
        content   TEXT,                       -- content hash of a source input
        PRIMARY KEY (drv_hash, name)
    );
    CREATE TABLE builds (
        id              INTEGER PRIMARY KEY,
        drv_hash        TEXT NOT NULL,
        target          TEXT NOT NULL,
        attempt         INTEGER NOT NULL,
        executor        TEXT NOT NULL,
        host            TEXT,
        job_id          TEXT,
        started_at      INTEGER NOT NULL,     -- unix ms
        ended_at        INTEGER,
        outcome         TEXT NOT NULL,        -- succeeded | failed | interrupted | ...
        exit_status     TEXT,
        peak_rss_kb     INTEGER,
        kdbuild_version TEXT NOT NULL,
        code_digest     TEXT,
        log_path        TEXT
    );
    CREATE INDEX builds_drv ON builds(drv_hash);
    CREATE TABLE source_cache (
        path     TEXT PRIMARY KEY,            -- absolute file path
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode    INTEGER NOT NULL,
        hash     TEXT NOT NULL
    );
    CREATE TABLE sources (
        name         TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        path         TEXT NOT NULL,
        seen_at      INTEGER NOT NULL,
        PRIMARY KEY (name, content_hash)
    );
    "#,
    // 2: jobs of a batch executor (SLURM), so that a later realizer re-attaches to them
    r#"
    CREATE TABLE jobs (
        id            INTEGER PRIMARY KEY,
        drv_hash      TEXT NOT NULL,
        target        TEXT NOT NULL,
        executor      TEXT NOT NULL,          -- "slurm"
        job_id        TEXT NOT NULL,          -- the scheduler's id
        attempt       INTEGER NOT NULL,
        state         TEXT NOT NULL,          -- last state seen: PENDING, RUNNING, COMPLETED, OUT_OF_MEMORY, ...
        settled       INTEGER NOT NULL DEFAULT 0, -- 1 once a realizer registered its output or recorded its end
        submitted_at  INTEGER NOT NULL,       -- unix ms
        ended_at      INTEGER,
        staging       TEXT NOT NULL,
        log_path      TEXT NOT NULL,
        result_path   TEXT NOT NULL,
        mem_mb        INTEGER,                -- memory asked for (grows after OUT_OF_MEMORY)
        depends_on    TEXT NOT NULL DEFAULT '', -- job ids it waits for (afterok), comma-separated
        binary        TEXT,                   -- blake3 of the kdbuild binary the job runs
        note          TEXT                    -- how it ended or was settled
    );
    CREATE INDEX jobs_drv ON jobs(drv_hash);
    CREATE INDEX jobs_job_id ON jobs(job_id);
    CREATE INDEX jobs_unsettled ON jobs(settled) WHERE settled = 0;
    "#,
];

/// A record of one build, written when it ends.
#[derive(Clone, Debug, Default)]
pub struct BuildRecord {
    pub drv_hash: String,
    pub target: String,
    pub attempt: u32,
    pub executor: String,
    pub host: Option<String>,
    pub job_id: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: String,
    pub exit_status: Option<String>,
    pub peak_rss_kb: Option<i64>,
    pub kdbuild_version: String,
    pub code_digest: Option<String>,
    pub log_path: Option<String>,
}

/// A valid path as the database knows it.
#[derive(Clone, Debug)]
pub struct PathInfo {
    pub path: String,
    pub drv_hash: String,
    pub target: String,
    pub content_hash: ContentHash,
    pub size: u64,
    pub registered_at: i64,
    pub build_id: Option<i64>,
}

/// What registering a path writes, in one transaction.
pub struct Registration<'a> {
    pub path: &'a StorePath,
    pub content: ContentHash,
    pub size: u64,
    /// (store path referred to, input name)
    pub references: Vec<(String, String)>,
    pub build: BuildRecord,
}

/// The store database connection.
pub struct Db {
    conn: Connection,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::db(path, e))?;
        conn.busy_timeout(Duration::from_secs(60))
            .map_err(|e| StoreError::db(path, e))?;
        // WAL lets readers run beside a writer; NORMAL sync is durable across process crashes
        // (a power loss may drop the last commits, never corrupt the file).
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|_| conn.pragma_update(None, "foreign_keys", "ON"))
            .map_err(|e| StoreError::db(path, e))?;
        let mut db = Db { conn };
        db.migrate().map_err(|e| StoreError::db(path, e))?;
        Ok(db)
    }

    /// Opens an existing database read-only (dry runs must change nothing).
    pub fn open_read_only(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::db(path, e))?;
        conn.busy_timeout(Duration::from_secs(60))
            .map_err(|e| StoreError::db(path, e))?;
        Ok(Db { conn })
    }

    fn migrate(&mut self) -> rusqlite::Result<()> {
        let version: usize =
            self.conn
                .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        if version >= MIGRATIONS.len() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let version: usize =
            tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()
    }

    /// The underlying connection, for store modules with their own queries (gc, verify).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Whether `path` is valid.
    pub fn is_valid(&self, path: &StorePath) -> rusqlite::Result<bool> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM valid_paths WHERE path = ?1")?;
        st.exists([path.to_string()])
    }

    /// The valid path `path`, if it is valid.
    pub fn path_info(&self, path: &str) -> rusqlite::Result<Option<PathInfo>> {
        let mut st = self.conn.prepare_cached(
            "SELECT path, drv_hash, target, content_hash, size, registered_at, build_id
             FROM valid_paths WHERE path = ?1",
        )?;
        st.query_row([path], row_to_info).optional()
    }

    /// Every valid path.
    pub fn all_valid(&self) -> rusqlite::Result<Vec<PathInfo>> {
        let mut st = self.conn.prepare(
            "SELECT path, drv_hash, target, content_hash, size, registered_at, build_id
             FROM valid_paths ORDER BY path",
        )?;
        st.query_map([], row_to_info)?.collect()
    }

    /// The most recently registered valid path of `target`.
    pub fn latest_valid_for_target(&self, target: &str) -> rusqlite::Result<Option<PathInfo>> {
        let mut st = self.conn.prepare_cached(
            "SELECT path, drv_hash, target, content_hash, size, registered_at, build_id
             FROM valid_paths WHERE target = ?1 ORDER BY registered_at DESC, id DESC LIMIT 1",
        )?;
        st.query_row([target], row_to_info).optional()
    }

    /// The references of a valid path: (referenced path, input name).
    pub fn references(&self, path: &str) -> rusqlite::Result<Vec<(String, String)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT r.reference, r.reason FROM refs r JOIN valid_paths v ON v.id = r.referrer
             WHERE v.path = ?1 ORDER BY r.reference, r.reason",
        )?;
        st.query_map([path], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    }

    /// Records a derivation (idempotent), with its build-time inputs.
    pub fn add_derivation(
        &self,
        hash: &DrvHash,
        target: &str,
        stage: &str,
        kind: &str,
        inputs: &[(String, String, Option<String>)],
    ) -> rusqlite::Result<()> {
        let h = hash.to_string();
        let mut st = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO derivations (drv_hash, target, stage, kind, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        if st.execute(params![h, target, stage, kind, now_ms()])? == 0 {
            return Ok(());
        }
        let mut st = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO drv_inputs (drv_hash, name, input, content) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (name, input, content) in inputs {
            st.execute(params![h, name, input, content])?;
        }
        Ok(())
    }

    /// Build-time inputs of a derivation: (input name, store path or `source:<name>`).
    pub fn drv_inputs(&self, hash: &str) -> rusqlite::Result<Vec<(String, String)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT name, input FROM drv_inputs WHERE drv_hash = ?1 ORDER BY name",
        )?;
        st.query_map([hash], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    }

    /// Registers a built path: the valid path, its references and its build record, in one
    /// transaction. Every reference must already be valid (the closure invariant).
    pub fn register(&mut self, reg: &Registration) -> Result<(), RegisterError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (r, reason) in &reg.references {
            let valid: bool = tx
                .prepare_cached("SELECT 1 FROM valid_paths WHERE path = ?1")?
                .exists([r])?;
            if !valid {
                return Err(RegisterError::InvalidReference {
                    reference: r.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let build_id = insert_build(&tx, &reg.build)?;
        tx.execute(
            "INSERT INTO valid_paths (path, drv_hash, target, content_hash, size, registered_at, build_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                reg.path.to_string(),
                reg.path.hash().to_string(),
                reg.path.name(),
                reg.content.to_string(),
                reg.size as i64,
                now_ms(),
                build_id
            ],
        )?;
        let id = tx.last_insert_rowid();
        for (r, reason) in &reg.references {
            tx.execute(
                "INSERT OR IGNORE INTO refs (referrer, reference, reason) VALUES (?1, ?2, ?3)",
                params![id, r, reason],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Re-registers a valid path after a forced rebuild: new content hash, size and build
    /// record; its references are those of the same derivation, so they stay.
    pub fn replace(&mut self, reg: &Registration) -> Result<(), RegisterError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let build_id = insert_build(&tx, &reg.build)?;
        tx.execute(
            "UPDATE valid_paths SET content_hash = ?2, size = ?3, registered_at = ?4, build_id = ?5
             WHERE path = ?1",
            params![
                reg.path.to_string(),
                reg.content.to_string(),
                reg.size as i64,
                now_ms(),
                build_id
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a build that produced nothing (failed, interrupted).
    pub fn record_build(&self, b: &BuildRecord) -> rusqlite::Result<i64> {
        let tx = self.conn.unchecked_transaction()?;
        let id = insert_build(&tx, b)?;
        tx.commit()?;
        Ok(id)
    }

    /// The build records of a derivation, newest first.
    pub fn builds_of(&self, drv_hash: &str) -> rusqlite::Result<Vec<BuildRecord>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE drv_hash = ?1 ORDER BY id DESC"
        ))?;
        st.query_map([drv_hash], row_to_build)?.collect()
    }

    /// The build record with row id `id`.
    pub fn build(&self, id: i64) -> rusqlite::Result<Option<BuildRecord>> {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = ?1"))?;
        st.query_row([id], row_to_build).optional()
    }

    /// The next attempt number for a derivation's build (after every recorded build and
    /// every submitted job, which may not have a build record yet).
    pub fn next_attempt(&self, drv_hash: &str) -> rusqlite::Result<u32> {
        let mut st = self.conn.prepare_cached(
            "SELECT MAX(COALESCE((SELECT MAX(attempt) FROM builds WHERE drv_hash = ?1), 0),
                        COALESCE((SELECT MAX(attempt) FROM jobs WHERE drv_hash = ?1), 0))",
        )?;
        Ok(st.query_row([drv_hash], |r| r.get::<_, u32>(0))? + 1)
    }

    /// A cached source file hash, if (size, mtime, inode) still match.
    pub fn cached_file_hash(
        &self,
        path: &str,
        size: u64,
        mtime_ns: i64,
        inode: u64,
    ) -> rusqlite::Result<Option<ContentHash>> {
        let mut st = self.conn.prepare_cached(
            "SELECT hash FROM source_cache WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3 AND inode = ?4",
        )?;
        let h: Option<String> = st
            .query_row(params![path, size as i64, mtime_ns, inode as i64], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(h.and_then(|h| h.parse().ok()))
    }

    /// Caches a source file hash.
    pub fn cache_file_hash(
        &self,
        path: &str,
        size: u64,
        mtime_ns: i64,
        inode: u64,
        hash: &ContentHash,
    ) -> rusqlite::Result<()> {
        let mut st = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO source_cache (path, size, mtime_ns, inode, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        st.execute(params![
            path,
            size as i64,
            mtime_ns,
            inode as i64,
            hash.to_string()
        ])?;
        Ok(())
    }

    /// Remembers where a source with this content was seen (for `why-depends` and reports).
    pub fn note_source(
        &self,
        name: &str,
        content: &ContentHash,
        path: &str,
    ) -> rusqlite::Result<()> {
        let mut st = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO sources (name, content_hash, path, seen_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        st.execute(params![name, content.to_string(), path, now_ms()])?;
        Ok(())
    }

    /// Runs `f` in one write transaction.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }
}

fn insert_build(tx: &Transaction, b: &BuildRecord) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO builds (drv_hash, target, attempt, executor, host, job_id, started_at, ended_at,
                             outcome, exit_status, peak_rss_kb, kdbuild_version, code_digest, log_path)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            b.drv_hash,
            b.target,
            b.attempt,
            b.executor,
            b.host,
            b.job_id,
            b.started_at,
            b.ended_at,
            b.outcome,
            b.exit_status,
            b.peak_rss_kb,
            b.kdbuild_version,
            b.code_digest,
            b.log_path
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// The columns [`row_to_build`] reads, in its order.
const BUILD_COLUMNS: &str = "drv_hash, target, attempt, executor, host, job_id, started_at, ended_at, \
     outcome, exit_status, peak_rss_kb, kdbuild_version, code_digest, log_path";

fn row_to_build(r: &rusqlite::Row) -> rusqlite::Result<BuildRecord> {
    Ok(BuildRecord {
        drv_hash: r.get(0)?,
        target: r.get(1)?,
        attempt: r.get(2)?,
        executor: r.get(3)?,
        host: r.get(4)?,
        job_id: r.get(5)?,
        started_at: r.get(6)?,
        ended_at: r.get(7)?,
        outcome: r.get(8)?,
        exit_status: r.get(9)?,
        peak_rss_kb: r.get(10)?,
        kdbuild_version: r.get(11)?,
        code_digest: r.get(12)?,
        log_path: r.get(13)?,
    })
}

fn row_to_info(r: &rusqlite::Row) -> rusqlite::Result<PathInfo> {
    let content: String = r.get(3)?;
    Ok(PathInfo {
        path: r.get(0)?,
        drv_hash: r.get(1)?,
        target: r.get(2)?,
        content_hash: content.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
        size: r.get::<_, i64>(4)? as u64,
        registered_at: r.get(5)?,
        build_id: r.get(6)?,
    })
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("reference `{reference}` (input `{reason}`) is not valid")]
    InvalidReference { reference: String, reason: String },
    #[error(transparent)]
    Db(#[from] rusqlite::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_in_wal_mode_with_a_busy_timeout() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(&d.path().join("db.sqlite")).unwrap();
        let mode: String = db
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let timeout: i64 = db
            .conn()
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(timeout, 60_000);
        let ro = Db::open_read_only(&d.path().join("db.sqlite")).unwrap();
        let timeout: i64 = ro
            .conn()
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(timeout, 60_000);
    }

    #[test]
    fn a_second_writer_waits_for_the_first_instead_of_failing() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("db.sqlite");
        let mut first = Db::open(&path).unwrap();
        let second = Db::open(&path).unwrap();
        let (tx_started, started) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            first
                .write(|tx| {
                    tx.execute(
                        "INSERT INTO sources (name, content_hash, path, seen_at) VALUES ('a', 'h', 'p', 0)",
                        [],
                    )?;
                    tx_started.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(())
                })
                .unwrap();
        });
        started.recv().unwrap();
        // A reader is not blocked by the writer (WAL) ...
        let n: i64 = second
            .conn()
            .query_row("SELECT COUNT(*) FROM sources", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "the uncommitted row is invisible");
        // ... and a writer waits for the lock instead of failing with SQLITE_BUSY.
        let t0 = std::time::Instant::now();
        second
            .record_build(&BuildRecord {
                drv_hash: "x".into(),
                target: "t".into(),
                executor: "local".into(),
                outcome: "failed".into(),
                kdbuild_version: "0".into(),
                ..Default::default()
            })
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(100), "it waited");
        holder.join().unwrap();
    }
}
