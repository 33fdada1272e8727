//! Stage 2: the GAT classifier (spec §5.4) with its per-epoch curriculum scored by the frozen
//! VGAE of the same variant, class-weighted cross entropy, and for the distilled student the KD
//! loss of spec §5.5 against the teacher's logits on the same batch (same UNK-replaced ids).
//!
//! Criterion: val attack-class F1 at `p1 > 0.5`, ties broken by lower unweighted val CE (val CE
//! alone when val has no attacks). Patience counts only once the ramp has ended.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use rand::seq::SliceRandom;
use serde_json::{Value, json};

use super::TrainError;
use super::batch::{Batch, BatchOptions, chunks};
use super::checkpoint::{self, ModelMeta, write_json, write_text};
use serde::Serialize;

use super::batch::{Scoring, Splits, all};
use super::config::{
    Common, Keys, Optimisation, Profile, QUICK_EPOCHS, QUICK_RAMP, Size, common, size,
};
use super::curriculum::CurriculumConfig;
use super::gat::{Gat, GatConfig};
use super::init::{BestEpoch, ParamStore, rng, sub_seed};
use super::kd::{class_weights, gat_kd_loss, weighted_ce};
use super::layers::Mode;
use super::metrics::{Metrics, ThresholdMethod, f1, score_f64};
use super::progress::{LogRow, Progress, Report, TrainLog, fmt_opt};
use super::vgae::Vgae;

/// How the GAT's epochs are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    Curriculum,
    None,
}

/// The `kdgat.gat` stage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatStageConfig {
    #[serde(flatten)]
    pub common: Common,
    pub size: Size,
    pub kd: bool,
    #[serde(flatten)]
    pub opt: Optimisation,
    pub sampling: Sampling,
    pub edge_dim: usize,
    #[serde(flatten)]
    pub curriculum: CurriculumConfig,
    pub kd_temperature: f64,
    pub kd_alpha: f64,
}

impl GatStageConfig {
    pub fn from_json(v: &Value) -> Result<Self, TrainError> {
        let mut k = Keys::new(v, "kdgat.gat")?;
        let common = common(&mut k)?;
        let size = size(&mut k)?;
        let quick = common.profile == Profile::Quick;
        let large = size == Size::Large;
        let opt = Optimisation {
            epochs: k.usize("epochs", if quick { QUICK_EPOCHS } else { 300 })?,
            patience: k.usize(
                "patience",
                match (quick, large) {
                    (true, _) => 3,
                    (false, true) => 100,
                    (false, false) => 50,
                },
            )?,
            batch_graphs: k
                .usize("batch_graphs", if quick { 64 } else { 2048 })?
                .max(1),
            lr: k.f64("lr", if large { 3e-3 } else { 1e-3 })?,
            weight_decay: k.f64("weight_decay", 1e-4)?,
            grad_clip: k.f64("grad_clip", 1.0)?,
            unk_dropout: k.f64("unk_dropout", 0.02)?,
        };
        let sampling = match k.choice("sampling", &["curriculum", "none"], Some("curriculum"))? {
            "none" => Sampling::None,
            _ => Sampling::Curriculum,
        };
        let edge_dim = k.usize("edge_dim", 0)?;
        if edge_dim != 0 && edge_dim != crate::train::data::graphs::EDGE_FEATURES {
            return Err(TrainError::Config(format!(
                "key `edge_dim` is {edge_dim}, expected 0 or {}",
                crate::train::data::graphs::EDGE_FEATURES
            )));
        }
        let curriculum = CurriculumConfig {
            ratio_start: k.f64("ratio_start", 1.0)?,
            ratio_end: k.f64("ratio_end", 10.0)?,
            pct_start: k.f64("pct_start", 75.0)?,
            pct_end: k.f64("pct_end", 95.0)?,
            ramp_epochs: k.usize("ramp_epochs", if quick { QUICK_RAMP } else { 100 })?,
        };
        let cfg = GatStageConfig {
            kd: k.bool("kd", false)?,
            kd_temperature: k.f64("kd_temperature", 4.0)?,
            kd_alpha: k.f64("kd_alpha", 0.7)?,
            common,
            size,
            opt,
            sampling,
            edge_dim,
            curriculum,
        };
        k.finish("kdgat.gat")?;
        Ok(cfg)
    }
}

