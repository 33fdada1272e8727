//! Corruption: a flipped byte, a deleted file, a deleted store path, dropped database rows,
//! a lost derivation file and a stray directory. `verify` reports each (exit code 3) and
//! `verify --repair` restores each, by rebuilding from the derivation files.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::{Project, dag_project, json};

const D: &str = "dag.toml";

/// A project with every eval realized.
fn built() -> Project {
    let p = dag_project();
    p.run(D, &["realize", "*-eval"]).ok();
    p
}

/// The store path name of `target`'s valid path.
fn path_name(p: &Project, target: &str) -> String {
    p.db()
        .query_row(
            "SELECT path FROM valid_paths WHERE target = ?1",
            [target],
            |r| r.get(0),
        )
        .unwrap()
}

fn dir_of(p: &Project, target: &str) -> PathBuf {
    p.store().join(path_name(p, target))
}

fn set_writable(path: &std::path::Path, w: bool) {
    let mut perm = fs::metadata(path).unwrap().permissions();
    perm.set_mode(if w {
        perm.mode() | 0o200
    } else {
        perm.mode() & !0o222
    });
    fs::set_permissions(path, perm).unwrap();
}

/// (kind, path name) of each problem a verify reports; asserts its exit code.
fn problems(p: &Project, args: &[&str], code: i32) -> BTreeSet<(String, String)> {
    let mut a = vec!["verify", "--json"];
    a.extend_from_slice(args);
    let r = p.run(D, &a);
    let v = json(&r);
    assert_eq!(r.code, code, "{v:#}\n{}", r.stderr);
    v["remaining"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["kind"].as_str().unwrap().to_string(),
                x["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Repairs with `args`, then checks that a full verify is clean.
fn repair(p: &Project, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["verify", "--json", "--repair"];
    a.extend_from_slice(args);
    let r = p.run(D, &a);
    let v = json(&r);
    assert_eq!(r.code, 0, "{v:#}\n{}", r.stderr);
    assert!(v["remaining"].as_array().unwrap().is_empty(), "{v:#}");
    assert!(problems(p, &["--check-contents"], 0).is_empty());
    v
}

#[test]
fn a_flipped_byte_is_found_by_content_check_and_rebuilt() {
    let p = built();
    let name = path_name(&p, "teacher-alpha-train");
    let file = dir_of(&p, "teacher-alpha-train").join("model");
    let original = fs::read(&file).unwrap();
    let mut bytes = original.clone();
    bytes[0] ^= 0x01;
    set_writable(&file, true);
    fs::write(&file, &bytes).unwrap();
    set_writable(&file, false);

    // Same size, so only reading the bytes finds it.
    assert!(problems(&p, &[], 0).is_empty());
    assert_eq!(
        problems(&p, &["--check-contents"], 3),
        set(&[("content_mismatch", &name)])
    );
    let v = repair(&p, &["--check-contents"]);
    assert_eq!(v["repair"]["rebuilt"][0], name.as_str());
    assert!(
        v["repair"]["not_reproducible"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(fs::read(&file).unwrap(), original);
    // The path stayed valid throughout, so its referrers were not touched.
    assert_eq!(p.builds()["student-alpha-train"], 1);
}

#[test]
fn a_deleted_file_is_found_without_reading_contents() {
    let p = built();
    let name = path_name(&p, "student-beta-eval");
    let dir = dir_of(&p, "student-beta-eval");
    let original = fs::read(dir.join("score")).unwrap();
    set_writable(&dir, true);
    fs::remove_file(dir.join("score")).unwrap();
    set_writable(&dir, false);
    assert_eq!(problems(&p, &[], 3), set(&[("size_mismatch", &name)]));
    repair(&p, &[]);
    assert_eq!(fs::read(dir.join("score")).unwrap(), original);
}

#[test]
fn a_deleted_store_path_is_rebuilt() {
    let p = built();
    let name = path_name(&p, "alpha-prep");
    let dir = dir_of(&p, "alpha-prep");
    let original = fs::read(dir.join("rows")).unwrap();
    set_writable(&dir, true);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(problems(&p, &[], 3), set(&[("missing", &name)]));
    // A realize trusts the database; the repair is verify's job.
    let v = repair(&p, &[]);
    assert_eq!(v["repair"]["rebuilt"][0], name.as_str());
    assert_eq!(fs::read(dir.join("rows")).unwrap(), original);
}

#[test]
fn a_dropped_valid_path_row_is_a_stray_with_dangling_references_and_is_rebuilt() {
    let p = built();
    let name = path_name(&p, "teacher-alpha-train");
    let before = fs::read(dir_of(&p, "teacher-alpha-train").join("model")).unwrap();
    let db = p.db();
    db.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    db.execute("DELETE FROM valid_paths WHERE path = ?1", [&name])
        .unwrap();
    drop(db);
    let eval = path_name(&p, "teacher-alpha-eval");
    let student = path_name(&p, "student-alpha-train");
    assert_eq!(
        problems(&p, &[], 3),
        set(&[
            ("stray", &name),
            ("dangling_reference", &eval),
            ("dangling_reference", &student)
        ])
    );
    // The unregistered directory is not valid: the dry run would build it again.
    let dry = p.run(D, &["realize", "-n", "teacher-alpha-train"]).ok();
    assert!(
        dry.stdout.contains("would build 1 derivation"),
        "{}",
        dry.stdout
    );
    repair(&p, &[]);
    assert_eq!(path_name(&p, "teacher-alpha-train"), name);
    assert_eq!(
        fs::read(p.store().join(&name).join("model")).unwrap(),
        before
    );
}

#[test]
fn dropped_reference_and_derivation_rows_are_recorded_again() {
    let p = built();
    let student = path_name(&p, "student-beta-train");
    let prep = path_name(&p, "alpha-prep");
    let db = p.db();
    db.execute(
        "DELETE FROM refs WHERE reason = 'teacher' AND referrer = (SELECT id FROM valid_paths WHERE path = ?1)",
        [&student],
    )
    .unwrap();
    db.execute("DELETE FROM derivations WHERE drv_hash = ?1", [&prep[..32]])
        .unwrap();
    drop(db);
    assert_eq!(
        problems(&p, &[], 3),
        set(&[
            ("missing_reference", &student),
            ("derivation_record", &prep)
        ])
    );
    let v = repair(&p, &[]);
    assert_eq!(v["repair"]["references"].as_array().unwrap().len(), 1);
    assert_eq!(v["repair"]["records"][0], &prep[..32]);
    assert_eq!(
        p.total_builds(),
        10,
        "rows are re-recorded, nothing rebuilt"
    );
}

#[test]
fn a_lost_derivation_file_is_rewritten_from_the_pipeline() {
    let p = built();
    let name = path_name(&p, "teacher-beta-eval");
    fs::remove_file(p.store().join("drv").join(format!("{}.json", &name[..32]))).unwrap();
    assert_eq!(problems(&p, &[], 3), set(&[("derivation_missing", &name)]));
    let v = repair(&p, &[]);
    assert_eq!(v["repair"]["derivations"][0], &name[..32]);
}

#[test]
fn what_cannot_be_rebuilt_is_invalidated_with_its_referrers() {
    let p = built();
    let train = path_name(&p, "teacher-alpha-train");
    let dir = dir_of(&p, "teacher-alpha-train");
    set_writable(&dir, true);
    fs::remove_dir_all(&dir).unwrap();
    fs::remove_file(p.store().join("drv").join(format!("{}.json", &train[..32]))).unwrap();
    // The pipeline no longer produces that derivation either.
    p.write(
        D,
        &common::DAG_PIPELINE.replace("config = { scale = 2 }", "config = { scale = 7 }"),
    );
    let r = p.run(D, &["verify", "--json", "--repair"]);
    let v = json(&r);
    assert_eq!(r.code, 0, "{v:#}");
    let invalidated: BTreeSet<String> = v["repair"]["invalidated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap()[33..].to_string())
        .collect();
    assert_eq!(
        invalidated,
        BTreeSet::from([
            "student-alpha-eval".to_string(),
            "student-alpha-train".to_string(),
            "teacher-alpha-eval".to_string(),
            "teacher-alpha-train".to_string(),
        ]),
        "the path and everything that refers to it: {v:#}"
    );
    assert!(problems(&p, &["--check-contents"], 0).is_empty());
    // A realize builds them again.
    p.run(D, &["realize", "*-alpha-eval"]).ok();
    assert!(problems(&p, &["--check-contents"], 0).is_empty());
}

#[test]
fn a_stray_directory_is_never_valid_and_repair_removes_it() {
    let p = dag_project();
    // A leftover named exactly like the path a realize is about to build.
    let d = p.run(D, &["show-derivation", "alpha-prep"]).ok();
    let v: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    let name = v["store_path"].as_str().unwrap().to_string();
    p.run(D, &["realize", "beta-prep"]).ok();
    p.write(&format!("store/{name}/rows"), "half-written\n");
    assert_eq!(problems(&p, &[], 3), set(&[("stray", &name)]));
    // Not treated as valid: built, and the leftover replaced.
    p.run(D, &["realize", "alpha-prep"]).ok();
    assert_eq!(
        fs::read_to_string(p.store().join(&name).join("rows")).unwrap(),
        "1\n2\n3\n"
    );
    assert!(problems(&p, &["--check-contents"], 0).is_empty());

    let other = name.replace("alpha-prep", "gamma-prep");
    p.write(&format!("store/{other}/x"), "x");
    assert_eq!(problems(&p, &[], 3), set(&[("stray", &other)]));
    let v = repair(&p, &[]);
    assert_eq!(v["repair"]["removed"][0], other.as_str());
    assert!(!p.store().join(&other).exists());
}
