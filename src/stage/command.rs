//! The `command` stage kind: runs any program, with its scripts hashed as inputs.
//!
//! The argv's build-time placeholders are filled here: `{out}` (the staging directory, which
//! becomes the store path), `{in.NAME}` (an input's path; `{in.NAME?}` is empty where the input
//! does not exist, which instantiation has already decided), `{script.NAME}` (a script file),
//! `{target}` and `{stage}` (the derivation's names)
//! and `{config.KEY}` (a value of the hashed config: strings as they are, anything else as
//! canonical JSON).
//! The environment is cleared to an allow-list ([`ALLOWED_ENV`]), the stage's own `env` table
//! (hashed) and its `pass_env` names (not hashed), so a build cannot depend on stray variables.

use std::path::Path;
use std::process::Command as Process;

use serde_json::Value;

use super::{BuildContext, StageError, StageKind};
use crate::derivation::{Builder, CodeIdentity};
use crate::hash::ContentHash;
use crate::pipeline::template::{self, Resolve};

/// Variables a command keeps from the caller's environment: what programs need to start
/// (PATH, HOME, locale, time zone, temp dir) and nothing that could change results unseen.
pub const ALLOWED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

/// The `command` stage kind.
pub struct Command;

impl StageKind for Command {
    fn name(&self) -> &'static str {
        "command"
    }

    /// A command's code is its argv (hashed in the builder) and its scripts (hashed as
    /// `scripts`); kdbuild's own sources play no part.
    fn code_identity(&self) -> CodeIdentity {
        CodeIdentity::default()
    }

    fn check(&self, _config: &Value, _inputs: &[&str]) -> Result<(), String> {
        Ok(())
    }

    fn build(&self, ctx: &BuildContext) -> Result<(), StageError> {
        let Builder::Command { argv, env } = &ctx.drv.builder else {
            return Err(StageError::Config(
                "a `command` derivation has no command line".into(),
            ));
        };
        for (name, want) in &ctx.drv.scripts {
            let path = ctx.drv.recorded.script_paths.get(name).ok_or_else(|| {
                StageError::Config(format!("script `{name}` has no recorded path"))
            })?;
            let bytes = std::fs::read(path).map_err(|source| StageError::Io {
                path: path.clone(),
                source,
            })?;
            if ContentHash::from_blake3(blake3::hash(&bytes)) != *want {
                return Err(StageError::Failed(format!(
                    "script `{name}` ({}) changed since the derivation was computed; run `kdbuild realize` again",
                    path.display()
                )));
            }
        }
        let resolve = |n: &str| -> Resolve {
            match n {
                "out" => return Resolve::Value(ctx.out.display().to_string()),
                "target" => return Resolve::Value(ctx.drv.name.clone()),
                "stage" => return Resolve::Value(ctx.drv.stage.clone()),
                _ => {}
            }
            if let Some(i) = n.strip_prefix("in.") {
                return match ctx.inputs.get(i.trim_end_matches('?')) {
                    Some(p) => Resolve::Value(p.display().to_string()),
                    None => Resolve::Unknown,
                };
            }
            if let Some(path) = n.strip_prefix("config.") {
                return match crate::pipeline::load::lookup(&ctx.drv.config, path) {
                    Some(Value::String(s)) => Resolve::Value(s.clone()),
                    Some(v) => Resolve::Value(
                        crate::derivation::canonical::to_string(v).unwrap_or_default(),
                    ),
                    None => Resolve::Unknown,
                };
            }
            if let Some(s) = n.strip_prefix("script.") {
                return match ctx.drv.recorded.script_paths.get(s) {
                    Some(p) => Resolve::Value(p.display().to_string()),
                    None => Resolve::Unknown,
                };
            }
            Resolve::Unknown
        };
        let render = |s: &str| {
            template::render(s, true, resolve).map_err(|e| StageError::Config(e.to_string()))
        };
        let args: Vec<String> = argv.iter().map(|a| render(a)).collect::<Result<_, _>>()?;
        let mut cmd = Process::new(&args[0]);
        cmd.args(&args[1..]).current_dir(ctx.out).env_clear();
        for k in ALLOWED_ENV
            .iter()
            .copied()
            .chain(ctx.drv.recorded.pass_env.iter().map(String::as_str))
        {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in env {
            cmd.env(k, render(v)?);
        }
        cmd.env("KDBUILD_OUT", ctx.out);
        let status = cmd.status().map_err(|source| StageError::Io {
            path: Path::new(&args[0]).to_path_buf(),
            source,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(StageError::CommandFailed(describe_status(status)))
        }
    }
}

/// "exit code 3" or "signal 9 (SIGKILL)".
pub fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".to_string(),
    }
}
