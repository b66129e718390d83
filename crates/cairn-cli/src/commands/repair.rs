//! `cairn repair`.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::{EXIT_INTEGRITY, GlobalArgs, Reported};

/// Arguments of `cairn repair`.
#[derive(Args, Debug)]
pub struct RepairArgs {
    /// What to repair.
    #[command(subcommand)]
    pub what: RepairWhat,
}

/// Repair targets.
#[derive(Subcommand, Debug)]
pub enum RepairWhat {
    /// Rebuild the index objects from the headers of the packs in data/.
    Index,
}

/// Runs a repair.
pub fn run(global: &GlobalArgs, args: &RepairArgs) -> Result<()> {
    let mut repository = super::open_repository(global)?;
    match args.what {
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
