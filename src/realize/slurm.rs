//! The SLURM driver: the whole DAG queued at once, one poll for all jobs, each output
//! registered by this process after its job ends.
//!
//! A derivation is submitted as soon as each of its inputs is valid or has a live job; the
//! live inputs become `--dependency=afterok:<ids>` with `--kill-on-invalid-dep=yes`, so SLURM
//! itself starts it after them, or drops it if one fails. The job runs `kdbuild build
//! --publish` (see `executor::builder`): its output moves to its store path unregistered,
//! where the jobs after it read it. This process then polls — one `squeue` per interval for
//! every live job, starting at half a second and backing off to the profile's
//! `poll_interval` while nothing changes — and handles each job that ended, inputs first:
//!
//! - COMPLETED: read the result record (waiting up to `latency_wait` for a shared file system
//!   to show it), then register the output under its path lock, in one transaction.
//! - FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, CANCELLED, PREEMPTED, …: recorded as a failed
//!   build with the state and the log's tail. With `retries` left (never after CANCELLED) the
//!   derivation is submitted again — after OUT_OF_MEMORY with its memory multiplied by
//!   `mem_growth` (default 2) per consecutive OUT_OF_MEMORY attempt — and the jobs queued
//!   after the failed one are cancelled and queued again after the new one. Otherwise its
//!   dependents' jobs are cancelled and reported as skipped; without `--keep-going` the jobs
//!   that have not started yet are cancelled too (as the local driver starts nothing new).
//!
//! Every job is a row of the store's `jobs` table until a realizer settles it. A realizer
//! that finds an unsettled job for a derivation adopts it instead of submitting another, so
//! `--detach` (return once everything is queued), an interrupt that keeps the jobs, or a
//! crash are all followed by a plain `kdbuild realize` that re-attaches and registers what
//! finished meanwhile.
//!
//! Ctrl-C asks whether to cancel this realizer's jobs (on a terminal; `--cancel-on-interrupt`
//! decides without asking; elsewhere the jobs are kept). Signals are only handled between
//! polls, so a registration is never cut in half.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use petgraph::Direction;

use super::{
    Outcome, Plan, RealizeError, Reporter, Summary, block_dependents, log_tail, references,
};
use crate::derivation::Derivation;
use crate::executor::builder::{BuildResult, read_result};
use crate::executor::slurm::script::{JobScript, render};
use crate::executor::slurm::{JobState, JobStatus, Profile, SlurmClient, install_binary};
use crate::stage::Registry;
use crate::store::db::now_ms;
use crate::store::{BuildRecord, JobRow, PathLock, Store, StoreError};

/// What `--executor slurm` was asked to do.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    pub profile: Profile,
    /// Return once every derivation is queued.
    pub detach: bool,
    pub on_interrupt: OnInterrupt,
    /// The most jobs queued at once (the profile's `max_queued`, or `-j`).
    pub max_queued: usize,
}

/// What Ctrl-C does to this realizer's jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Ask on a terminal; elsewhere keep them.
    Ask,
    Cancel,
    Keep,
}

/// The executor's name in build records and the jobs table.
const EXECUTOR: &str = "slurm";

/// How many polls in a row may fail (slurmctld busy or restarting) before giving up.
const MAX_FAILED_POLLS: u32 = 20;

/// Where one derivation stands.
enum NodeState {
    /// Not queued yet (or to be queued again). Holds the path lock once taken.
    Waiting(Option<PathLock>),
    /// A job is queued or running, submitted here or adopted.
    Live(Box<LiveJob>),
    /// Registered, or found valid.
    Done,
    /// Failed, skipped, stopped or left queued: nothing more to do here.
    Over,
}

struct LiveJob {
    job_id: String,
    attempt: u32,
    mem_mb: Option<u64>,
    staging: PathBuf,
    log: PathBuf,
    result: PathBuf,
    /// The state the last poll saw (`None`: adopted, not polled yet).
    state: Option<JobState>,
    /// When this realizer first saw it COMPLETED without a visible result record.
    completed_seen: Option<Instant>,
    /// When SLURM first failed to know it.
    missing_since: Option<Instant>,
    since: Instant,
    _lock: PathLock,
}

