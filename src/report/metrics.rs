//! Metrics tables: one row per evaluation target, its key configuration and the chosen
//! metrics, read from the `metrics.json` files of realized evaluations (spec §6.3), and the
//! deltas between two of them. Pure: the caller reads the files.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// The metrics shown when none are asked for.
pub const DEFAULT_METRICS: &[&str] = &["accuracy", "f1", "roc_auc"];
/// The models shown when none are asked for.
pub const DEFAULT_MODELS: &[&str] = &["gat", "fusion"];

/// What to show.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Metric names (`f1`, `mcc`, `dr_at_fpr_1e-3`…); empty: [`DEFAULT_METRICS`].
    pub metrics: Vec<String>,
    /// Split names (`val`, `test_01_…`); empty: every split but `val`.
    pub splits: Vec<String>,
    /// Model names (`vgae`, `gat`, `fusion`); empty: [`DEFAULT_MODELS`].
    pub models: Vec<String>,
}

/// One evaluation target: its name and, if realized, its parsed `metrics.json`.
#[derive(Clone, Debug)]
pub struct Row {
    pub target: String,
    pub metrics: Option<Value>,
}

/// A column: (model, split, metric).
pub type Column = (String, String, String);

/// The key configuration shown for each row, from the top of `metrics.json`.
pub const KEY_FIELDS: &[&str] = &["variant", "dataset", "seed", "profile"];

/// The columns for `rows` under `sel`: every (model, split, metric) that some realized row has,
/// models and metrics in the order asked, splits `val` first and then sorted.
pub fn columns(rows: &[Row], sel: &Selection) -> Vec<Column> {
    let metrics: Vec<String> = if sel.metrics.is_empty() {
        DEFAULT_METRICS.iter().map(|s| s.to_string()).collect()
    } else {
        sel.metrics.clone()
    };
    let models: Vec<String> = if sel.models.is_empty() {
        DEFAULT_MODELS.iter().map(|s| s.to_string()).collect()
    } else {
        sel.models.clone()
    };
    let mut splits: Vec<String> = Vec::new();
    for r in rows {
        let Some(m) = &r.metrics else { continue };
        for model in &models {
            if let Some(Value::Object(by_split)) = m.pointer(&format!("/models/{model}")) {
                for s in by_split.keys() {
                    let wanted = if sel.splits.is_empty() {
                        s != "val"
                    } else {
                        sel.splits.contains(s)
                    };
                    if wanted && !splits.contains(s) {
                        splits.push(s.clone());
                    }
                }
            }
        }
    }
    splits.sort_by(|a, b| (a != "val", a).cmp(&(b != "val", b)));
    let mut out = Vec::new();
    for model in &models {
        for split in &splits {
            for metric in &metrics {
                out.push((model.clone(), split.clone(), metric.clone()));
            }
        }
    }
    out
}

/// The value of a column in a row's metrics (null when absent or null).
pub fn value(m: &Value, (model, split, metric): &Column) -> Option<f64> {
    m.pointer(&format!("/models/{model}/{split}/{metric}"))
        .and_then(Value::as_f64)
}

/// A metric value as the tables print it: 4 decimals, `null` when absent.
pub fn fmt_value(v: Option<f64>) -> String {
    match v {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e9 => format!("{x:.0}"),
        Some(x) => format!("{x:.4}"),
        None => "null".to_string(),
    }
}

fn key_value(m: &Value, k: &str) -> String {
    match m.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => String::new(),
    }
}

/// Column header text: `model/split/metric`.
pub fn header(c: &Column) -> String {
    format!("{}/{}/{}", c.0, c.1, c.2)
}

/// The table as header + cells, not-yet-realized targets included with a note.
pub fn cells(rows: &[Row], cols: &[Column]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut head: Vec<String> = vec!["target".into()];
    head.extend(KEY_FIELDS.iter().map(|s| s.to_string()));
    head.extend(cols.iter().map(header));
    let body = rows
        .iter()
        .map(|r| {
            let mut line = vec![r.target.clone()];
            match &r.metrics {
                Some(m) => {
                    line.extend(KEY_FIELDS.iter().map(|k| key_value(m, k)));
                    line.extend(cols.iter().map(|c| fmt_value(value(m, c))));
                }
                None => {
                    line.push("(not realized)".into());
                    line.extend(std::iter::repeat_n(
                        String::new(),
                        KEY_FIELDS.len() - 1 + cols.len(),
                    ));
                }
            }
            line
        })
        .collect();
    (head, body)
}

