//! `cairn restore`.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cairn_core::Error;
use clap::Args;

use crate::GlobalArgs;
use crate::progress::Bar;

/// Arguments of `cairn restore`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cairn restore latest --target app.dump\n  \
    cairn restore 3f2a9c:app.dump --stdout | pg_restore -d app_restored\n\
Every chunk and the whole stream are verified. With --stdout, a failure exits non-zero after \
some bytes may have been written: use `set -o pipefail` in scripts.")]
pub struct RestoreArgs {
    /// Snapshot id prefix or `latest`, optionally followed by `:ENTRY`;
    /// `latest:ENTRY` is the newest snapshot that has that entry.
    #[arg(value_name = "SNAPSHOT[:ENTRY]")]
    pub snapshot: String,
    /// File to write; created through a temporary file and renamed on success.
    #[arg(long, value_name = "PATH", conflicts_with = "stdout")]
    pub target: Option<PathBuf>,
    /// Write the entry to standard output.
    #[arg(long)]
    pub stdout: bool,
    /// Replace an existing target file.
    #[arg(long)]
    pub overwrite: bool,
}

/// Restores one entry.
pub fn run(global: &GlobalArgs, args: &RestoreArgs) -> Result<()> {
    if args.target.is_none() && !args.stdout {
        return Err(cairn_core::Error::Invalid(
            "say where to write the entry: --target PATH for a file, or --stdout to pipe it (for example into pg_restore)".into(),
        )
        .into());
    }
    if args.stdout && std::io::stdout().is_terminal() {
        return Err(cairn_core::Error::Invalid(
            "stdout is a terminal; pipe it into a program (`| pg_restore -d NAME`) or a file, or use --target PATH".into(),
        )
        .into());
    }
    if global.json && args.stdout {
        return Err(cairn_core::Error::Invalid(
            "--json cannot be combined with --stdout, because the entry itself is written to stdout".into(),
        )
        .into());
    }
    let (snapshot_ref, entry_name) = match args.snapshot.split_once(':') {
        Some((snapshot, entry)) => (snapshot, Some(entry)),
        None => (args.snapshot.as_str(), None),
    };
    if let Some(target) = &args.target {
        if target.is_dir() {
            return Err(cairn_core::Error::Invalid(format!(
                "{} is a directory; give the path of the file to create, such as {}/app.dump",
                target.display(),
                target.display()
            ))
            .into());
        }
        if !args.overwrite && target.exists() {
            return Err(Error::TargetExists {
                path: target.display().to_string(),
            }
            .into());
        }
        check_target_folder(target)?;
    }
    let repository = super::open_repository(global)?;
    let _lock = super::read_lock(&repository, "restore")?;
    let (id, snapshot) = match (snapshot_ref, entry_name) {
        ("latest", Some(entry)) => repository.find_latest_with_entry(entry)?,
        _ => repository.find_snapshot(snapshot_ref)?,
    };
    crate::audit::note_snapshot(&id.to_hex());
    if let Some(damage) = &snapshot.damaged {
        // A marked snapshot can still restore an entry whose chunks are all
        // intact, so it is tried, but the operator learns why it may fail.
        tracing::warn!(
            snapshot = %id.short(),
            marked = %damage.marked,
            reason = %damage.reason,
            "the snapshot is marked damaged; the restore fails if the entry needs lost data, and an older snapshot may restore"
        );
    }
    let entry = repository.select_entry(&id, &snapshot, entry_name)?;
    let bar = Bar::new(
        global.json || args.stdout,
        Some(entry.size),
        "{spinner} {elapsed_precise} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
    );
    let result = match &args.target {
        Some(target) => restore_to_file(&repository, entry, target, args.overwrite, &bar),
        None => {
            // Whole windows go to the pipe with vectored writes, so the
            // stream bypasses std's line-buffered stdout.
            let stdout = std::io::stdout();
            cairn_core::producer::enlarge_pipe(&stdout);
            let mut out = std::fs::File::from(
                stdout
                    .as_fd()
                    .try_clone_to_owned()
                    .context("cannot duplicate stdout")?,
            );
            repository
                .restore_entry(entry, &mut out, &bar)
                .map_err(anyhow::Error::from)
        }
    };
    bar.finish();
    result?;
    if global.json {
        super::print_json(&serde_json::json!({
            "snapshot": id.to_hex(),
            "entry": entry.name,
            "size": entry.size,
            "target": args.target,
        }))?;
    } else if let Some(target) = &args.target {
        eprintln!(
            "restored {} ({} bytes) from snapshot {} to {}; every chunk verified",
            entry.name,
            entry.size,
            id.short(),
            target.display()
        );
    }
    Ok(())
}

/// Returns the folder that a restore target is created in.
fn target_folder(target: &Path) -> PathBuf {
    match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks before the restore starts that the folder of `target` exists, so
/// that the error names the user's path rather than the temporary file.
fn check_target_folder(target: &Path) -> Result<()> {
    let folder = target_folder(target);
    match std::fs::metadata(&folder) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(Error::Invalid(format!(
            "cannot restore to {}: {} is not a folder; choose another --target",
            target.display(),
            folder.display()
        ))
        .into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Invalid(format!(
            "cannot restore to {}: the folder {} does not exist; create it first (mkdir -p {}) or choose another --target",
            target.display(),
            folder.display(),
            folder.display()
        ))
        .into()),
        Err(e) => Err(Error::io(
            format!(
                "cannot restore to {}: cannot read the folder {}",
                target.display(),
                folder.display()
            ),
            e,
        )
        .into()),
    }
}

fn restore_to_file(
    repository: &cairn_core::Repository,
    entry: &cairn_core::snapshot::Entry,
    target: &Path,
    overwrite: bool,
    bar: &Bar,
) -> Result<()> {
    let dir = target_folder(target);
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .with_context(|| format!("{} is not a file path", target.display()))?;
    // The temporary file is created with mode 0600 and removed on drop, so a
    // failed restore leaves neither a partial target nor a stray file.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".cairn-partial")
        .tempfile_in(&dir)
        .map_err(|e| {
            // tempfile's error names the random temporary path, which the
            // user never gave, so only its kind is kept.
            Error::io(
                format!(
                    "cannot restore to {}: cannot create a file in the folder {}",
                    target.display(),
                    dir.display()
                ),
                std::io::Error::from(e.kind()),
            )
        })?;
    {
        // Vectored writes of whole windows need no buffer in between.
        repository.restore_entry(entry, temp.as_file_mut(), bar)?;
    }
    // IMPORTANT: data reaches the disk before the rename makes it visible.
    temp.as_file()
        .sync_all()
        .with_context(|| format!("cannot flush {}", target.display()))?;
    if overwrite {
        temp.persist(target)
            .with_context(|| format!("cannot rename the restored file to {}", target.display()))?;
    } else {
        temp.persist_noclobber(target).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::Error::from(Error::TargetExists {
                    path: target.display().to_string(),
                })
            } else {
                anyhow::Error::from(e.error).context(format!(
                    "cannot rename the restored file to {}",
                    target.display()
                ))
            }
        })?;
    }
    if let Ok(handle) = std::fs::File::open(&dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}
