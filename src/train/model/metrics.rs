//! Evaluation metrics (spec §6): confusion-matrix ratios, ROC-AUC, PR-AUC, detection rate at a
//! false-positive bound, Youden's threshold, and their JSON / CSV forms (§6.3, §6.4).
//!
//! Everything is computed in f64 from scores that went through [`score_f64`], so a threshold
//! of `0.8f32` is written `0.8` and the output is byte-stable. A ratio with a zero denominator
//! is `None` (JSON null, an empty CSV cell).

use serde_json::{Map, Value, json};

/// How a model's threshold was set (spec §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThresholdMethod {
    /// VGAE: Youden's J on val; attack iff `score ≥ thr`.
    YoudenVal,
    /// VGAE when val lacks a class: the 99th percentile of val normal scores; `score ≥ thr`.
    ValNormalP99,
    /// GAT: `p1 > 0.5`.
    Argmax,
    /// Fusion: `score > 0.5`.
    Fused,
}

impl ThresholdMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdMethod::YoudenVal => "youden_val",
            ThresholdMethod::ValNormalP99 => "val_normal_p99",
            ThresholdMethod::Argmax => "argmax",
            ThresholdMethod::Fused => "fused_0.5",
        }
    }

    /// Whether `score` is an attack at `thr`.
    pub fn predict(self, score: f64, thr: f64) -> bool {
        match self {
            ThresholdMethod::YoudenVal | ThresholdMethod::ValNormalP99 => score >= thr,
            ThresholdMethod::Argmax | ThresholdMethod::Fused => score > thr,
        }
    }
}

/// An f32 score as the f64 with the same shortest decimal form (`0.8f32` → `0.8`).
pub fn score_f64(x: f32) -> f64 {
    if !x.is_finite() {
        return if x.is_nan() {
            0.0
        } else {
            x.signum() as f64 * f64::MAX
        };
    }
    x.to_string().parse().unwrap_or(x as f64)
}

