//! Bad input: each mistake gets a message naming file, line, column and key (with a
//! suggestion on a typo), exit code 2, and leaves the store exactly as it was.

mod common;

use common::{Project, dag_project};

/// A project whose store already holds a realized target, so "unchanged" means something.
fn built_project() -> Project {
    let p = dag_project();
    p.run("dag.toml", &["realize", "teacher-alpha-eval"]).ok();
    p
}

/// Runs `args` against `pipeline` text, expecting exit code 2, every `needles` in stderr and
/// an unchanged store. Returns stderr.
fn rejects(p: &Project, pipeline: &str, args: &[&str], needles: &[&str]) -> String {
    p.write("bad.toml", pipeline);
    let before = p.snapshot();
    let r = p.run("bad.toml", args);
    assert_eq!(r.code, 2, "exit code; stderr:\n{}", r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "expected `{n}` in:\n{}", r.stderr);
    }
    assert_eq!(p.snapshot(), before, "the store changed");
    r.stderr
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

#[test]
fn unknown_target_suggests_the_nearest() {
    let p = built_project();
    rejects(
        &p,
        common::DAG_PIPELINE,
        &["realize", "teacher-alpha-trian"],
        &["unknown target `teacher-alpha-trian` (did you mean `teacher-alpha-train`?)"],
    );
    rejects(
        &p,
        common::DAG_PIPELINE,
        &["realize", "nothing-*"],
        &["no target matches `nothing-*`"],
    );
}

#[test]
fn cyclic_inputs_are_named_in_order() {
    let p = built_project();
    let text = r#"
[pipeline]
name = "cycle"
[stages.a]
target = "a"
kind = "command"
command = ["true"]
inputs.x = "b"
[stages.b]
target = "b"
kind = "command"
command = ["true"]
inputs.y = "a"
"#;
    let err = rejects(&p, text, &["realize", "a"], &["cyclic inputs: "]);
    assert!(
        err.contains("a -> b -> a") || err.contains("b -> a -> b"),
        "{err}"
    );
    assert!(err.contains("bad.toml:"), "{err}");
}

#[test]
fn unknown_keys_are_located_with_a_suggestion() {
    let p = built_project();
    let text = common::DAG_PIPELINE.replace(
        "target = \"{variant}-{dataset}-train\"",
        "tagret = \"{variant}-{dataset}-train\"",
    );
    let line = line_of(&text, "tagret");
    let err = rejects(
        &p,
        &text,
        &["realize", "teacher-alpha-eval"],
        &["unknown key `tagret` (did you mean `target`?)"],
    );
    assert!(
        err.contains(&format!("bad.toml:{line}:1:")),
        "line {line}: {err}"
    );

    let text = common::DAG_PIPELINE.replace(
        "inputs.raw = \"source:{dataset}\"",
        "inputs.raw = { source = \"{dataset}\", wen = { variant = \"x\" } }",
    );
    rejects(
        &p,
        &text,
        &["realize", "alpha-prep"],
        &[
            "`stages.prep.inputs.raw`",
            "unknown key `wen` (did you mean `when`?)",
        ],
    );
}

#[test]
fn a_missing_source_path_says_where_the_data_comes_from() {
    let p = built_project();
    let text = common::DAG_PIPELINE
        .replace(
            "name = \"dag\"",
            "name = \"dag\"\nvars = { data = \"${KDBUILD_DATA:-data}\" }",
        )
        .replace(
            "path = \"data/beta\"",
            "path = \"${data}/gamma\"\nabout = \"the gamma archive, https://example.org/gamma\"",
        );
    let line = line_of(&text, "${data}/gamma");
    let err = rejects(
        &p,
        &text,
        &["realize", "teacher-beta-eval"],
        &[
            "source `beta`: data not found at",
            "gamma",
            "it comes from: the gamma archive, https://example.org/gamma",
            "set `KDBUILD_DATA` to the folder that holds it",
        ],
    );
    assert!(err.contains(&format!("bad.toml:{line}:")), "{err}");
    assert!(!err.contains("building"), "nothing was built: {err}");
    // Targets that do not need the missing data still work.
    p.write("bad.toml", &text);
    p.run("bad.toml", &["realize", "-n", "teacher-alpha-eval"])
        .ok();
}

