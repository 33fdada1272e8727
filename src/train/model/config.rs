//! Stage configurations, their profiles and key validation (spec §5.7, §7).
//!
//! A stage's configuration is a flat JSON object (the pipeline's `config` table with its
//! `config_by` choices merged in). `profile` picks the defaults — `quick` (the default, a CPU
//! budget) or `paper` ([O1]'s budgets) — and every explicit key overrides its profile value.
//! Unknown keys are refused with the nearest known key, so a typo never trains with a default.
//!
//! Every key is hashed into the derivation (spec §0), `device` included: `cpu` and `cuda`
//! results differ in the last bits, so they are different derivations. The GPU model and the
//! thread count are provenance only, recorded in each output's `config.json`.

use serde::Serialize;
use serde_json::{Map, Value};

use super::TrainError;
use super::curriculum::CurriculumConfig;
use super::gat::Size;

/// Budget profile (spec §5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Quick,
    Paper,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Paper => "paper",
        }
    }
}

/// Device class: hashed (results depend on it); the GPU model is provenance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    Cpu,
    Cuda,
}

impl DeviceClass {
    /// The candle device; `cuda` needs kdbuild built with the `cuda` feature and a GPU.
    pub fn device(self) -> Result<candle_core::Device, TrainError> {
        match self {
            DeviceClass::Cpu => Ok(candle_core::Device::Cpu),
            DeviceClass::Cuda => candle_core::Device::new_cuda(0).map_err(|e| {
                TrainError::Config(format!(
                    "`device = \"cuda\"` needs kdbuild built with `--features cuda` and a GPU: {e}"
                ))
            }),
        }
    }
}

/// Keys every kdgat training and evaluation stage accepts.
const COMMON: &[&str] = &[
    "seed",
    "profile",
    "device",
    "dataset",
    "variant",
    "eval_batch_graphs",
];

/// Reads typed keys from a config object, remembering which are known.
struct Keys<'a> {
    obj: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    fn new(v: &'a Value, stage: &str) -> Result<Keys<'a>, TrainError> {
        let obj = v.as_object().ok_or_else(|| {
            TrainError::Config(format!("the `{stage}` stage config must be a table"))
        })?;
        Ok(Keys {
            obj,
            known: COMMON.to_vec(),
        })
    }

    fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.obj.get(key)
    }

    fn f64(&mut self, key: &'static str, default: f64) -> Result<f64, TrainError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(key, v, "a number")),
        }
    }

    fn usize(&mut self, key: &'static str, default: usize) -> Result<usize, TrainError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad(key, v, "a non-negative integer")),
        }
    }

    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool, TrainError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| bad(key, v, "true or false")),
        }
    }

    fn choice(
        &mut self,
        key: &'static str,
        options: &[&'static str],
        default: Option<&'static str>,
    ) -> Result<&'static str, TrainError> {
        match self.raw(key) {
            None => default.ok_or_else(|| {
                TrainError::Config(format!(
                    "key `{key}` is required (one of {})",
                    quoted(options)
                ))
            }),
            Some(v) => {
                let s = v.as_str().unwrap_or("");
                options
                    .iter()
                    .find(|o| **o == s)
                    .copied()
                    .ok_or_else(|| bad(key, v, &format!("one of {}", quoted(options))))
            }
        }
    }

    fn string(&mut self, key: &'static str) -> Result<Option<String>, TrainError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(bad(key, v, "a string")),
        }
    }

    /// Refuses any key that no getter asked for, naming the nearest known key.
    fn finish(mut self, stage: &str) -> Result<(), TrainError> {
        self.known.sort();
        self.known.dedup();
        for k in self.obj.keys() {
            if !self.known.contains(&k.as_str()) {
                let near = nearest(k, &self.known);
                return Err(TrainError::Config(format!(
                    "unknown key `{k}` in the `{stage}` stage config; the nearest known key is `{near}`"
                )));
            }
        }
        Ok(())
    }
}

