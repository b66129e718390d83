//! `cairn repair`.

use anyhow::Result;
use cairn_core::repair::SnapshotRepairReport;
use clap::{Args, Subcommand};

use crate::{EXIT_INTEGRITY, GlobalArgs, Reported};

/// Arguments of `cairn repair`.
#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Object kind to repair.
    #[command(subcommand)]
    pub what: RepairWhat,
}

/// Repair targets.
#[derive(Subcommand, Debug)]
pub enum RepairWhat {
    /// Rebuild the index objects from the headers of the packs in data/.
    Index,
    /// Read every pack, salvage the intact blobs of damaged ones, and take
    /// the damaged packs out of use, so new backups store their data again.
    Packs,
    /// List snapshots that reference missing or damaged data.
    Snapshots {
        /// Read and verify every pack, not only the structure.
        #[arg(long)]
        read_data: bool,
        /// Record the damage in each such snapshot, so `snapshots` shows it
        /// and retention no longer counts it. With --read-data, also remove
        /// the mark from marked snapshots that restore in full again. Each
        /// snapshot changed gets a new id; no snapshot is deleted.
        #[arg(long)]
        mark_damaged: bool,
    },
}

/// Runs a repair.
pub fn run(global: &GlobalArgs, args: &RepairArgs) -> Result<()> {
    let mut repository = super::open_repository(global)?;
    match args.what {
        RepairWhat::Packs => {
            let report = repository.repair_packs()?;
            if global.json {
                return super::print_json(&report);
            }
            if report.damaged_packs.is_empty() {
                crate::say!("every pack is intact; nothing to repair");
                return Ok(());
            }
            for (pack, reason) in &report.damaged_packs {
                crate::say!("damaged: {pack}: {reason}");
            }
            crate::say!(
                "salvaged {} blob(s) into {} new pack(s); {} blob(s) were lost; damaged packs moved to {}",
                report.blobs_salvaged,
                report.packs_written,
                report.blobs_lost.len(),
                report.moved.join(", ")
            );
            if !report.blobs_lost.is_empty() {
                crate::say!(
                    "run the backups again: data that still exists at the source is stored anew and heals the snapshots that need it. `cairn check` lists the snapshots still damaged"
                );
            }
            Ok(())
        }
        RepairWhat::Snapshots {
            read_data,
            mark_damaged,
        } => {
            let report = repository.repair_snapshots(read_data, mark_damaged)?;
            let damaged = &report.damaged;
            let unmarked = damaged.iter().filter(|s| !s.already_marked).count();
            if global.json {
                super::print_json(&report)?;
            } else {
                print_snapshot_repair(&report, read_data, mark_damaged)?;
            }
            if unmarked == 0 {
                if !damaged.is_empty() && !global.json {
                    crate::say!("every damaged snapshot is already marked; nothing to record");
                }
                Ok(())
            } else {
                if !mark_damaged {
                    eprintln!(
                        "{unmarked} damaged snapshot(s) not marked yet; run the same command with --mark-damaged to record the damage in them"
                    );
                }
                Err(Reported(EXIT_INTEGRITY).into())
            }
        }
        RepairWhat::Index => {
            let report = repository.repair_index()?;
            if global.json {
                super::print_json(&report)?;
            } else {
                for (pack, reason) in &report.unreadable_packs {
                    eprintln!("unreadable: {pack}: {reason}");
                }
                crate::say!(
                    "indexed {} pack(s) into {} index object(s), replaced {} old index object(s)",
                    report.packs_indexed,
                    report.index_objects_written,
                    report.index_objects_deleted
                );
            }
            if report.unreadable_packs.is_empty() {
                Ok(())
            } else {
                eprintln!(
                    "{} pack(s) could not be read and are left out; run `cairn check` to see which snapshots need them",
                    report.unreadable_packs.len()
                );
                Err(Reported(EXIT_INTEGRITY).into())
            }
        }
    }
}

/// Prints the damaged snapshots of a `repair snapshots` run, and the marked
/// ones that a full read found intact again.
fn print_snapshot_repair(
    report: &SnapshotRepairReport,
    read_data: bool,
    mark_damaged: bool,
) -> Result<()> {
    let damaged = &report.damaged;
    if damaged.is_empty() && read_data {
        crate::say!("no damaged snapshots found");
    } else if damaged.is_empty() {
        crate::say!(
            "no damaged snapshots found by the structural check; add --read-data to verify every pack as well"
        );
    }
    for snapshot in damaged {
        if snapshot.already_marked {
            crate::say!("damaged snapshot {}, already marked", snapshot.id);
        } else {
            crate::say!("damaged snapshot {}", snapshot.id);
        }
        for reason in &snapshot.reasons {
            crate::say!("  {reason}");
        }
        if let Some(new_id) = &snapshot.marked_as {
            crate::say!("  marked damaged; it is now snapshot {new_id}");
        }
    }
    for snapshot in &report.healed {
        match &snapshot.unmarked_as {
            Some(new_id) => crate::say!(
                "snapshot {} (before marking {}) restores in full again; its damage mark was removed and it is now snapshot {new_id}",
                snapshot.id,
                snapshot.original
            ),
            None => crate::say!(
                "snapshot {} (before marking {}) is marked damaged but restores in full again",
                snapshot.id,
                snapshot.original
            ),
        }
    }
    if !report.healed.is_empty() && !mark_damaged {
        crate::say!(
            "run the same command with --mark-damaged to remove the marks of the snapshots that restore in full again"
        );
    }
    Ok(())
}
