//! `kdgat.eval`: evaluate a variant's three models on val and every test split; write
//! `metrics.json`, `metrics.csv`, `curves.json` and `config.json`.

use serde_json::{Value, json};

use super::common::{check_inputs, fail, load_splits, model_file, provenance};
use crate::derivation::{CodeIdentity, Derivation};
use crate::stage::{BuildContext, StageError, StageKind, code};
use crate::train::model::batch::Scoring;
use std::path::Path;

use crate::train::model::eval::{DataInfo, EvalStageConfig, RunLabels, evaluate};
use crate::train::model::fusion::load_fusion;
use crate::train::model::gat::load_gat;
use crate::train::model::vgae::load_vgae;

/// What `manifest.json` says about the data, for `metrics.json`'s `data` block. Read
/// tolerantly: top-level keys or a `graph`/`data` table; whatever is missing is null.
fn data_info(data: &Path) -> DataInfo {
    let mut info = DataInfo::default();
    let Ok(bytes) = std::fs::read(data.join("manifest.json")) else {
        return info;
    };
    let Ok(m) = serde_json::from_slice::<Value>(&bytes) else {
        return info;
    };
    let find = |k: &str| -> Option<Value> {
        [&m, &m["data"], &m["graph"], &m["config"]]
            .into_iter()
            .find_map(|t| t.get(k).filter(|v| !v.is_null()).cloned())
    };
    info.window = find("window").unwrap_or(Value::Null);
    info.stride = find("stride").unwrap_or(Value::Null);
    info.split = find("split").unwrap_or(Value::Null);
    if let Some(Value::Object(u)) = find("unk_row_rate") {
        info.unk_row_rate = u;
    }
    if let Some(v) = find("duplicates_dropped") {
        info.duplicates_dropped = v;
    }
    if let Some(v) = find("test_overlaps_dropped") {
        info.test_overlaps_dropped = v;
    }
    info
}

/// `kdgat.eval`
pub struct EvalStage;

/// `(variant, dataset)` from a target name `{variant}-{dataset}-{stage}`.
fn labels_from_name(name: &str) -> (String, String) {
    let parts: Vec<&str> = name.split('-').collect();
    match parts.as_slice() {
        [v, d @ .., _] if !d.is_empty() => (v.to_string(), d.join("-")),
        _ => (String::new(), name.to_string()),
    }
}

impl StageKind for EvalStage {
    fn name(&self) -> &'static str {
        "kdgat.eval"
    }

    fn code_identity(&self) -> CodeIdentity {
        code::identity("kdgat.eval")
    }

    fn check(&self, config: &Value, inputs: &[&str]) -> Result<(), String> {
        EvalStageConfig::from_json(config).map_err(|e| e.to_string())?;
        check_inputs(inputs, &["data", "vgae", "gat", "dqn"], &[])
    }

    fn build(&self, ctx: &BuildContext) -> Result<(), StageError> {
        crate::train::model::tune_process();
        let cfg = EvalStageConfig::from_json(ctx.config()).map_err(fail)?;
        let c = &cfg.common;
        let device = c.device.device().map_err(fail)?;
        let data_dir = ctx.input("data")?;
        let data = load_splits(data_dir)?;
        let (_, vgae) = load_vgae(&model_file(ctx, "vgae")?, &device).map_err(fail)?;
        let (_, gat) = load_gat(&model_file(ctx, "gat")?, &device).map_err(fail)?;
        let fusion = load_fusion(&model_file(ctx, "dqn")?, &device).map_err(fail)?;
        let (variant, dataset) = labels_from_name(&ctx.drv.name);
        let labels = RunLabels {
            dataset: c.dataset.clone().unwrap_or(dataset),
            variant: c.variant.clone().unwrap_or(variant),
            seed: c.seed,
            profile: c.profile.as_str().into(),
            config_sha256: ctx.drv_hash.to_string(),
        };
        let scoring = Scoring {
            device,
            num_ids: data.num_ids,
            batch_graphs: c.eval_batch_graphs,
        };
        let e = evaluate(
            &data,
            &vgae,
            &gat,
            &fusion,
            &scoring,
            &labels,
            &data_info(data_dir),
        )
        .map_err(fail)?;
        e.write(ctx.out).map_err(fail)?;
        crate::train::model::checkpoint::write_json(
            &ctx.out.join("config.json"),
            &json!({"stage": "kdgat.eval", "config": cfg, "provenance": provenance(ctx, c)}),
        )
        .map_err(fail)
    }

    fn references(&self, _drv: &Derivation) -> Vec<String> {
        vec!["data".into(), "vgae".into(), "gat".into(), "dqn".into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::kdgat::dqn::DqnStage;
    use crate::stage::kdgat::gat::GatStage;
    use crate::stage::kdgat::vgae::VgaeStage;

    #[test]
    fn labels_come_from_the_target_name() {
        assert_eq!(
            labels_from_name("student_nokd-hcrl_sa-eval"),
            ("student_nokd".into(), "hcrl_sa".into())
        );
    }

    #[test]
    fn checks_name_keys_and_inputs() {
        let e = GatStage
            .check(&json!({"size": "small", "kd": true}), &["data", "vgae"])
            .unwrap_err();
        assert!(e.contains("teacher"), "{e}");
        let e = DqnStage
            .check(
                &json!({"size": "small", "gama": 0.5}),
                &["data", "vgae", "gat"],
            )
            .unwrap_err();
        assert!(e.contains("`gama`") && e.contains("`gamma`"), "{e}");
        let e = EvalStage
            .check(&json!({}), &["data", "vgae", "gat", "fusion"])
            .unwrap_err();
        assert!(e.contains("`dqn`"), "{e}");
        VgaeStage
            .check(&json!({"size": "small", "kd": true}), &["data", "teacher"])
            .unwrap();
    }
}
