//! Per-epoch reporting and `train_log.csv`.
//!
//! On a terminal a progress bar (indicatif) shows the epoch, loss and validation metric; builds
//! usually write stderr to a log file, where the same facts appear as one plain line per epoch,
//! which is what `kdbuild log` shows.

use std::fmt::Write as _;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Where progress goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// A bar when stderr is a terminal, plain lines otherwise.
    Auto,
    /// Nothing (tests, benchmarks).
    Silent,
}

/// Progress of one training run.
pub struct Progress {
    label: String,
    total: usize,
    bar: Option<ProgressBar>,
    silent: bool,
}

impl Progress {
    pub fn new(report: Report, label: &str, total: usize) -> Progress {
        let silent = report == Report::Silent;
        let bar = (!silent && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            b
        });
        Progress {
            label: label.to_string(),
            total,
            bar,
            silent,
        }
    }

    /// Reports the end of epoch (or episode) `step` (from 0).
    pub fn step(&self, step: usize, message: &str) {
        if self.silent {
            return;
        }
        match &self.bar {
            Some(b) => {
                b.set_position(step as u64 + 1);
                b.set_message(message.to_string());
            }
            None => eprintln!("{} {}/{} {message}", self.label, step + 1, self.total),
        }
    }

    /// A line outside the per-epoch rhythm (data sizes, early stop, the best epoch).
    pub fn note(&self, message: &str) {
        if self.silent {
            return;
        }
        match &self.bar {
            Some(b) => b.println(format!("{} {message}", self.label)),
            None => eprintln!("{} {message}", self.label),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// One row of `train_log.csv` (spec §5.1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRow {
    pub stage: &'static str,
    pub step: usize,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub criterion: Option<f64>,
    pub best: bool,
    pub ratio: Option<f64>,
    pub percentile: Option<f64>,
    pub epsilon: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
}

/// `train_log.csv`: header `stage,step,train_loss,val_loss,criterion,best,ratio,percentile,
/// epsilon,lr,seconds`; an absent value is an empty cell.
#[derive(Clone, Debug, Default)]
pub struct TrainLog {
    pub rows: Vec<LogRow>,
}

pub const TRAIN_LOG_HEADER: &str =
    "stage,step,train_loss,val_loss,criterion,best,ratio,percentile,epsilon,lr,seconds";

impl TrainLog {
    pub fn push(&mut self, row: LogRow) {
        self.rows.push(row);
    }

    pub fn to_csv(&self) -> String {
        let f = |v: Option<f64>| v.map(|x| format!("{x:?}")).unwrap_or_default();
        let mut s = String::from(TRAIN_LOG_HEADER);
        s.push('\n');
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{:?},{:.3}",
                r.stage,
                r.step,
                f(r.train_loss),
                f(r.val_loss),
                f(r.criterion),
                r.best as u8,
                f(r.ratio),
                f(r.percentile),
                f(r.epsilon),
                r.lr,
                r.seconds
            );
        }
        s
    }
}

/// `0.1234` or `-` for a missing value, for progress lines.
pub fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}
