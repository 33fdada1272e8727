//! Stage 4: evaluation (spec §6) of a variant's VGAE, GAT and fusion model on `val` and on
//! **every** test split, with all windows and a metrics entry for every file of every test
//! split (normal-only files included). Writes `metrics.json` (§6.3), `metrics.csv` (§6.4) and
//! `curves.json` (ROC and precision–recall points per model and split, for reports).
//!
//! Thresholds: the VGAE's comes from val (Youden, or the normal p99 when val lacks a class) and
//! is reused everywhere; the GAT predicts `p1 > 0.5`; fusion `score > 0.5` by the fused rule.
//! Nothing here draws random numbers, so the same inputs give a byte-identical `metrics.json`.
//!
//! On the CPU the windows are scored by the inference engine ([`super::infer`]), whose
//! results do not depend on the instruction set or batch size; elsewhere (and for models with
//! edge features) by the candle models.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::TrainError;
use super::checkpoint::{write_json, write_text};
use super::gat::Gat;
use serde::Serialize;

use super::batch::{Scoring, Splits, all};
use super::config::{Common, Keys, common};
use super::fusion::{FusionModel, State};
use super::infer::{Engine, Workspace};
use super::metrics::{Metrics, ThresholdMethod, score_f64, vgae_threshold};
use super::vgae::Vgae;
use crate::train::data::graphs::GraphSet;

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

/// What the preprocess stage knows about the data and evaluation reports (from its
/// `manifest.json`); absent values are written as null.
#[derive(Clone, Debug)]
pub struct DataInfo {
    pub window: Value,
    pub stride: Value,
    /// `{"mode", "val_fraction", "embargo_windows"}`
    pub split: Value,
    /// Split name → share of rows mapped to UNK.
    pub unk_row_rate: Map<String, Value>,
    pub duplicates_dropped: Value,
    pub test_overlaps_dropped: Value,
}

impl Default for DataInfo {
    fn default() -> Self {
        DataInfo {
            window: Value::Null,
            stride: Value::Null,
            split: Value::Null,
            unk_row_rate: Map::new(),
            duplicates_dropped: json!([]),
            test_overlaps_dropped: json!([]),
        }
    }
}

/// The identity of the run being reported.
#[derive(Clone, Debug)]
pub struct RunLabels {
    pub dataset: String,
    pub variant: String,
    pub seed: u64,
    pub profile: String,
    /// The derivation hash of the evaluation.
    pub config_sha256: String,
}

/// `metrics.json`, `metrics.csv` and `curves.json` of one evaluation.
pub struct Evaluation {
    pub json: Value,
    pub csv: String,
    /// ROC and precision–recall points per model and split (`kdgat.curves.v1`): what
    /// `kdbuild report` draws.
    pub curves: Value,
}

/// Points per curve in `curves.json`: enough for a smooth plot, small enough to inline.
const CURVE_POINTS: usize = 200;

impl Evaluation {
    pub fn write(&self, out: &Path) -> Result<(), TrainError> {
        write_json(&out.join("metrics.json"), &self.json)?;
        write_json(&out.join("curves.json"), &self.curves)?;
        write_text(&out.join("metrics.csv"), &self.csv)
    }

    /// `models.<model>.<split>.<metric>` as a number, if present (for tests and reports).
    pub fn metric(&self, model: &str, split: &str, metric: &str) -> Option<f64> {
        self.json["models"][model][split][metric].as_f64()
    }
}

/// A model's name, its scores, threshold and decision rule.
type ModelRule = (&'static str, fn(&Scored) -> &Vec<f64>, f64, ThresholdMethod);

/// Per-window scores of the three models on one split.
struct Scored {
    y: Vec<u8>,
    vgae: Vec<f64>,
    gat: Vec<f64>,
    fused: Vec<f64>,
}

/// `(fused score, attack)` per window.
type Decisions = Vec<(f32, bool)>;

/// How a split is scored: by the inference engine where it applies (CPU models without edge
/// features), else by the candle models.
enum Scorer<'a> {
    Engine(Box<(Engine, Workspace)>),
    Candle {
        vgae: &'a Vgae,
        gat: &'a Gat,
        fusion: &'a FusionModel,
        scoring: &'a Scoring,
    },
}