/// One epoch's curriculum facts (`curriculum.csv`): `n` is the number of normals drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct CurriculumRow {
    pub epoch: usize,
    pub ratio: f64,
    pub percentile: f64,
    pub n: usize,
    pub attacks: usize,
    pub hard_pool: usize,
    pub hard: usize,
}

/// A trained GAT and what its stage writes.
pub struct TrainedGat {
    pub config: GatStageConfig,
    pub arch: GatConfig,
    pub store: ParamStore,
    pub model: Gat,
    pub log: TrainLog,
    pub curriculum: Vec<CurriculumRow>,
    pub best_epoch: usize,
    /// `(val F1, val CE)` of the best epoch.
    pub best: (Option<f64>, f64),
    pub val: Metrics,
}

/// Val F1 at `p1 > 0.5` and mean unweighted CE.
fn validate(
    model: &Gat,
    data: &Splits,
    scoring: &Scoring,
) -> Result<(Option<f64>, f64, Vec<f32>), TrainError> {
    let logits = scoring.gat_logits(model, &data.val, &all(&data.val))?;
    let mut ce = 0f64;
    let mut p1 = Vec::with_capacity(logits.len());
    for (l, &y) in logits.iter().zip(&data.val.y) {
        let m = l[0].max(l[1]) as f64;
        let lse = m + ((l[0] as f64 - m).exp() + (l[1] as f64 - m).exp()).ln();
        ce += lse - l[(y != 0) as usize] as f64;
        let e1 = ((l[1] - l[0]) as f64).exp();
        p1.push((e1 / (1.0 + e1)) as f32);
    }
    let n = logits.len().max(1) as f64;
    let pred: Vec<bool> = p1.iter().map(|&p| p > 0.5).collect();
    let has_attacks = data.val.y.contains(&1);
    Ok((
        if has_attacks {
            f1(&data.val.y, &pred)
        } else {
            None
        },
        ce / n,
        p1,
    ))
}

/// Whether `(f1, ce)` beats `best`: higher F1, or equal F1 and lower CE.
fn better(cur: (Option<f64>, f64), best: (Option<f64>, f64)) -> bool {
    match (cur.0, best.0) {
        (Some(a), Some(b)) if a != b => a > b,
        _ => cur.1 < best.1,
    }
}

