//! `gc` and `roots` end to end, and gc running beside realizers: nothing live is deleted, a
//! running build keeps its inputs, and a realize started during a gc waits for it.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Project, dag_project, json};
use kdbuild::store::roots::StoreLock;

const ALL_EVALS: &str = "*-eval";

/// Target names of the paths a `gc --json` deleted.
fn deleted_targets(v: &serde_json::Value) -> BTreeSet<String> {
    v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let p = d["path"].as_str().unwrap();
            let base = p.rsplit('/').next().unwrap();
            base[33..].to_string()
        })
        .collect()
}

fn verify_clean(p: &Project, pipeline: &str) {
    let r = p.run(pipeline, &["verify", "--check-contents", "--json"]);
    let v = json(&r);
    assert_eq!(r.code, 0, "verify found problems: {v:#}");
}

#[test]
fn gc_keeps_what_roots_need_and_collects_the_rest() {
    let p = dag_project();
    p.run("dag.toml", &["realize", ALL_EVALS]).ok();
    // Nothing is garbage yet: every path is in the closure of a result link.
    let v = json(&p.run("dag.toml", &["gc", "--json"]).ok());
    assert!(deleted_targets(&v).is_empty(), "{v:#}");
    assert_eq!(v["roots"], 4);

    // A new student config: the old student paths lose their result links.
    let changed = common::DAG_PIPELINE.replace(
        "config_by.variant.student = { scale = 1 }",
        "config_by.variant.student = { scale = 5 }",
    );
    p.write("dag.toml", &changed);
    p.run("dag.toml", &["realize", ALL_EVALS]).ok();
    assert_eq!(p.valid_targets().len(), 14);

    // A dry run says so and changes nothing.
    let before = p.snapshot();
    let dry = p.run("dag.toml", &["gc", "--dry-run"]).ok();
    assert!(
        dry.stdout.contains("would free 4 store paths"),
        "{}",
        dry.stdout
    );
    assert_eq!(p.snapshot(), before, "a dry run changed the store");

    let v = json(&p.run("dag.toml", &["gc", "--json"]).ok());
    assert_eq!(
        deleted_targets(&v),
        BTreeSet::from([
            "student-alpha-eval".into(),
            "student-alpha-train".into(),
            "student-beta-eval".into(),
            "student-beta-train".into()
        ])
    );
    assert_eq!(v["derivations"], 4, "their derivations go with them");
    assert!(v["freed_bytes"].as_u64().unwrap() > 0);
    assert_eq!(p.valid_targets().len(), 10);
    // The current results are untouched and read the same.
    let score = fs::read_to_string(p.path().join("results/student-beta-eval/score")).unwrap();
    assert_eq!(score, "10\n4\n");
    verify_clean(&p, "dag.toml");

    // A deleted result link is no longer a root; its stale entry goes too. The teacher's
    // model stays: the student refers to it.
    fs::remove_file(p.path().join("results/teacher-alpha-eval")).unwrap();
    let v = json(&p.run("dag.toml", &["gc", "--json"]).ok());
    assert_eq!(
        deleted_targets(&v),
        BTreeSet::from(["teacher-alpha-eval".into()])
    );
    assert_eq!(v["stale_roots"], 1);
    assert!(
        p.valid_targets()
            .contains(&"teacher-alpha-train".to_string())
    );
    verify_clean(&p, "dag.toml");
}