/// Aligned plain-text table.
pub fn render_table(head: &[String], body: &[Vec<String>]) -> String {
    let n = head.len();
    let mut width = vec![0; n];
    for row in std::iter::once(head).chain(body.iter().map(Vec::as_slice)) {
        for (i, c) in row.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, row: &[String]| {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        let _ = writeln!(s, "{}", cells.join("  ").trim_end());
    };
    line(&mut s, head);
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(s, "{}", rule.join("  "));
    for row in body {
        line(&mut s, row);
    }
    s
}

/// GitHub-flavoured markdown table.
pub fn render_markdown(head: &[String], body: &[Vec<String>]) -> String {
    let esc = |c: &str| c.replace('|', "\\|");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| {} |",
        head.iter().map(|h| esc(h)).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
    for row in body {
        let _ = writeln!(
            s,
            "| {} |",
            row.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    s
}

/// CSV with RFC 4180 quoting.
pub fn render_csv(head: &[String], body: &[Vec<String>]) -> String {
    let quote = |c: &str| {
        if c.contains([',', '"', '\n']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.to_string()
        }
    };
    let mut s = String::new();
    for row in std::iter::once(head).chain(body.iter().map(Vec::as_slice)) {
        let _ = writeln!(
            s,
            "{}",
            row.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",")
        );
    }
    s
}

/// JSON: one object per row with its key fields and `{"model/split/metric": value}`.
pub fn render_json(rows: &[Row], cols: &[Column]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| match &r.metrics {
                None => json!({"target": r.target, "realized": false}),
                Some(m) => {
                    let mut o = serde_json::Map::new();
                    o.insert("target".into(), json!(r.target));
                    o.insert("realized".into(), json!(true));
                    for k in KEY_FIELDS {
                        o.insert(k.to_string(), m.get(*k).cloned().unwrap_or(Value::Null));
                    }
                    let vals: serde_json::Map<String, Value> = cols
                        .iter()
                        .map(|c| (header(c), json!(value(m, c))))
                        .collect();
                    o.insert("metrics".into(), Value::Object(vals));
                    Value::Object(o)
                }
            })
            .collect(),
    )
}

/// `--diff A B`: every column either has, with A's value, B's value and B − A.
pub fn diff_cells(a: &Row, b: &Row, cols: &[Column]) -> (Vec<String>, Vec<Vec<String>>) {
    let head = vec![
        "model/split/metric".to_string(),
        a.target.clone(),
        b.target.clone(),
        "delta".to_string(),
    ];
    let body = cols
        .iter()
        .map(|c| {
            let va = a.metrics.as_ref().and_then(|m| value(m, c));
            let vb = b.metrics.as_ref().and_then(|m| value(m, c));
            let delta = match (va, vb) {
                (Some(x), Some(y)) => format!("{:+.4}", y - x),
                _ => "null".into(),
            };
            vec![header(c), fmt_value(va), fmt_value(vb), delta]
        })
        .collect();
    (head, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(variant: &str, f1: f64) -> Value {
        json!({
            "schema": "kdgat.metrics.v1", "dataset": "demo", "variant": variant, "seed": 42, "profile": "quick",
            "models": {
                "gat": {"val": {"f1": 0.9, "accuracy": 0.95, "roc_auc": 0.99},
                        "test_01": {"f1": f1, "accuracy": 0.97, "roc_auc": null}},
                "fusion": {"test_01": {"f1": 0.96, "accuracy": 0.98, "roc_auc": 0.995}}
            }
        })
    }

    #[test]
    fn columns_skip_val_by_default_and_follow_the_selection() {
        let rows = vec![Row {
            target: "t".into(),
            metrics: Some(fixture("teacher", 0.95)),
        }];
        let cols = columns(&rows, &Selection::default());
        assert_eq!(cols.len(), 6, "2 models x 1 test split x 3 metrics");
        assert_eq!(header(&cols[0]), "gat/test_01/accuracy");
        let sel = Selection {
            metrics: vec!["f1".into()],
            splits: vec!["val".into(), "test_01".into()],
            models: vec!["gat".into()],
        };
        let cols = columns(&rows, &sel);
        assert_eq!(
            cols.iter().map(header).collect::<Vec<_>>(),
            vec!["gat/val/f1", "gat/test_01/f1"]
        );
    }

    #[test]
    fn tables_render_values_nulls_and_unrealized_rows() {
        let rows = vec![
            Row {
                target: "teacher-demo-eval".into(),
                metrics: Some(fixture("teacher", 0.95)),
            },
            Row {
                target: "student-demo-eval".into(),
                metrics: None,
            },
        ];
        let sel = Selection {
            metrics: vec!["f1".into(), "roc_auc".into()],
            models: vec!["gat".into()],
            ..Default::default()
        };
        let cols = columns(&rows, &sel);
        let (h, b) = cells(&rows, &cols);
        let md = render_markdown(&h, &b);
        assert_eq!(
            md,
            "| target | variant | dataset | seed | profile | gat/test_01/f1 | gat/test_01/roc_auc |\n\
             |---|---|---|---|---|---|---|\n\
             | teacher-demo-eval | teacher | demo | 42 | quick | 0.9500 | null |\n\
             | student-demo-eval | (not realized) |  |  |  |  |  |\n"
        );
        let csv = render_csv(&h, &b);
        assert!(csv.starts_with(
            "target,variant,dataset,seed,profile,gat/test_01/f1,gat/test_01/roc_auc\n"
        ));
        let t = render_table(&h, &b);
        assert_eq!(t.lines().count(), 4);
    }

    #[test]
    fn diff_shows_signed_deltas() {
        let a = Row {
            target: "a".into(),
            metrics: Some(fixture("teacher", 0.95)),
        };
        let b = Row {
            target: "b".into(),
            metrics: Some(fixture("student", 0.93)),
        };
        let cols = vec![("gat".to_string(), "test_01".to_string(), "f1".to_string())];
        let (_, body) = diff_cells(&a, &b, &cols);
        assert_eq!(
            body[0],
            vec!["gat/test_01/f1", "0.9500", "0.9300", "-0.0200"]
        );
    }
}
