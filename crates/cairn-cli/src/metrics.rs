//! Prometheus metrics of configured jobs, made from the jobs' state files:
//! served by `cairn schedule --metrics-listen` and written as a
//! node_exporter textfile after every `cairn run`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::jobs::{JobState, read_state};

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(time: Option<&str>) -> Option<f64> {
    let time = cairn_core::snapshot::parse_rfc3339(time?).ok()?;
    time.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// One metric family: help, type and one sample per job that has a value.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    value: fn(&JobState) -> Option<f64>,
}

const FAMILIES: &[Family<'static>] = &[
    Family {
        name: "cairn_job_last_run_timestamp_seconds",
        help: "Start of the job's last run.",
        kind: "gauge",
        value: |s| seconds(s.last_start.as_deref()),
    },
    Family {
        name: "cairn_job_last_success_timestamp_seconds",
        help: "End of the job's last successful run; 0 when the job ran but never succeeded.",
        kind: "gauge",
        value: |s| seconds(s.last_success.as_deref()).or(s.last_start.as_ref().map(|_| 0.0)),
    },
    Family {
        name: "cairn_job_last_run_success",
        help: "1 if the job's last run succeeded, 0 if it failed.",
        kind: "gauge",
        value: |s| {
            s.last_outcome
                .as_deref()
                .map(|o| f64::from(u8::from(o == "success")))
        },
    },
    Family {
        name: "cairn_job_last_run_duration_seconds",
        help: "Wall-clock duration of the job's last run.",
        kind: "gauge",
        value: |s| s.last_finish.as_ref().map(|_| s.last_duration_secs),
    },
    Family {
        name: "cairn_job_runs_total",
        help: "Runs of the job.",
        kind: "counter",
        value: |s| Some(s.runs_total as f64),
    },
    Family {
        name: "cairn_job_failures_total",
        help: "Failed runs of the job.",
        kind: "counter",
        value: |s| Some(s.failures_total as f64),
    },
    Family {
        name: "cairn_job_last_backup_read_bytes",
        help: "Bytes the last successful backup read.",
        kind: "gauge",
        value: |s| s.last_snapshot.as_ref().map(|_| s.bytes_read as f64),
    },
    Family {
        name: "cairn_job_last_backup_added_bytes",
        help: "Bytes the last successful backup added to the repository.",
        kind: "gauge",
        value: |s| s.last_snapshot.as_ref().map(|_| s.bytes_added as f64),
    },
    Family {
        name: "cairn_job_last_backup_dedup_ratio",
        help: "Bytes read per byte of new chunks in the last successful backup (0 when nothing was new).",
        kind: "gauge",
        value: |s| s.last_snapshot.as_ref().map(|_| s.dedup_ratio),
    },
    Family {
        name: "cairn_repository_stored_bytes",
        help: "Bytes stored in the job's repository.",
        kind: "gauge",
        value: |s| s.repository.as_ref().map(|r| r.stored_bytes as f64),
    },
    Family {
        name: "cairn_repository_snapshots",
        help: "Snapshots in the job's repository.",
        kind: "gauge",
        value: |s| s.repository.as_ref().map(|r| r.snapshots as f64),
    },
    Family {
        name: "cairn_job_snapshots",
        help: "Snapshots made by the job that are kept.",
        kind: "gauge",
        value: |s| s.repository.as_ref().map(|r| r.job_snapshots as f64),
    },
    Family {
        name: "cairn_job_oldest_snapshot_timestamp_seconds",
        help: "Start time of the job's oldest kept snapshot.",
        kind: "gauge",
        value: |s| {
            s.repository
                .as_ref()
                .and_then(|r| seconds(r.oldest.as_deref()))
        },
    },
    Family {
        name: "cairn_job_newest_snapshot_timestamp_seconds",
        help: "Start time of the job's newest snapshot.",
        kind: "gauge",
        value: |s| {
            s.repository
                .as_ref()
                .and_then(|r| seconds(r.newest.as_deref()))
        },
    },
    Family {
        name: "cairn_job_last_check_success",
        help: "1 if the last check of a subset found no problem.",
        kind: "gauge",
        value: |s| s.check.as_ref().map(|c| f64::from(u8::from(c.ok))),
    },
    Family {
        name: "cairn_job_last_check_timestamp_seconds",
        help: "End of the last check of a subset.",
        kind: "gauge",
        value: |s| s.check.as_ref().and_then(|c| seconds(Some(&c.time))),
    },
    Family {
        name: "cairn_job_last_drill_success",
        help: "1 if the last restore drill passed.",
        kind: "gauge",
        value: |s| s.drill.as_ref().map(|d| f64::from(u8::from(d.ok))),
    },
    Family {
        name: "cairn_job_last_drill_timestamp_seconds",
        help: "End of the last restore drill.",
        kind: "gauge",
        value: |s| s.drill.as_ref().and_then(|d| seconds(Some(&d.time))),
    },
    Family {
        name: "cairn_job_last_drill_duration_seconds",
        help: "Wall-clock duration of the last restore drill.",
        kind: "gauge",
        value: |s| s.drill.as_ref().map(|d| d.duration_secs),
    },
];

/// Renders the metrics of `jobs`, pairs of job and repository names, from
/// their state files in `state_dir`. The job is labelled `cairn_job`,
/// because Prometheus keeps the label `job` for the scrape job.
pub fn render_jobs(state_dir: &Path, jobs: &[(String, String)]) -> String {
    let states: Vec<(JobState, &str)> = jobs
        .iter()
        .map(|(job, repository)| (read_state(state_dir, job), repository.as_str()))
        .collect();
    let mut out = String::new();
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (state, repository) in &states {
            if let Some(value) = (family.value)(state) {
                let _ = writeln!(
                    out,
                    "{}{{cairn_job=\"{}\",repository=\"{}\"}} {value}",
                    family.name,
                    escape(&state.job),
                    escape(repository)
                );
            }
        }
    }
    out
}

/// Writes a textfile for node_exporter's textfile collector, through a
/// temporary file and a rename so the collector never reads half a file.
/// The file is readable by everyone (mode 0644), because node_exporter runs
/// as its own user and the metrics hold no secret.
pub fn write_textfile(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let temporary = path.with_extension("prom.tmp");
    std::fs::write(&temporary, text)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot make {} readable", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| {
        format!(
            "cannot rename {} to {}",
            temporary.display(),
            path.display()
        )
    })
}
