//! `cairn unlock`.

use anyhow::Result;
use clap::Args;

use crate::GlobalArgs;

/// Arguments of `cairn unlock`.
#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones. Use only when no cairn process
    /// works on this repository from any host.
    #[arg(long)]
    pub all: bool,
}

/// Removes stale locks (or all locks) and lists them.
pub fn run(global: &GlobalArgs, args: &UnlockArgs) -> Result<()> {
    let repository = super::open_repository(global)?;
    let removed = cairn_core::lock::unlock(&repository.storage, &repository.keys, args.all)?;
    if global.json {
        let rows: Vec<_> = removed
            .iter()
            .map(|(path, holder)| serde_json::json!({"lock": path, "holder": holder}))
            .collect();
        return super::print_json(&rows);
    }
    if removed.is_empty() {
        crate::say!("no {}locks to remove", if args.all { "" } else { "stale " });
    }
    for (path, holder) in &removed {
        crate::say!("removed {path}: {holder}");
    }
    Ok(())
}
