//! `pipelines/kdgat.toml`'s model stages load and pass their kinds' checks (config keys,
//! inputs, `kd` ↔ `teacher`), with the resources of spec/issue 4. `kdgat.preprocess` is
//! another engineer's kind; a stand-in with the same name is registered here.

use std::path::Path;

use kdbuild::derivation::CodeIdentity;
use kdbuild::pipeline::Pipeline;
use kdbuild::stage::{BuildContext, Registry, StageError, StageKind};
use serde_json::json;

struct Preprocess;

impl StageKind for Preprocess {
    fn name(&self) -> &'static str {
        "kdgat.preprocess"
    }
    fn code_identity(&self) -> CodeIdentity {
        CodeIdentity::default()
    }
    fn build(&self, _ctx: &BuildContext) -> Result<(), StageError> {
        Ok(())
    }
}

#[test]
fn kdgat_pipeline_model_stages_check() {
    let mut reg = Registry::builtin();
    if reg.get("kdgat.preprocess").is_none() {
        reg.register(Box::new(Preprocess));
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/kdgat.toml");
    let p = Pipeline::load(&file, &reg).expect("kdgat.toml loads");
    let t = |name: &str| &p.targets[p.find(name).unwrap_or_else(|| panic!("{name}"))];
    // The student distils from the teacher; the others do not.
    assert_eq!(t("student-demo-vgae").config["kd"], json!(true));
    assert!(t("student-demo-gat").input("teacher").is_some());
    assert!(t("student_nokd-demo-gat").input("teacher").is_none());
    assert_eq!(t("teacher-demo-gat").config["size"], json!("large"));
    assert_eq!(t("student-demo-dqn").config["size"], json!("small"));
    // Resources as the original ran them.
    for s in ["vgae", "gat", "dqn"] {
        let r = &p
            .stage_of(p.find(&format!("teacher-demo-{s}")).unwrap())
            .resources;
        assert_eq!(
            (r.gpus, r.cpus, r.mem_mb, r.time_s),
            (Some(1), Some(16), Some(64 * 1024), Some(6 * 3600)),
            "{s}"
        );
    }
    let r = &p.stage_of(p.find("teacher-demo-eval").unwrap()).resources;
    assert_eq!(
        (r.gpus, r.cpus, r.mem_mb, r.time_s),
        (Some(0), Some(8), Some(32 * 1024), Some(2 * 3600))
    );
}
