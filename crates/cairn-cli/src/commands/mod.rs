//! One module per subcommand: its clap arguments and its `run`.

pub mod audit;
pub mod backup;
pub mod check;
pub mod config;
pub mod forget;
pub mod init;
pub mod key;
pub mod pg;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod snapshots;
pub mod stats;
pub mod unlock;

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use cairn_core::Repository;
use cairn_core::storage::Storage;

use crate::GlobalArgs;

fn repository_path(global: &GlobalArgs) -> Result<&PathBuf> {
    let path = global.repo.as_ref().ok_or_else(|| {
        cairn_core::Error::Invalid(
            "no repository given: pass --repo PATH or set CAIRN_REPOSITORY".into(),
        )
    })?;
    Ok(path)
}

/// Opens the existing backend named by `--repo` or `CAIRN_REPOSITORY`.
pub fn open_storage(global: &GlobalArgs) -> Result<Storage> {
    Ok(Storage::open_local(repository_path(global)?)?)
}

/// Creates the folder of a new repository.
pub fn create_storage(global: &GlobalArgs) -> Result<Storage> {
    Ok(Storage::create_local(repository_path(global)?)?)
}

/// Resolves the cache folder.
pub fn cache_dir(global: &GlobalArgs) -> Result<PathBuf> {
    global
        .cache_dir
        .clone()
        .or_else(Repository::default_cache_dir)
        .ok_or_else(|| {
            anyhow!("cannot find a cache folder: set CAIRN_CACHE_DIR, XDG_CACHE_HOME or HOME")
        })
}

/// Unlocks the repository and syncs its local index.
pub fn open_repository(global: &GlobalArgs) -> Result<Repository> {
    let storage = open_storage(global)?;
    let cache = cache_dir(global)?;
    let passphrase = crate::password::read(false)?;
    let location = global
        .repo
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let repository = Repository::open(storage, passphrase.as_bytes(), &cache).map_err(|e| {
        // A wrong passphrase names its source, so the operator knows which
        // one to fix.
        let context = match e {
            cairn_core::Error::WrongPassphrase { .. } => format!(
                "cannot open the repository at {location} with the passphrase from {}",
                crate::password::current_source()
            ),
            _ => format!("cannot open the repository at {location}"),
        };
        anyhow::Error::new(e).context(context)
    })?;
    crate::audit::register(&repository, cache);
    Ok(repository)
}

/// Treats a closed standard output as success. For commands whose work is
/// done before they print (a backup whose snapshot is saved), a reader
/// that stopped early, such as `| head -1`, does not undo that work.
pub fn ignore_broken_pipe(printed: Result<()>) -> Result<()> {
    match printed {
        Err(e) if crate::is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Takes a shared lock for a reading command. A repository that cannot be
/// written to (read-only media during a disaster recovery) is still read,
/// with a warning; a conflicting lock is an error.
pub fn read_lock(repository: &Repository, command: &str) -> Result<Option<cairn_core::lock::Lock>> {
    match cairn_core::lock::Lock::shared(&repository.storage, &repository.keys, command) {
        Ok(lock) => Ok(Some(lock)),
        Err(cairn_core::Error::Storage {
            operation: "write",
            path,
            source,
        }) => {
            tracing::warn!(lock = %path, error = %source, "cannot write a lock; continuing without one");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Parses a share from 0 to 1, written as a fraction (0.1) or a
/// percentage (10%).
pub fn parse_share(text: &str) -> std::result::Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(number) => (number, 100.0),
        None => (text, 1.0),
    };
    let value: f64 = number.trim().parse().map_err(|_| {
        format!("{text:?} is not a fraction such as 0.1 or a percentage such as 10%")
    })?;
    let share = value / scale;
    if !(0.0..=1.0).contains(&share) {
        return Err(format!("{text:?} must be between 0 and 1 (100%)"));
    }
    Ok(share)
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode JSON output")?;
    crate::say!("{text}");
    Ok(())
}
