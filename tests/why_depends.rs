//! `why-depends` and `explain` on a pipeline of the KD-GAT shape (command stages standing in
//! for the candle kinds; `tests/fixtures/kdgat_shape.toml`): student evaluation → teacher GAT
//! through the distillation input, evaluation → dataset, and what changed since a result
//! was built.

mod common;

use common::{json, kdgat_project};

const P: &str = "kdgat.toml";

fn chains(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.contains("-->")).collect()
}

#[test]
fn student_evaluation_depends_on_the_teacher_gat_through_the_distillation_input() {
    let p = kdgat_project();
    p.run(P, &["realize", "*-eval", "-j", "2"]).ok();

    let r = p
        .run(P, &["why-depends", "student-demo-eval", "teacher-demo-gat"])
        .ok();
    assert_eq!(
        chains(&r.stdout),
        vec!["student-demo-eval --gat--> student-demo-gat --teacher--> teacher-demo-gat"],
        "{}",
        r.stdout
    );

    // Every chain: directly through the GAT, and through the DQN that uses the GAT.
    let r = p
        .run(
            P,
            &[
                "why-depends",
                "--all",
                "student-demo-eval",
                "teacher-demo-gat",
            ],
        )
        .ok();
    assert_eq!(
        chains(&r.stdout),
        vec![
            "student-demo-eval --gat--> student-demo-gat --teacher--> teacher-demo-gat",
            "student-demo-eval --dqn--> student-demo-dqn --gat--> student-demo-gat --teacher--> teacher-demo-gat",
        ],
        "{}",
        r.stdout
    );

    // The student's VGAE reaches the teacher's VGAE, not its GAT.
    let r = p
        .run(
            P,
            &["why-depends", "student-demo-vgae", "teacher-demo-vgae"],
        )
        .ok();
    assert_eq!(
        chains(&r.stdout),
        vec!["student-demo-vgae --teacher--> teacher-demo-vgae"]
    );

    // A student trained without distillation does not depend on the teacher at all.
    let r = p
        .run(
            P,
            &["why-depends", "student_nokd-demo-eval", "teacher-demo-gat"],
        )
        .ok();
    assert!(chains(&r.stdout).is_empty(), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("`student_nokd-demo-eval` does not depend on `teacher-demo-gat`"),
        "{}",
        r.stdout
    );
}

#[test]
fn evaluation_depends_on_the_dataset_at_run_time_and_on_the_source_at_build_time() {
    let p = kdgat_project();
    p.run(P, &["realize", "teacher-demo-eval"]).ok();

    let r = p
        .run(P, &["why-depends", "teacher-demo-eval", "demo-preprocess"])
        .ok();
    assert_eq!(
        chains(&r.stdout),
        vec!["teacher-demo-eval --data--> demo-preprocess"]
    );
    // A source is a build-time input: `source:NAME` walks derivation inputs.
    let r = p
        .run(P, &["why-depends", "teacher-demo-eval", "source:demo"])
        .ok();
    assert_eq!(
        chains(&r.stdout),
        vec!["teacher-demo-eval --data--> demo-preprocess --raw--> source:demo"]
    );

    // Store paths work as well as targets, and --json names every path and input.
    let j = json(&p.run(P, &["path-info", "--json", "teacher-demo-eval"]).ok());
    let eval_path = j[0]["path"].as_str().unwrap().to_string();
    let r = p
        .run(
            P,
            &["why-depends", "--json", &eval_path, "teacher-demo-vgae"],
        )
        .ok();
    let v = json(&r);
    let chain = v["chains"][0].as_array().unwrap();
    assert_eq!(chain.len(), 1, "{v}");
    assert_eq!(chain[0]["input"], "vgae");
    assert_eq!(chain[0]["from"], eval_path.as_str());
    assert!(
        chain[0]["to"]
            .as_str()
            .unwrap()
            .ends_with("-teacher-demo-vgae")
    );
}

#[test]
fn build_time_chains_work_before_anything_is_built() {
    let p = kdgat_project();
    // Runtime references need a valid path ...
    let r = p.run(P, &["why-depends", "student-demo-eval", "teacher-demo-gat"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    p.run(P, &["realize", "demo-preprocess"]).ok();
    let r = p.run(P, &["why-depends", "student-demo-eval", "teacher-demo-gat"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no valid result"), "{}", r.stderr);
    // ... build-time inputs come from the pipeline's derivations.
    let r = p
        .run(
            P,
            &[
                "why-depends",
                "--build",
                "student-demo-eval",
                "teacher-demo-gat",
            ],
        )
        .ok();
    assert_eq!(
        chains(&r.stdout),
        vec!["student-demo-eval --gat--> student-demo-gat --teacher--> teacher-demo-gat"]
    );
}

#[test]
fn explain_says_which_field_changed_and_why_each_input_changed() {
    let p = kdgat_project();
    p.run(P, &["realize", "*-eval"]).ok();
    let r = p.run(P, &["explain", "student-demo-eval"]).ok();
    assert!(
        r.stdout.contains("student-demo-eval is up to date"),
        "{}",
        r.stdout
    );

    // New data: everything downstream of the source changes, because of the source.
    p.write("data/demo/test.csv", "3,4,5\n9,9,9\n");
    let r = p.run(P, &["explain", "teacher-demo-gat"]).ok();
    assert!(
        r.stdout.contains(
            "- input `data` (`demo-preprocess`) changed because source `demo` (input `raw`) content changed"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("- input `vgae` (`teacher-demo-vgae`) changed because:"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("(explained above)"), "{}", r.stdout);
    p.run(P, &["realize", "*-eval"]).ok();

    // A teacher config change reaches the student through the distillation input.
    let changed = common::KDGAT_SHAPE.replace(
        "config_by.variant.teacher = { size = \"large\" }\nconfig_by.variant.student = { size = \"small\", kd = true }\nconfig_by.variant.student_nokd = { size = \"small\" }\n\n[stages.dqn]",
        "config_by.variant.teacher = { size = \"huge\" }\nconfig_by.variant.student = { size = \"small\", kd = true }\nconfig_by.variant.student_nokd = { size = \"small\" }\n\n[stages.dqn]",
    );
    assert_ne!(changed, common::KDGAT_SHAPE);
    p.write("kdgat.toml", &changed);
    let r = p
        .run(P, &["explain", "student-demo-gat", "student_nokd-demo-gat"])
        .ok();
    assert!(
        r.stdout.contains(
            "- input `teacher` (`teacher-demo-gat`) changed because config key `size` changed: \"large\" -> \"huge\""
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("student_nokd-demo-gat is up to date"),
        "{}",
        r.stdout
    );
    let j = json(&p.run(P, &["explain", "--json", "student-demo-eval"]).ok());
    assert_eq!(j[0]["status"], "changed");

    // The dry run says the same with --explain.
    let r = p
        .run(P, &["realize", "-n", "--explain", "student-demo-eval"])
        .ok();
    assert!(
        r.stdout.contains("reason: input `teacher` rebuilt"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("explained:\n      - input `teacher` (`teacher-demo-gat`) changed because config key `size` changed"),
        "{}",
        r.stdout
    );
}