impl Scorer<'_> {
    fn states_and_decisions(
        &mut self,
        set: &GraphSet,
    ) -> Result<(Vec<State>, Decisions), TrainError> {
        Ok(match self {
            Scorer::Engine(e) => {
                let (engine, ws) = &mut **e;
                let states = engine.states(ws, set, &all(set))?;
                let fused = engine.score(ws, &states);
                (states, fused)
            }
            Scorer::Candle {
                vgae,
                gat,
                fusion,
                scoring,
            } => {
                let states = scoring.states(vgae, gat, set, &all(set))?;
                let fused = fusion.score(&states, &scoring.device)?;
                (states, fused)
            }
        })
    }
}

fn score_split(set: &GraphSet, scorer: &mut Scorer) -> Result<Scored, TrainError> {
    let (states, fused) = scorer.states_and_decisions(set)?;
    Ok(Scored {
        y: set.y.clone(),
        vgae: states
            .iter()
            .map(|s| score_f64(0.4 * s[0] + 0.35 * s[1] + 0.25 * s[2]))
            .collect(),
        gat: states.iter().map(|s| score_f64(s[9])).collect(),
        fused: fused.iter().map(|(s, _)| score_f64(*s)).collect(),
    })
}

fn counts(set: &GraphSet) -> Value {
    let attack = set.y.iter().filter(|&&y| y != 0).count();
    json!({"normal": set.len() - attack, "attack": attack})
}