/// One model's metrics on one split or file (spec §6.3 `METRICS`).
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub n_samples: usize,
    pub n_pos: usize,
    pub n_neg: usize,
    pub threshold: f64,
    pub threshold_method: ThresholdMethod,
    pub accuracy: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    pub specificity: Option<f64>,
    pub mcc: f64,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    pub dr_at_fpr_1e3: Option<f64>,
    pub dr_at_fpr_1e2: Option<f64>,
    /// `[[tn, fp], [fn, tp]]`
    pub confusion: [[usize; 2]; 2],
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl Metrics {
    /// Metrics of `scores` against `labels` (1 = attack) at `thr` under `method`.
    pub fn compute(labels: &[u8], scores: &[f64], thr: f64, method: ThresholdMethod) -> Metrics {
        assert_eq!(labels.len(), scores.len());
        let (mut tp, mut fp, mut tn, mut fnn) = (0, 0, 0, 0);
        for (&y, &s) in labels.iter().zip(scores) {
            match (method.predict(s, thr), y != 0) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, false) => tn += 1,
                (false, true) => fnn += 1,
            }
        }
        let n = labels.len();
        let n_pos = tp + fnn;
        let n_neg = tn + fp;
        let den = ((tp + fp) as f64) * (n_pos as f64) * (n_neg as f64) * ((tn + fnn) as f64);
        let mcc = if den > 0.0 {
            ((tp * tn) as f64 - (fp * fnn) as f64) / den.sqrt()
        } else {
            0.0
        };
        let curve = Curve::new(labels, scores);
        Metrics {
            n_samples: n,
            n_pos,
            n_neg,
            threshold: thr,
            threshold_method: method,
            accuracy: ratio(tp + tn, n),
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, n_pos),
            f1: ratio(2 * tp, 2 * tp + fp + fnn),
            specificity: ratio(tn, n_neg),
            mcc,
            roc_auc: curve.as_ref().map(Curve::roc_auc),
            pr_auc: curve.as_ref().map(Curve::pr_auc),
            dr_at_fpr_1e3: curve.as_ref().map(|c| c.dr_at_fpr(1e-3)),
            dr_at_fpr_1e2: curve.as_ref().map(|c| c.dr_at_fpr(1e-2)),
            confusion: [[tn, fp], [fnn, tp]],
        }
    }

    /// The `METRICS` object, keys in spec order.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("n_samples".into(), json!(self.n_samples));
        m.insert("n_pos".into(), json!(self.n_pos));
        m.insert("n_neg".into(), json!(self.n_neg));
        m.insert("threshold".into(), json!(self.threshold));
        m.insert(
            "threshold_method".into(),
            json!(self.threshold_method.as_str()),
        );
        for (k, v) in self.float_fields() {
            m.insert(k.into(), json!(v));
        }
        m.insert("confusion_matrix".into(), json!(self.confusion));
        m
    }

    fn float_fields(&self) -> [(&'static str, Option<f64>); 10] {
        [
            ("accuracy", self.accuracy),
            ("precision", self.precision),
            ("recall", self.recall),
            ("f1", self.f1),
            ("specificity", self.specificity),
            ("mcc", Some(self.mcc)),
            ("roc_auc", self.roc_auc),
            ("pr_auc", self.pr_auc),
            ("dr_at_fpr_1e-3", self.dr_at_fpr_1e3),
            ("dr_at_fpr_1e-2", self.dr_at_fpr_1e2),
        ]
    }

    /// `(metric, value)` rows for `metrics.csv` (spec §6.4): `threshold_method` left out, the
    /// confusion matrix as `tn, fp, fn, tp`, null as an empty cell, shortest round-trip floats.
    pub fn csv_rows(&self) -> Vec<(&'static str, String)> {
        let f = |v: Option<f64>| v.map(|x| format!("{x:?}")).unwrap_or_default();
        let mut rows = vec![
            ("n_samples", self.n_samples.to_string()),
            ("n_pos", self.n_pos.to_string()),
            ("n_neg", self.n_neg.to_string()),
            ("threshold", f(Some(self.threshold))),
        ];
        for (k, v) in self.float_fields() {
            rows.push((k, f(v)));
        }
        let [[tn, fp], [fnn, tp]] = self.confusion;
        rows.extend([
            ("tn", tn.to_string()),
            ("fp", fp.to_string()),
            ("fn", fnn.to_string()),
            ("tp", tp.to_string()),
        ]);
        rows
    }
}

/// Cumulative counts at each distinct score, descending; `None` if a class is absent.
struct Curve {
    /// (threshold, tp, fp) for "attack iff score ≥ threshold", thresholds descending.
    points: Vec<(f64, usize, usize)>,
    n_pos: usize,
    n_neg: usize,
    labels_scores: Vec<(f64, bool)>,
}

impl Curve {
    fn new(labels: &[u8], scores: &[f64]) -> Option<Curve> {
        let mut v: Vec<(f64, bool)> = scores
            .iter()
            .zip(labels)
            .map(|(&s, &y)| (s, y != 0))
            .collect();
        let n_pos = v.iter().filter(|p| p.1).count();
        let n_neg = v.len() - n_pos;
        if n_pos == 0 || n_neg == 0 {
            return None;
        }
        v.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut points = Vec::new();
        let (mut tp, mut fp) = (0, 0);
        let mut i = 0;
        while i < v.len() {
            let t = v[i].0;
            while i < v.len() && v[i].0 == t {
                if v[i].1 {
                    tp += 1
                } else {
                    fp += 1
                }
                i += 1;
            }
            points.push((t, tp, fp));
        }
        Some(Curve {
            points,
            n_pos,
            n_neg,
            labels_scores: v,
        })
    }

    /// Mann–Whitney: the share of (attack, normal) pairs ranked right, ties counting ½.
    fn roc_auc(&self) -> f64 {
        // Ascending ranks with ties averaged.
        let mut asc = self.labels_scores.clone();
        asc.reverse();
        let mut rank_sum_pos = 0f64;
        let mut i = 0;
        while i < asc.len() {
            let mut j = i;
            while j < asc.len() && asc[j].0 == asc[i].0 {
                j += 1;
            }
            let avg = (i + 1 + j) as f64 / 2.0; // ranks i+1..=j
            rank_sum_pos += avg * asc[i..j].iter().filter(|p| p.1).count() as f64;
            i = j;
        }
        let (p, n) = (self.n_pos as f64, self.n_neg as f64);
        (rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n)
    }

