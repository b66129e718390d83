//! `cairn run`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::GlobalArgs;

/// Arguments of `cairn run`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cairn run nightly\n  \
    cairn run --all --config /etc/cairn/cairn.toml\n\n\
A run does, in order: the backup, forget and prune (with a [job.NAME.retention] section), \
a check of a subset ([job.NAME.check]) and a restore drill when one is due \
([job.NAME.drill]). It stops at the first failed step. docs/operations.md describes the \
configuration.")]
pub struct RunArgs {
    /// Job to run.
    #[arg(value_name = "JOB", required_unless_present = "all")]
    pub job: Option<String>,
    /// Run every job of the configuration, one after another.
    #[arg(long, conflicts_with = "job")]
    pub all: bool,
    /// Configuration file [default: CAIRN_CONFIG, then the search path of `cairn config check`].
    #[arg(long, env = "CAIRN_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Runs one job, or all of them; fails when any failed.
pub fn run(global: &GlobalArgs, args: &RunArgs) -> Result<()> {
    if global.repo.is_some() {
        // An explicit --repo is a mistake to report. CAIRN_REPOSITORY is
        // often exported for interactive use; failing on it would stop
        // every scheduled run before any alert is configured to fire.
        let given_as_option = std::env::args_os()
            .any(|arg| arg == "--repo" || arg.to_string_lossy().starts_with("--repo="));
        if given_as_option {
            return Err(cairn_core::Error::Invalid(
                "--repo does not apply to `cairn run`: the job's repository comes from the configuration file".into(),
            )
            .into());
        }
        tracing::warn!(
            "CAIRN_REPOSITORY is ignored by `cairn run`: the job's repository comes from the configuration file"
        );
    }
    let path = crate::config::locate(args.config.as_deref())?;
    let loaded = crate::config::load(&path)?;
    let names: Vec<String> = match &args.job {
        Some(job) => vec![job.clone()],
        None => loaded.config.job.keys().cloned().collect(),
    };
    let report = |name: &str| -> Result<()> {
        let state = crate::jobs::read_state(
            &loaded.state_dir(&crate::jobs::cache_dir_of(&loaded, loaded.job(name)?)?),
            name,
        );
        if global.json {
            super::print_json(&state)
        } else {
            crate::say!(
                "job {name} succeeded in {:.1} s: snapshot {}, read {} bytes, added {} bytes",
                state.last_duration_secs,
                state
                    .last_snapshot
                    .as_deref()
                    .map(|s| &s[..8.min(s.len())])
                    .unwrap_or("-"),
                state.bytes_read,
                state.bytes_added
            );
            Ok(())
        }
    };
    if names.len() == 1 {
        crate::jobs::run_job(&loaded, &names[0])?;
        return report(&names[0]);
    }
    let mut first_failure = None;
    for name in &names {
        match crate::jobs::run_job(&loaded, name) {
            Ok(()) => report(name)?,
            Err(e) => {
                eprintln!("cairn: job {name} failed: {e:#}");
                first_failure.get_or_insert(crate::exit_code(&e));
            }
        }
    }
    match first_failure {
        Some(code) => Err(crate::Reported(code).into()),
        None => Ok(()),
    }
}
