//! `cairn prune`.

use anyhow::Result;
use cairn_core::prune::{PruneOptions, PruneReport};
use clap::Args;
use indicatif::HumanBytes;

use crate::GlobalArgs;

/// Arguments of `cairn prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Largest unused share of a pack before its live data is copied into a
    /// new pack, as a fraction (0.1) or a percentage (10%).
    #[arg(long, value_name = "FRACTION", default_value = "10%", value_parser = super::parse_share)]
    pub max_unused: f64,
    /// Report what would be deleted and repacked, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs prune on an open repository and prints its report.
pub fn prune_and_report(
    global: &GlobalArgs,
    repository: &mut cairn_core::Repository,
    options: PruneOptions,
) -> Result<()> {
    let report = repository.prune(options)?;
    if global.json {
        return super::print_json(&report);
    }
    print_report(&report)
}

fn print_report(report: &PruneReport) -> Result<()> {
    let verb = if report.dry_run { "would be" } else { "were" };
    crate::say!(
        "{} snapshot(s) keep their data; {} pack(s), {} before",
        report.snapshots,
        report.packs_before,
        HumanBytes(report.bytes_before)
    );
    crate::say!(
        "{} pack(s) without live data {verb} deleted, {} pack(s) {verb} repacked into {} new pack(s) ({} copied), {} unindexed pack(s) {verb} deleted",
        report.packs_deleted,
        report.packs_repacked,
        report.packs_written,
        HumanBytes(report.bytes_repacked),
        report.unindexed_packs_deleted
    );
    if report.drill_records_deleted > 0 {
        crate::say!(
            "{} drill record(s) of forgotten snapshots deleted",
            report.drill_records_deleted
        );
    }
    crate::say!(
        "repository {} {} after ({} freed) in {:.1} s",
        if report.dry_run { "would be" } else { "is" },
        HumanBytes(report.bytes_after),
        HumanBytes(report.bytes_freed()),
        report.duration_secs
    );
    Ok(())
}

/// Deletes data that no snapshot needs.
pub fn run(global: &GlobalArgs, args: &PruneArgs) -> Result<()> {
    let mut repository = super::open_repository(global)?;
    let options = PruneOptions {
        max_unused: args.max_unused,
        dry_run: args.dry_run,
    };
    prune_and_report(global, &mut repository, options)
}
