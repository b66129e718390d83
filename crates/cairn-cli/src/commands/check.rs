//! `cairn check`.

use anyhow::Result;
use cairn_core::check::ReadData;
use clap::Args;
use indicatif::HumanBytes;

use crate::progress::Bar;
use crate::{EXIT_INTEGRITY, GlobalArgs, Reported};

/// Arguments of `cairn check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Download and verify every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Download and verify a share of the packs, as a fraction (0.1) or a
    /// percentage (10%); the share moves daily, so daily runs at 1/N cover
    /// every pack in N days.
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub read_data_subset: Option<f64>,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let fraction = super::parse_share(text)?;
    if fraction == 0.0 {
        return Err(format!("{text:?} must be more than 0"));
    }
    Ok(fraction)
}

/// Checks the repository; exits with code 3 when anything is damaged.
pub fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<()> {
    let repository = super::open_repository(global)?;
    let _lock = super::read_lock(&repository, "check")?;
    let read_data = match (args.read_data, args.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(fraction)) => ReadData::Subset(fraction),
        (false, None) => ReadData::None,
    };
    let bar = Bar::new(
        global.json,
        None,
        "{spinner} {elapsed_precise} verified {bytes} ({bytes_per_sec})",
    );
    let result = repository.check(read_data, &bar);
    bar.finish();
    let report = result?;
    if global.json {
        super::print_json(&report)?;
    } else {
        for problem in &report.problems {
            let dependents = if problem.snapshots.is_empty() {
                "no snapshot is known to depend on it".to_string()
            } else {
                format!(
                    "snapshots depending on it: {}",
                    problem.snapshots.join(", ")
                )
            };
            eprintln!(
                "damaged: {}: {}; {}",
                problem.object, problem.message, dependents
            );
        }
        crate::say!(
            "checked {} snapshot(s) and {} pack(s); read and verified {} pack(s), {} blob(s), {}",
            report.snapshots,
            report.packs,
            report.packs_read,
            report.blobs_verified,
            HumanBytes(report.bytes_read)
        );
        if report.unindexed_packs > 0 && report.problems.is_empty() {
            crate::say!(
                "{} pack(s) are not named by any index object (left by an interrupted backup or prune); the next prune removes them",
                report.unindexed_packs
            );
        }
        if report.problems.is_empty() {
            crate::say!("no errors were found");
        } else {
            eprintln!(
                "{} problem(s) found; do not rely on the listed snapshots. If a copy of the repository exists, restore the named objects from it.",
                report.problems.len()
            );
            if report.unindexed_packs > 0 {
                eprintln!(
                    "{} pack(s) are not named by any index object; if index objects were lost or damaged, `cairn repair index` rebuilds them from the packs",
                    report.unindexed_packs
                );
            }
            eprintln!(
                "`cairn repair packs` salvages the intact blobs of damaged packs and takes those packs out of use, so the next backups store lost data again; `cairn repair snapshots --mark-damaged` records which snapshots stay damaged"
            );
        }
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Reported(EXIT_INTEGRITY).into())
    }
}
