//! Stage 1: the VGAE (spec §5.2), trained on **normal** training windows only (pitfall 7),
//! optionally distilled from a large teacher (spec §5.5). The criterion is the mean `L_task`
//! on normal val windows in evaluation mode (lower is better; a distilled student is ranked by
//! its own `L_task`, so it stays comparable with `small_nokd`). The best epoch's parameters and
//! BatchNorm buffers are deep-copied and restored at the end (pitfall 9).

use std::path::Path;
use std::time::Instant;

use rand::seq::SliceRandom;
use serde_json::{Value, json};

use super::TrainError;
use super::batch::{Batch, BatchOptions, chunks};
use super::checkpoint::{self, ModelMeta, write_json, write_text};
use serde::Serialize;

use super::batch::{Scoring, Splits, all};
use super::config::{Common, Keys, Optimisation, Profile, QUICK_EPOCHS, Size, common, size};
use super::init::{BestEpoch, ParamStore, rng, sub_seed};
use super::kd::{KdProjection, VgaeKdWeights, vgae_kd_loss};
use super::layers::Mode;
use super::metrics::{Metrics, score_f64, vgae_threshold};
use super::progress::{LogRow, Progress, Report, TrainLog, fmt_opt};
use super::vgae::{Vgae, VgaeConfig, task_loss};
use crate::train::data::graphs::GraphSet;

/// The `kdgat.vgae` stage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VgaeStageConfig {
    #[serde(flatten)]
    pub common: Common,
    pub size: Size,
    /// Distil from the `teacher` input (spec §5.5).
    pub kd: bool,
    #[serde(flatten)]
    pub opt: Optimisation,
    pub kd_alpha: f64,
    pub kd_latent_weight: f64,
    pub kd_recon_weight: f64,
}

impl VgaeStageConfig {
    pub fn from_json(v: &Value) -> Result<Self, TrainError> {
        let mut k = Keys::new(v, "kdgat.vgae")?;
        let common = common(&mut k)?;
        let size = size(&mut k)?;
        let quick = common.profile == Profile::Quick;
        let opt = Optimisation {
            epochs: k.usize("epochs", if quick { QUICK_EPOCHS } else { 300 })?,
            patience: k.usize("patience", if quick { 3 } else { 100 })?,
            batch_graphs: k
                .usize("batch_graphs", if quick { 64 } else { 2048 })?
                .max(1),
            lr: k.f64("lr", 2e-3)?,
            weight_decay: k.f64("weight_decay", 1e-4)?,
            grad_clip: k.f64("grad_clip", 1.0)?,
            unk_dropout: k.f64("unk_dropout", 0.02)?,
        };
        let cfg = VgaeStageConfig {
            kd: k.bool("kd", false)?,
            kd_alpha: k.f64("kd_alpha", 0.7)?,
            kd_latent_weight: k.f64("kd_latent_weight", 0.5)?,
            kd_recon_weight: k.f64("kd_recon_weight", 0.5)?,
            common,
            size,
            opt,
        };
        k.finish("kdgat.vgae")?;
        Ok(cfg)
    }
}

/// A trained VGAE and what its stage writes.
pub struct TrainedVgae {
    pub config: VgaeStageConfig,
    pub arch: VgaeConfig,
    pub store: ParamStore,
    pub model: Vgae,
    pub log: TrainLog,
    pub best_epoch: usize,
    pub best_criterion: f64,
    /// Metrics of `vgae_score` on all val windows at the Youden threshold.
    pub val: Metrics,
}

/// Mean `L_task` over graphs `idx` in evaluation mode, weighted by nodes (so it equals the loss
/// of one batch holding them all). `None` if `idx` is empty.
pub fn eval_task_loss(
    model: &Vgae,
    set: &GraphSet,
    idx: &[usize],
    scoring: &Scoring,
) -> Result<Option<f64>, TrainError> {
    let (mut sum, mut nodes) = (0f64, 0usize);
    for c in chunks(idx, scoring.batch_graphs) {
        let b = Batch::new(
            set,
            c,
            &scoring.device,
            BatchOptions {
                nbr_target: true,
                ..BatchOptions::eval(scoring.num_ids)
            },
        )?;
        let out = model.forward(&b, &mut Mode::Eval)?;
        sum += task_loss(&out, &b)?.to_scalar::<f32>()? as f64 * b.num_nodes as f64;
        nodes += b.num_nodes;
    }
    Ok((nodes > 0).then(|| sum / nodes as f64))
}