    /// Average precision `Σ_k (R_k − R_{k−1})·P_k` over thresholds descending.
    fn pr_auc(&self) -> f64 {
        let mut ap = 0.0;
        let mut prev_r = 0.0;
        for &(_, tp, fp) in &self.points {
            let r = tp as f64 / self.n_pos as f64;
            let p = tp as f64 / (tp + fp) as f64;
            ap += (r - prev_r) * p;
            prev_r = r;
        }
        ap
    }

    /// The largest TPR among ROC points with FPR ≤ `bound`, `(0, 0)` included.
    fn dr_at_fpr(&self, bound: f64) -> f64 {
        let mut best = 0.0f64;
        for &(_, tp, fp) in &self.points {
            if fp as f64 / self.n_neg as f64 <= bound {
                best = best.max(tp as f64 / self.n_pos as f64);
            }
        }
        best
    }
}

/// Points of a curve, `(x, y)`.
pub type Points = Vec<(f64, f64)>;

/// ROC points `(FPR, TPR)` from `(0, 0)`, and precision–recall points `(recall, precision)`,
/// one per distinct score (descending), thinned to at most `max_points` each (endpoints kept):
/// what a report needs to draw the curves. `None` if a class is absent.
pub fn curves(labels: &[u8], scores: &[f64], max_points: usize) -> Option<(Points, Points)> {
    let c = Curve::new(labels, scores)?;
    let (p, n) = (c.n_pos as f64, c.n_neg as f64);
    let mut roc = vec![(0.0, 0.0)];
    let mut pr = Vec::with_capacity(c.points.len());
    for &(_, tp, fp) in &c.points {
        roc.push((fp as f64 / n, tp as f64 / p));
        pr.push((tp as f64 / p, tp as f64 / (tp + fp) as f64));
    }
    Some((thin(roc, max_points), thin(pr, max_points)))
}

/// At most `max` evenly spaced points of `v`, first and last included.
fn thin(v: Points, max: usize) -> Points {
    if v.len() <= max || max < 2 {
        return v;
    }
    let last = v.len() - 1;
    let mut out: Vec<(f64, f64)> = (0..max).map(|k| v[k * last / (max - 1)]).collect();
    out.dedup();
    out
}

/// Youden's threshold: `argmax_t (TPR − FPR)` over distinct scores with "attack iff score ≥ t",
/// ties to the largest `t`. `None` if a class is absent.
pub fn youden(labels: &[u8], scores: &[f64]) -> Option<f64> {
    let c = Curve::new(labels, scores)?;
    let (p, n) = (c.n_pos as i128, c.n_neg as i128);
    let mut best: Option<(i128, f64)> = None;
    for &(t, tp, fp) in &c.points {
        // J·p·n, compared exactly; descending t, so only a strictly larger J replaces.
        let j = tp as i128 * n - fp as i128 * p;
        if best.is_none_or(|(b, _)| j > b) {
            best = Some((j, t));
        }
    }
    best.map(|(_, t)| t)
}