fn quoted(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bad(key: &str, v: &Value, want: &str) -> TrainError {
    TrainError::Config(format!("key `{key}` is {v}, expected {want}"))
}

/// The known key closest to `k` (Levenshtein, ties to the first in order).
pub fn nearest<'k>(k: &str, known: &[&'k str]) -> &'k str {
    known
        .iter()
        .min_by_key(|c| strsim::levenshtein(k, c))
        .copied()
        .unwrap_or("")
}

/// Settings every stage shares.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Common {
    pub seed: u64,
    pub profile: Profile,
    pub device: DeviceClass,
    /// Labels for reports; the engine adapter fills them from the target name when absent.
    pub dataset: Option<String>,
    pub variant: Option<String>,
    /// Graphs per batch for evaluation-mode passes (scores, states, metrics).
    pub eval_batch_graphs: usize,
}

fn common(k: &mut Keys) -> Result<Common, TrainError> {
    let seed = match k.raw("seed") {
        None => 42,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("seed", v, "a non-negative integer"))?,
    };
    let profile = match k.choice("profile", &["quick", "paper"], Some("quick"))? {
        "paper" => Profile::Paper,
        _ => Profile::Quick,
    };
    let device = match k.choice("device", &["cpu", "cuda"], Some("cpu"))? {
        "cuda" => DeviceClass::Cuda,
        _ => DeviceClass::Cpu,
    };
    Ok(Common {
        seed,
        profile,
        device,
        dataset: k.string("dataset")?,
        variant: k.string("variant")?,
        eval_batch_graphs: k.usize("eval_batch_graphs", 256)?.max(1),
    })
}

fn size(k: &mut Keys) -> Result<Size, TrainError> {
    Ok(match k.choice("size", &["large", "small"], None)? {
        "large" => Size::Large,
        _ => Size::Small,
    })
}

/// Optimisation settings shared by the VGAE and GAT stages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Optimisation {
    pub epochs: usize,
    pub patience: usize,
    pub batch_graphs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub unk_dropout: f64,
}

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
            epochs: k.usize("epochs", if quick { 3 } else { 300 })?,
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
            epochs: k.usize("epochs", if quick { 3 } else { 300 })?,
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
            ramp_epochs: k.usize("ramp_epochs", if quick { 3 } else { 100 })?,
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

/// The fusion method (spec §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMethod {
    Dqn,
    Mlp,
    Fixed,
}

impl FusionMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            FusionMethod::Dqn => "dqn",
            FusionMethod::Mlp => "mlp",
            FusionMethod::Fixed => "fixed",
        }
    }

    pub fn parse(s: &str) -> Option<FusionMethod> {
        match s {
            "dqn" => Some(FusionMethod::Dqn),
            "mlp" => Some(FusionMethod::Mlp),
            "fixed" => Some(FusionMethod::Fixed),
            _ => None,
        }
    }
}

/// The `kdgat.dqn` stage (whatever `method`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FusionStageConfig {
    #[serde(flatten)]
    pub common: Common,
    pub size: Size,
    pub method: FusionMethod,
    pub fixed_alpha: f64,
    pub gamma: f64,
    pub eps_start: f64,
    pub eps_end: f64,
    pub eps_decay_frac: f64,
    pub fn_cost: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub episodes: usize,
    pub episode_size: usize,
    pub steps_per_episode: usize,
    pub batch: usize,
    pub buffer: usize,
    pub target_update: usize,
    pub val_every: usize,
    pub max_train_states: usize,
    pub mlp_epochs: usize,
    pub mlp_batch: usize,
    pub mlp_lr: f64,
}

