//! `kdgat.dqn` (every fusion method): parse, load (`data`, `vgae`, `gat`), train, write.

use serde_json::Value;

use super::common::{check_inputs, copy_vocab, fail, load_splits, model_file, provenance};
use crate::derivation::{CodeIdentity, Derivation};
use crate::stage::{BuildContext, StageError, StageKind, code};
use crate::train::model::gat::load_gat;
use crate::train::model::progress::Report;
use crate::train::model::train_fusion::{self, FusionStageConfig};
use crate::train::model::vgae::load_vgae;

/// `kdgat.dqn` (every fusion method).
pub struct DqnStage;

impl StageKind for DqnStage {
    fn name(&self) -> &'static str {
        "kdgat.dqn"
    }

    fn code_identity(&self) -> CodeIdentity {
        code::identity("kdgat.dqn")
    }

    fn check(&self, config: &Value, inputs: &[&str]) -> Result<(), String> {
        FusionStageConfig::from_json(config).map_err(|e| e.to_string())?;
        check_inputs(inputs, &["data", "vgae", "gat"], &[])
    }

    fn build(&self, ctx: &BuildContext) -> Result<(), StageError> {
        crate::train::model::tune_process();
        let cfg = FusionStageConfig::from_json(ctx.config()).map_err(fail)?;
        let device = cfg.common.device.device().map_err(fail)?;
        let data = load_splits(ctx.input("data")?)?;
        let (_, vgae) = load_vgae(&model_file(ctx, "vgae")?, &device).map_err(fail)?;
        let (_, gat) = load_gat(&model_file(ctx, "gat")?, &device).map_err(fail)?;
        let t = train_fusion::train_fusion(&cfg, &data, &vgae, &gat, Report::Auto).map_err(fail)?;
        t.write(ctx.out, &data, provenance(ctx, &cfg.common))
            .map_err(fail)?;
        copy_vocab(ctx)
    }

    fn references(&self, _drv: &Derivation) -> Vec<String> {
        vec!["vgae".into(), "gat".into()]
    }
}
