//! `cairn snapshots`.

use std::collections::HashMap;

use anyhow::Result;
use cairn_core::pg::drill::{DrillRecord, read_records};
use clap::Args;
use indicatif::HumanBytes;
use serde::Serialize;

use crate::GlobalArgs;

/// Arguments of `cairn snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {}

#[derive(Serialize)]
struct EntryRow<'a> {
    name: &'a str,
    size: u64,
    /// Format 1 snapshots: keyed hash of the whole stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
    /// Format 2 snapshots: keyed hash of the chunk sequence; equal streams
    /// have equal sequence hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_hash: Option<&'a str>,
}

#[derive(Serialize)]
struct SnapshotRow<'a> {
    id: String,
    time: &'a str,
    finished: &'a str,
    host: &'a str,
    user: &'a str,
    tags: &'a [String],
    command: &'a Option<Vec<String>>,
    entries: Vec<EntryRow<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    damaged: Option<&'a cairn_core::snapshot::Damage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres: Option<&'a cairn_core::pg::meta::PgSnapshot>,
    /// The newest restore drill of this snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    drill: Option<&'a DrillRecord>,
}

/// Collects the newest drill record of each snapshot.
fn latest_drills(repository: &cairn_core::Repository) -> Result<HashMap<String, DrillRecord>> {
    let mut latest = HashMap::new();
    // Records come oldest first, so later ones replace earlier ones.
    for (_, record) in read_records(repository)? {
        latest.insert(record.snapshot.clone(), record);
    }
    Ok(latest)
}

fn drill_summary(record: Option<&DrillRecord>) -> String {
    match record {
        None => "-".into(),
        Some(record) => format!(
            "{} {}",
            match (record.passed, record.complete) {
                (false, _) => "FAILED",
                (true, true) => "passed",
                (true, false) => "partial",
            },
            record.time.chars().take(10).collect::<String>()
        ),
    }
}

/// Lists snapshots, oldest first.
pub fn run(global: &GlobalArgs, _args: &SnapshotsArgs) -> Result<()> {
    let repository = super::open_repository(global)?;
    let snapshots = repository.index.snapshots()?;
    let drills = latest_drills(&repository)?;
    if global.json {
        let rows: Vec<SnapshotRow<'_>> = snapshots
            .iter()
            .map(|(id, s)| SnapshotRow {
                id: id.to_hex(),
                time: &s.time,
                finished: &s.finished,
                host: &s.host,
                user: &s.user,
                tags: &s.tags,
                command: &s.command,
                damaged: s.damaged.as_ref(),
                postgres: s.postgres.as_ref(),
                drill: drills.get(&id.to_hex()),
                entries: s
                    .entries
                    .iter()
                    .map(|e| EntryRow {
                        name: &e.name,
                        size: e.size,
                        hash: e.hash.as_deref(),
                        sequence_hash: e.sequence_hash.as_deref(),
                    })
                    .collect(),
            })
            .collect();
        return super::print_json(&rows);
    }
    if snapshots.is_empty() {
        crate::say!("no snapshots");
        return Ok(());
    }
    crate::say!(
        "{:<10} {:<20} {:<16} {:<12} {:<18} ENTRIES",
        "ID",
        "TIME (UTC)",
        "HOST",
        "TAGS",
        "DRILL"
    );
    for (id, snapshot) in &snapshots {
        let time: String = snapshot
            .time
            .chars()
            .take(19)
            .collect::<String>()
            .replace('T', " ");
        let entries = snapshot
            .entries
            .iter()
            .map(|e| format!("{} ({})", e.name, HumanBytes(e.size)))
            .collect::<Vec<_>>()
            .join(", ");
        let entries = match &snapshot.damaged {
            Some(damage) => format!("{entries} [DAMAGED: {}]", damage.reason),
            None => entries,
        };
        crate::say!(
            "{:<10} {:<20} {:<16} {:<12} {:<18} {}",
            id.short(),
            time,
            snapshot.host,
            snapshot.tags.join(","),
            drill_summary(drills.get(&id.to_hex())),
            entries
        );
    }
    crate::say!("{} snapshot(s)", snapshots.len());
    Ok(())
}
