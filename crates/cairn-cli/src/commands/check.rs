//! `cairn check`.

use anyhow::Result;
use cairn_core::check::{CheckReport, Problem, ReadData};
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

/// Checks the repository. Exits with code 3 when it finds damage other
/// than damage on which only snapshots marked damaged depend.
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
    let unmarked = report.unmarked_problems().count();
    if global.json {
        super::print_json(&report)?;
    } else {
        print_report(&report, unmarked)?;
        if let ReadData::Subset(fraction) = read_data {
            print_subset_note(&report, fraction)?;
        }
    }
    if unmarked == 0 {
        Ok(())
    } else {
        Err(Reported(EXIT_INTEGRITY).into())
    }
}

/// Describes the snapshots that depend on a problem's object. Returns `None`
/// when the object is the snapshot object of the only such snapshot, which
/// the object name already names.
fn dependents(problem: &Problem) -> Option<String> {
    if let [id] = problem.snapshots.as_slice()
        && problem.object == format!("snapshots/{id}")
    {
        return None;
    }
    let ids = problem.snapshots.join(", ");
    Some(match (problem.snapshots.is_empty(), problem.marked) {
        (true, _) => "no snapshot is known to depend on it".to_string(),
        (false, true) => format!("only snapshots marked damaged depend on it: {ids}"),
        (false, false) => format!("snapshots depending on it: {ids}"),
    })
}

/// Explains a subset check that read no pack, which happens on some days
/// when the repository has few packs.
fn print_subset_note(report: &CheckReport, fraction: f64) -> Result<()> {
    if report.packs_read == 0 && report.packs > 0 {
        let days = (1.0 / fraction).ceil();
        // Rounded to a tenth of a percent, so 0.1 prints as 10, not 10.000000000000002.
        let percent = (fraction * 1000.0).round() / 10.0;
        crate::say!(
            "none of the {} pack(s) is in today's share of {percent}%; the share moves every day and covers every pack within {days} days, and `check --read-data` reads them all now",
            report.packs
        );
    }
    Ok(())
}

/// Prints each problem to stderr, then the summary and the next steps.
fn print_report(report: &CheckReport, unmarked: usize) -> Result<()> {
    for problem in &report.problems {
        let label = if problem.marked {
            "damaged, already marked"
        } else {
            "damaged"
        };
        match dependents(problem) {
            Some(dependents) => eprintln!(
                "{label}: {}: {}; {dependents}",
                problem.object, problem.message
            ),
            None => eprintln!("{label}: {}: {}", problem.object, problem.message),
        }
    }
    crate::say!(
        "checked {} snapshot(s) and {} pack(s); read and verified {} pack(s), {} blob(s), {}",
        report.snapshots,
        report.packs,
        report.packs_read,
        report.blobs_verified,
        HumanBytes(report.bytes_read)
    );
    if report.unindexed_packs > 0 && unmarked == 0 {
        crate::say!(
            "{} pack(s) are not named by any index object (left by an interrupted backup or prune); the next prune removes them",
            report.unindexed_packs
        );
    }
    let known = report.problems.len() - unmarked;
    if known > 0 {
        crate::say!(
            "{known} known problem(s) affect only snapshots already marked damaged; `latest` and retention leave those snapshots out"
        );
    }
    if unmarked == 0 {
        if known == 0 {
            crate::say!("no errors were found");
        } else {
            crate::say!("no new damage was found");
        }
        return Ok(());
    }
    eprintln!(
        "{unmarked} problem(s) found; do not rely on the listed snapshots. If a copy of the repository exists, restore the named objects from it."
    );
    if report.unindexed_packs > 0 {
        eprintln!(
            "{} pack(s) are not named by any index object; if index objects were lost or damaged, `cairn repair index` rebuilds them from the packs",
            report.unindexed_packs
        );
    }
    // The next steps in the order that loses the least: salvage damaged
    // packs, store lost data again from the source, and only then mark what
    // stays damaged. A mark stays until a full `repair snapshots` run finds
    // the snapshot intact, so marking early hides healed snapshots.
    let damaged_packs = report
        .unmarked_problems()
        .any(|problem| cairn_core::pack::pack_name_from_path(&problem.object).is_some());
    if damaged_packs {
        eprintln!(
            "`cairn repair packs` salvages the intact blobs of damaged packs and takes those packs out of use."
        );
    }
    let unmarked_snapshots = report
        .unmarked_problems()
        .any(|problem| !problem.snapshots.is_empty());
    if unmarked_snapshots {
        let step = if damaged_packs {
            "Then run the backups again"
        } else {
            "Run the backups again"
        };
        eprintln!(
            "{step}: data that still exists at the source is stored anew and heals the snapshots that need it."
        );
        eprintln!(
            "If `cairn check` still lists damaged snapshots after that, `cairn repair snapshots --mark-damaged` records which stay damaged; later checks then report their damage as known and exit 0."
        );
    }
    Ok(())
}
