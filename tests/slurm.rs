//! The SLURM executor against a real cluster (`scripts/slurm-cluster.sh up`): the real binary,
//! temporary stores, real `sbatch`/`squeue`/`scancel`, no mocks. Tests that need the cluster
//! skip with a message when it is absent, and fail instead when `CI=true`.
//!
//! The tests run in parallel (each with its own store); the node claims 16 CPUs, so their
//! jobs run side by side. SLURM's smallest time limit is one minute, so the TIMEOUT test takes
//! 1–1.5 minutes; everything else takes seconds.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Project, Run, dag_project};

const ALL_EVALS: &str = "*-eval";

/// A profile that polls fast, for tests.
const PROFILE: &str = "[slurm]\npoll_interval = \"1s\"\nlatency_wait = \"5s\"\n";

/// Whether a SLURM cluster answers here (asked once per test binary). Without one: a skip
/// message, or a failure on CI.
fn cluster() -> bool {
    static UP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let up = *UP.get_or_init(|| {
        let works = |prog: &str, args: &[&str]| {
            Command::new(prog)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        works("sbatch", &["--version"]) && works("squeue", &["--noheader"])
    });
    if !up {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true but no SLURM cluster answers (sbatch/squeue): run `scripts/slurm-cluster.sh up` first"
            );
        }
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no SLURM cluster here (start one with `scripts/slurm-cluster.sh up`)"
        );
    }
    up
}

fn slurm_dag() -> Project {
    let p = dag_project();
    p.write("kdbuild.toml", PROFILE);
    p
}

fn slurm(p: &Project, pipeline: &str, args: &[&str]) -> Run {
    let mut a = vec!["--executor", "slurm"];
    a.extend_from_slice(args);
    p.run(pipeline, &a)
}

/// (job id, target, attempt, state, settled, note, mem_mb, depends_on), oldest first.
type JobLine = (
    String,
    String,
    u32,
    String,
    bool,
    String,
    Option<i64>,
    String,
);

fn jobs(p: &Project) -> Vec<JobLine> {
    let db = p.db();
    // A store being created has its database file before its tables: no jobs yet.
    let Ok(mut st) = db.prepare(
        "SELECT job_id, target, attempt, state, settled, COALESCE(note, ''), mem_mb, depends_on
         FROM jobs ORDER BY id",
    ) else {
        return Vec::new();
    };
    st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get::<_, i64>(4)? != 0,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn job_of<'a>(jobs: &'a [JobLine], target: &str) -> &'a JobLine {
    jobs.iter()
        .rev()
        .find(|j| j.1 == target)
        .unwrap_or_else(|| panic!("no job for {target}: {jobs:?}"))
}

