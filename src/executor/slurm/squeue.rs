//! `squeue`: the states of many jobs in one call.
//!
//! `squeue --states=all --jobs=1,2,3` lists each job slurmctld still remembers (finished jobs
//! for `MinJobAge` seconds, 300 by default), in one line per job: id, state, reason, time
//! used, nodes. Ids it no longer knows are left out silently (SLURM 22.05; older versions
//! fail with "Invalid job id specified" when none of the ids is known, which is read as "none
//! known"). A job missing here has ended long ago: ask `sacct` or the jobcomp file.

use super::{JobState, JobStatus};

/// squeue's output format: `|`-separated, one job per line.
pub const FORMAT: &str = "%i|%T|%r|%M|%N";

/// The arguments of one `squeue` call for `ids`.
pub fn args(ids: &[String]) -> Vec<String> {
    vec![
        "--noheader".into(),
        "--states=all".into(),
        format!("--jobs={}", ids.join(",")),
        format!("--format={FORMAT}"),
    ]
}

/// Whether a failed `squeue` call only means "none of these ids is known any more".
pub fn means_none_known(stderr: &str) -> bool {
    stderr.contains("Invalid job id")
}

/// Parses `squeue --format=FORMAT` output into (job id, status). Lines that do not parse are
/// skipped (a warning a site prints, for instance).
pub fn parse(stdout: &str) -> Vec<(String, JobStatus)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut f = line.trim().split('|');
            let id = f.next()?.trim();
            let state = f.next()?.trim();
            if id.is_empty() || state.is_empty() || !id.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            let reason = f
                .next()
                .map(str::trim)
                .filter(|r| !r.is_empty() && *r != "None");
            let elapsed = f.next().map(str::trim).filter(|s| !s.is_empty());
            let nodes = f.next().map(str::trim).filter(|s| !s.is_empty());
            Some((
                id.to_string(),
                JobStatus {
                    state: JobState::parse(state),
                    reason: reason.map(str::to_string),
                    exit_code: None,
                    elapsed: elapsed.map(str::to_string),
                    nodes: nodes.map(str::to_string),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from slurm-wlm 22.05.8 (`scripts/slurm-cluster.sh`): a failed job, the
    /// dependent SLURM killed because of it, a completed job and one still waiting.
    const RECORDED: &str = "\
4|COMPLETED|None|0:01|vm
3|CANCELLED|DependencyNeverSatisfied|0:00|
5|PENDING|Dependency|0:00|
2|FAILED|NonZeroExitCode|0:02|vm
7|OUT_OF_MEMORY|OutOfMemory|0:01|vm
8|TIMEOUT|TimeLimit|1:31|vm
9|RUNNING|None|0:12|vm
";

    #[test]
    fn parses_recorded_output() {
        let v = parse(RECORDED);
        assert_eq!(v.len(), 7);
        let get = |id: &str| v.iter().find(|(i, _)| i == id).unwrap().1.clone();
        assert_eq!(get("4").state, JobState::Completed);
        assert_eq!(get("4").reason, None);
        assert_eq!(get("4").nodes.as_deref(), Some("vm"));
        assert_eq!(get("3").state, JobState::Cancelled);
        assert_eq!(get("3").reason.as_deref(), Some("DependencyNeverSatisfied"));
        assert_eq!(get("5").state, JobState::Pending);
        assert!(!get("5").state.is_terminal());
        assert_eq!(get("2").state, JobState::Failed);
        assert_eq!(get("7").state, JobState::OutOfMemory);
        assert_eq!(get("8").state, JobState::Timeout);
        assert_eq!(get("8").elapsed.as_deref(), Some("1:31"));
        assert_eq!(get("9").state, JobState::Running);
    }

    #[test]
    fn skips_noise_and_empty_output() {
        assert!(parse("").is_empty());
        let v = parse("squeue: warning: something\n12|RUNNING|None|0:01|n1\n\n");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "12");
    }

    #[test]
    fn one_call_names_every_job() {
        let a = args(&["1".into(), "22".into(), "333".into()]);
        assert!(a.contains(&"--jobs=1,22,333".to_string()), "{a:?}");
        assert!(a.contains(&"--states=all".to_string()));
        assert!(means_none_known(
            "slurm_load_jobs error: Invalid job id specified"
        ));
    }
}
