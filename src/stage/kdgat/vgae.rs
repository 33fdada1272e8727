//! `kdgat.vgae`: parse, load (`data`, the `teacher` VGAE when distilling), train, write.

use serde_json::Value;

use super::common::{
    check_inputs, check_teacher, check_teacher_vocab, copy_vocab, fail, load_splits, model_file,
    provenance,
};
use crate::derivation::{CodeIdentity, Derivation};
use crate::stage::{BuildContext, StageError, StageKind, code};
use crate::train::model::progress::Report;
use crate::train::model::train_vgae::{self, VgaeStageConfig};
use crate::train::model::vgae::load_vgae;

/// `kdgat.vgae`
pub struct VgaeStage;

impl StageKind for VgaeStage {
    fn name(&self) -> &'static str {
        "kdgat.vgae"
    }

    fn code_identity(&self) -> CodeIdentity {
        code::identity("kdgat.vgae")
    }

    fn check(&self, config: &Value, inputs: &[&str]) -> Result<(), String> {
        let c = VgaeStageConfig::from_json(config).map_err(|e| e.to_string())?;
        check_inputs(inputs, &["data"], &["teacher"])?;
        check_teacher(c.kd, inputs)
    }

    fn build(&self, ctx: &BuildContext) -> Result<(), StageError> {
        crate::train::model::tune_process();
        let cfg = VgaeStageConfig::from_json(ctx.config()).map_err(fail)?;
        let device = cfg.common.device.device().map_err(fail)?;
        let data = load_splits(ctx.input("data")?)?;
        let teacher = if cfg.kd {
            let path = model_file(ctx, "teacher")?;
            check_teacher_vocab(&path, &data)?;
            Some(load_vgae(&path, &device).map_err(fail)?)
        } else {
            None
        };
        let t = train_vgae::train_vgae(&cfg, &data, teacher.as_ref().map(|t| &t.1), Report::Auto)
            .map_err(fail)?;
        t.write(ctx.out, &data, provenance(ctx, &cfg.common))
            .map_err(fail)?;
        copy_vocab(ctx)
    }

    /// A distilled student refers to its teacher: its `config.json` names the teacher's store
    /// path (as Nix, which finds runtime references by the store paths an output mentions,
    /// would count it), so `why-depends` and `gc --runtime-only` see the distillation.
    fn references(&self, drv: &Derivation) -> Vec<String> {
        drv.inputs
            .keys()
            .filter(|k| *k == "teacher")
            .cloned()
            .collect()
    }
}