/// The nearest-rank 99th percentile of `scores` (`None` if empty).
pub fn p99_nearest_rank(scores: &[f64]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let mut s = scores.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((0.99 * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

/// The VGAE threshold from val (spec §6.1): Youden's J, or the p99 of normal scores when val
/// lacks a class.
pub fn vgae_threshold(labels: &[u8], scores: &[f64]) -> (f64, ThresholdMethod) {
    match youden(labels, scores) {
        Some(t) => (t, ThresholdMethod::YoudenVal),
        None => {
            let normal: Vec<f64> = scores
                .iter()
                .zip(labels)
                .filter(|(_, y)| **y == 0)
                .map(|(s, _)| *s)
                .collect();
            let t =
                p99_nearest_rank(if normal.is_empty() { scores } else { &normal }).unwrap_or(0.0);
            (t, ThresholdMethod::ValNormalP99)
        }
    }
}

/// Attack-class F1 of hard predictions (training criteria).
pub fn f1(labels: &[u8], predicted: &[bool]) -> Option<f64> {
    let (mut tp, mut fp, mut fnn) = (0, 0, 0);
    for (&y, &p) in labels.iter().zip(predicted) {
        match (p, y != 0) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fnn += 1,
            _ => {}
        }
    }
    ratio(2 * tp, 2 * tp + fp + fnn)
}

/// Accuracy of hard predictions.
pub fn accuracy(labels: &[u8], predicted: &[bool]) -> Option<f64> {
    let ok = labels
        .iter()
        .zip(predicted)
        .filter(|(y, p)| (**y != 0) == **p)
        .count();
    ratio(ok, labels.len())
}

#[cfg(test)]
mod curve_tests {
    use super::*;

    #[test]
    fn curves_of_the_hand_computed_example() {
        // spec §8.5: labels [0,0,1,1], scores [0.1,0.4,0.35,0.8]
        let (roc, pr) = curves(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8], 100).unwrap();
        assert_eq!(
            roc,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        assert_eq!(pr[0], (0.5, 1.0));
        assert_eq!(pr.last(), Some(&(1.0, 0.5)));
        assert!(curves(&[0, 0], &[0.1, 0.2], 10).is_none());
        let (thin_roc, _) = curves(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8], 3).unwrap();
        assert_eq!(thin_roc, vec![(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §8.5.
    #[test]
    fn hand_computed_example() {
        let y = [0u8, 0, 1, 1];
        let s = [0.1, 0.4, 0.35, 0.8];
        let thr = youden(&y, &s).unwrap();
        assert_eq!(thr, 0.8);
        let m = Metrics::compute(&y, &s, thr, ThresholdMethod::YoudenVal);
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-4;
        assert!(close(m.roc_auc, 0.75));
        assert!(close(m.pr_auc, 0.8333));
        assert!(close(m.dr_at_fpr_1e2, 0.5));
        assert!(close(m.accuracy, 0.75));
        assert!(close(m.precision, 1.0));
        assert!(close(m.recall, 0.5));
        assert!(close(m.f1, 0.6667));
        assert!((m.mcc - 0.5774).abs() < 1e-4);
        assert_eq!(m.confusion, [[2, 0], [1, 1]]);
        assert_eq!(m.specificity, Some(1.0));
    }

    #[test]
    fn youden_ties_go_to_the_larger_threshold() {
        // J = 0.5 at both 0.8 and 0.35.
        assert_eq!(youden(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]), Some(0.8));
        assert_eq!(youden(&[0, 0], &[0.1, 0.2]), None);
    }

    #[test]
    fn null_ratios_and_single_class() {
        let m = Metrics::compute(&[0, 0, 0], &[0.1, 0.2, 0.9], 0.5, ThresholdMethod::Argmax);
        assert_eq!(m.recall, None);
        assert_eq!(m.roc_auc, None);
        assert_eq!(m.precision, Some(0.0));
        assert_eq!(m.mcc, 0.0);
        let j = serde_json::to_string(&m.to_json()).unwrap();
        assert!(j.starts_with(r#"{"n_samples":3,"n_pos":0,"n_neg":3,"threshold":0.5,"threshold_method":"argmax","accuracy":0.6666666666666666,"precision":0.0,"recall":null"#), "{j}");
        assert!(j.ends_with(r#""confusion_matrix":[[2,1],[0,0]]}"#));
        let rows = m.csv_rows();
        assert_eq!(rows.len(), 4 + 10 + 4);
        assert_eq!(rows[6], ("recall", String::new()));
    }

    #[test]
    fn p99_and_fallback_threshold() {
        let s: Vec<f64> = (1..=200).map(|i| i as f64).collect();
        assert_eq!(p99_nearest_rank(&s), Some(198.0));
        let (t, m) = vgae_threshold(&[0; 200], &s);
        assert_eq!((t, m), (198.0, ThresholdMethod::ValNormalP99));
        assert_eq!(score_f64(0.8f32), 0.8);
    }
}
