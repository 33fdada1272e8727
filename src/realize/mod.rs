//! The realizer: builds what a plan says is missing, at most `-j` at once, and registers each
//! output once its build has succeeded.
//!
//! Each build runs under a per-path lock: a second realizer that needs the same path waits,
//! then finds it valid (validity is re-checked under the lock) instead of building it again.
//! Failed and interrupted builds are recorded but never registered; their staging directory
//! and log stay for `kdbuild log`. A rerun builds only what is still missing.
//!
//! Two drivers walk the same DAG, one per executor ([`ExecutorChoice`]): the local one keeps
//! at most `-j` child processes and starts a build when its inputs are registered; the SLURM
//! one ([`slurm`]) queues a build as soon as its inputs are *queued* (`afterok`), polls all
//! jobs at once and registers each output after its job ends. They share the plan, the
//! registration ([`references`]) and the reporting.

pub mod explain;
pub mod plan;
pub mod repair;
pub mod results;
pub mod slurm;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use petgraph::Direction;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use plan::{Plan, PlanNode, Reason};

use crate::derivation::{Derivation, Input};
use crate::executor::local::LocalExecutor;
use crate::executor::{Job, JobEnd};
use crate::pipeline::{Node, Pipeline};
use crate::stage::Registry;
use crate::store::db::now_ms;
use crate::store::{BuildRecord, PathLock, Store, StoreError};

/// How to realize.
#[derive(Clone, Debug)]
pub struct Options {
    /// Builds at once (local executor).
    pub jobs: usize,
    /// Go on with independent builds after a failure.
    pub keep_going: bool,
    /// Where builds run.
    pub executor: ExecutorChoice,
}

/// Where builds run. Recorded with each build, never hashed.
#[derive(Clone, Debug, Default)]
pub enum ExecutorChoice {
    /// `kdbuild build` as child processes of this realizer.
    #[default]
    Local,
    /// One SLURM job per derivation, the whole DAG queued at once.
    Slurm(Box<slurm::SlurmOptions>),
}

/// How one build ended, as the realizer reports it.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Built and registered.
    Built,
    /// Another realizer built it while this one waited for the lock.
    AlreadyValid,
    /// The build failed; nothing was registered.
    Failed {
        message: String,
        log: PathBuf,
        tail: String,
    },
    /// Not attempted because an input failed.
    DependencyFailed(String),
    /// Stopped by Ctrl-C or SIGTERM; nothing was registered.
    Interrupted,
    /// Left queued or running on the cluster (`--detach`, or an interrupt that kept the
    /// jobs); a later `kdbuild realize` re-attaches to the job and registers its output.
    Queued { job_id: String },
}

/// Receives the realizer's progress (the CLI draws bars or prints lines).
pub trait Reporter {
    fn start(&mut self, total: usize);
    fn started(&mut self, target: &str);
    fn finished(&mut self, target: &str, seconds: f64, outcome: &Outcome);
    /// A batch job was queued for `target` (`adopted`: found queued by an earlier realizer),
    /// waiting for the jobs `after`.
    fn submitted(&mut self, target: &str, job_id: &str, after: &[String], adopted: bool) {
        let _ = (job_id, after, adopted);
        self.started(target);
    }
    /// Anything else worth a line: a retry, cancelled jobs.
    fn note(&mut self, text: &str) {
        let _ = text;
    }
    /// Stop drawing anything that would overwrite a question on the terminal.
    fn pause(&mut self) {}
}

/// What a realize did.
#[derive(Debug, Default)]
pub struct Summary {
    pub built: usize,
    pub already_valid: usize,
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
    pub interrupted: bool,
    /// Targets left queued or running on the cluster.
    pub queued: Vec<String>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && !self.interrupted
    }
}

/// Errors that stop the realizer itself (not a failed build, which is an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum RealizeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the build runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Slurm(#[from] crate::executor::slurm::SlurmError),
    /// The local executor was asked to build what SLURM jobs are building.
    #[error(
        "`{target}`{} {} a SLURM job in flight (job {job_id}): re-attach with `kdbuild realize --executor slurm` (it also reports jobs you cancelled with `scancel`)",
        if *.more > 0 { format!(" and {} more", .more) } else { String::new() },
        if *.more > 0 { "have" } else { "has" }
    )]
    LiveJobs {
        target: String,
        job_id: String,
        more: usize,
    },
}