#[test]
fn a_template_naming_an_unknown_matrix_variable_is_located() {
    let p = built_project();
    let text = common::DAG_PIPELINE.replace(
        "target = \"{variant}-{dataset}-eval\"",
        "target = \"{varaint}-{dataset}-eval\"",
    );
    let line = line_of(&text, "{varaint}");
    let err = rejects(
        &p,
        &text,
        &["targets"],
        &[
            "`stages.eval.target`",
            "template names unknown matrix variable `varaint` (did you mean `variant`?)",
        ],
    );
    assert!(err.contains(&format!("bad.toml:{line}:")), "{err}");

    let text = common::DAG_PIPELINE.replace(
        "inputs.model = \"{variant}-{dataset}-train\"",
        "inputs.model = \"{variant}-{datset}-train\"",
    );
    rejects(
        &p,
        &text,
        &["targets"],
        &[
            "`stages.eval.inputs.model`",
            "unknown matrix variable `datset` (did you mean `dataset`?)",
        ],
    );
}

#[test]
fn truncated_toml_is_a_located_syntax_error() {
    let p = built_project();
    let full = common::DAG_PIPELINE;
    let cut = &full[..full
        .find("kind = \"command\"\ncommand = [\"sh\", \"{script.train}\"")
        .unwrap()
        + 30];
    let err = rejects(&p, cut, &["targets"], &["bad.toml:"]);
    let line = cut.lines().count();
    assert!(
        err.contains(&format!("bad.toml:{line}:")),
        "truncated at line {line}: {err}"
    );
}

#[test]
fn non_utf8_toml_names_the_line() {
    let p = built_project();
    let mut bytes = common::DAG_PIPELINE.as_bytes().to_vec();
    let at = common::DAG_PIPELINE.find("[matrix]").unwrap();
    bytes.splice(at..at, b"# caf\xe9\n".iter().copied());
    p.write_bytes("bad.toml", &bytes);
    let before = p.snapshot();
    let r = p.run("bad.toml", &["targets"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = common::DAG_PIPELINE[..at].lines().count() + 1;
    assert!(
        r.stderr
            .contains(&format!("bad.toml:{line}:6: the file is not valid UTF-8")),
        "{}",
        r.stderr
    );
    assert_eq!(p.snapshot(), before);
}

#[test]
fn names_with_slash_or_dotdot_are_rejected() {
    let p = built_project();
    let text = common::DAG_PIPELINE.replace("[stages.eval]", "[stages.\"ev/al\"]");
    rejects(
        &p,
        &text,
        &["targets"],
        &["stage name `ev/al` contains `/`"],
    );

    let text = common::DAG_PIPELINE.replace(
        "target = \"{variant}-{dataset}-eval\"",
        "target = \"../{variant}-{dataset}-eval\"",
    );
    rejects(
        &p,
        &text,
        &["targets"],
        &["`stages.eval.target`", "contains `/`"],
    );

    let text = common::DAG_PIPELINE.replace(
        "dataset = [\"alpha\", \"beta\"]",
        "dataset = [\"alpha\", \"be..ta\"]",
    );
    rejects(
        &p,
        &text,
        &["targets"],
        &["`matrix.dataset.1`", "`be..ta` contains `..`"],
    );
}

#[test]
fn bad_resources_are_located() {
    let p = built_project();
    let text = common::DAG_PIPELINE.replace("mem = \"100M\"", "mem = \"100X\"");
    rejects(
        &p,
        &text,
        &["targets"],
        &["`stages.prep.resources.mem`", "`100X`: expected MiB"],
    );
    let text = common::DAG_PIPELINE.replace("time = \"5m\"", "time = \"soon\"");
    rejects(
        &p,
        &text,
        &["targets"],
        &["`stages.prep.resources.time`", "`soon`"],
    );
}

#[test]
fn unknown_placeholders_and_kinds_are_located() {
    let p = built_project();
    let text = common::DAG_PIPELINE.replace("{config.scale}", "{config.scael}");
    rejects(
        &p,
        &text,
        &["targets"],
        &[
            "`stages.train.command.4`",
            "has no config key `scael` (did you mean `scale`?)",
        ],
    );
    let text = common::DAG_PIPELINE.replace("\"{in.teacher?}\"", "\"{in.teacher}\"");
    rejects(
        &p,
        &text,
        &["targets"],
        &[
            "input `teacher` does not exist for target `teacher-alpha-train`",
            "{in.teacher?}",
        ],
    );
    let text = common::DAG_PIPELINE.replacen("kind = \"command\"", "kind = \"comand\"", 1);
    rejects(
        &p,
        &text,
        &["targets"],
        &["unknown stage kind `comand` (did you mean `command`?)"],
    );
}