struct Driver<'a> {
    store: Arc<Mutex<Store>>,
    plan: &'a Plan,
    drvs: &'a [Option<Arc<Derivation>>],
    registry: &'a Registry,
    keep_going: bool,
    opts: &'a SlurmOptions,
    client: &'a SlurmClient,
    reporter: &'a mut dyn Reporter,
    binary: PathBuf,
    binary_digest: String,
    to_build: Vec<usize>,
    state: Vec<NodeState>,
    inputs: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    retries_left: Vec<u32>,
    summary: Summary,
    stopping: bool,
    /// Derivations whose lock another realizer holds (said once).
    said_locked: Vec<bool>,
}

/// Realizes `to_build` (node indices, inputs first) as SLURM jobs.
#[allow(clippy::too_many_arguments)]
pub(super) async fn schedule(
    store: Arc<Mutex<Store>>,
    plan: &Plan,
    drvs: &[Option<Arc<Derivation>>],
    registry: &Arc<Registry>,
    opts: &super::Options,
    sopts: &SlurmOptions,
    client: &SlurmClient,
    reporter: &mut dyn Reporter,
    to_build: Vec<usize>,
) -> Result<Summary, RealizeError> {
    use tokio::signal::unix::{SignalKind, signal};

    let n = plan.inst.nodes.len();
    let mut inputs = vec![Vec::new(); n];
    let mut dependents = vec![Vec::new(); n];
    let graph = plan.build_graph();
    for g in graph.node_indices() {
        inputs[graph[g]] = graph
            .neighbors_directed(g, Direction::Incoming)
            .map(|x| graph[x])
            .collect();
        dependents[graph[g]] = graph
            .neighbors_directed(g, Direction::Outgoing)
            .map(|x| graph[x])
            .collect();
    }
    reporter.start(to_build.len());
    if to_build.is_empty() {
        return Ok(Summary::default());
    }
    client.check()?;
    let root = store.lock().expect("store lock").root().to_path_buf();
    let (binary, binary_digest) = install_binary(&root)?;
    let retries_left = (0..n)
        .map(|i| {
            drvs[i]
                .as_ref()
                .and_then(|d| d.recorded.resources.retries)
                .unwrap_or(0)
        })
        .collect();
    let mut d = Driver {
        store,
        plan,
        drvs,
        registry,
        keep_going: opts.keep_going,
        opts: sopts,
        client,
        reporter,
        binary,
        binary_digest,
        state: (0..n).map(|_| NodeState::Waiting(None)).collect(),
        to_build,
        inputs,
        dependents,
        retries_left,
        summary: Summary::default(),
        stopping: false,
        said_locked: vec![false; n],
    };

    let mut sigint = signal(SignalKind::interrupt()).map_err(RealizeError::Runtime)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RealizeError::Runtime)?;
    let mut wait = Profile::MIN_POLL;
    let mut failed_polls = 0u32;
    loop {
        let queued = d.submit_ready()?;
        let live = d.live_ids();
        let waiting = d
            .to_build
            .iter()
            .any(|&i| matches!(d.state[i], NodeState::Waiting(_)) && !d.stopping);
        if live.is_empty() && !waiting {
            break;
        }
        // Detached: leave once everything is queued, after one poll of any job adopted from
        // an earlier realizer (so what finished meanwhile is registered now).
        let unpolled = d
            .to_build
            .iter()
            .any(|&i| matches!(&d.state[i], NodeState::Live(j) if j.state.is_none()));
        if d.opts.detach && !waiting && !unpolled {
            d.leave_queued("queued");
            break;
        }
        let interrupted = tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            _ = sigint.recv() => Some(true),
            _ = sigterm.recv() => Some(false),
        };
        if let Some(from_terminal) = interrupted {
            d.interrupt(from_terminal, &mut sigint).await;
            break;
        }
        let changed = match d.poll() {
            Ok(c) => {
                failed_polls = 0;
                c
            }
            Err(RealizeError::Slurm(e)) if failed_polls < MAX_FAILED_POLLS => {
                failed_polls += 1;
                d.reporter
                    .note(&format!("polling SLURM failed ({e}); trying again"));
                false
            }
            Err(e) => return Err(e),
        };
        wait = if changed || queued > 0 {
            Profile::MIN_POLL
        } else {
            (wait * 2).min(d.opts.profile.poll_interval)
        };
    }
    Ok(d.summary)
}