#[test]
fn pinned_roots_keep_paths_until_removed() {
    let p = dag_project();
    p.run("dag.toml", &["realize", "teacher-beta-eval", "--no-link"])
        .ok();
    let r = p
        .run("dag.toml", &["roots", "add", "teacher-beta-eval"])
        .ok();
    assert!(
        r.stdout.contains("roots/teacher-beta-eval ->"),
        "{}",
        r.stdout
    );
    let list = p.run("dag.toml", &["roots", "list"]).ok();
    assert!(
        list.stdout.starts_with("pinned\tteacher-beta-eval\t"),
        "{}",
        list.stdout
    );
    let v = json(&p.run("dag.toml", &["gc", "--json"]).ok());
    assert!(deleted_targets(&v).is_empty(), "{v:#}");

    // Only valid paths can be pinned; reserved and unknown names are refused.
    let r = p.run("dag.toml", &["roots", "add", "teacher-alpha-eval"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is not valid"), "{}", r.stderr);
    let r = p.run(
        "dag.toml",
        &["roots", "add", "teacher-beta-eval", "--name", "auto"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = p.run("dag.toml", &["roots", "remove", "nothing"]);
    assert_eq!(r.code, 2, "{}", r.stderr);

    p.run("dag.toml", &["roots", "remove", "teacher-beta-eval"])
        .ok();
    let v = json(&p.run("dag.toml", &["gc", "--json"]).ok());
    assert_eq!(
        deleted_targets(&v),
        BTreeSet::from([
            "beta-prep".into(),
            "teacher-beta-eval".into(),
            "teacher-beta-train".into()
        ])
    );
    assert!(p.valid_targets().is_empty());
}

#[test]
fn path_info_gives_closure_sizes() {
    let p = dag_project();
    p.run("dag.toml", &["realize", "student-alpha-eval"]).ok();
    let all = json(
        &p.run(
            "dag.toml",
            &["path-info", "--json", "-r", "student-alpha-eval"],
        )
        .ok(),
    );
    let sum: u64 = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["size"].as_u64().unwrap())
        .sum();
    assert_eq!(
        all.as_array().unwrap().len(),
        4,
        "eval, its model, the teacher, the data"
    );
    let one = json(
        &p.run(
            "dag.toml",
            &["path-info", "--json", "-S", "student-alpha-eval"],
        )
        .ok(),
    );
    assert_eq!(one[0]["closure_size"].as_u64().unwrap(), sum);
    let text = p
        .run("dag.toml", &["path-info", "-S", "student-alpha-eval"])
        .ok();
    assert!(text.stdout.contains("\tclosure "), "{}", text.stdout);
}

#[test]
fn gc_while_a_realize_builds_deletes_nothing_live() {
    let p = dag_project();
    let slow = common::DAG_PIPELINE.replace("config = { sleep = 0 }", "config = { sleep = 3 }");
    p.write("dag.toml", &slow);
    // Garbage: built, never linked.
    p.run("dag.toml", &["realize", "teacher-beta-train", "--no-link"])
        .ok();
    let mut child = p
        .cmd("dag.toml")
        .args(["realize", "teacher-alpha-eval"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the slow eval build runs (its staging directory exists).
    let t0 = Instant::now();
    let staging = loop {
        let found = fs::read_dir(p.store().join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|e| e.to_string_lossy().contains("-teacher-alpha-eval."));
        if let Some(s) = found {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the eval build never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let v = json(&p.run("dag.toml", &["gc", "--json"]).ok());
    assert!(
        child.try_wait().unwrap().is_none(),
        "gc ran while the build was still running"
    );
    assert_eq!(
        deleted_targets(&v),
        BTreeSet::from(["beta-prep".into(), "teacher-beta-train".into()])
    );
    assert!(
        v["busy"].as_u64().unwrap() >= 1,
        "the running build's staging stays: {v:#}"
    );
    assert!(staging.exists());
    // The running build's inputs are kept, although no result link names them yet.
    let valid = p.valid_targets();
    assert!(valid.contains(&"alpha-prep".to_string()), "{valid:?}");
    assert!(
        valid.contains(&"teacher-alpha-train".to_string()),
        "{valid:?}"
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let score = fs::read_to_string(p.path().join("results/teacher-alpha-eval/score")).unwrap();
    assert_eq!(score, "6\n");
    verify_clean(&p, "dag.toml");
    let v = json(&p.run("dag.toml", &["gc", "--json"]).ok());
    assert!(deleted_targets(&v).is_empty(), "{v:#}");
}

#[test]
fn a_realize_started_while_gc_runs_waits_for_it() {
    let p = dag_project();
    p.run("dag.toml", &["realize", "alpha-prep"]).ok();
    // Hold the store lock as a running gc does.
    let gc = StoreLock::exclusive(&p.store(), &mut || {}).unwrap();
    let child = p
        .cmd("dag.toml")
        .args(["realize", "teacher-alpha-eval"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !p.valid_targets()
            .contains(&"teacher-alpha-train".to_string()),
        "nothing is built while gc holds the store"
    );
    drop(gc);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting for a running `kdbuild gc` to finish"),
        "{stderr}"
    );
    assert!(
        p.valid_targets()
            .contains(&"teacher-alpha-eval".to_string())
    );
}

#[test]
fn gc_and_realize_racing_keep_the_store_consistent() {
    let p = dag_project();
    p.run("dag.toml", &["realize", ALL_EVALS]).ok();
    for scale in 2..6 {
        // Each round makes the previous students garbage while new ones build.
        let changed = common::DAG_PIPELINE.replace(
            "config_by.variant.student = { scale = 1 }",
            &format!("config_by.variant.student = {{ scale = {scale} }}"),
        );
        p.write("dag.toml", &changed);
        let realize = p
            .cmd("dag.toml")
            .args(["realize", ALL_EVALS, "-j", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(15 * scale as u64));
        let gc = p.run("dag.toml", &["gc", "--json"]);
        assert_eq!(gc.code, 0, "{}", gc.stderr);
        let out = realize.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let score = fs::read_to_string(p.path().join("results/student-beta-eval/score")).unwrap();
        assert_eq!(score, format!("{}\n4\n", 2 * scale));
        verify_clean(&p, "dag.toml");
    }
    let v = json(&p.run("dag.toml", &["gc", "--json"]).ok());
    let left: usize = p.valid_targets().len();
    assert_eq!(left, 10, "only the current closure is left: {v:#}");
}