/// Evaluates the three models of a variant on `data`.
pub fn evaluate(
    data: &Splits,
    vgae: &Vgae,
    gat: &Gat,
    fusion: &FusionModel,
    scoring: &Scoring,
    labels: &RunLabels,
    info: &DataInfo,
) -> Result<Evaluation, TrainError> {
    super::tune_process();
    for (name, set) in &data.tests {
        if name == "val" || name == "train" {
            return Err(TrainError::Data(format!(
                "a test split may not be called `{name}`"
            )));
        }
        if !set.is_empty() && *set == data.val {
            return Err(TrainError::Data(format!(
                "test split `{name}` is identical to val (pitfall 30): refusing to report it as a test"
            )));
        }
    }
    let mut tests: Vec<&(String, GraphSet)> = data.tests.iter().collect();
    tests.sort_by(|a, b| a.0.cmp(&b.0));
    let mut scorer = if scoring.device.is_cpu() && Engine::applies(vgae, gat) {
        Scorer::Engine(Box::new((
            Engine::new(vgae, gat, fusion)?,
            Workspace::default(),
        )))
    } else {
        Scorer::Candle {
            vgae,
            gat,
            fusion,
            scoring,
        }
    };
    let val = score_split(&data.val, &mut scorer)?;
    let (vthr, vmethod) = vgae_threshold(&val.y, &val.vgae);
    let models: [ModelRule; 3] = [
        ("vgae", |s| &s.vgae, vthr, vmethod),
        ("gat", |s| &s.gat, 0.5, ThresholdMethod::Argmax),
        ("fusion", |s| &s.fused, 0.5, ThresholdMethod::Fused),
    ];
    // (split, scores, set) in report order: val first, then tests sorted.
    let mut scored: Vec<(&str, Scored, Option<&GraphSet>)> = vec![("val", val, None)];
    for (name, set) in &tests {
        scored.push((name, score_split(set, &mut scorer)?, Some(set)));
    }
    let mut csv = String::from("dataset,variant,seed,model,split,file,metric,value\n");
    let mut models_json = Map::new();
    let mut curves_json = Map::new();
    for (model, pick, thr, method) in models {
        let mut splits = Map::new();
        let mut model_curves = Map::new();
        for (split, s, set) in &scored {
            if let Some((roc, pr)) = super::metrics::curves(&s.y, pick(s), CURVE_POINTS) {
                let pts = |v: Vec<(f64, f64)>| -> Vec<[f64; 2]> {
                    v.into_iter().map(|(a, b)| [a, b]).collect()
                };
                model_curves.insert(split.to_string(), json!({"roc": pts(roc), "pr": pts(pr)}));
            }
            let m = Metrics::compute(&s.y, pick(s), thr, method);
            let mut entry = m.to_json();
            csv_rows(&mut csv, labels, model, split, "", &m);
            if let Some(set) = set {
                let mut by_file: BTreeMap<String, Vec<usize>> = BTreeMap::new();
                for g in 0..set.len() {
                    let f = set.file[g] as usize;
                    let name = set
                        .files
                        .get(f)
                        .cloned()
                        .unwrap_or_else(|| format!("file_{f}"));
                    by_file.entry(name).or_default().push(g);
                }
                let mut files = Map::new();
                for (name, idx) in by_file {
                    let y: Vec<u8> = idx.iter().map(|&g| s.y[g]).collect();
                    let sc: Vec<f64> = idx.iter().map(|&g| pick(s)[g]).collect();
                    let fm = Metrics::compute(&y, &sc, thr, method);
                    csv_rows(&mut csv, labels, model, split, &name, &fm);
                    files.insert(name, Value::Object(fm.to_json()));
                }
                entry.insert("files".into(), Value::Object(files));
            }
            splits.insert(split.to_string(), Value::Object(entry));
        }
        models_json.insert(model.into(), Value::Object(splits));
        curves_json.insert(model.into(), Value::Object(model_curves));
    }
    let mut windows = Map::new();
    windows.insert("train".into(), counts(&data.train));
    windows.insert("val".into(), counts(&data.val));
    let mut unk = Map::new();
    unk.insert(
        "val".into(),
        info.unk_row_rate.get("val").cloned().unwrap_or(Value::Null),
    );
    for (name, set) in &tests {
        windows.insert(name.clone(), counts(set));
        unk.insert(
            name.clone(),
            info.unk_row_rate.get(name).cloned().unwrap_or(Value::Null),
        );
    }
    let mut root = Map::new();
    root.insert("schema".into(), json!("kdgat.metrics.v1"));
    root.insert("dataset".into(), json!(labels.dataset));
    root.insert("variant".into(), json!(labels.variant));
    root.insert("seed".into(), json!(labels.seed));
    root.insert("profile".into(), json!(labels.profile));
    root.insert("fusion_method".into(), json!(fusion.method().as_str()));
    root.insert("config_sha256".into(), json!(labels.config_sha256));
    let mut d = Map::new();
    d.insert("window".into(), info.window.clone());
    d.insert("stride".into(), info.stride.clone());
    d.insert("num_ids".into(), json!(data.num_ids));
    d.insert("split".into(), info.split.clone());
    d.insert("windows".into(), Value::Object(windows));
    d.insert("unk_row_rate".into(), Value::Object(unk));
    d.insert("duplicates_dropped".into(), info.duplicates_dropped.clone());
    d.insert(
        "test_overlaps_dropped".into(),
        info.test_overlaps_dropped.clone(),
    );
    root.insert("data".into(), Value::Object(d));
    root.insert("models".into(), Value::Object(models_json));
    Ok(Evaluation {
        json: Value::Object(root),
        csv,
        curves: json!({"schema": "kdgat.curves.v1", "models": curves_json}),
    })
}

/// A CSV field, quoted when it needs to be (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_rows(out: &mut String, l: &RunLabels, model: &str, split: &str, file: &str, m: &Metrics) {
    for (metric, value) in m.csv_rows() {
        let _ = writeln!(
            out,
            "{},{},{},{model},{},{},{metric},{value}",
            field(&l.dataset),
            field(&l.variant),
            l.seed,
            field(split),
            field(file)
        );
    }
}
