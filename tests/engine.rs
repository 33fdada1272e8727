//! The engine end to end: the real binary realizing a 3-level DAG of command stages with a
//! matrix into temporary stores.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::{Project, dag_project};

const ALL_EVALS: &str = "*-eval";

fn all_targets() -> Vec<&'static str> {
    vec![
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
}

#[test]
fn three_level_dag_realizes_then_rerun_is_a_no_op() {
    let p = dag_project();
    let r = p.run("dag.toml", &["realize", ALL_EVALS, "-j", "2"]).ok();
    assert_eq!(p.valid_targets(), all_targets());
    assert_eq!(p.total_builds(), 10, "each derivation built once");
    // stdout lists the requested results, one store path per line
    assert_eq!(r.stdout.lines().count(), 4);
    // outputs are real and read-only; the student read its teacher
    let score = fs::read_to_string(p.path().join("results/student-beta-eval/score")).unwrap();
    assert_eq!(
        score, "2\n4\n",
        "student (2 rows x 1) then its teacher's model (2 rows x 2)"
    );
    let out = fs::canonicalize(p.path().join("results/student-beta-eval")).unwrap();
    assert!(out.starts_with(fs::canonicalize(p.store()).unwrap()));
    let mode = fs::metadata(out.join("score"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "store outputs are read-only");

    // a rerun builds nothing
    let again = p.run("dag.toml", &["realize", ALL_EVALS]).ok();
    assert_eq!(p.total_builds(), 10);
    assert!(!again.stderr.contains("building"), "{}", again.stderr);
    let dry = p.run("dag.toml", &["realize", "-n", ALL_EVALS]).ok();
    assert!(dry.stdout.contains("nothing to build"), "{}", dry.stdout);
}

#[test]
fn a_config_change_rebuilds_exactly_that_stage_and_its_dependents() {
    let p = dag_project();
    p.run("dag.toml", &["realize", ALL_EVALS]).ok();
    let before = p.builds();
    let changed = common::DAG_PIPELINE.replace(
        "config_by.variant.student = { scale = 1 }",
        "config_by.variant.student = { scale = 5 }",
    );
    p.write("dag.toml", &changed);

    let dry = p.run("dag.toml", &["realize", "-n", ALL_EVALS]).ok();
    assert!(
        dry.stdout
            .contains("reason: config key `scale` changed: 1 -> 5"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("reason: input `model` rebuilt"),
        "{}",
        dry.stdout
    );
    let listed = dry
        .stdout
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .count();
    assert_eq!(listed, 4, "{}", dry.stdout);

    p.run("dag.toml", &["realize", ALL_EVALS]).ok();
    let after = p.builds();
    let rebuilt: Vec<&String> = after
        .iter()
        .filter(|(t, n)| before.get(*t) != Some(n))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        rebuilt,
        vec![
            "student-alpha-eval",
            "student-alpha-train",
            "student-beta-eval",
            "student-beta-train"
        ]
    );
    assert_eq!(p.total_builds(), 14);
}

#[test]
fn resources_and_store_location_do_not_change_hashes() {
    let p = dag_project();
    p.run("dag.toml", &["realize", ALL_EVALS]).ok();
    let more = common::DAG_PIPELINE.replace(
        "resources = { cpus = 1, mem = \"100M\", time = \"5m\" }",
        "resources = { cpus = 8, mem = \"64G\", time = \"6h\", gpus = 1, partition = \"gpu\", account = \"PAS1\" }",
    );
    assert_ne!(more, common::DAG_PIPELINE);
    p.write("dag.toml", &more);
    let dry = p.run("dag.toml", &["realize", "-n", ALL_EVALS]).ok();
    assert!(dry.stdout.contains("nothing to build"), "{}", dry.stdout);

    // Another store: the same derivation hashes, only the root differs.
    let h1 = p
        .run("dag.toml", &["show-derivation", "student-beta-eval"])
        .ok()
        .stdout;
    let other = p.path().join("elsewhere");
    let h2 = p
        .cmd("dag.toml")
        .env("KDBUILD_STORE", &other)
        .args(["show-derivation", "student-beta-eval"])
        .output()
        .unwrap();
    let h2 = String::from_utf8_lossy(&h2.stdout).into_owned();
    let hash = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["drv_hash"].clone();
    assert_eq!(hash(&h1), hash(&h2));
}

#[test]
fn a_failing_stage_registers_nothing_keeps_its_log_and_keep_going_builds_the_rest() {
    let p = dag_project();
    p.write("data/beta/b.csv", "4\nfail\n");

    // Without --keep-going: exit code 1, beta-prep invalid, its log kept.
    let r = p.run("dag.toml", &["realize", ALL_EVALS]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("FAILED beta-prep"), "{}", r.stderr);
    assert!(
        r.stderr.contains("prep: bad data"),
        "the log's tail is shown: {}",
        r.stderr
    );
    assert!(!p.valid_targets().contains(&"beta-prep".to_string()));
    let log = p.run("dag.toml", &["log", "beta-prep"]).ok();
    assert!(log.stdout.contains("prep: bad data"), "{}", log.stdout);
    let staging: Vec<_> = fs::read_dir(p.store().join("tmp")).unwrap().collect();
    assert!(
        !staging.is_empty(),
        "the failed build's staging directory is kept"
    );

    // --keep-going: the independent alpha branch is built completely.
    let r = p.run("dag.toml", &["realize", ALL_EVALS, "--keep-going"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("skipped teacher-beta-train: input beta-prep failed"),
        "{}",
        r.stderr
    );
    let valid = p.valid_targets();
    for t in ["alpha-prep", "teacher-alpha-eval", "student-alpha-eval"] {
        assert!(valid.contains(&t.to_string()), "{t} built: {valid:?}");
    }
    assert!(valid.iter().all(|t| !t.contains("beta")), "{valid:?}");

    // After the fix, a rerun builds only what is missing: the beta branch.
    let before = p.builds();
    p.write("data/beta/b.csv", "4\n5\n");
    p.run("dag.toml", &["realize", ALL_EVALS]).ok();
    let after = p.builds();
    let rebuilt: Vec<&String> = after.keys().filter(|t| !before.contains_key(*t)).collect();
    assert_eq!(
        rebuilt,
        vec![
            "beta-prep",
            "student-beta-eval",
            "student-beta-train",
            "teacher-beta-eval",
            "teacher-beta-train"
        ]
    );
    assert!(
        before.iter().all(|(t, n)| after[t] == *n),
        "nothing valid was rebuilt"
    );
}

#[test]
fn dry_run_prints_reasons_and_changes_nothing() {
    let p = dag_project();
    let r = p.run("dag.toml", &["realize", "-n", ALL_EVALS]).ok();
    assert!(
        r.stdout.contains("would build 10 derivations"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("reason: output missing"), "{}", r.stdout);
    assert!(
        !p.store().exists(),
        "a dry run against no store creates none"
    );

    p.run("dag.toml", &["realize", "teacher-alpha-eval"]).ok();
    let before = p.snapshot();
    let r = p
        .run("dag.toml", &["realize", "-n", ALL_EVALS, "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["to_build"].as_array().unwrap().len(), 7);
    assert_eq!(p.snapshot(), before, "the dry run changed the store");
}

#[test]
fn rebuild_flags_force_targets_and_stages() {
    let p = dag_project();
    p.run("dag.toml", &["realize", ALL_EVALS]).ok();
    let dry = p
        .run(
            "dag.toml",
            &["realize", "-n", "--rebuild", "teacher-alpha-train"],
        )
        .ok();
    assert!(dry.stdout.contains("reason: forced"), "{}", dry.stdout);
    p.run("dag.toml", &["realize", "--rebuild", "teacher-alpha-train"])
        .ok();
    assert_eq!(p.builds()["teacher-alpha-train"], 2);
    assert_eq!(p.total_builds(), 11, "only the named target");

    p.run(
        "dag.toml",
        &["realize", ALL_EVALS, "--rebuild-stage", "prep"],
    )
    .ok();
    assert_eq!(p.builds()["alpha-prep"], 2);
    assert_eq!(p.builds()["beta-prep"], 2);
    assert_eq!(
        p.total_builds(),
        13,
        "prep outputs are byte-identical, so nothing downstream rebuilds"
    );
}

#[test]
fn concurrent_realizes_build_each_derivation_once() {
    let p = dag_project();
    let slow = common::DAG_PIPELINE.replace("config = { sleep = 0 }", "config = { sleep = 1 }");
    p.write("dag.toml", &slow);
    let spawn = |target: &str| {
        p.cmd("dag.toml")
            .args(["realize", target, "-j", "2", "--no-link"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Overlapping closures: both need alpha-prep, teacher-alpha-train and teacher-alpha-eval.
    let a = spawn("*-alpha-eval");
    let b = spawn("teacher-*-eval");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let builds = p.builds();
    assert!(builds.values().all(|&n| n == 1), "{builds:?}");
    assert_eq!(builds.len(), 8, "{builds:?}");
}

#[test]
fn ctrl_c_stops_the_builds_and_registers_nothing() {
    let p = dag_project();
    let slow = common::DAG_PIPELINE.replace("config = { sleep = 0 }", "config = { sleep = 30 }");
    p.write("dag.toml", &slow);
    let child = p
        .cmd("dag.toml")
        .args(["realize", "teacher-alpha-eval"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the eval build is running.
    let started = std::time::Instant::now();
    loop {
        let log_dir = p.store().join("log");
        let running = fs::read_dir(&log_dir).map(|rd| rd.count()).unwrap_or(0);
        if running >= 3 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the 30 s build was stopped"
    );
    assert!(
        !p.valid_targets()
            .contains(&"teacher-alpha-eval".to_string())
    );
    // A rerun (without the sleep) builds only what is missing.
    p.write("dag.toml", common::DAG_PIPELINE);
    let before = p.total_builds();
    p.run("dag.toml", &["realize", "teacher-alpha-eval"]).ok();
    assert_eq!(p.total_builds(), before + 1);
}

#[test]
fn commands_run_with_a_cleared_environment() {
    let p = Project::new();
    p.write(
        "env.toml",
        r#"
[pipeline]
name = "env"
[stages.show]
target = "show"
kind = "command"
command = ["sh", "-c", "env > {out}/env"]
env = { MINE = "set" }
pass_env = ["PASSED"]
"#,
    );
    p.cmd("env.toml")
        .env("SECRET_TOKEN", "x")
        .env("PASSED", "yes")
        .args(["realize", "show"])
        .output()
        .unwrap();
    let env = fs::read_to_string(p.path().join("results/show/env")).unwrap();
    assert!(!env.contains("SECRET_TOKEN"), "{env}");
    assert!(env.contains("MINE=set"), "{env}");
    assert!(env.contains("PASSED=yes"), "{env}");
    assert!(env.contains("PATH="), "{env}");
}

#[test]
fn targets_graph_path_info_and_show_derivation() {
    let p = dag_project();
    let t = p.run("dag.toml", &["targets", "teacher-*"]).ok();
    assert_eq!(
        t.stdout.lines().collect::<Vec<_>>(),
        vec![
            "teacher-alpha-train",
            "teacher-beta-train",
            "teacher-alpha-eval",
            "teacher-beta-eval"
        ]
    );
    p.run("dag.toml", &["realize", "teacher-alpha-eval"]).ok();
    let g = p
        .run(
            "dag.toml",
            &["graph", "student-alpha-eval", "--format", "dot"],
        )
        .ok();
    assert!(
        g.stdout
            .contains("\"teacher-alpha-train\" -> \"student-alpha-train\" [label=\"teacher\"]"),
        "{}",
        g.stdout
    );
    assert!(
        g.stdout
            .contains("\"teacher-alpha-train\" [fillcolor=\"#c8e6c9\""),
        "built: {}",
        g.stdout
    );
    assert!(
        g.stdout
            .contains("\"student-alpha-train\" [fillcolor=\"#ffe0b2\""),
        "to build: {}",
        g.stdout
    );
    let m = p
        .run(
            "dag.toml",
            &["graph", "student-alpha-eval", "--format", "mermaid"],
        )
        .ok();
    assert!(m.stdout.starts_with("flowchart LR"), "{}", m.stdout);

    let info = p
        .run("dag.toml", &["path-info", "-r", "teacher-alpha-eval"])
        .ok();
    let first: Vec<&str> = info
        .stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        first.len(),
        3,
        "eval, its model and the model's data: {}",
        info.stdout
    );
    assert!(
        first
            .iter()
            .all(|f| f.starts_with(p.store().to_str().unwrap()))
    );
    let j = p
        .run("dag.toml", &["path-info", "--json", "teacher-alpha-eval"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v[0]["references"][0]["input"], "model");

    let d = p
        .run("dag.toml", &["show-derivation", "teacher-alpha-train"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(v["config"]["scale"], 2);
    assert_eq!(v["inputs"]["data"]["name"], "alpha-prep");
    let by_hash = p
        .run(
            "dag.toml",
            &["show-derivation", v["drv_hash"].as_str().unwrap()],
        )
        .ok();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&by_hash.stdout).unwrap(),
        v
    );
}
