//! Results people can read: metrics tables and diffs (`kdbuild metrics`) and a self-contained
//! HTML report with plots (`kdbuild report`).
//!
//! Both only read the store: the `metrics.json` of realized evaluations, the training logs,
//! checkpoints and curves of everything in their closure, and the build records that say
//! where and when each path was built. Targets not yet realized are listed as such.

pub mod dag;
pub mod html;
pub mod metrics;
pub mod svg;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::store::{BuildRecord, Store, StoreError};

/// What the report knows about one store path of an evaluation's closure.
#[derive(Clone, Debug)]
pub struct PathReport {
    pub target: String,
    /// `<hash>-<target>`.
    pub path: String,
    pub dir: PathBuf,
    pub drv_hash: String,
    pub content_hash: String,
    pub size: u64,
    pub build: Option<BuildRecord>,
    /// (input name, store path) references.
    pub references: Vec<(String, String)>,
    /// The rows of its `train_log.csv`, if it has one.
    pub train_log: Vec<LogRow>,
    /// Parameters and bytes of its `model.safetensors`, if it has one.
    pub model: Option<ModelSize>,
}

/// One row of a stage's `train_log.csv` (spec §5.1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRow {
    pub step: f64,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub criterion: Option<f64>,
}

/// The size of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSize {
    /// Trainable parameters: every tensor but BatchNorm's running statistics.
    pub params: u64,
    pub bytes: u64,
}

/// One evaluation target: realized or not, and if so its metrics, curves and closure.
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub target: String,
    /// `None` when the target is not realized in this store.
    pub path: Option<PathReport>,
    pub metrics: Option<Value>,
    pub curves: Option<Value>,
    /// Its closure over references, the evaluation first.
    pub closure: Vec<PathReport>,
}

/// Reads what the store knows about valid path `p` (`<hash>-<target>`).
pub fn path_report(store: &Store, p: &str) -> Result<Option<PathReport>, StoreError> {
    let db_err = |e| StoreError::db(store.root(), e);
    let Some(info) = store.db.path_info(p).map_err(db_err)? else {
        return Ok(None);
    };
    let build = match info.build_id {
        Some(id) => store.db.build(id).map_err(db_err)?,
        None => None,
    };
    let dir = store.root().join(p);
    Ok(Some(PathReport {
        target: info.target.clone(),
        path: info.path.clone(),
        drv_hash: info.drv_hash.clone(),
        content_hash: info.content_hash.to_string(),
        size: info.size,
        build,
        references: store
            .db
            .references(p)
            .map_err(db_err)?
            .into_iter()
            .map(|(r, reason)| (reason, r))
            .collect(),
        train_log: read_train_log(&dir.join("train_log.csv")),
        model: model_size(&dir.join("model.safetensors")),
        dir,
    }))
}

/// The closure of `root` over references, `root` first, then breadth-first.
pub fn closure(store: &Store, root: &str) -> Result<Vec<PathReport>, StoreError> {
    let mut seen = BTreeSet::new();
    let mut queue = std::collections::VecDeque::from([root.to_string()]);
    let mut out = Vec::new();
    while let Some(p) = queue.pop_front() {
        if !seen.insert(p.clone()) {
            continue;
        }
        if let Some(r) = path_report(store, &p)? {
            queue.extend(r.references.iter().map(|(_, q)| q.clone()));
            out.push(r);
        }
    }
    Ok(out)
}

/// Reads a JSON file; `None` if absent or unreadable.
pub fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Parses `train_log.csv` by its header (unknown columns ignored, empty cells null).
pub fn read_train_log(path: &Path) -> Vec<LogRow> {
    let Ok(mut rdr) = csv::Reader::from_path(path) else {
        return Vec::new();
    };
    let Ok(headers) = rdr.headers().cloned() else {
        return Vec::new();
    };
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (step, tl, vl, cr) = (
        col("step"),
        col("train_loss"),
        col("val_loss"),
        col("criterion"),
    );
    let num = |rec: &csv::StringRecord, i: Option<usize>| -> Option<f64> {
        i.and_then(|i| rec.get(i))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    rdr.records()
        .filter_map(Result::ok)
        .enumerate()
        .map(|(i, rec)| LogRow {
            step: num(&rec, step).unwrap_or(i as f64),
            train_loss: num(&rec, tl),
            val_loss: num(&rec, vl),
            criterion: num(&rec, cr),
        })
        .collect()
}

/// Parameters and bytes of a safetensors checkpoint, from its header alone.
pub fn model_size(path: &Path) -> Option<ModelSize> {
    let bytes = std::fs::read(path).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    let params = meta
        .tensors()
        .iter()
        .filter(|(name, _)| {
            !(name.contains("running_mean")
                || name.contains("running_var")
                || name.contains("num_batches_tracked"))
        })
        .map(|(_, info)| info.shape.iter().product::<usize>() as u64)
        .sum();
    Some(ModelSize {
        params,
        bytes: bytes.len() as u64,
    })
}

/// Reads an evaluation target's report from its store path (`None`: not realized).
pub fn eval_report(
    store: &Store,
    target: &str,
    path: Option<&str>,
) -> Result<EvalReport, StoreError> {
    let Some(p) = path else {
        return Ok(EvalReport {
            target: target.to_string(),
            path: None,
            metrics: None,
            curves: None,
            closure: Vec::new(),
        });
    };
    let closure = closure(store, p)?;
    let me = closure.first().cloned();
    Ok(EvalReport {
        target: target.to_string(),
        metrics: me
            .as_ref()
            .and_then(|m| read_json(&m.dir.join("metrics.json"))),
        curves: me
            .as_ref()
            .and_then(|m| read_json(&m.dir.join("curves.json"))),
        path: me,
        closure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_logs_parse_by_header() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("train_log.csv");
        std::fs::write(
            &p,
            "stage,step,train_loss,val_loss,criterion,best,ratio,percentile,epsilon,lr,seconds\n\
             gat,0,0.7,0.6,0.5,1,,,,0.003,1.2\ngat,1,0.4,,0.8,1,,,,0.003,1.1\n",
        )
        .unwrap();
        let rows = read_train_log(&p);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1],
            LogRow {
                step: 1.0,
                train_loss: Some(0.4),
                val_loss: None,
                criterion: Some(0.8)
            }
        );
    }
}
