//! All terminal output: a progress bar on a terminal, plain lines otherwise, JSON on request.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::realize::{Outcome, Reporter};

/// Whether stderr is a terminal (progress bars) or not (plain lines).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Prints a JSON value on stdout.
pub fn print_json(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
}

/// Reports a realize: a bar with done / running / failed / total and the running targets on a
/// terminal, one line per event otherwise.
pub struct RealizeReporter {
    bar: Option<ProgressBar>,
    total: usize,
    done: usize,
    failed: usize,
    running: Vec<String>,
}

impl RealizeReporter {
    pub fn new() -> Self {
        RealizeReporter {
            bar: None,
            total: 0,
            done: 0,
            failed: 0,
            running: Vec::new(),
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn redraw(&self) {
        if let Some(b) = &self.bar {
            b.set_position(self.done as u64);
            let names = self.running.join(", ");
            b.set_message(format!(
                "{} running, {} failed{}{}",
                self.running.len(),
                self.failed,
                if names.is_empty() { "" } else { ": " },
                names
            ));
        }
    }
}

impl Default for RealizeReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for RealizeReporter {
    fn start(&mut self, total: usize) {
        self.total = total;
        if total == 0 {
            return;
        }
        if stderr_is_terminal() {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} built, {msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            self.bar = Some(bar);
        }
        self.line(&format!(
            "building {total} derivation{}",
            if total == 1 { "" } else { "s" }
        ));
    }

    fn started(&mut self, target: &str) {
        self.running.push(target.to_string());
        if self.bar.is_none() {
            self.line(&format!("building {target}"));
        }
        self.redraw();
    }

    fn submitted(&mut self, target: &str, job_id: &str, after: &[String], adopted: bool) {
        self.running.push(target.to_string());
        let after = if after.is_empty() {
            String::new()
        } else {
            format!(
                " (after job{} {})",
                if after.len() == 1 { "" } else { "s" },
                after.join(", ")
            )
        };
        if adopted {
            self.line(&format!("re-attached to job {job_id} of {target}{after}"));
        } else {
            self.line(&format!("submitted {target} as job {job_id}{after}"));
        }
        self.redraw();
    }

    fn note(&mut self, text: &str) {
        self.line(text);
    }

    fn pause(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    fn finished(&mut self, target: &str, seconds: f64, outcome: &Outcome) {
        self.running.retain(|t| t != target);
        match outcome {
            Outcome::Built => {
                self.done += 1;
                self.line(&format!("built {target} ({seconds:.1} s)"));
            }
            Outcome::AlreadyValid => {
                self.done += 1;
                self.line(&format!("{target} was built by another kdbuild meanwhile"));
            }
            Outcome::Failed { message, log, tail } => {
                self.failed += 1;
                let mut s = format!("FAILED {target}: {message}");
                if !log.as_os_str().is_empty() {
                    s.push_str(&format!("\n  log: {}", log.display()));
                }
                if !tail.is_empty() {
                    s.push_str("\n  last lines of the log:");
                    for l in tail.lines() {
                        s.push_str(&format!("\n    {l}"));
                    }
                }
                self.line(&s);
            }
            Outcome::DependencyFailed(dep) => {
                self.line(&format!("skipped {target}: input {dep} failed"));
            }
            Outcome::Interrupted => self.line(&format!("interrupted {target}")),
            Outcome::Queued { job_id } => {
                self.done += 1;
                self.line(&format!("{target}: job {job_id} is queued or running"));
            }
        }
        self.redraw();
        if self.done + self.failed == self.total
            && let Some(b) = self.bar.take()
        {
            b.finish_and_clear();
        }
    }
}
