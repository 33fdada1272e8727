//! The HTML report: one self-contained file (inline CSS and SVG, no scripts, nothing fetched)
//! with the DAG, the metrics table, model sizes, a build timeline and, per evaluation, its
//! provenance, training curves, ROC and precision–recall curves and confusion matrices.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;

use super::svg::{self, Series, Span, esc};
use super::{EvalReport, PathReport};

/// Everything the page shows.
pub struct Page<'a> {
    pub title: String,
    pub generated_at: String,
    pub pipeline: String,
    pub store: String,
    pub dag_svg: String,
    pub metrics_head: &'a [String],
    pub metrics_body: &'a [Vec<String>],
    pub evals: &'a [EvalReport],
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1400px}\
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}\
.meta{color:#666}table{border-collapse:collapse;margin:.6em 0;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}\
td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}\
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}\
.plots figure{margin:0}.plots figcaption{font-size:12px;color:#555}\
.dag{overflow-x:auto;border:1px solid #eee;padding:6px}.note{color:#a60}";

/// Renders the page.
pub fn render(page: &Page) -> String {
    let mut h = String::with_capacity(1 << 16);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&page.title)
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p class=\"meta\">generated {} from <code>{}</code>, store <code>{}</code></p>",
        esc(&page.title),
        esc(&page.generated_at),
        esc(&page.pipeline),
        esc(&page.store)
    );

    let _ = write!(
        h,
        "<section id=\"dag\"><h2>Pipeline</h2><p class=\"meta\">green: built; orange: not built yet; blue: source data.</p><div class=\"dag\">{}</div></section>",
        page.dag_svg
    );

    h.push_str("<section id=\"metrics\"><h2>Metrics</h2>");
    table(&mut h, "metrics", page.metrics_head, page.metrics_body, 5);
    h.push_str("</section>");

    models_section(&mut h, page.evals);
    timeline_section(&mut h, page.evals);

    for e in page.evals {
        target_section(&mut h, e);
    }
    h.push_str("</body></html>\n");
    h
}