impl FusionStageConfig {
    pub fn from_json(v: &Value) -> Result<Self, TrainError> {
        let mut k = Keys::new(v, "kdgat.dqn")?;
        let common = common(&mut k)?;
        let size = size(&mut k)?;
        let quick = common.profile == Profile::Quick;
        let large = size == Size::Large;
        let pick = |q: usize, l: usize, s: usize| {
            if quick {
                q
            } else if large {
                l
            } else {
                s
            }
        };
        let method =
            FusionMethod::parse(k.choice("method", &["dqn", "mlp", "fixed"], Some("dqn"))?)
                .expect("choice validated");
        let cfg = FusionStageConfig {
            method,
            fixed_alpha: k.f64("fixed_alpha", 0.85)?,
            gamma: k.f64("gamma", 0.0)?,
            eps_start: k.f64("eps_start", 1.0)?,
            eps_end: k.f64("eps_end", 0.05)?,
            eps_decay_frac: k.f64("eps_decay_frac", 0.8)?,
            fn_cost: k.f64("fn_cost", 1.0)?,
            lr: k.f64("lr", 1e-3)?,
            weight_decay: k.f64("weight_decay", 1e-5)?,
            grad_clip: k.f64("grad_clip", 1.0)?,
            episodes: k.usize("episodes", pick(5, 500, 500))?,
            episode_size: k.usize("episode_size", pick(256, 20_000, 20_000))?.max(1),
            steps_per_episode: k.usize("steps_per_episode", pick(4, 16, 16))?,
            batch: k.usize("batch", pick(32, 128, 64))?.max(1),
            buffer: k.usize("buffer", pick(2048, 100_000, 50_000))?.max(1),
            target_update: k.usize("target_update", pick(10, 100, 50))?.max(1),
            val_every: k.usize("val_every", pick(1, 50, 50))?.max(1),
            max_train_states: k
                .usize("max_train_states", pick(2000, 150_000, 150_000))?
                .max(1),
            mlp_epochs: k.usize("mlp_epochs", pick(3, 100, 100))?,
            mlp_batch: k.usize("mlp_batch", 128)?.max(1),
            mlp_lr: k.f64("mlp_lr", 1e-3)?,
            common,
            size,
        };
        if !(0.0..=1.0).contains(&cfg.fixed_alpha) {
            return Err(TrainError::Config(format!(
                "key `fixed_alpha` is {}, expected a value in [0, 1]",
                cfg.fixed_alpha
            )));
        }
        k.finish("kdgat.dqn")?;
        Ok(cfg)
    }
}

/// The `kdgat.eval` stage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalStageConfig {
    #[serde(flatten)]
    pub common: Common,
}

impl EvalStageConfig {
    pub fn from_json(v: &Value) -> Result<Self, TrainError> {
        let mut k = Keys::new(v, "kdgat.eval")?;
        let common = common(&mut k)?;
        k.finish("kdgat.eval")?;
        Ok(EvalStageConfig { common })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn profiles_and_overrides() {
        let q = GatStageConfig::from_json(&json!({"size": "large"})).unwrap();
        assert_eq!((q.opt.epochs, q.opt.batch_graphs, q.opt.lr), (3, 64, 3e-3));
        assert_eq!(q.curriculum.ramp_epochs, 3);
        let p =
            GatStageConfig::from_json(&json!({"size": "small", "profile": "paper", "epochs": 7}))
                .unwrap();
        assert_eq!((p.opt.epochs, p.opt.patience, p.opt.lr), (7, 50, 1e-3));
        let f =
            FusionStageConfig::from_json(&json!({"size": "small", "profile": "paper"})).unwrap();
        assert_eq!((f.batch, f.buffer, f.target_update), (64, 50_000, 50));
        assert_eq!(f.gamma, 0.0);
    }

    #[test]
    fn unknown_keys_name_the_nearest() {
        let e = VgaeStageConfig::from_json(&json!({"size": "small", "epoch": 3})).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("`epoch`") && m.contains("`epochs`"), "{m}");
        let e = GatStageConfig::from_json(&json!({"size": "huge"})).unwrap_err();
        assert!(e.to_string().contains("`size`"));
        assert!(
            GatStageConfig::from_json(&json!({})).is_err(),
            "size is required"
        );
        let e = FusionStageConfig::from_json(&json!({"size": "small", "method": "bandit"}))
            .unwrap_err();
        assert!(e.to_string().contains("`method`"));
    }
}