/// Builds every node of `plan` marked `build`. `store` is shared with the build tasks.
pub fn run(
    store: Arc<Mutex<Store>>,
    pipeline: &Pipeline,
    plan: &Plan,
    registry: &Arc<Registry>,
    opts: &Options,
    reporter: &mut dyn Reporter,
) -> Result<Summary, RealizeError> {
    let mut drvs: Vec<Option<Arc<Derivation>>> = vec![None; plan.inst.nodes.len()];
    for i in plan.to_build() {
        drvs[i] = Some(Arc::new(plan.inst.derivation(pipeline, i)));
    }
    run_plan(store, plan, drvs, registry, opts, reporter)
}

/// Builds every node of `plan` marked `build`, given the derivation of each (`drvs[i]` for
/// node `i`). This is how derivations are built by hash, without a pipeline:
/// `verify --repair` reads them from the store's derivation files.
pub fn run_plan(
    store: Arc<Mutex<Store>>,
    plan: &Plan,
    drvs: Vec<Option<Arc<Derivation>>>,
    registry: &Arc<Registry>,
    opts: &Options,
    reporter: &mut dyn Reporter,
) -> Result<Summary, RealizeError> {
    let to_build = plan.to_build();
    {
        let mut s = store.lock().expect("store lock");
        record_derivations(&mut s, plan, &to_build, &drvs)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RealizeError::Runtime)?;
    if let ExecutorChoice::Slurm(so) = &opts.executor {
        let client = crate::executor::slurm::SlurmClient::system();
        return rt.block_on(slurm::schedule(
            store, plan, &drvs, registry, opts, so, &client, reporter, to_build,
        ));
    }
    refuse_live_jobs(&store.lock().expect("store lock"), plan, &to_build)?;
    let root = store.lock().expect("store lock").root().to_path_buf();
    let executor = LocalExecutor::new(&root).map_err(RealizeError::Runtime)?;
    rt.block_on(schedule(
        store, plan, &drvs, registry, opts, reporter, executor, to_build,
    ))
}

/// The local executor must not build what a SLURM job (queued by a detached or interrupted
/// realizer) is building: both would write the same store path.
fn refuse_live_jobs(store: &Store, plan: &Plan, to_build: &[usize]) -> Result<(), RealizeError> {
    let mut live = Vec::new();
    for &i in to_build {
        let hash = plan.inst.nodes[i].hash.to_string();
        if let Some(j) = store
            .db
            .unsettled_job(&hash)
            .map_err(|e| StoreError::db(store.root(), e))?
        {
            live.push(j);
        }
    }
    match live.first() {
        None => Ok(()),
        Some(j) => Err(RealizeError::LiveJobs {
            target: j.target.clone(),
            job_id: j.job_id.clone(),
            more: live.len() - 1,
        }),
    }
}