/// An HTML table; columns from `numeric_from` on are right-aligned numbers.
fn table(h: &mut String, class: &str, head: &[String], body: &[Vec<String>], numeric_from: usize) {
    let _ = write!(h, "<table class=\"{class}\"><thead><tr>");
    for c in head {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr></thead><tbody>");
    for row in body {
        h.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let cls = if i >= numeric_from {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(h, "<td{cls}>{}</td>", esc(c));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
}

/// Every distinct path of every realized closure, in first-seen order.
fn all_paths(evals: &[EvalReport]) -> Vec<&PathReport> {
    let mut seen = BTreeSet::new();
    evals
        .iter()
        .flat_map(|e| e.closure.iter())
        .filter(|p| seen.insert(p.path.as_str()))
        .collect()
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Parameter counts and checkpoint sizes, each student against the teacher of the same
/// dataset and stage (targets are `{variant}-{dataset}-{stage}`).
fn models_section(h: &mut String, evals: &[EvalReport]) {
    let models: Vec<(&str, u64, u64)> = all_paths(evals)
        .into_iter()
        .filter_map(|p| {
            p.model
                .as_ref()
                .map(|m| (p.target.as_str(), m.params, m.bytes))
        })
        .collect();
    if models.is_empty() {
        return;
    }
    let teacher: BTreeMap<&str, u64> = models
        .iter()
        .filter_map(|(t, params, _)| t.strip_prefix("teacher-").map(|rest| (rest, *params)))
        .collect();
    let body: Vec<Vec<String>> = models
        .iter()
        .map(|(t, params, bytes)| {
            let rest = t.split_once('-').map_or("", |(_, r)| r);
            let share = teacher
                .get(rest)
                .map(|tp| format!("{:.2}%", 100.0 * *params as f64 / (*tp).max(1) as f64))
                .unwrap_or_default();
            vec![t.to_string(), params.to_string(), human(*bytes), share]
        })
        .collect();
    h.push_str("<section id=\"models\"><h2>Models</h2>");
    let head: Vec<String> = ["model", "parameters", "checkpoint", "of its teacher"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    table(h, "models", &head, &body, 1);
    h.push_str("</section>");
}

fn timeline_section(h: &mut String, evals: &[EvalReport]) {
    let mut spans: Vec<Span> = all_paths(evals)
        .into_iter()
        .filter_map(|p| {
            let b = p.build.as_ref()?;
            let lane = match (&b.job_id, &b.host) {
                (Some(j), Some(host)) => format!("{} job {j} on {host}", b.executor),
                (_, Some(host)) => format!("{} on {host}", b.executor),
                _ => b.executor.clone(),
            };
            Some(Span {
                label: p.target.clone(),
                lane,
                start: b.started_at,
                end: b.ended_at.unwrap_or(b.started_at),
            })
        })
        .collect();
    if spans.is_empty() {
        return;
    }
    spans.sort_by_key(|s| (s.start, s.end));
    let _ = write!(
        h,
        "<section id=\"timeline\"><h2>Build timeline</h2>{}</section>",
        svg::timeline(&spans)
    );
}

fn fmt_ms(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

fn target_section(h: &mut String, e: &EvalReport) {
    let _ = write!(
        h,
        "<section class=\"target\" id=\"t-{}\"><h2>{}</h2>",
        esc(&e.target),
        esc(&e.target)
    );
    let Some(me) = &e.path else {
        h.push_str("<p class=\"note\">not realized in this store</p></section>");
        return;
    };
    let _ = write!(h, "<p>store path <code>{}</code></p>", esc(&me.path));

    // Provenance of everything it was built from.
    let head: Vec<String> = [
        "target",
        "derivation",
        "code digest",
        "executor / host / job",
        "started",
        "wall time",
        "peak memory",
        "inputs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let body: Vec<Vec<String>> = e
        .closure
        .iter()
        .map(|p| {
            let b = p.build.as_ref();
            let inputs = p
                .references
                .iter()
                .map(|(name, path)| format!("{name}: {path}"))
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                p.target.clone(),
                p.drv_hash.clone(),
                b.and_then(|b| b.code_digest.clone())
                    .map(|d| d.chars().take(16).collect())
                    .unwrap_or_else(|| "(command)".into()),
                b.map(|b| {
                    let mut s = b.executor.clone();
                    if let Some(host) = &b.host {
                        s.push_str(&format!(" / {host}"));
                    }
                    if let Some(j) = &b.job_id {
                        s.push_str(&format!(" / job {j}"));
                    }
                    s
                })
                .unwrap_or_default(),
                b.map(|b| fmt_ms(b.started_at)).unwrap_or_default(),
                b.and_then(|b| {
                    b.ended_at
                        .map(|end| format!("{:.1} s", (end - b.started_at) as f64 / 1000.0))
                })
                .unwrap_or_default(),
                b.and_then(|b| b.peak_rss_kb)
                    .map(|kb| human(kb.max(0) as u64 * 1024))
                    .unwrap_or_default(),
                inputs,
            ]
        })
        .collect();
    h.push_str("<h3>Provenance</h3>");
    table(h, "provenance", &head, &body, 99);

    // Training curves of every training stage in the closure.
    let curves: Vec<String> = e
        .closure
        .iter()
        .filter(|p| !p.train_log.is_empty())
        .map(|p| {
            let pick = |f: fn(&super::LogRow) -> Option<f64>| -> Vec<(f64, f64)> {
                p.train_log
                    .iter()
                    .filter_map(|r| f(r).map(|v| (r.step, v)))
                    .collect()
            };
            let mut series = vec![Series {
                name: "train loss".into(),
                points: pick(|r| r.train_loss),
            }];
            let val = pick(|r| r.val_loss);
            if !val.is_empty() {
                series.push(Series {
                    name: "val loss".into(),
                    points: val,
                });
            }
            let crit = pick(|r| r.criterion);
            let mut out = figure(
                &svg::line_chart(
                    &format!("{} loss", p.target),
                    "epoch",
                    "loss",
                    &series,
                    false,
                ),
                &p.target,
            );
            if !crit.is_empty() {
                out.push_str(&figure(
                    &svg::line_chart(
                        &format!("{} validation criterion", p.target),
                        "epoch",
                        "criterion",
                        &[Series {
                            name: String::new(),
                            points: crit,
                        }],
                        false,
                    ),
                    "validation criterion per epoch",
                ));
            }
            out
        })
        .collect();
    if !curves.is_empty() {
        let _ = write!(
            h,
            "<h3>Training</h3><div class=\"plots\">{}</div>",
            curves.concat()
        );
    }

    // ROC and precision–recall curves, from the evaluation's curves.json.
    if let Some(Value::Object(models)) = e.curves.as_ref().and_then(|c| c.get("models")) {
        let mut roc: BTreeMap<String, Vec<Series>> = BTreeMap::new();
        let mut pr: BTreeMap<String, Vec<Series>> = BTreeMap::new();
        for (model, splits) in models {
            let Value::Object(splits) = splits else {
                continue;
            };
            for (split, c) in splits {
                let pts = |k: &str| -> Vec<(f64, f64)> {
                    c.get(k)
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                roc.entry(split.clone()).or_default().push(Series {
                    name: model.clone(),
                    points: pts("roc"),
                });
                pr.entry(split.clone()).or_default().push(Series {
                    name: model.clone(),
                    points: pts("pr"),
                });
            }
        }
        let mut figs = String::new();
        for (split, series) in &roc {
            figs.push_str(&figure(
                &svg::line_chart(
                    &format!("ROC, {split}"),
                    "false positive rate",
                    "true positive rate",
                    series,
                    true,
                ),
                &format!("ROC curves on {split}"),
            ));
            if let Some(s) = pr.get(split) {
                figs.push_str(&figure(
                    &svg::line_chart(
                        &format!("precision-recall, {split}"),
                        "recall",
                        "precision",
                        s,
                        true,
                    ),
                    &format!("precision-recall curves on {split}"),
                ));
            }
        }
        if !figs.is_empty() {
            let _ = write!(
                h,
                "<h3>ROC and precision-recall</h3><div class=\"plots\">{figs}</div>"
            );
        }
    }

    // Confusion matrices from metrics.json.
    if let Some(Value::Object(models)) = e.metrics.as_ref().and_then(|m| m.get("models")) {
        let mut figs = String::new();
        for (model, splits) in models {
            let Value::Object(splits) = splits else {
                continue;
            };
            for (split, m) in splits {
                let Some(cm) = m.get("confusion_matrix").and_then(|c| {
                    let g = |r: usize, c2: usize| c.get(r)?.get(c2)?.as_u64();
                    Some([[g(0, 0)?, g(0, 1)?], [g(1, 0)?, g(1, 1)?]])
                }) else {
                    continue;
                };
                figs.push_str(&figure(
                    &svg::confusion_matrix(&format!("{model}, {split}"), cm),
                    &format!("{model} on {split}"),
                ));
            }
        }
        if !figs.is_empty() {
            let _ = write!(
                h,
                "<h3>Confusion matrices</h3><div class=\"plots\">{figs}</div>"
            );
        }
    }
    h.push_str("</section>");
}

fn figure(svg: &str, caption: &str) -> String {
    format!(
        "<figure>{svg}<figcaption>{}</figcaption></figure>",
        esc(caption)
    )
}
