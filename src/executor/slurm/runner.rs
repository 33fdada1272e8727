//! Running SLURM's client commands (`sbatch`, `squeue`, `sacct`, `scancel`, `scontrol`)
//! behind a trait, so that the parsing of their output is unit-tested against recorded
//! outputs while the integration tests drive the real commands on a real cluster.

use std::io;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// What a command printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CmdOutput {
    /// The exit code; -1 if it was killed by a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn ok(stdout: &str) -> CmdOutput {
        CmdOutput {
            status: 0,
            stdout: stdout.to_string(),
            stderr: String::new(),
        }
    }

    pub fn failed(status: i32, stderr: &str) -> CmdOutput {
        CmdOutput {
            status,
            stdout: String::new(),
            stderr: stderr.to_string(),
        }
    }
}

/// Runs a program with arguments and returns its output. `Err` only when it could not be
/// started at all (not on PATH): a non-zero exit is an `Ok` with that status.
pub trait CommandRunner: Send + Sync {
    fn run(&self, program: &str, args: &[String]) -> io::Result<CmdOutput>;
}

/// The real thing: child processes, stdin closed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, program: &str, args: &[String]) -> io::Result<CmdOutput> {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        Ok(CmdOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A runner that answers from recorded outputs, by program name, and remembers each call
/// (to check, e.g., that one poll is one `squeue` call whatever the number of jobs).
#[derive(Debug, Default)]
pub struct RecordedRunner {
    /// (program, output), answered in order per program; the last one repeats.
    answers: Mutex<Vec<(String, Vec<CmdOutput>)>>,
    calls: Mutex<Vec<(String, Vec<String>)>>,
}

impl RecordedRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an answer for `program` (answers for one program are given in order).
    pub fn answer(self, program: &str, out: CmdOutput) -> Self {
        {
            let mut a = self.answers.lock().expect("answers");
            match a.iter_mut().find(|(p, _)| p == program) {
                Some((_, outs)) => outs.push(out),
                None => a.push((program.to_string(), vec![out])),
            }
        }
        self
    }

    /// Every call so far: (program, args).
    pub fn calls(&self) -> Vec<(String, Vec<String>)> {
        self.calls.lock().expect("calls").clone()
    }

    /// How many times `program` was run.
    pub fn count(&self, program: &str) -> usize {
        self.calls().iter().filter(|(p, _)| p == program).count()
    }
}

impl CommandRunner for RecordedRunner {
    fn run(&self, program: &str, args: &[String]) -> io::Result<CmdOutput> {
        self.calls
            .lock()
            .expect("calls")
            .push((program.to_string(), args.to_vec()));
        let mut a = self.answers.lock().expect("answers");
        match a.iter_mut().find(|(p, _)| p == program) {
            Some((_, outs)) if outs.len() > 1 => Ok(outs.remove(0)),
            Some((_, outs)) => Ok(outs[0].clone()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{program}: not recorded"),
            )),
        }
    }
}