/// Writes the derivation files and rows of everything about to be built.
fn record_derivations(
    store: &mut Store,
    plan: &Plan,
    to_build: &[usize],
    drvs: &[Option<Arc<Derivation>>],
) -> Result<(), StoreError> {
    let drv = |i: usize| drvs[i].as_deref().expect("derivations of what is built");
    for &i in to_build {
        store.write_derivation(&plan.inst.nodes[i].hash, drv(i))?;
    }
    let root = store.root().to_path_buf();
    store
        .db
        .write(|tx| {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO derivations (drv_hash, target, stage, kind, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut inp = tx.prepare_cached(
                "INSERT OR IGNORE INTO drv_inputs (drv_hash, name, input, content) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let now = now_ms();
            for &i in to_build {
                let (node, d) = (&plan.inst.nodes[i], drv(i));
                let h = node.hash.to_string();
                st.execute(rusqlite::params![h, d.name, d.stage, d.kind, now])?;
                for (name, input) in &d.inputs {
                    let (what, content) = match input {
                        Input::Derivation { .. } => (
                            input.store_path().map(|p| p.to_string()).unwrap_or_default(),
                            None,
                        ),
                        Input::Source { name, content, .. } => {
                            (format!("source:{name}"), Some(content.to_string()))
                        }
                    };
                    inp.execute(rusqlite::params![h, name, what, content])?;
                }
            }
            Ok(())
        })
        .map_err(|e| StoreError::db(&root, e))
}

#[allow(clippy::too_many_arguments)]
async fn schedule(
    store: Arc<Mutex<Store>>,
    plan: &Plan,
    drvs: &[Option<Arc<Derivation>>],
    registry: &Arc<Registry>,
    opts: &Options,
    reporter: &mut dyn Reporter,
    executor: LocalExecutor,
    to_build: Vec<usize>,
) -> Result<Summary, RealizeError> {
    use tokio::signal::unix::{SignalKind, signal};

    // The DAG of what is built; graph node k is the k-th derivation of `to_build`.
    let graph = plan.build_graph();
    let n = plan.inst.nodes.len();
    let mut waiting_on = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for g in graph.node_indices() {
        waiting_on[graph[g]] = graph.neighbors_directed(g, Direction::Incoming).count();
        dependents[graph[g]] = graph
            .neighbors_directed(g, Direction::Outgoing)
            .map(|x| graph[x])
            .collect();
    }
    let mut ready: VecDeque<usize> = to_build
        .iter()
        .copied()
        .filter(|&i| waiting_on[i] == 0)
        .collect();
    let mut blocked = vec![false; n];
    let mut summary = Summary::default();
    reporter.start(to_build.len());

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sigint = signal(SignalKind::interrupt()).map_err(RealizeError::Runtime)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RealizeError::Runtime)?;
    let mut running: JoinSet<(usize, Outcome, f64)> = JoinSet::new();
    let mut stopping = false;

    loop {
        while !stopping && running.len() < opts.jobs.max(1) {
            let Some(i) = ready.pop_front() else { break };
            let node = plan.inst.nodes[i].clone();
            let drv = drvs[i].clone().expect("derivations of what is built");
            reporter.started(&drv.name);
            let task = BuildTask {
                forced: plan.nodes[i].valid,
                store: store.clone(),
                registry: registry.clone(),
                executor: executor.clone(),
                stop: stop_rx.clone(),
            };
            running.spawn(async move {
                let t0 = Instant::now();
                let outcome = task.build(&node, &drv).await;
                (i, outcome, t0.elapsed().as_secs_f64())
            });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (i, outcome, secs) = match joined {
                    Ok(v) => v,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                let name = drvs[i].as_ref().map(|d| d.name.clone()).unwrap_or_default();
                reporter.finished(&name, secs, &outcome);
                match &outcome {
                    Outcome::Built | Outcome::AlreadyValid => {
                        if matches!(outcome, Outcome::Built) {
                            summary.built += 1;
                        } else {
                            summary.already_valid += 1;
                        }
                        for &d in &dependents[i] {
                            waiting_on[d] -= 1;
                            if waiting_on[d] == 0 && !blocked[d] {
                                ready.push_back(d);
                            }
                        }
                    }
                    Outcome::Failed { .. } => {
                        summary.failed.push(name.clone());
                        for d in block_dependents(i, &dependents, &mut blocked) {
                            let dn = drvs[d].as_ref().map(|d| d.name.clone()).unwrap_or_default();
                            reporter.finished(&dn, 0.0, &Outcome::DependencyFailed(name.clone()));
                            summary.skipped.push(dn);
                        }
                        if !opts.keep_going {
                            stopping = true;
                        }
                    }
                    Outcome::Interrupted => summary.interrupted = true,
                    Outcome::DependencyFailed(_) | Outcome::Queued { .. } => {}
                }
            }
            _ = sigint.recv() => { stopping = true; summary.interrupted = true; let _ = stop_tx.send(true); }
            _ = sigterm.recv() => { stopping = true; summary.interrupted = true; let _ = stop_tx.send(true); }
        }
    }
    Ok(summary)
}

/// Marks everything downstream of failed node `i` as blocked; returns the newly blocked.
fn block_dependents(i: usize, dependents: &[Vec<usize>], blocked: &mut [bool]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack = dependents[i].clone();
    while let Some(d) = stack.pop() {
        if blocked[d] {
            continue;
        }
        blocked[d] = true;
        out.push(d);
        stack.extend(dependents[d].iter().copied());
    }
    out.sort_unstable();
    out
}

/// What one build needs, cloned into its task.
struct BuildTask {
    /// The path was valid when planned and is rebuilt on purpose (`--rebuild`).
    forced: bool,
    store: Arc<Mutex<Store>>,
    registry: Arc<Registry>,
    executor: LocalExecutor,
    stop: watch::Receiver<bool>,
}

impl BuildTask {
    async fn build(self, node: &Node, drv: &Derivation) -> Outcome {
        match self.try_build(node, drv).await {
            Ok(o) => o,
            Err(e) => Outcome::Failed {
                message: e.to_string(),
                log: PathBuf::new(),
                tail: String::new(),
            },
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.store.lock().expect("store lock"))
    }

    async fn try_build(&self, node: &Node, drv: &Derivation) -> Result<Outcome, StoreError> {
        let lock_path = self.with_store(|s| s.lock_file(&node.hash));
        let _lock = match PathLock::try_exclusive(&lock_path)? {
            Some(l) => l,
            None => {
                let p = lock_path.clone();
                tokio::task::spawn_blocking(move || PathLock::exclusive(&p))
                    .await
                    .expect("lock task")?
            }
        };
        if self.stopped() {
            return Ok(Outcome::Interrupted);
        }
        let (valid, attempt) = self.with_store(|s| -> Result<_, StoreError> {
            let db_err = |e| StoreError::db(s.root(), e);
            let valid = s.db.is_valid(&node.path).map_err(db_err)?;
            let mut attempt = s.db.next_attempt(&node.hash.to_string()).map_err(db_err)?;
            // A realizer killed mid-build never recorded its attempt, and its build may still
            // be running: never reuse an attempt number whose files exist, so a stale result
            // record or an orphaned build cannot touch this attempt.
            while s.staging_dir(&node.path, attempt).exists()
                || s.log_file(&node.hash, attempt).exists()
                || s.result_file(&node.hash, attempt).exists()
            {
                attempt += 1;
            }
            Ok((valid, attempt))
        })?;
        if valid && !self.forced {
            return Ok(Outcome::AlreadyValid);
        }
        let job = self.with_store(|s| Job {
            drv_hash: node.hash,
            path: node.path.clone(),
            attempt,
            staging: s.staging_dir(&node.path, attempt),
            log: s.log_file(&node.hash, attempt),
            result: s.result_file(&node.hash, attempt),
            resources: drv.recorded.resources.clone(),
        });
        crate::store::tree_hash::remove_tree(&job.staging)
            .map_err(|e| StoreError::io(&job.staging, e))?;
        let started_at = now_ms();
        let end = self.executor.run(&job, self.stop.clone()).await;
        let mut record = BuildRecord {
            drv_hash: node.hash.to_string(),
            target: drv.name.clone(),
            attempt,
            executor: "local".into(),
            started_at,
            ended_at: Some(now_ms()),
            kdbuild_version: env!("CARGO_PKG_VERSION").into(),
            code_digest: Some(drv.code.digest.clone()).filter(|d| !d.is_empty()),
            log_path: Some(job.log.display().to_string()),
            ..Default::default()
        };
        if let JobEnd::Exited {
            result: Some(r),
            status,
        } = &end
        {
            record.host = Some(r.host.clone());
            record.started_at = r.started_at;
            record.ended_at = Some(r.ended_at);
            record.peak_rss_kb = Some(r.peak_rss_kb);
            record.exit_status = Some(status.clone());
        }
        if self.stopped() || matches!(end, JobEnd::Interrupted) {
            record.outcome = "interrupted".into();
            self.with_store(|s| s.db.record_build(&record).ok());
            return Ok(Outcome::Interrupted);
        }
        if !end.succeeded() {
            record.outcome = "failed".into();
            let message = match &end {
                JobEnd::Exited {
                    result: Some(r), ..
                } => r.error.clone().unwrap_or_else(|| "failed".into()),
                JobEnd::Exited {
                    status,
                    result: None,
                } => format!("build died ({status}) before finishing"),
                JobEnd::NotStarted(m) => m.clone(),
                JobEnd::Interrupted => "interrupted".into(),
            };
            record.exit_status.get_or_insert_with(|| message.clone());
            self.with_store(|s| s.db.record_build(&record).ok());
            return Ok(Outcome::Failed {
                message,
                tail: log_tail(&job.log, 20),
                log: job.log,
            });
        }
        record.outcome = "succeeded".into();
        let references = references(&self.registry, drv);
        let store = self.store.clone();
        let path = node.path.clone();
        let staging = job.staging.clone();
        tokio::task::spawn_blocking(move || {
            store
                .lock()
                .expect("store lock")
                .register_output(&staging, &path, references, record)
        })
        .await
        .expect("register task")?;
        Ok(Outcome::Built)
    }
}

/// The references a derivation's output keeps, as its stage kind declares them: (store path,
/// input name).
pub fn references(registry: &Registry, drv: &Derivation) -> Vec<(String, String)> {
    let kind = registry.get(&drv.kind);
    let names = kind.map(|k| k.references(drv)).unwrap_or_default();
    names
        .into_iter()
        .filter_map(|n| {
            let p = drv.inputs.get(&n)?.store_path()?;
            Some((p.to_string(), n))
        })
        .collect()
}

/// The last `n` lines of a log.
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
