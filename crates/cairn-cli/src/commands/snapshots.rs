//! `cairn snapshots`.

use anyhow::Result;
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
    hash: &'a str,
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
}

/// Lists snapshots, oldest first.
pub fn run(global: &GlobalArgs, _args: &SnapshotsArgs) -> Result<()> {
    let repository = super::open_repository(global)?;
    let snapshots = repository.index.snapshots()?;
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
                entries: s
                    .entries
                    .iter()
                    .map(|e| EntryRow {
                        name: &e.name,
                        size: e.size,
                        hash: &e.hash,
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
        "{:<10} {:<20} {:<16} {:<12} ENTRIES",
        "ID",
        "TIME (UTC)",
        "HOST",
        "TAGS"
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
            "{:<10} {:<20} {:<16} {:<12} {}",
            id.short(),
            time,
            snapshot.host,
            snapshot.tags.join(","),
            entries
        );
    }
    crate::say!("{} snapshot(s)", snapshots.len());
    Ok(())
}
