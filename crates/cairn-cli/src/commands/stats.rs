//! `cairn stats`.

use anyhow::Result;
use clap::Args;
use indicatif::HumanBytes;

use crate::GlobalArgs;

/// Arguments of `cairn stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {}

/// Prints repository statistics.
pub fn run(global: &GlobalArgs, _args: &StatsArgs) -> Result<()> {
    let repository = super::open_repository(global)?;
    let stats = repository.stats()?;
    if global.json {
        return super::print_json(&stats);
    }
    crate::say!("snapshots:        {}", stats.snapshots);
    crate::say!("packs:            {}", stats.packs);
    crate::say!("chunks:           {}", stats.chunks);
    crate::say!(
        "stored:           {} ({} bytes)",
        HumanBytes(stats.stored_bytes),
        stats.stored_bytes
    );
    crate::say!(
        "unique plaintext: {} ({} bytes)",
        HumanBytes(stats.raw_bytes),
        stats.raw_bytes
    );
    crate::say!(
        "all snapshots:    {} ({} bytes)",
        HumanBytes(stats.logical_bytes),
        stats.logical_bytes
    );
    crate::say!(
        "dedup ratio:      {:.2} (all snapshots / unique plaintext)",
        stats.dedup_ratio
    );
    crate::say!(
        "compression:      {:.2} (unique plaintext / stored)",
        stats.compression_ratio
    );
    crate::say!(
        "total ratio:      {:.2} (all snapshots / stored)",
        stats.total_ratio
    );
    Ok(())
}
