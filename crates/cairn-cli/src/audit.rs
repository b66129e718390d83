//! Writes one audit record per command that reads or changes a repository.
//!
//! A command registers the repository it opened ([`register`]) and the
//! snapshots it touched ([`note_snapshot`]). Once the command has returned,
//! `main` appends the record with the outcome ([`finish`]). A command that
//! fails before it opened a repository writes no record, because only an
//! unlocked repository can store one.

use std::path::PathBuf;
use std::sync::Mutex;

use cairn_core::audit::AuditRecord;
use cairn_core::crypto::Keys;
use cairn_core::index::Index;
use cairn_core::storage::Storage;

struct Context {
    storage: Storage,
    keys: Keys,
    cache_dir: PathBuf,
    repository_id: String,
    snapshots: Vec<String>,
    job: Option<String>,
}

static CONTEXT: Mutex<Option<Context>> = Mutex::new(None);

/// Remembers the repository a command opened.
pub fn register(repository: &cairn_core::Repository, cache_dir: PathBuf) {
    if let Ok(mut context) = CONTEXT.lock() {
        let job = context.as_ref().and_then(|c| c.job.clone());
        *context = Some(Context {
            storage: repository.storage.clone(),
            keys: repository.keys.clone(),
            cache_dir,
            repository_id: repository.config.id.clone(),
            snapshots: Vec::new(),
            job,
        });
    }
}

/// Adds a snapshot id to the record.
pub fn note_snapshot(id: &str) {
    if let Ok(mut context) = CONTEXT.lock()
        && let Some(context) = context.as_mut()
        && !context.snapshots.iter().any(|s| s == id)
    {
        context.snapshots.push(id.to_string());
    }
}

/// Writes the record of the command that just ended. A record that cannot
/// be written (a read-only repository during a disaster recovery) is a
/// warning, never a failure of the command.
pub fn finish(command: &str, exit_code: u8, error: Option<String>) {
    let Some(context) = CONTEXT.lock().ok().and_then(|mut c| c.take()) else {
        return;
    };
    let mut record = AuditRecord::new(command, if exit_code == 0 { "success" } else { "failure" });
    record.exit_code = exit_code;
    record.error = error;
    record.snapshots = context.snapshots;
    record.job = context.job;
    let written = Index::open(&context.cache_dir, &context.repository_id).and_then(|mut index| {
        cairn_core::audit::append(&context.storage, &context.keys, &mut index, record)
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, command, "cannot write the audit record");
    }
}
