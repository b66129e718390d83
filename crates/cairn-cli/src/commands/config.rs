//! `cairn config check`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::GlobalArgs;

/// Arguments of `cairn config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The config command.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// Config commands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration file and show the jobs and their next runs.
    Check(ConfigCheckArgs),
}

/// Arguments of `cairn config check`.
#[derive(Args, Debug)]
pub struct ConfigCheckArgs {
    /// Configuration file [default: CAIRN_CONFIG, then
    /// $XDG_CONFIG_HOME/cairn/cairn.toml, ~/.config/cairn/cairn.toml, /etc/cairn/cairn.toml].
    #[arg(long, env = "CAIRN_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Runs a `cairn config` command.
pub fn run(global: &GlobalArgs, args: &ConfigArgs) -> Result<()> {
    match &args.command {
        ConfigCommand::Check(args) => check(global, args),
    }
}

fn check(global: &GlobalArgs, args: &ConfigCheckArgs) -> Result<()> {
    let path = crate::config::locate(args.config.as_deref())?;
    let loaded = crate::config::load(&path)?;
    let warnings: Vec<String> = loaded
        .validate()
        .into_iter()
        .filter(|p| p.warning)
        .map(|p| p.to_string())
        .collect();
    let tz = jiff::tz::TimeZone::system();
    let now = jiff::Timestamp::now();
    let jobs: Vec<serde_json::Value> = loaded
        .config
        .job
        .iter()
        .map(|(name, job)| {
            let schedule = loaded.schedule_of(job);
            serde_json::json!({
                "job": name,
                "repository": loaded.repository_of(job).map(|(r, _)| r.to_string()).unwrap_or_default(),
                "schedule": schedule.as_ref().map(|s| s.describe()),
                "next_run": schedule
                    .and_then(|s| s.next_after(now, None, &tz))
                    .map(|t| t.to_zoned(tz.clone()).to_string()),
            })
        })
        .collect();
    if global.json {
        return super::print_json(&serde_json::json!({
            "path": path.display().to_string(),
            "valid": true,
            "warnings": warnings,
            "jobs": jobs,
        }));
    }
    if warnings.is_empty() {
        crate::say!("{}: valid", path.display());
    } else {
        crate::say!(
            "{}: valid, with {} warning(s):",
            path.display(),
            warnings.len()
        );
        for warning in &warnings {
            crate::say!("  warning: {warning}");
        }
    }
    for job in &jobs {
        crate::say!(
            "  job {}: repository {}, {}{}",
            job["job"].as_str().unwrap_or_default(),
            job["repository"].as_str().unwrap_or_default(),
            job["schedule"]
                .as_str()
                .unwrap_or("no schedule (run with `cairn run`)"),
            job["next_run"]
                .as_str()
                .map(|t| format!(", next run {t}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