/// Trains the VGAE of `cfg` on `data`; `teacher` is required when `cfg.kd`.
pub fn train_vgae(
    cfg: &VgaeStageConfig,
    data: &Splits,
    teacher: Option<&Vgae>,
    report: Report,
) -> Result<TrainedVgae, TrainError> {
    super::tune_process();
    let device = cfg.common.device.device()?;
    let seed = cfg.common.seed;
    let arch = VgaeConfig::for_size(cfg.size, data.num_ids);
    let store = ParamStore::new(sub_seed(seed, "init:vgae"), &device);
    let model = Vgae::new(&arch, store.var_builder())?;
    let kd_store = ParamStore::new(sub_seed(seed, "init:vgae-kd"), &device);
    let (teacher, projection) = match (cfg.kd, teacher) {
        (false, _) => (None, None),
        (true, None) => {
            return Err(TrainError::Config(
                "`kd = true` needs the teacher's VGAE (input `teacher`)".into(),
            ));
        }
        (true, Some(t)) => {
            if t.cfg.num_ids != data.num_ids {
                return Err(TrainError::Data(format!(
                    "the teacher VGAE has {} ids, the data {}: they must share one vocabulary",
                    t.cfg.num_ids, data.num_ids
                )));
            }
            let p = KdProjection::new(arch.latent_dim, t.cfg.latent_dim, kd_store.var_builder())?;
            (Some(t), Some(p))
        }
    };
    let mut vars = store.trainable();
    vars.extend(kd_store.trainable());
    let o = &cfg.opt;
    let mut opt = super::optim::Optim::new(vars, o.lr, o.weight_decay, o.grad_clip)?;
    let weights = VgaeKdWeights {
        alpha: cfg.kd_alpha,
        latent: cfg.kd_latent_weight,
        recon: cfg.kd_recon_weight,
    };
    let normals: Vec<usize> = (0..data.train.len())
        .filter(|&g| data.train.y[g] == 0)
        .collect();
    if normals.is_empty() {
        return Err(TrainError::Data(
            "the VGAE trains on normal windows, and the training split has none".into(),
        ));
    }
    let val_normals: Vec<usize> = (0..data.val.len())
        .filter(|&g| data.val.y[g] == 0)
        .collect();
    let scoring = Scoring {
        device: device.clone(),
        num_ids: data.num_ids,
        batch_graphs: cfg.common.eval_batch_graphs,
    };
    let mut rng_shuffle = rng(seed, "shuffle:vgae");
    let mut rng_drop = rng(seed, "dropout:vgae");
    let mut rng_unk = rng(seed, "unk:vgae");
    let progress = Progress::new(report, "vgae", o.epochs);
    progress.note(&format!(
        "{} {}: {} normal training windows, {} normal val windows, {} parameters",
        arch_name(cfg),
        if cfg.kd { "(distilled)" } else { "" },
        normals.len(),
        val_normals.len(),
        store.num_params()
    ));
    let mut log = TrainLog::default();
    let mut best = BestEpoch::new();
    let mut order = normals.clone();
    for epoch in 0..o.epochs {
        let t0 = Instant::now();
        order.shuffle(&mut rng_shuffle);
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        for c in chunks(&order, o.batch_graphs) {
            let b = Batch::new(
                &data.train,
                c,
                &device,
                BatchOptions {
                    num_ids: data.num_ids,
                    unk_dropout: Some((o.unk_dropout as f32, &mut rng_unk)),
                    nbr_target: true,
                    edge_attr: false,
                },
            )?;
            let out = model.forward(&b, &mut Mode::Train(&mut rng_drop))?;
            let task = task_loss(&out, &b)?;
            let loss = match (teacher, &projection) {
                (Some(t), Some(p)) => {
                    let to = t.forward(&b, &mut Mode::Eval)?;
                    vgae_kd_loss(
                        &p.forward(&out.mu)?,
                        &to.mu,
                        &out.cont,
                        &to.cont,
                        &task,
                        weights,
                    )?
                }
                _ => task,
            };
            opt.step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * c.len() as f64;
            seen += c.len();
        }
        let train_loss = loss_sum / seen.max(1) as f64;
        let val_loss = eval_task_loss(&model, &data.val, &val_normals, &scoring)?;
        let criterion = val_loss.unwrap_or(train_loss);
        let improved = best.record(criterion, epoch, |a, b| a < b, true, &store)?;
        let seconds = t0.elapsed().as_secs_f64();
        log.push(LogRow {
            stage: "vgae",
            step: epoch,
            train_loss: Some(train_loss),
            val_loss,
            criterion: Some(criterion),
            best: improved,
            lr: opt.lr(),
            seconds,
            ..Default::default()
        });
        progress.step(
            epoch,
            &format!(
                "train_loss {train_loss:.4} val_loss {}{} ({seconds:.1} s)",
                fmt_opt(val_loss),
                if improved { " best" } else { "" }
            ),
        );
        if best.stop(o.patience, epoch, o.epochs) {
            progress.note(&format!("early stop after epoch {}", epoch + 1));
            break;
        }
    }
    progress.finish();
    let (best_criterion, best_epoch) = best.restore(&store)?.ok_or_else(|| {
        TrainError::Config("`epochs` is 0: the VGAE needs at least one epoch".into())
    })?;
    let scores: Vec<f64> = scoring
        .vgae_scores(&model, &data.val, &all(&data.val))?
        .iter()
        .map(|s| score_f64(s.score()))
        .collect();
    let (thr, method) = vgae_threshold(&data.val.y, &scores);
    let val = Metrics::compute(&data.val.y, &scores, thr, method);
    progress.note(&format!(
        "best epoch {} (val_loss {best_criterion:.4}); val roc_auc {}",
        best_epoch + 1,
        fmt_opt(val.roc_auc)
    ));
    Ok(TrainedVgae {
        config: cfg.clone(),
        arch,
        store,
        model,
        log,
        best_epoch,
        best_criterion,
        val,
    })
}

