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
    println!("snapshots:        {}", stats.snapshots);
    println!("packs:            {}", stats.packs);
    println!("chunks:           {}", stats.chunks);
    println!(
        "stored:           {} ({} bytes)",
        HumanBytes(stats.stored_bytes),
        stats.stored_bytes
    );
    println!(
        "unique plaintext: {} ({} bytes)",
        HumanBytes(stats.raw_bytes),
        stats.raw_bytes
    );
    println!(
        "all snapshots:    {} ({} bytes)",
        HumanBytes(stats.logical_bytes),
        stats.logical_bytes
    );
    println!("dedup ratio:      {:.2}", stats.dedup_ratio);
    Ok(())
}
