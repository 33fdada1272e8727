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

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::TrainError;

/// Model size: `large` is the teacher, `small` the student (spec §0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Large,
    Small,
}

impl Size {
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Large => "large",
            Size::Small => "small",
        }
    }
}

/// Epochs of the `quick` profile for the VGAE and the GAT.
///
/// *Differs* from spec §5.7 (3): measured on the can-train-and-test sample, three epochs of
/// ~10 steps leave a distilled student still predicting the majority class (its loss is
/// dominated by matching the teacher's soft targets). On the shipped demo, 8 epochs gave the
/// distilled student test F1 0.973 against the teacher's 1.0 (inside the 0.03 the demo must
/// meet, but only just); 10 and 12 epochs both gave 0.993. The whole demo stays far inside its
/// 10-minute budget.
pub const QUICK_EPOCHS: usize = 10;

/// Curriculum ramp of the `quick` profile (spec: 3), half the quick epochs so that patience,
/// which counts only after the ramp, can still act.
pub const QUICK_RAMP: usize = 5;

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
pub(crate) struct Keys<'a> {
    obj: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    pub(crate) fn new(v: &'a Value, stage: &str) -> Result<Keys<'a>, TrainError> {
        let obj = v.as_object().ok_or_else(|| {
            TrainError::Config(format!("the `{stage}` stage config must be a table"))
        })?;
        Ok(Keys {
            obj,
            known: COMMON.to_vec(),
        })
    }

    pub(crate) fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.obj.get(key)
    }

    pub(crate) fn f64(&mut self, key: &'static str, default: f64) -> Result<f64, TrainError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(key, v, "a number")),
        }
    }

    pub(crate) fn usize(&mut self, key: &'static str, default: usize) -> Result<usize, TrainError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad(key, v, "a non-negative integer")),
        }
    }

    pub(crate) fn bool(&mut self, key: &'static str, default: bool) -> Result<bool, TrainError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| bad(key, v, "true or false")),
        }
    }

    pub(crate) fn choice(
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

    pub(crate) fn string(&mut self, key: &'static str) -> Result<Option<String>, TrainError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(bad(key, v, "a string")),
        }
    }

    /// Refuses any key that no getter asked for, naming the nearest known key.
    pub(crate) fn finish(mut self, stage: &str) -> Result<(), TrainError> {
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

pub(crate) fn bad(key: &str, v: &Value, want: &str) -> TrainError {
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
    /// Graphs per batch for evaluation-mode passes (scores, states, metrics); 64 keeps a
    /// layer's activations in L2 cache (measured faster than 256 or 512 on CPU).
    pub eval_batch_graphs: usize,
}

pub(crate) fn common(k: &mut Keys) -> Result<Common, TrainError> {
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
        eval_batch_graphs: k.usize("eval_batch_graphs", 64)?.max(1),
    })
}

pub(crate) fn size(k: &mut Keys) -> Result<Size, TrainError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::train_fusion::FusionStageConfig;
    use crate::train::model::train_gat::GatStageConfig;
    use crate::train::model::train_vgae::VgaeStageConfig;
    use serde_json::json;

    #[test]
    fn profiles_and_overrides() {
        let q = GatStageConfig::from_json(&json!({"size": "large"})).unwrap();
        assert_eq!(
            (q.opt.epochs, q.opt.batch_graphs, q.opt.lr),
            (QUICK_EPOCHS, 64, 3e-3)
        );
        assert_eq!(q.curriculum.ramp_epochs, QUICK_RAMP);
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

    #[test]
    fn nearest_key() {
        assert_eq!(nearest("epoch", &["epochs", "lr", "patience"]), "epochs");
    }
}