fn arch_name(cfg: &VgaeStageConfig) -> String {
    format!("{} VGAE", cfg.size.as_str())
}

impl TrainedVgae {
    /// Writes `model.safetensors`, `config.json`, `train_log.csv` and `metrics.json` into `out`.
    /// `provenance` (device, threads, versions, inputs) goes into `config.json` unhashed.
    pub fn write(&self, out: &Path, data: &Splits, provenance: Value) -> Result<(), TrainError> {
        let meta = ModelMeta {
            kind: "vgae",
            size: self.config.size.as_str(),
            architecture: serde_json::to_value(&self.arch).expect("config serialises"),
            num_ids: data.num_ids,
            vocab_sha256: &data.vocab_sha256,
            best_epoch: Some(self.best_epoch),
            criterion_name: "val_task_loss",
            criterion: Some(self.best_criterion),
        };
        checkpoint::save(
            &out.join("model.safetensors"),
            &self.store,
            |_| true,
            &meta.to_map(),
        )?;
        write_json(
            &out.join("config.json"),
            &json!({
                "stage": "kdgat.vgae",
                "config": self.config,
                "architecture": self.arch,
                "num_params": self.store.num_params(),
                "provenance": provenance,
            }),
        )?;
        write_text(&out.join("train_log.csv"), &self.log.to_csv())?;
        write_json(
            &out.join("metrics.json"),
            &json!({
                "schema": "kdgat.stage_metrics.v1",
                "stage": "vgae",
                "best_epoch": self.best_epoch,
                "criterion_name": "val_task_loss",
                "criterion": self.best_criterion,
                "val": self.val.to_json(),
            }),
        )
    }
}
