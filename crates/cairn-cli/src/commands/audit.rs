//! `cairn audit`.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::GlobalArgs;

/// Arguments of `cairn audit`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cairn audit --since 7d\n  \
    cairn audit --command prune --json\n  \
    cairn audit --failed --job nightly\n\n\
Every backup, restore, check, forget, prune, unlock, repair, key change and `cairn pg` \
command appends a record. The records are encrypted and hash-chained in the repository, \
so `cairn check` reports a record that was edited or deleted.")]
pub struct AuditArgs {
    /// Only records newer than this: an RFC 3339 time, or a duration such as 7d or 12h.
    #[arg(long, value_name = "TIME|DURATION")]
    pub since: Option<String>,
    /// Only records of this command, such as backup, restore or "pg verify";
    /// backup also matches "pg backup", and restore "pg restore".
    #[arg(long, value_name = "COMMAND")]
    pub command: Option<String>,
    /// Only records of this configured job.
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Only failed operations.
    #[arg(long)]
    pub failed: bool,
    /// Only records that name this snapshot (an id prefix).
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Show at most the N newest matching records.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

#[derive(Serialize)]
struct Row<'a> {
    id: String,
    #[serde(flatten)]
    record: &'a cairn_core::audit::AuditRecord,
}

fn parse_since(text: &str) -> Result<String> {
    if let Ok(time) = cairn_core::snapshot::parse_rfc3339(text) {
        return Ok(cairn_core::snapshot::format_rfc3339(time));
    }
    let duration = humantime::parse_duration(text).map_err(|_| {
        cairn_core::Error::Invalid(format!(
            "--since {text:?} is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor a duration (7d, 12h)"
        ))
    })?;
    let time = std::time::SystemTime::now()
        .checked_sub(duration)
        .unwrap_or(std::time::UNIX_EPOCH);
    Ok(cairn_core::snapshot::format_rfc3339(time))
}

/// Lists audit records, oldest first.
pub fn run(global: &GlobalArgs, args: &AuditArgs) -> Result<()> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    const COMMANDS: [&str; 12] = [
        "init",
        "backup",
        "restore",
        "check",
        "forget",
        "prune",
        "unlock",
        "repair",
        "key",
        "pg backup",
        "pg restore",
        "pg verify",
    ];
    if let Some(command) = &args.command
        && !COMMANDS.contains(&command.as_str())
    {
        return Err(cairn_core::Error::Invalid(format!(
            "--command {command:?} is not a recorded command; use one of: {}",
            COMMANDS.join(", ")
        ))
        .into());
    }
    let repository = super::open_repository(global)?;
    let records = repository.index.audit_records()?;
    let mut selected: Vec<_> = records
        .iter()
        .filter(|(_, r)| since.as_ref().is_none_or(|since| r.time >= *since))
        .filter(|(_, r)| {
            args.command.as_ref().is_none_or(|c| {
                r.command == *c || r.command.strip_prefix("pg ") == Some(c.as_str())
            })
        })
        .filter(|(_, r)| args.job.as_ref().is_none_or(|j| r.job.as_ref() == Some(j)))
        .filter(|(_, r)| !args.failed || r.outcome != "success")
        .filter(|(_, r)| {
            args.snapshot
                .as_ref()
                .is_none_or(|prefix| r.snapshots.iter().any(|s| s.starts_with(prefix.as_str())))
        })
        .collect();
    if let Some(last) = args.last {
        let skip = selected.len().saturating_sub(last);
        selected.drain(..skip);
    }
    if global.json {
        let rows: Vec<Row<'_>> = selected
            .iter()
            .map(|(id, record)| Row {
                id: id.to_hex(),
                record,
            })
            .collect();
        return super::print_json(&rows);
    }
    if selected.is_empty() {
        crate::say!("no audit records match");
        return Ok(());
    }
    crate::say!(
        "{:<20} {:<12} {:<16} {:<14} {:<8} SNAPSHOTS / ERROR",
        "TIME (UTC)",
        "COMMAND",
        "USER@HOST",
        "JOB",
        "OUTCOME"
    );
    for (_, record) in &selected {
        let time: String = record
            .time
            .chars()
            .take(19)
            .collect::<String>()
            .replace('T', " ");
        let detail = match &record.error {
            Some(error) => error.lines().next().unwrap_or_default().to_string(),
            None => record
                .snapshots
                .iter()
                .map(|s| s.chars().take(8).collect::<String>())
                .collect::<Vec<_>>()
                .join(","),
        };
        crate::say!(
            "{:<20} {:<12} {:<16} {:<14} {:<8} {}",
            time,
            record.command,
            format!("{}@{}", record.user, record.host),
            record.job.as_deref().unwrap_or("-"),
            record.outcome,
            detail
        );
    }
    Ok(())
}