fn squeue_state(id: &str) -> String {
    let o = Command::new("squeue")
        .args(["--noheader", "--states=all", "--format=%T", "--jobs", id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Waits (up to `secs`) for `f` to hold.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn all_targets() -> Vec<String> {
    [
        "alpha-prep",
        "beta-prep",
        "student-alpha-eval",
        "student-alpha-train",
        "student-beta-eval",
        "student-beta-train",
        "teacher-alpha-eval",
        "teacher-alpha-train",
        "teacher-beta-eval",
        "teacher-beta-train",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_three_level_dag_is_queued_at_once_with_afterok_then_a_rerun_is_a_no_op() {
    if !cluster() {
        return;
    }
    let p = slurm_dag();
    let r = slurm(&p, "dag.toml", &["realize", ALL_EVALS]).ok();
    assert_eq!(p.valid_targets(), all_targets());
    assert_eq!(p.total_builds(), 10);

    // The whole DAG was queued before the first job ended: every `submitted` line comes
    // before the first `built` line.
    let lines: Vec<&str> = r.stderr.lines().collect();
    let submitted: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("submitted "))
        .collect();
    let first_built = lines.iter().position(|l| l.starts_with("built ")).unwrap();
    assert_eq!(submitted.len(), 10, "{}", r.stderr);
    assert!(submitted.iter().all(|&i| i < first_built), "{}", r.stderr);

    // One job per derivation, each waiting (afterok) on exactly its inputs' jobs.
    let js = jobs(&p);
    assert_eq!(js.len(), 10, "{js:?}");
    assert!(
        js.iter()
            .all(|j| j.3 == "COMPLETED" && j.4 && j.5 == "registered"),
        "{js:?}"
    );
    let id = |t: &str| job_of(&js, t).0.clone();
    let deps = |t: &str| -> BTreeSet<String> {
        job_of(&js, t)
            .7
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    assert!(deps("alpha-prep").is_empty());
    assert_eq!(deps("teacher-alpha-train"), [id("alpha-prep")].into());
    assert_eq!(
        deps("student-alpha-train"),
        [id("alpha-prep"), id("teacher-alpha-train")].into()
    );
    assert_eq!(deps("student-beta-eval"), [id("student-beta-train")].into());

    // The generated script: resources as #SBATCH lines, the store's copy of this binary.
    let log_dir = p.store().join("log");
    let prep_hash = fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| fs::read_to_string(d.join("1.sbatch")).is_ok_and(|s| s.contains("kd-alpha-prep")))
        .expect("alpha-prep's script");
    let script = fs::read_to_string(prep_hash.join("1.sbatch")).unwrap();
    for line in [
        "#SBATCH \"--job-name=kd-alpha-prep\"",
        "#SBATCH \"--mem=100M\"",
        "#SBATCH \"--time=0-00:05:00\"",
        "#SBATCH \"--cpus-per-task=1\"",
    ] {
        assert!(script.contains(line), "{line} in\n{script}");
    }
    let digest = blake3::hash(&fs::read(common::kdbuild_bin()).unwrap())
        .to_hex()
        .to_string();
    let bin = p.store().join("bin").join(format!("{digest}-kdbuild"));
    assert!(bin.is_file(), "the binary is placed by its content");
    assert!(
        script.contains(&format!("exec '{}'", bin.display())),
        "{script}"
    );

    // Builds record the executor and the job.
    let db = p.db();
    let n: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM builds WHERE executor = 'slurm' AND job_id IS NOT NULL AND outcome = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 10);

    // Same outputs as a local build: the student read its teacher.
    let score = fs::read_to_string(p.path().join("results/student-beta-eval/score")).unwrap();
    assert_eq!(score, "2\n4\n");

    // A second realize submits nothing and builds nothing.
    let again = slurm(&p, "dag.toml", &["realize", ALL_EVALS]).ok();
    assert!(!again.stderr.contains("submitted"), "{}", again.stderr);
    assert_eq!(jobs(&p).len(), 10);
    assert_eq!(p.total_builds(), 10);
}

#[test]
fn detach_then_status_then_a_reattaching_realize_registers_without_resubmitting() {
    if !cluster() {
        return;
    }
    let p = slurm_dag();
    // Evaluations sleep, so the DAG is still in flight when `--detach` returns.
    p.write(
        "dag.toml",
        &common::DAG_PIPELINE.replace("config = { sleep = 0 }", "config = { sleep = 3 }"),
    );
    let t0 = Instant::now();
    let r = slurm(&p, "dag.toml", &["realize", ALL_EVALS, "--detach"]).ok();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "returned once queued"
    );
    assert!(r.stderr.contains("10 jobs queued on SLURM"), "{}", r.stderr);
    assert!(
        p.valid_targets().is_empty(),
        "the detached realizer registered nothing"
    );
    let queued: BTreeSet<String> = jobs(&p).into_iter().map(|j| j.0).collect();
    assert_eq!(queued.len(), 10);

    // The local executor will not build what the queued jobs are building.
    let local = p.run("dag.toml", &["realize", ALL_EVALS]);
    assert_eq!(local.code, 2, "{}", local.stderr);
    assert!(
        local
            .stderr
            .contains("re-attach with `kdbuild realize --executor slurm`"),
        "{}",
        local.stderr
    );

    // `status` lists every job with its SLURM state.
    let s = p.run("dag.toml", &["status"]).ok();
    for id in &queued {
        assert!(
            s.stdout.lines().any(|l| l.starts_with(id.as_str())),
            "job {id} listed:\n{}",
            s.stdout
        );
    }
    assert!(
        ["PENDING", "RUNNING", "COMPLETED"]
            .iter()
            .any(|st| s.stdout.contains(st)),
        "{}",
        s.stdout
    );
    let j = p.run("dag.toml", &["status", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 10);

    // `status --wait` returns once every job has ended.
    let w = p.run("dag.toml", &["status", "--wait"]).ok();
    assert_eq!(w.stdout.matches("COMPLETED").count(), 10, "{}", w.stdout);

    // A plain realize re-attaches: it submits nothing and registers all ten outputs.
    let again = slurm(&p, "dag.toml", &["realize", ALL_EVALS]).ok();
    assert!(!again.stderr.contains("submitted"), "{}", again.stderr);
    assert_eq!(again.stderr.matches("re-attached to job").count(), 10);
    assert_eq!(p.valid_targets(), all_targets());
    let after = jobs(&p);
    assert_eq!(
        after.iter().map(|j| j.0.clone()).collect::<BTreeSet<_>>(),
        queued,
        "the same job ids, no new ones"
    );
    assert!(after.iter().all(|j| j.4), "every job settled: {after:?}");
    let db = p.db();
    let mut st = db
        .prepare("SELECT job_id FROM builds WHERE outcome = 'succeeded'")
        .unwrap();
    let built: BTreeSet<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        built, queued,
        "each output recorded with the job that built it"
    );
    let s = p.run("dag.toml", &["status"]).ok();
    assert!(s.stdout.contains("no SLURM jobs in flight"), "{}", s.stdout);
}

/// A stage that waits for a gate file (named by `GATE`, passed through, not hashed).
const GATE_PIPELINE: &str = r#"
[pipeline]
name = "gate"

[stages.wait]
target = "gated"
kind = "command"
command = ["sh", "-c", "while [ ! -e \"$GATE\" ]; do sleep 0.2; done; echo through > {out}/x"]
pass_env = ["GATE"]
resources = { mem = "64M", time = "5m" }

[stages.after]
target = "after-gated"
kind = "command"
command = ["sh", "-c", "cat {in.g}/x > {out}/y"]
inputs.g = "gated"
resources = { mem = "64M", time = "5m" }
"#;

fn gate_project() -> (Project, std::path::PathBuf) {
    let p = Project::new();
    p.write("gate.toml", GATE_PIPELINE)
        .write("kdbuild.toml", PROFILE);
    let gate = p.path().join("gate-open");
    (p, gate)
}

fn spawn_realize(p: &Project, gate: &Path, extra: &[&str]) -> std::process::Child {
    p.cmd("gate.toml")
        .env("GATE", gate)
        .args(["--executor", "slurm", "realize", "after-gated"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the gated job runs; returns its job id.
fn running_gate_job(p: &Project) -> String {
    let mut id = String::new();
    wait_for(60, "the gated job to run", || {
        if !p.store().join("db.sqlite").exists() {
            return false;
        }
        let js = jobs(p);
        match js.iter().find(|j| j.1 == "gated" && !j.4) {
            Some(j) => {
                id = j.0.clone();
                squeue_state(&id) == "RUNNING"
            }
            None => false,
        }
    });
    id
}

#[test]
fn a_job_cancelled_with_scancel_is_reported_cancelled_and_a_rerun_builds_it() {
    if !cluster() {
        return;
    }
    let (p, gate) = gate_project();
    let child = spawn_realize(&p, &gate, &[]);
    let id = running_gate_job(&p);
    assert!(Command::new("scancel").arg(&id).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("FAILED gated: job {id} ended CANCELLED")),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped after-gated: input gated failed"),
        "{stderr}"
    );
    assert!(p.valid_targets().is_empty(), "nothing registered");
    let js = jobs(&p);
    assert_eq!(job_of(&js, "gated").3, "CANCELLED");
    assert_eq!(job_of(&js, "after-gated").3, "CANCELLED");
    assert!(js.iter().all(|j| j.4), "{js:?}");
    let outcome: String = p
        .db()
        .query_row(
            "SELECT outcome FROM builds WHERE target = 'gated'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcome, "cancelled");

    // With the gate open, a rerun builds both, as new jobs.
    fs::write(&gate, "").unwrap();
    let r = p
        .cmd("gate.toml")
        .env("GATE", &gate)
        .args(["--executor", "slurm", "realize", "after-gated"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(p.valid_targets(), vec!["after-gated", "gated"]);
    let js = jobs(&p);
    assert_eq!(js.len(), 4);
    assert_ne!(job_of(&js, "gated").0, id);
    assert_eq!(job_of(&js, "gated").2, 2, "attempt 2");
}

#[test]
fn ctrl_c_keeps_the_jobs_for_a_later_realize_or_cancels_them_on_request() {
    if !cluster() {
        return;
    }
    let (p, gate) = gate_project();
    // Not on a terminal and no flag: the jobs stay queued; exit 130.
    let child = spawn_realize(&p, &gate, &[]);
    let id = running_gate_job(&p);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("2 jobs left queued on SLURM"), "{stderr}");
    assert_eq!(squeue_state(&id), "RUNNING", "the job kept running");
    assert!(jobs(&p).iter().all(|j| !j.4), "left for a later realize");

    // A second realize re-attaches; Ctrl-C with --cancel-on-interrupt cancels both jobs.
    let child = spawn_realize(&p, &gate, &["--cancel-on-interrupt"]);
    wait_for(30, "the re-attach", || {
        // The re-attaching realizer holds the path locks: a try-lock fails.
        let locks = p.store().join("locks");
        fs::read_dir(&locks).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let f = fs::File::open(e.path()).unwrap();
                f.try_lock().is_err()
            })
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("re-attached to job"), "{stderr}");
    assert!(stderr.contains("cancelled 2 SLURM jobs"), "{stderr}");
    wait_for(30, "the cancellation", || squeue_state(&id) == "CANCELLED");
    let js = jobs(&p);
    assert_eq!(js.len(), 2, "nothing was submitted again: {js:?}");
    assert!(
        js.iter().all(|j| j.4 && j.5 == "cancelled on interrupt"),
        "{js:?}"
    );
    assert!(p.valid_targets().is_empty());
}

#[test]
fn a_job_over_its_memory_ends_out_of_memory_and_its_retry_with_more_memory_succeeds() {
    if !cluster() {
        return;
    }
    let p = Project::new();
    p.write(
        "oom.toml",
        r#"
[pipeline]
name = "oom"

[stages.hog]
target = "hog"
kind = "command"
command = ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=250M count=1 && echo fits > {out}/ok"]
resources = { mem = "100M", retries = 1, mem_growth = 4, time = "5m" }

[stages.use]
target = "uses-hog"
kind = "command"
command = ["sh", "-c", "cat {in.hog}/ok > {out}/ok"]
inputs.hog = "hog"
resources = { mem = "64M", time = "5m" }
"#,
    )
    .write("kdbuild.toml", PROFILE);
    let r = slurm(&p, "oom.toml", &["realize", "uses-hog"]).ok();
    assert!(
        r.stderr
            .contains("ended OUT_OF_MEMORY: it used more than its --mem=100M"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("retrying (0 retries left, with --mem=400M)"),
        "{}",
        r.stderr
    );
    // The dependent's first job waited on the failed attempt: it was cancelled and queued
    // again after the retry.
    let js = jobs(&p);
    let view: Vec<(&str, &str, Option<i64>)> = js
        .iter()
        .map(|j| (j.1.as_str(), j.3.as_str(), j.6))
        .collect();
    assert_eq!(
        view,
        vec![
            ("hog", "OUT_OF_MEMORY", Some(100)),
            ("uses-hog", "CANCELLED", Some(64)),
            ("hog", "COMPLETED", Some(400)),
            ("uses-hog", "COMPLETED", Some(64)),
        ],
        "{js:?}"
    );
    assert_eq!(js[1].5, "input hog is retried");
    assert_eq!(js[1].7, js[0].0, "afterok on the first attempt");
    assert_eq!(js[3].7, js[2].0, "afterok on the retry");
    assert_eq!(p.valid_targets(), vec!["hog", "uses-hog"]);
    assert_eq!(
        fs::read_to_string(p.path().join("results/uses-hog/ok")).unwrap(),
        "fits\n"
    );
}

#[test]
fn a_job_over_its_time_limit_is_reported_timeout() {
    if !cluster() {
        return;
    }
    let p = Project::new();
    p.write(
        "slow.toml",
        r#"
[pipeline]
name = "slow"

[stages.slow]
target = "slow"
kind = "command"
command = ["sleep", "300"]
resources = { mem = "64M", time = "1m" }
"#,
    )
    .write("kdbuild.toml", PROFILE);
    let t0 = Instant::now();
    let r = slurm(&p, "slow.toml", &["realize", "slow"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("ended TIMEOUT: it ran past its --time=0-00:01:00"),
        "{}",
        r.stderr
    );
    assert!(
        t0.elapsed() < Duration::from_secs(150),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(jobs(&p)[0].3, "TIMEOUT");
    assert!(p.valid_targets().is_empty());
}

#[test]
fn a_failing_job_is_reported_failed_with_its_log_tail_while_keep_going_builds_the_rest() {
    if !cluster() {
        return;
    }
    let p = slurm_dag();
    p.write("data/beta/b.csv", "4\nfail\n");
    let r = slurm(&p, "dag.toml", &["realize", ALL_EVALS, "--keep-going"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("FAILED beta-prep: job"), "{}", r.stderr);
    assert!(r.stderr.contains("ended FAILED"), "{}", r.stderr);
    assert!(
        r.stderr.contains("prep: bad data"),
        "the log's tail is shown: {}",
        r.stderr
    );
    for t in [
        "teacher-beta-train",
        "teacher-beta-eval",
        "student-beta-train",
        "student-beta-eval",
    ] {
        assert!(
            r.stderr
                .contains(&format!("skipped {t}: input beta-prep failed")),
            "{}",
            r.stderr
        );
    }
    let valid = p.valid_targets();
    for t in [
        "alpha-prep",
        "teacher-alpha-train",
        "teacher-alpha-eval",
        "student-alpha-train",
        "student-alpha-eval",
    ] {
        assert!(valid.contains(&t.to_string()), "{t} built: {valid:?}");
    }
    assert!(valid.iter().all(|t| !t.contains("beta")), "{valid:?}");
    let log = p.run("dag.toml", &["log", "beta-prep"]).ok();
    assert!(log.stdout.contains("prep: bad data"), "{}", log.stdout);
    // The dependents' jobs were dropped, not left pending forever.
    let js = jobs(&p);
    assert!(js.iter().all(|j| j.4), "{js:?}");
    assert_eq!(job_of(&js, "student-beta-eval").3, "CANCELLED");
}

#[test]
fn hostile_paths_and_values_are_quoted_and_run_nothing() {
    if !cluster() {
        return;
    }
    let p = Project::new();
    let evil = "st ore $(touch PWNED1) `touch PWNED2` 'q' \"dq\" #h %j \\ ;x";
    p.write(
        "evil.toml",
        r#"
[pipeline]
name = "evil"

[stages.echo]
target = "echo"
kind = "command"
command = ["sh", "-c", "echo \"$0\" > \"$KDBUILD_OUT/arg\"", "$(touch PWNED3) `touch PWNED4`"]
resources = { mem = "64M", sbatch = ["--comment=$(touch PWNED5) `touch PWNED6` \"q\" 'x' #c"] }
"#,
    )
    .write("kdbuild.toml", PROFILE);
    let r = p
        .cmd("evil.toml")
        .env("KDBUILD_STORE", p.path().join(evil))
        .args(["--executor", "slurm", "realize", "echo"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let arg = fs::read_to_string(p.path().join("results/echo/arg")).unwrap();
    assert_eq!(arg, "$(touch PWNED3) `touch PWNED4`\n");
    let found: Vec<String> = walk_names(p.path())
        .into_iter()
        .filter(|n| n.starts_with("PWNED"))
        .collect();
    assert!(found.is_empty(), "something ran: {found:?}");
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_names(&e.path()));
        }
    }
    out
}

// ---- no cluster needed ---------------------------------------------------------------------

#[test]
fn the_executor_is_recorded_never_hashed() {
    let p = slurm_dag();
    let hash = |executor: &str| {
        let r = p
            .run(
                "dag.toml",
                &[
                    "--executor",
                    executor,
                    "show-derivation",
                    "student-beta-eval",
                ],
            )
            .ok();
        serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["drv_hash"].clone()
    };
    assert_eq!(hash("local"), hash("slurm"));
    // What a local realize built, a SLURM realize finds valid (and needs no cluster for).
    p.run("dag.toml", &["realize", "teacher-alpha-eval"]).ok();
    let dry = slurm(&p, "dag.toml", &["realize", "-n", "teacher-alpha-eval"]).ok();
    assert!(dry.stdout.contains("nothing to build"), "{}", dry.stdout);
    let again = slurm(&p, "dag.toml", &["realize", "teacher-alpha-eval"]).ok();
    assert!(!again.stderr.contains("submitted"), "{}", again.stderr);
}

#[test]
fn bad_profiles_and_sbatch_flags_are_located_errors() {
    let p = slurm_dag();
    p.write("kdbuild.toml", "[slurm]\npoll_interval = \"soon\"\n");
    let r = slurm(&p, "dag.toml", &["realize", "alpha-prep"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("kdbuild.toml:2:17: `slurm.poll_interval`: `soon`"),
        "{}",
        r.stderr
    );
    p.write("kdbuild.toml", PROFILE);
    p.write(
        "dag.toml",
        &common::DAG_PIPELINE.replace(
            "resources = { cpus = 1, mem = \"100M\", time = \"5m\" }",
            "resources = { cpus = 1, mem = \"100M\", time = \"5m\", sbatch = [\"--output=/tmp/x\"] }",
        ),
    );
    let r = slurm(&p, "dag.toml", &["realize", "alpha-prep"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("dag.toml:") && r.stderr.contains("sets `--output` itself"),
        "{}",
        r.stderr
    );
    let r = p.run("dag.toml", &["realize", "alpha-prep", "--detach"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("needs `--executor slurm`"),
        "{}",
        r.stderr
    );
}