impl Driver<'_> {
    fn name(&self, i: usize) -> String {
        self.drvs[i]
            .as_ref()
            .map(|d| d.name.clone())
            .unwrap_or_default()
    }

    fn drv(&self, i: usize) -> &Derivation {
        self.drvs[i]
            .as_deref()
            .expect("derivations of what is built")
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.store.lock().expect("store lock"))
    }

    fn db<T>(&self, f: impl FnOnce(&Store) -> rusqlite::Result<T>) -> Result<T, RealizeError> {
        self.with_store(|s| f(s).map_err(|e| StoreError::db(s.root(), e)))
            .map_err(RealizeError::from)
    }

    fn live_ids(&self) -> Vec<String> {
        self.to_build
            .iter()
            .filter_map(|&i| match &self.state[i] {
                NodeState::Live(j) => Some(j.job_id.clone()),
                _ => None,
            })
            .collect()
    }

    fn live_count(&self) -> usize {
        self.to_build
            .iter()
            .filter(|&&i| matches!(self.state[i], NodeState::Live(_)))
            .count()
    }

    /// Queues (or adopts) every derivation whose inputs are valid or queued; returns how many.
    fn submit_ready(&mut self) -> Result<usize, RealizeError> {
        if self.stopping {
            return Ok(0);
        }
        let mut count = 0;
        let mut live = self.live_count();
        for k in 0..self.to_build.len() {
            let i = self.to_build[k];
            if !matches!(self.state[i], NodeState::Waiting(_)) {
                continue;
            }
            if live >= self.opts.max_queued {
                break;
            }
            // Inputs: registered, or a job this realizer has seen queued or running.
            let mut after = Vec::new();
            let mut ready = true;
            for &j in &self.inputs[i] {
                match &self.state[j] {
                    NodeState::Done => {}
                    NodeState::Live(job)
                        if job.state.as_ref().is_some_and(|s| !s.is_terminal()) =>
                    {
                        after.push(job.job_id.clone())
                    }
                    _ => ready = false,
                }
            }
            if !ready {
                continue;
            }
            after.sort_by_key(|id| (id.len(), id.clone()));
            if self.start(i, after)? {
                count += 1;
                live += 1;
            }
        }
        Ok(count)
    }

    /// Takes the path lock and adopts, finds valid, or submits derivation `i`; whether a
    /// job is now live for it.
    fn start(&mut self, i: usize, after: Vec<String>) -> Result<bool, RealizeError> {
        let plan = self.plan;
        let node = &plan.inst.nodes[i];
        let name = self.name(i);
        let lock = match std::mem::replace(&mut self.state[i], NodeState::Waiting(None)) {
            NodeState::Waiting(Some(l)) => l,
            _ => {
                let lock_path = self.with_store(|s| s.lock_file(&node.hash));
                match PathLock::try_exclusive(&lock_path)? {
                    Some(l) => l,
                    None => {
                        if !self.said_locked[i] {
                            self.said_locked[i] = true;
                            self.reporter
                                .note(&format!("{name}: another kdbuild is building it; waiting"));
                        }
                        return Ok(false);
                    }
                }
            }
        };
        let forced = self.plan.nodes[i].valid;
        let hash = node.hash.to_string();
        let valid = self.db(|s| s.db.is_valid(&node.path))?;
        if valid && !forced {
            // Built meanwhile (by another realizer): a job left for it has nothing to add.
            if let Some(row) = self.db(|s| s.db.unsettled_job(&hash))? {
                self.db(|s| {
                    s.db.settle_job(&row.job_id, &row.state, "output already valid")
                })?;
            }
            self.state[i] = NodeState::Done;
            self.summary.already_valid += 1;
            self.reporter.finished(&name, 0.0, &Outcome::AlreadyValid);
            return Ok(false);
        }
        // Re-attach to a job an earlier realizer left queued.
        if let Some(row) = self.db(|s| s.db.unsettled_job(&hash))? {
            self.reporter
                .submitted(&name, &row.job_id, &row.depends_on, true);
            self.state[i] = NodeState::Live(Box::new(LiveJob {
                job_id: row.job_id,
                attempt: row.attempt,
                mem_mb: row.mem_mb,
                staging: row.staging.into(),
                log: row.log_path.into(),
                result: row.result_path.into(),
                state: None,
                completed_seen: None,
                missing_since: None,
                since: Instant::now(),
                _lock: lock,
            }));
            return Ok(true);
        }

        let (attempt, mem_mb) = self.next_attempt(i)?;
        let (staging, log, result, dest) = self.with_store(|s| {
            (
                s.staging_dir(&node.path, attempt),
                s.log_file(&node.hash, attempt),
                s.result_file(&node.hash, attempt),
                s.path_of(&node.path),
            )
        });
        let prepare = || -> std::io::Result<()> {
            crate::store::tree_hash::remove_tree(&staging)?;
            if !valid {
                // An unregistered output at the store path is the leftover of a job whose
                // output was never registered (it ended, was cancelled, or its realizer
                // never came back): no live job owns it, since we hold the lock and found none.
                crate::store::tree_hash::remove_tree(&dest)?;
            }
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Ok(())
        };
        prepare().map_err(|e| StoreError::io(&dest, e))?;
        let root = self.with_store(|s| s.root().to_path_buf());
        let command: Vec<String> = [
            self.binary.display().to_string(),
            "--store".into(),
            root.display().to_string(),
            "build".into(),
            hash.clone(),
            "--out".into(),
            staging.display().to_string(),
            "--result".into(),
            result.display().to_string(),
            "--publish".into(),
        ]
        .into();
        let workdir = root.join("tmp");
        let drvs = self.drvs;
        let drv = drvs[i].as_deref().expect("derivations of what is built");
        let script = render(&JobScript {
            target: &drv.name,
            attempt,
            log: &log,
            workdir: &workdir,
            resources: &drv.recorded.resources,
            mem_mb,
            profile: &self.opts.profile,
            dependencies: &after,
            command: &command,
        });
        let submitted = script.map_err(|e| e.to_string()).and_then(|text| {
            let path = log.with_extension("sbatch");
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
            self.client.submit(&path).map_err(|e| e.to_string())
        });
        let job_id = match submitted {
            Ok(id) => id,
            Err(message) => {
                drop(lock);
                let record = self.record(i, attempt, None, None, "failed", &message);
                self.with_store(|s| s.db.record_build(&record).ok());
                self.fail(
                    i,
                    Outcome::Failed {
                        message: format!("cannot submit the job: {message}"),
                        log: PathBuf::new(),
                        tail: String::new(),
                    },
                );
                return Ok(false);
            }
        };
        let row = JobRow {
            drv_hash: hash,
            target: name.clone(),
            executor: EXECUTOR.into(),
            job_id: job_id.clone(),
            attempt,
            state: JobState::Pending.to_string(),
            settled: false,
            submitted_at: now_ms(),
            ended_at: None,
            staging: staging.display().to_string(),
            log_path: log.display().to_string(),
            result_path: result.display().to_string(),
            mem_mb,
            depends_on: after.clone(),
            binary: Some(self.binary_digest.clone()),
            note: None,
        };
        self.db(|s| s.db.insert_job(&row))?;
        self.reporter.submitted(&name, &job_id, &after, false);
        self.state[i] = NodeState::Live(Box::new(LiveJob {
            job_id,
            attempt,
            mem_mb,
            staging,
            log,
            result,
            state: Some(JobState::Pending),
            completed_seen: None,
            missing_since: None,
            since: Instant::now(),
            _lock: lock,
        }));
        Ok(true)
    }

    /// The next attempt's number and memory: the stage's memory, multiplied by `mem_growth`
    /// for each OUT_OF_MEMORY attempt right before this one.
    fn next_attempt(&self, i: usize) -> Result<(u32, Option<u64>), RealizeError> {
        let hash = self.plan.inst.nodes[i].hash.to_string();
        let (attempt, jobs) = self.db(|s| Ok((s.db.next_attempt(&hash)?, s.db.jobs_of(&hash)?)))?;
        let r = &self.drv(i).recorded.resources;
        let ooms = jobs
            .iter()
            .rev()
            .take_while(|j| j.state == JobState::OutOfMemory.as_str())
            .count() as i32;
        let growth = r.mem_growth.unwrap_or(2.0);
        let mem = r
            .mem_mb
            .map(|m| ((m as f64) * growth.powi(ooms)).ceil() as u64);
        Ok((attempt, mem))
    }

    /// One poll: every live job's state in one query; ends handled inputs first. Whether
    /// anything changed.
    fn poll(&mut self) -> Result<bool, RealizeError> {
        let ids = self.live_ids();
        if ids.is_empty() {
            return Ok(false);
        }
        let statuses = self.client.query(&ids)?;
        let mut changed = false;
        for k in 0..self.to_build.len() {
            let i = self.to_build[k];
            let NodeState::Live(job) = &mut self.state[i] else {
                continue;
            };
            let status = match statuses.get(&job.job_id) {
                Some(s) => {
                    job.missing_since = None;
                    s.clone()
                }
                None => {
                    // Unknown to squeue, sacct and jobcomp: the job's own result record says
                    // how it ended; without one, it is lost once a latency wait has passed.
                    let since = *job.missing_since.get_or_insert_with(Instant::now);
                    match read_result(&job.result) {
                        Some(r) => JobStatus {
                            state: if r.succeeded {
                                JobState::Completed
                            } else {
                                JobState::Failed
                            },
                            reason: Some("state from the job's result record".into()),
                            ..JobStatus::default()
                        },
                        None if since.elapsed() >= self.opts.profile.latency_wait => JobStatus {
                            state: JobState::Other("LOST".into()),
                            reason: Some(
                                "SLURM no longer knows the job and it left no result record".into(),
                            ),
                            ..JobStatus::default()
                        },
                        None => continue,
                    }
                }
            };
            if job.state.as_ref() != Some(&status.state) {
                changed = true;
                job.state = Some(status.state.clone());
                let id = job.job_id.clone();
                let st = status.state.to_string();
                let end = status.state.is_terminal();
                self.db(|s| s.db.update_job_state(&id, &st, end))?;
            }
            if status.state.is_terminal() {
                changed |= self.ended(i, &status)?;
            }
        }
        Ok(changed)
    }

    /// Handles the end of derivation `i`'s job; whether it was dealt with now.
    fn ended(&mut self, i: usize, status: &JobStatus) -> Result<bool, RealizeError> {
        let NodeState::Live(job) = &self.state[i] else {
            return Ok(false);
        };
        // A job SLURM dropped because an input's job failed: follow that input (it failed
        // for good, or it is queued again and this one will follow it).
        let input_over = self.inputs[i]
            .iter()
            .any(|&j| matches!(self.state[j], NodeState::Over));
        let dropped = status.state == JobState::Cancelled
            && status.reason.as_deref() == Some("DependencyNeverSatisfied");
        if status.state == JobState::Cancelled && (input_over || dropped) {
            let id = job.job_id.clone();
            let note = if input_over {
                "input failed"
            } else {
                "input queued again"
            };
            self.db(|s| s.db.settle_job(&id, JobState::Cancelled.as_str(), note))?;
            if input_over {
                self.block(i);
            } else {
                self.state[i] = NodeState::Waiting(None);
            }
            return Ok(true);
        }
        if status.state == JobState::Completed {
            // Registration needs the inputs registered first.
            if self.inputs[i]
                .iter()
                .any(|&j| !matches!(self.state[j], NodeState::Done))
            {
                if input_over {
                    let id = job.job_id.clone();
                    self.db(|s| s.db.settle_job(&id, "COMPLETED", "input failed"))?;
                    self.block(i);
                    return Ok(true);
                }
                return Ok(false);
            }
            let result = match read_result(&job.result) {
                Some(r) => r,
                None => {
                    let NodeState::Live(job) = &mut self.state[i] else {
                        unreachable!()
                    };
                    let seen = *job.completed_seen.get_or_insert_with(Instant::now);
                    if seen.elapsed() < self.opts.profile.latency_wait {
                        return Ok(false);
                    }
                    return self.job_failed(
                        i,
                        status,
                        Some("the job completed but its result record never appeared".into()),
                    );
                }
            };
            if !result.succeeded {
                let e = result.error.clone();
                return self.job_failed(i, status, e);
            }
            return self.register(i, result);
        }
        let err = read_result(&job.result).and_then(|r| r.error);
        self.job_failed(i, status, err)
    }

    /// Registers a completed job's output.
    fn register(&mut self, i: usize, result: BuildResult) -> Result<bool, RealizeError> {
        let NodeState::Live(job) = std::mem::replace(&mut self.state[i], NodeState::Done) else {
            unreachable!()
        };
        let plan = self.plan;
        let node = &plan.inst.nodes[i];
        let name = self.name(i);
        let forced = self.plan.nodes[i].valid;
        let mut record = self.record(
            i,
            job.attempt,
            Some(&job.job_id),
            Some(&result),
            "succeeded",
            JobState::Completed.as_str(),
        );
        record.log_path = Some(job.log.display().to_string());
        let refs = references(self.registry, self.drv(i));
        let path = node.path.clone();
        let staging = job.staging.clone();
        let registered = self.with_store(|s| -> Result<bool, StoreError> {
            let valid =
                s.db.is_valid(&path)
                    .map_err(|e| StoreError::db(s.root(), e))?;
            if valid && !forced {
                return Ok(false);
            }
            if result.published && !valid {
                s.register_in_place(&path, refs, record)?;
            } else {
                s.register_output(&staging, &path, refs, record)?;
            }
            Ok(true)
        });
        let secs = job.since.elapsed().as_secs_f64();
        match registered {
            Ok(built) => {
                let note = if built { "registered" } else { "already valid" };
                self.db(|s| s.db.settle_job(&job.job_id, "COMPLETED", note))?;
                if built {
                    self.summary.built += 1;
                    self.reporter.finished(&name, secs, &Outcome::Built);
                } else {
                    self.summary.already_valid += 1;
                    self.reporter.finished(&name, secs, &Outcome::AlreadyValid);
                }
            }
            Err(e) => {
                self.db(|s| {
                    s.db.settle_job(&job.job_id, "COMPLETED", "registration failed")
                })?;
                self.state[i] = NodeState::Over;
                self.fail(
                    i,
                    Outcome::Failed {
                        message: format!("cannot register the output: {e}"),
                        log: job.log.clone(),
                        tail: String::new(),
                    },
                );
            }
        }
        Ok(true)
    }

    /// A job ended without an output: record it, then retry or fail.
    fn job_failed(
        &mut self,
        i: usize,
        status: &JobStatus,
        build_error: Option<String>,
    ) -> Result<bool, RealizeError> {
        let NodeState::Live(job) = std::mem::replace(&mut self.state[i], NodeState::Over) else {
            unreachable!()
        };
        let name = self.name(i);
        let state = status.state.clone();
        let message = describe_end(&job, status, self.drv(i), build_error.as_deref());
        let result = read_result(&job.result);
        let mut record = self.record(
            i,
            job.attempt,
            Some(&job.job_id),
            result.as_ref(),
            if state == JobState::Cancelled {
                "cancelled"
            } else {
                "failed"
            },
            &message,
        );
        record.log_path = Some(job.log.display().to_string());
        self.with_store(|s| s.db.record_build(&record).ok());
        self.db(|s| s.db.settle_job(&job.job_id, state.as_str(), "failed"))?;

        if state != JobState::Cancelled && self.retries_left[i] > 0 && !self.stopping {
            self.retries_left[i] -= 1;
            // The jobs queued after this one will never start: queue them again later.
            self.requeue_dependents(i, &name)?;
            let LiveJob { _lock: lock, .. } = *job;
            self.state[i] = NodeState::Waiting(Some(lock));
            let (_, mem) = self.next_attempt(i)?;
            let more = match (state == JobState::OutOfMemory, mem) {
                (true, Some(m)) => format!(", with --mem={m}M"),
                _ => String::new(),
            };
            self.reporter.note(&format!(
                "{name}: {message}; retrying ({} retr{} left{more})",
                self.retries_left[i],
                if self.retries_left[i] == 1 {
                    "y"
                } else {
                    "ies"
                }
            ));
            return Ok(true);
        }
        let tail = log_tail(&job.log, 20);
        self.fail(
            i,
            Outcome::Failed {
                message,
                log: job.log.clone(),
                tail,
            },
        );
        Ok(true)
    }

    /// Cancels the live jobs downstream of `i` (they wait on a job that failed) and marks
    /// them to be queued again.
    fn requeue_dependents(&mut self, i: usize, name: &str) -> Result<(), RealizeError> {
        let mut blocked = vec![false; self.state.len()];
        let down = block_dependents(i, &self.dependents, &mut blocked);
        let mut ids = Vec::new();
        for &d in &down {
            if !matches!(self.state[d], NodeState::Live(_)) {
                continue;
            }
            if let NodeState::Live(j) = std::mem::replace(&mut self.state[d], NodeState::Over) {
                let j = *j;
                ids.push(j.job_id);
                self.state[d] = NodeState::Waiting(Some(j._lock));
            }
        }
        if !ids.is_empty() {
            let _ = self.client.cancel(&ids);
            let note = format!("input {name} is retried");
            for id in &ids {
                self.db(|s| s.db.settle_job(id, JobState::Cancelled.as_str(), &note))?;
            }
        }
        Ok(())
    }

    /// Derivation `i` failed for good: report it, drop its dependents' jobs, and without
    /// `--keep-going` cancel the jobs that have not started.
    fn fail(&mut self, i: usize, outcome: Outcome) {
        let name = self.name(i);
        self.state[i] = NodeState::Over;
        self.summary.failed.push(name.clone());
        self.reporter.finished(&name, 0.0, &outcome);
        self.block(i);
        if !self.keep_going && !self.stopping {
            self.stopping = true;
            let mut ids = Vec::new();
            for &k in &self.to_build {
                if let NodeState::Live(j) = &self.state[k]
                    && !j.state.as_ref().is_some_and(JobState::has_started)
                {
                    ids.push((k, j.job_id.clone()));
                }
            }
            if !ids.is_empty() {
                let just: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
                let _ = self.client.cancel(&just);
                for (k, id) in &ids {
                    let _ = self.with_store(|s| {
                        s.db.settle_job(id, "CANCELLED", "stopped: a build failed")
                    });
                    self.state[*k] = NodeState::Over;
                }
                let names: Vec<String> = ids.iter().map(|(k, _)| self.name(*k)).collect();
                self.reporter.note(&format!(
                    "cancelled {} queued job{} (use --keep-going to build them anyway): {}",
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                ));
            }
        }
    }

    /// Everything downstream of failed derivation `i` is skipped; their jobs are cancelled.
    fn block(&mut self, i: usize) {
        let name = self.name(i);
        if !matches!(self.state[i], NodeState::Over) {
            // `i` itself was skipped because of its own input.
            self.state[i] = NodeState::Over;
        }
        let mut blocked = vec![false; self.state.len()];
        let down = block_dependents(i, &self.dependents, &mut blocked);
        let mut ids = Vec::new();
        for &d in &down {
            match std::mem::replace(&mut self.state[d], NodeState::Over) {
                NodeState::Live(j) => ids.push(j.job_id.clone()),
                NodeState::Over => continue,
                _ => {}
            }
            let dn = self.name(d);
            self.reporter
                .finished(&dn, 0.0, &Outcome::DependencyFailed(name.clone()));
            self.summary.skipped.push(dn);
        }
        if !ids.is_empty() {
            let _ = self.client.cancel(&ids);
            for id in &ids {
                let _ = self.with_store(|s| {
                    s.db.settle_job(id, "CANCELLED", &format!("input {name} failed"))
                });
            }
        }
    }

    /// Leaves every live job to a later realizer.
    fn leave_queued(&mut self, why: &str) {
        for k in 0..self.to_build.len() {
            let i = self.to_build[k];
            if let NodeState::Live(j) = std::mem::replace(&mut self.state[i], NodeState::Over) {
                let name = self.name(i);
                self.summary.queued.push(name.clone());
                self.reporter.finished(
                    &name,
                    0.0,
                    &Outcome::Queued {
                        job_id: j.job_id.clone(),
                    },
                );
            }
        }
        if !self.summary.queued.is_empty() {
            self.reporter.note(&format!(
                "{} job{} {why} on SLURM: `kdbuild status` lists them, `kdbuild realize` re-attaches and registers their outputs",
                self.summary.queued.len(),
                if self.summary.queued.len() == 1 { "" } else { "s" },
            ));
        }
    }

    /// Ctrl-C or SIGTERM: cancel this realizer's jobs or leave them queued.
    async fn interrupt(&mut self, ctrl_c: bool, sigint: &mut tokio::signal::unix::Signal) {
        self.summary.interrupted = true;
        let ids = self.live_ids();
        if ids.is_empty() {
            return;
        }
        let cancel = match self.opts.on_interrupt {
            OnInterrupt::Cancel => true,
            OnInterrupt::Keep => false,
            OnInterrupt::Ask => {
                let ask_here =
                    ctrl_c && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
                if ask_here {
                    self.reporter.pause();
                }
                ask_here && ask(ids.len(), sigint).await
            }
        };
        if !cancel {
            self.leave_queued("left queued");
            return;
        }
        let _ = self.client.cancel(&ids);
        for k in 0..self.to_build.len() {
            let i = self.to_build[k];
            if let NodeState::Live(j) = std::mem::replace(&mut self.state[i], NodeState::Over) {
                let mut record = self.record(
                    i,
                    j.attempt,
                    Some(&j.job_id),
                    None,
                    "interrupted",
                    "CANCELLED",
                );
                record.log_path = Some(j.log.display().to_string());
                let _ = self.with_store(|s| {
                    s.db.record_build(&record)?;
                    s.db.settle_job(&j.job_id, "CANCELLED", "cancelled on interrupt")
                });
                let name = self.name(i);
                self.reporter.finished(&name, 0.0, &Outcome::Interrupted);
            }
        }
        self.reporter.note(&format!(
            "cancelled {} SLURM job{}",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        ));
    }

    /// A build record of an attempt of derivation `i`.
    fn record(
        &self,
        i: usize,
        attempt: u32,
        job_id: Option<&str>,
        result: Option<&BuildResult>,
        outcome: &str,
        exit_status: &str,
    ) -> BuildRecord {
        let drv = self.drv(i);
        let mut r = BuildRecord {
            drv_hash: self.plan.inst.nodes[i].hash.to_string(),
            target: drv.name.clone(),
            attempt,
            executor: EXECUTOR.into(),
            job_id: job_id.map(str::to_string),
            started_at: now_ms(),
            ended_at: Some(now_ms()),
            outcome: outcome.into(),
            exit_status: Some(exit_status.into()),
            kdbuild_version: env!("CARGO_PKG_VERSION").into(),
            code_digest: Some(drv.code.digest.clone()).filter(|d| !d.is_empty()),
            ..Default::default()
        };
        if let Some(res) = result {
            r.host = Some(res.host.clone());
            r.started_at = res.started_at;
            r.ended_at = Some(res.ended_at);
            r.peak_rss_kb = Some(res.peak_rss_kb);
        }
        r
    }
}

