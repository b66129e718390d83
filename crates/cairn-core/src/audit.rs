//! The audit trail: one record per operation on the repository.
//!
//! Each record is a sealed object `audit/<hash>`, named by BLAKE3 of its
//! bytes like snapshots, and names the newest record its writer knew
//! (`previous`). The records form a hash chain: editing a record changes
//! its name, and deleting one leaves a later record pointing at nothing,
//! which `cairn check` reports. Two processes appending at the same time
//! fork the chain, which is harmless. The local index keeps a copy of every
//! record it has seen, so `cairn check` also reports a deleted newest
//! record on a machine that saw it.
// NOTE: an attacker who can delete objects can still remove the newest
// records unnoticed on a machine that never saw them. Only a copy outside
// the repository (logs, metrics) proves those.

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::crypto::{Domain, Keys};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::object;
use crate::repo::Repository;
use crate::storage::Storage;

const MAGIC: &[u8; 8] = b"CAIRNAUD";
/// Folder of audit records in the backend.
pub const AUDIT_PREFIX: &str = "audit/";

/// One operation on the repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the operation ended, RFC 3339 UTC.
    pub time: String,
    /// Host that ran it.
    pub host: String,
    /// User that ran it.
    pub user: String,
    /// The command, such as `backup`, `pg verify` or `prune`.
    pub command: String,
    /// The configured job it ran for, if any.
    #[serde(default)]
    pub job: Option<String>,
    /// Snapshots it created, read or removed, hex ids.
    #[serde(default)]
    pub snapshots: Vec<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// Exit code of the command.
    #[serde(default)]
    pub exit_code: u8,
    /// The error of a failed operation.
    #[serde(default)]
    pub error: Option<String>,
    /// Id of the newest record the writer knew, hex; `None` for the first.
    #[serde(default)]
    pub previous: Option<String>,
    /// Version of cairn that wrote it.
    pub cairn_version: String,
}

impl AuditRecord {
    /// Creates a record of `command` by this host and user at the current
    /// time. [`append`] fills in `previous`.
    pub fn new(command: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            time: crate::snapshot::now_rfc3339(),
            host: crate::host_name(),
            user: crate::user_name(),
            command: command.to_string(),
            job: None,
            snapshots: Vec::new(),
            outcome: outcome.to_string(),
            exit_code: 0,
            error: None,
            previous: None,
            cairn_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Object path of a record.
pub fn audit_path(id: &Id) -> String {
    format!("{AUDIT_PREFIX}{}", id.to_hex())
}

/// Opens a record, checking that its name matches its bytes.
pub fn decode(keys: &Keys, id: &Id, bytes: &[u8]) -> Result<AuditRecord> {
    let name = audit_path(id);
    if Id::of_bytes(bytes) != *id {
        return Err(Error::corrupt(
            &name,
            "content does not match its name (the record was edited or damaged)",
        ));
    }
    let body = object::open(keys, MAGIC, Domain::Audit, bytes, &name)?;
    serde_json::from_slice(&body).map_err(|e| Error::corrupt(&name, format!("invalid JSON: {e}")))
}

/// Appends a record after the newest one in `index`; returns its id.
pub fn append(
    storage: &Storage,
    keys: &Keys,
    index: &mut Index,
    mut record: AuditRecord,
) -> Result<Id> {
    record.previous = index.audit_head()?.map(|id| id.to_hex());
    let body = serde_json::to_vec(&record).map_err(|e| Error::Invalid(e.to_string()))?;
    let bytes = object::seal(keys, MAGIC, Domain::Audit, &body)?;
    let id = Id::of_bytes(&bytes);
    let path = audit_path(&id);
    storage.write(&path, bytes)?;
    storage.sync_dirs([path.as_str()])?;
    index.insert_audit(&id, &record)?;
    debug!(record = %path, command = %record.command, "audit record written");
    Ok(id)
}

impl Repository {
    /// Appends an audit record; see [`append`].
    pub fn append_audit(&mut self, record: AuditRecord) -> Result<Id> {
        append(&self.storage, &self.keys, &mut self.index, record)
    }
}

/// Checks the audit trail: every record opens and matches its name, every
/// `previous` exists, and no record the local index saw has vanished.
/// Returns `(object, problem)` pairs.
pub(crate) fn check(repository: &Repository) -> Result<Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut present = std::collections::HashSet::new();
    let mut records = Vec::new();
    for (path, id) in repository.storage.list_ids(AUDIT_PREFIX)? {
        let Some(id) = id else {
            problems.push((path, "object name is not an audit record id".into()));
            continue;
        };
        present.insert(id.to_hex());
        let decoded = repository
            .storage
            .read(&path)
            .and_then(|bytes| decode(&repository.keys, &id, &bytes));
        match decoded {
            Ok(record) => records.push((id, record)),
            Err(e) => {
                let reason = e.message_without(&path);
                problems.push((path, reason));
            }
        }
    }
    for (id, record) in &records {
        if let Some(previous) = &record.previous
            && !present.contains(previous)
        {
            problems.push((
                audit_path(id),
                format!(
                    "names the previous audit record {previous}, which is missing: a record of the audit trail was deleted"
                ),
            ));
        }
    }
    for (id, record) in repository.index.audit_records()? {
        if !present.contains(&id.to_hex()) {
            problems.push((
                audit_path(&id),
                format!(
                    "the audit record of `{}` at {} by {}@{}, seen earlier by this machine, is missing: it was deleted",
                    record.command, record.time, record.user, record.host
                ),
            ));
        }
    }
    Ok(problems)
}