/// Trains the GAT of `cfg`; `vgae` scores the curriculum, `teacher` is required when `cfg.kd`.
pub fn train_gat(
    cfg: &GatStageConfig,
    data: &Splits,
    vgae: &Vgae,
    teacher: Option<&Gat>,
    report: Report,
) -> Result<TrainedGat, TrainError> {
    super::tune_process();
    let device = cfg.common.device.device()?;
    let seed = cfg.common.seed;
    let arch = GatConfig {
        edge_dim: cfg.edge_dim,
        ..GatConfig::for_size(cfg.size, data.num_ids)
    };
    let store = ParamStore::new(sub_seed(seed, "init:gat"), &device);
    let model = Gat::new(&arch, store.var_builder())?;
    let teacher = match (cfg.kd, teacher) {
        (false, _) => None,
        (true, None) => {
            return Err(TrainError::Config(
                "`kd = true` needs the teacher's GAT (input `teacher`)".into(),
            ));
        }
        (true, Some(t)) if t.cfg.num_ids != data.num_ids => {
            return Err(TrainError::Data(format!(
                "the teacher GAT has {} ids, the data {}: they must share one vocabulary",
                t.cfg.num_ids, data.num_ids
            )));
        }
        (true, Some(t)) => Some(t),
    };
    let o = &cfg.opt;
    let mut opt = super::optim::Optim::new(store.trainable(), o.lr, o.weight_decay, o.grad_clip)?;
    let train = &data.train;
    let attacks: Vec<usize> = (0..train.len()).filter(|&g| train.y[g] != 0).collect();
    let normals: Vec<usize> = (0..train.len()).filter(|&g| train.y[g] == 0).collect();
    let scoring = Scoring {
        device: device.clone(),
        num_ids: data.num_ids,
        batch_graphs: cfg.common.eval_batch_graphs,
    };
    let progress = Progress::new(report, "gat", o.epochs);
    let difficulty: Vec<f32> = match cfg.sampling {
        Sampling::Curriculum => {
            if attacks.is_empty() {
                return Err(TrainError::Data(
                    "the curriculum needs attack windows, and the training split has none \
                     (set `sampling = \"none\"` to train without it)"
                        .into(),
                ));
            }
            scoring
                .vgae_scores(vgae, train, &normals)?
                .iter()
                .map(|s| s.score())
                .collect()
        }
        Sampling::None => Vec::new(),
    };
    progress.note(&format!(
        "{} GAT{}: {} attack and {} normal training windows, {} val windows, {} parameters",
        cfg.size.as_str(),
        if cfg.kd { " (distilled)" } else { "" },
        attacks.len(),
        normals.len(),
        data.val.len(),
        store.num_params()
    ));
    let mut rng_sample = rng(seed, "curriculum");
    let mut rng_drop = rng(seed, "dropout:gat");
    let mut rng_unk = rng(seed, "unk:gat");
    let mut log = TrainLog::default();
    let mut curriculum = Vec::new();
    let mut best = BestEpoch::new();
    let ramp = match cfg.sampling {
        Sampling::Curriculum => cfg.curriculum.ramp_epochs,
        Sampling::None => 0,
    };
    for epoch in 0..o.epochs {
        let t0 = Instant::now();
        let (order, ratio, percentile) = match cfg.sampling {
            Sampling::Curriculum => {
                let s =
                    cfg.curriculum
                        .sample(epoch, &attacks, &normals, &difficulty, &mut rng_sample);
                curriculum.push(CurriculumRow {
                    epoch,
                    ratio: s.ratio,
                    percentile: s.percentile,
                    n: s.n,
                    attacks: s.attacks,
                    hard_pool: s.hard_pool,
                    hard: s.hard,
                });
                (s.indices, Some(s.ratio), Some(s.percentile))
            }
            Sampling::None => {
                let mut v = all(train);
                v.shuffle(&mut rng_sample);
                (v, None, None)
            }
        };
        let ys: Vec<u8> = order.iter().map(|&g| train.y[g]).collect();
        let w = class_weights(&ys);
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        for c in chunks(&order, o.batch_graphs) {
            let b = Batch::new(
                train,
                c,
                &device,
                BatchOptions {
                    num_ids: data.num_ids,
                    unk_dropout: Some((o.unk_dropout as f32, &mut rng_unk)),
                    nbr_target: false,
                    edge_attr: cfg.edge_dim > 0,
                },
            )?;
            let logits = model.forward(&b, &mut Mode::Train(&mut rng_drop))?.logits;
            let ce = weighted_ce(&logits, &b.y_t, &b.y, w)?;
            let loss = match teacher {
                Some(t) => {
                    let tl = t.forward(&b, &mut Mode::Eval)?.logits;
                    gat_kd_loss(&logits, &tl, &ce, cfg.kd_temperature, cfg.kd_alpha)?
                }
                None => ce,
            };
            opt.step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * c.len() as f64;
            seen += c.len();
        }
        let train_loss = loss_sum / seen.max(1) as f64;
        let (vf1, vce, _) = validate(&model, data, &scoring)?;
        // Epochs of the curriculum ramp do not count against the patience.
        let improved = best.record((vf1, vce), epoch, better, epoch >= ramp, &store)?;
        let seconds = t0.elapsed().as_secs_f64();
        log.push(LogRow {
            stage: "gat",
            step: epoch,
            train_loss: Some(train_loss),
            val_loss: Some(vce),
            criterion: Some(vf1.unwrap_or(vce)),
            best: improved,
            ratio,
            percentile,
            lr: opt.lr(),
            seconds,
            ..Default::default()
        });
        progress.step(
            epoch,
            &format!(
                "train_loss {train_loss:.4} val_f1 {} val_ce {vce:.4}{}{} ({seconds:.1} s)",
                fmt_opt(vf1),
                curriculum
                    .last()
                    .filter(|_| cfg.sampling == Sampling::Curriculum)
                    .map(|r| format!(" n {} r {:.2} q {:.1}", r.n, r.ratio, r.percentile))
                    .unwrap_or_default(),
                if improved { " best" } else { "" }
            ),
        );
        if best.stop(o.patience, epoch, o.epochs) {
            progress.note(&format!("early stop after epoch {}", epoch + 1));
            break;
        }
    }
    progress.finish();
    let (best_key, best_epoch) = best.restore(&store)?.ok_or_else(|| {
        TrainError::Config("`epochs` is 0: the GAT needs at least one epoch".into())
    })?;
    let (_, _, p1) = validate(&model, data, &scoring)?;
    let scores: Vec<f64> = p1.iter().map(|&p| score_f64(p)).collect();
    let val = Metrics::compute(&data.val.y, &scores, 0.5, ThresholdMethod::Argmax);
    progress.note(&format!(
        "best epoch {} (val_f1 {}, val_ce {:.4})",
        best_epoch + 1,
        fmt_opt(best_key.0),
        best_key.1
    ));
    Ok(TrainedGat {
        config: cfg.clone(),
        arch,
        store,
        model,
        log,
        curriculum,
        best_epoch,
        best: best_key,
        val,
    })
}

