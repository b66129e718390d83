//! `cairn unlock`.

use anyhow::Result;
use clap::Args;

use crate::GlobalArgs;

/// Arguments of `cairn unlock`.
#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones. Use only when no cairn process
    /// works on this repository from any host.
    #[arg(long, conflicts_with = "stale_after")]
    pub all: bool,
    /// Treat locks not refreshed for this long as stale, such as `10m` or
    /// `2h` [default: 30m]. Live locks are refreshed every 5 minutes.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stale_after: Option<std::time::Duration>,
}

/// Removes stale locks (or all locks) and lists them.
pub fn run(global: &GlobalArgs, args: &UnlockArgs) -> Result<()> {
    let repository = super::open_repository(global)?;
    let removed = cairn_core::lock::unlock(
        &repository.storage,
        &repository.keys,
        args.all,
        args.stale_after,
    )?;
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