/// Says how a job ended, in the words a user can act on.
fn describe_end(
    job: &LiveJob,
    status: &JobStatus,
    drv: &Derivation,
    build_error: Option<&str>,
) -> String {
    let r = &drv.recorded.resources;
    let id = &job.job_id;
    let mut s = format!("job {id} ended {}", status.state);
    match &status.state {
        JobState::OutOfMemory => {
            if let Some(m) = job.mem_mb {
                s.push_str(&format!(": it used more than its --mem={m}M"));
            }
        }
        JobState::Timeout => {
            if let Some(t) = r.time_s {
                s.push_str(&format!(
                    ": it ran past its --time={}",
                    crate::pipeline::resources::format_slurm_time(t)
                ));
            }
        }
        JobState::NodeFail => s.push_str(": its node failed"),
        JobState::Preempted => s.push_str(": a job of higher priority took its place"),
        JobState::Cancelled => s.push_str(": it was cancelled"),
        _ => {}
    }
    if let Some(code) = &status.exit_code
        && code != "0:0"
    {
        s.push_str(&format!(" (exit code {code})"));
    }
    if let Some(reason) = &status.reason
        && !matches!(
            reason.as_str(),
            "NonZeroExitCode" | "OutOfMemory" | "TimeLimit"
        )
    {
        s.push_str(&format!(" ({reason})"));
    }
    if let Some(e) = build_error {
        s.push_str(&format!("; the build said: {e}"));
    }
    s
}

/// Asks on the terminal whether to cancel; a second Ctrl-C answers "no".
async fn ask(n: usize, sigint: &mut tokio::signal::unix::Signal) -> bool {
    eprint!(
        "\ninterrupted: cancel this realize's {n} SLURM job{}? [y/N] (no: they stay queued, and `kdbuild realize` re-attaches) ",
        if n == 1 { "" } else { "s" }
    );
    let line = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s).map(|_| s)
    });
    tokio::select! {
        l = line => matches!(l, Ok(Ok(s)) if s.trim().eq_ignore_ascii_case("y") || s.trim().eq_ignore_ascii_case("yes")),
        _ = sigint.recv() => false,
    }
}