impl TrainedGat {
    /// `curriculum.csv`: `epoch,ratio,percentile,n,attacks,hard_pool,hard`.
    pub fn curriculum_csv(&self) -> String {
        let mut s = String::from("epoch,ratio,percentile,n,attacks,hard_pool,hard\n");
        for r in &self.curriculum {
            let _ = writeln!(
                s,
                "{},{:?},{:?},{},{},{},{}",
                r.epoch, r.ratio, r.percentile, r.n, r.attacks, r.hard_pool, r.hard
            );
        }
        s
    }

    /// Writes `model.safetensors`, `config.json`, `train_log.csv`, `curriculum.csv` and
    /// `metrics.json` into `out`.
    pub fn write(&self, out: &Path, data: &Splits, provenance: Value) -> Result<(), TrainError> {
        let criterion_name = if self.best.0.is_some() {
            "val_f1"
        } else {
            "val_ce"
        };
        let meta = ModelMeta {
            kind: "gat",
            size: self.config.size.as_str(),
            architecture: serde_json::to_value(&self.arch).expect("config serialises"),
            num_ids: data.num_ids,
            vocab_sha256: &data.vocab_sha256,
            best_epoch: Some(self.best_epoch),
            criterion_name,
            criterion: Some(self.best.0.unwrap_or(self.best.1)),
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
                "stage": "kdgat.gat",
                "config": self.config,
                "architecture": self.arch,
                "num_params": self.store.num_params(),
                "provenance": provenance,
            }),
        )?;
        write_text(&out.join("train_log.csv"), &self.log.to_csv())?;
        write_text(&out.join("curriculum.csv"), &self.curriculum_csv())?;
        write_json(
            &out.join("metrics.json"),
            &json!({
                "schema": "kdgat.stage_metrics.v1",
                "stage": "gat",
                "best_epoch": self.best_epoch,
                "criterion_name": criterion_name,
                "criterion": self.best.0.unwrap_or(self.best.1),
                "val_ce": self.best.1,
                "val": self.val.to_json(),
            }),
        )
    }
}
