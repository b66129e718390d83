//! `cairn pg verify`: restore drills.
//!
//! A drill restores every database of a snapshot into new scratch databases
//! on a scratch server and records the same evidence there as the backup
//! did. It compares the two, runs `pg_amcheck` and drops the scratch
//! databases. The outcome is stored in the repository as a drill record
//! (`drills/<hash>`), which `cairn snapshots` shows next to the snapshot.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::evidence;
use super::meta::PgDatabase;
use super::restore::{self, apply_globals, create_database, drop_database, find_database, pg_meta};
use super::session::Session;
use super::{Target, Tools};
use crate::Repository;
use crate::crypto::{Domain, Keys};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::object;
use crate::restore::RestoreProgress;
use crate::snapshot::{self, Snapshot};

const MAGIC: &[u8; 8] = b"CAIRNDRL";
/// Folder of drill records in the backend.
pub const DRILLS_PREFIX: &str = "drills/";

/// Options of a drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The scratch server.
    pub scratch: Target,
    /// Keep the scratch databases for inspection.
    pub keep: bool,
    /// Skip pg_amcheck.
    pub no_amcheck: bool,
    /// Only these databases of the snapshot; all when empty.
    pub databases: Vec<String>,
    /// Folder of the PostgreSQL client programs.
    pub pg_bin: Option<PathBuf>,
    /// Folder for temporary files (unused by streaming restores).
    pub temp_dir: PathBuf,
}

/// Outcome of one database in a drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillDatabase {
    /// Database name in the snapshot.
    pub name: String,
    /// Scratch database it was restored into.
    pub scratch_name: String,
    /// Seconds pg_restore took.
    pub restore_secs: f64,
    /// Tables compared.
    pub tables: usize,
    /// Rows compared.
    pub rows: u64,
    /// Differences found, one line each; empty when it matched.
    pub differences: Vec<String>,
    /// `passed`, `failed: ...` or `skipped: ...`.
    pub amcheck: String,
    /// Whether the scratch database was kept.
    pub kept: bool,
}

/// A stored drill record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Snapshot id, hex.
    pub snapshot: String,
    /// When the drill started, RFC 3339.
    pub time: String,
    /// Host that ran it.
    pub host: String,
    /// Scratch server, without password.
    pub scratch: String,
    /// True when every database restored and matched.
    pub passed: bool,
    /// Wall-clock seconds of the whole drill.
    pub duration_secs: f64,
    /// Roles created on the scratch server from `globals.sql`.
    #[serde(default)]
    pub created_roles: Vec<String>,
    /// Roles of the snapshot missing on the scratch server after the
    /// globals were applied.
    pub missing_roles: Vec<String>,
    /// True when every database of the snapshot was checked, false when
    /// `--db` chose some.
    #[serde(default = "default_true")]
    pub complete: bool,
    /// Per database.
    pub databases: Vec<DrillDatabase>,
    /// The error that stopped the drill, if one did.
    pub error: Option<String>,
}

impl DrillRecord {
    /// Lists one line per problem, for the final error message.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(error) = &self.error {
            out.push(error.clone());
        }
        for role in &self.missing_roles {
            out.push(format!(
                "role {role} is missing after restoring globals.sql"
            ));
        }
        for db in &self.databases {
            for difference in &db.differences {
                out.push(format!("database {}: {difference}", db.name));
            }
            if db.amcheck.starts_with("failed") {
                out.push(format!("database {}: pg_amcheck {}", db.name, db.amcheck));
            }
        }
        out
    }

    /// Returns the names of the databases that failed the drill: those with
    /// differences or a failed pg_amcheck.
    pub fn failed_databases(&self) -> Vec<&str> {
        self.databases
            .iter()
            .filter(|db| !db.differences.is_empty() || db.amcheck.starts_with("failed"))
            .map(|db| db.name.as_str())
            .collect()
    }
}

fn default_true() -> bool {
    true
}

/// Stores a drill record; returns its id.
pub fn store_record(repository: &Repository, record: &DrillRecord) -> Result<Id> {
    let body = serde_json::to_vec(record).map_err(|e| Error::Invalid(e.to_string()))?;
    let bytes = object::seal(&repository.keys, MAGIC, Domain::Drill, &body)?;
    let id = Id::of_bytes(&bytes);
    let path = format!("{DRILLS_PREFIX}{}", id.to_hex());
    repository.storage.write(&path, bytes)?;
    repository.storage.sync_dirs([path.as_str()])?;
    Ok(id)
}

/// Opens one drill record, checking its name.
pub fn decode_record(keys: &Keys, id: &Id, bytes: &[u8]) -> Result<DrillRecord> {
    let name = format!("{DRILLS_PREFIX}{}", id.to_hex());
    if Id::of_bytes(bytes) != *id {
        return Err(Error::corrupt(
            &name,
            "content does not match its name (bit rot or tampering)",
        ));
    }
    let body = object::open(keys, MAGIC, Domain::Drill, bytes, &name)?;
    serde_json::from_slice(&body).map_err(|e| Error::corrupt(&name, format!("invalid JSON: {e}")))
}

/// Reads every drill record, oldest first. Unreadable records are
/// reported by `cairn check` and skipped here with a warning.
pub fn read_records(repository: &Repository) -> Result<Vec<(Id, DrillRecord)>> {
    let mut records = Vec::new();
    for (path, id) in repository.storage.list_ids(DRILLS_PREFIX)? {
        let Some(id) = id else {
            continue;
        };
        let bytes = repository.storage.read(&path)?;
        match decode_record(&repository.keys, &id, &bytes) {
            Ok(record) => records.push((id, record)),
            Err(e) => {
                warn!(record = %path, error = %e.message_without(&path), "skipping an unreadable drill record");
            }
        }
    }
    records.sort_by(|a, b| a.1.time.cmp(&b.1.time));
    Ok(records)
}

/// Paths of drill records whose snapshot no longer exists. Unreadable
/// records are left for `cairn check` to report.
pub(crate) fn orphan_records(repository: &Repository) -> Result<Vec<String>> {
    let snapshots: std::collections::HashSet<String> = repository
        .storage
        .list("snapshots/")?
        .into_iter()
        .filter_map(|o| o.path.strip_prefix("snapshots/").map(str::to_string))
        .collect();
    let mut orphans = Vec::new();
    for (path, id) in repository.storage.list_ids(DRILLS_PREFIX)? {
        let Some(id) = id else {
            continue;
        };
        let bytes = repository.storage.read(&path)?;
        if let Ok(record) = decode_record(&repository.keys, &id, &bytes)
            && !snapshots.contains(&record.snapshot)
        {
            orphans.push(path);
        }
    }
    Ok(orphans)
}

/// Checks every drill record; returns `(path, problem)` for each that
/// cannot be read or verified.
pub(crate) fn check_records(repository: &Repository) -> Result<Vec<(String, String)>> {
    let mut problems = Vec::new();
    for (path, id) in repository.storage.list_ids(DRILLS_PREFIX)? {
        let Some(id) = id else {
            problems.push((path, "object name is not a drill record id".into()));
            continue;
        };
        let checked = repository
            .storage
            .read(&path)
            .and_then(|bytes| decode_record(&repository.keys, &id, &bytes));
        if let Err(e) = checked {
            let reason = e.message_without(&path);
            problems.push((path, reason));
        }
    }
    Ok(problems)
}

/// Returns a scratch database name: unique, recognisable, at most 63 bytes.
fn scratch_name(source: &str) -> String {
    let clean: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("cairn_drill_{}_{clean}", crate::repo::random_hex(6))
}

/// Runs a drill of snapshot `id`. The record is stored whether the drill
/// passes or not; a failed drill returns [`Error::DrillFailed`] after that.
pub fn drill(
    repository: &Repository,
    id: &Id,
    snapshot: &Snapshot,
    options: &DrillOptions,
    progress: &dyn RestoreProgress,
) -> Result<DrillRecord> {
    let started = Instant::now();
    let meta = pg_meta(id, snapshot)?;
    let selected: Vec<&PgDatabase> = if options.databases.is_empty() {
        meta.databases.iter().collect()
    } else {
        options
            .databases
            .iter()
            .map(|name| find_database(meta, name))
            .collect::<Result<_>>()?
    };
    let tools = restore::restore_tools(options.pg_bin.as_deref(), meta)?;
    let maintenance = options.scratch.database().unwrap_or("postgres").to_string();
    let mut session = Session::connect(&tools, &options.scratch, &maintenance)?;
    #[derive(Deserialize)]
    struct Scratch {
        system_identifier: String,
        databases: Vec<String>,
        user: String,
        superuser: bool,
    }
    let scratch: Scratch = session.json(
        "SELECT jsonb_build_object(\
         'system_identifier', (SELECT system_identifier::text FROM pg_control_system()), \
         'databases', (SELECT coalesce(jsonb_agg(datname), '[]') FROM pg_database), \
         'user', current_user, \
         'superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))",
    )?;
    if !scratch.superuser {
        return Err(Error::Invalid(format!(
            "the scratch role {} is not a superuser; a drill creates roles and restores owners and grants, which needs one. Connect to the scratch server as a superuser",
            scratch.user
        )));
    }
    if scratch.system_identifier == meta.system_identifier {
        let shared: Vec<&str> = meta
            .databases
            .iter()
            .map(|d| d.name.as_str())
            .filter(|name| scratch.databases.iter().any(|d| d == name))
            .collect();
        if !shared.is_empty() {
            return Err(Error::Invalid(format!(
                "the scratch server is the server the snapshot was taken from (system identifier {}) and still contains its database(s) {}; a drill never runs beside production data. Give --scratch a separate server",
                meta.system_identifier,
                shared.join(", ")
            )));
        }
    }
    let mut record = DrillRecord {
        snapshot: id.to_hex(),
        time: snapshot::now_rfc3339(),
        host: crate::host_name(),
        scratch: options.scratch.display(),
        passed: false,
        duration_secs: 0.0,
        created_roles: Vec::new(),
        missing_roles: Vec::new(),
        complete: selected.len() == meta.databases.len(),
        databases: Vec::new(),
        error: None,
    };
    let outcome = run_drill(
        repository,
        snapshot,
        meta,
        &selected,
        &tools,
        options,
        &maintenance,
        &mut session,
        &mut record,
        progress,
    );
    if !options.keep {
        for db in &record.databases {
            if let Err(e) = drop_database(&mut session, &db.scratch_name) {
                warn!(database = %db.scratch_name, error = %e, "cannot drop a scratch database; drop it by hand");
            }
        }
    }
    let _ = session.close();
    if let Err(e) = outcome {
        record.error = Some(e.to_string());
    }
    record.duration_secs = started.elapsed().as_secs_f64();
    record.passed = record.problems().is_empty();
    let stored = store_record(repository, &record)?;
    info!(record = %stored.short(), passed = record.passed, "drill record stored");
    if !record.passed {
        let failed = record.failed_databases();
        let failed_clause = if failed.is_empty() {
            String::new()
        } else {
            format!(" for database(s) {}", failed.join(", "))
        };
        return Err(Error::DrillFailed(format!(
            "restore drill of snapshot {} FAILED{failed_clause}:\n  {}",
            id.short(),
            record.problems().join("\n  ")
        )));
    }
    Ok(record)
}

#[allow(clippy::too_many_arguments)]
fn run_drill(
    repository: &Repository,
    snapshot: &Snapshot,
    meta: &super::meta::PgSnapshot,
    selected: &[&PgDatabase],
    tools: &Tools,
    options: &DrillOptions,
    maintenance: &str,
    session: &mut Session,
    record: &mut DrillRecord,
    progress: &dyn RestoreProgress,
) -> Result<()> {
    if meta.globals.is_some() {
        let report = apply_globals(
            repository,
            snapshot,
            meta,
            tools,
            &options.scratch,
            maintenance,
        )?;
        info!(
            created = report.created.len(),
            kept = report.kept.len(),
            "roles applied to the scratch server"
        );
        record.created_roles = report.created;
    }
    let present = evidence::roles(session)?;
    record.missing_roles = meta
        .roles
        .iter()
        .filter(|r| !present.contains(r))
        .cloned()
        .collect();
    for (position, source) in selected.iter().enumerate() {
        let mut result = DrillDatabase {
            name: source.name.clone(),
            scratch_name: scratch_name(&source.name),
            restore_secs: 0.0,
            tables: 0,
            rows: 0,
            differences: Vec::new(),
            amcheck: "skipped: not run".into(),
            kept: options.keep,
        };
        // A failure stops the drill of this database only, so that the
        // record names every database that failed and what failed for it.
        let created = create_database(session, &result.scratch_name, source);
        let checked = match &created {
            Ok(()) => drill_database(
                repository,
                snapshot,
                source,
                tools,
                options,
                maintenance,
                &mut result,
                progress,
            ),
            Err(e) => {
                result.kept = false;
                Err(e.to_string())
            }
        };
        if let Err(reason) = checked {
            warn!(database = %source.name, error = %reason, "drill of a database failed");
            result.differences.push(reason);
        }
        record.databases.push(result);
        if created.is_err() {
            // psql runs with ON_ERROR_STOP, so the failed CREATE DATABASE
            // ended the maintenance session.
            *session = Session::connect(tools, &options.scratch, maintenance)
                .map_err(|e| reconnect_failed(&source.name, &selected[position + 1..], &e))?;
        }
    }
    Ok(())
}

/// Builds the error for a maintenance session that could not be opened
/// again after the drill of database `failed` ended it.
fn reconnect_failed(failed: &str, remaining: &[&PgDatabase], error: &Error) -> Error {
    let skipped = if remaining.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = remaining.iter().map(|d| d.name.as_str()).collect();
        format!(", so database(s) {} were not checked", names.join(", "))
    };
    Error::Postgres(format!(
        "cannot reconnect to the scratch server after the drill of database {failed} failed{skipped}: {error}"
    ))
}

/// Restores one database into its scratch database, which exists already,
/// and compares it with the evidence recorded at backup time. Fills in
/// `result`. Returns the reason, worded for the drill record, when a step
/// failed before the comparison.
#[expect(
    clippy::too_many_arguments,
    reason = "the same inputs as run_drill, one database at a time"
)]
fn drill_database(
    repository: &Repository,
    snapshot: &Snapshot,
    source: &PgDatabase,
    tools: &Tools,
    options: &DrillOptions,
    maintenance: &str,
    result: &mut DrillDatabase,
    progress: &dyn RestoreProgress,
) -> std::result::Result<(), String> {
    let name = result.scratch_name.clone();
    restore::apply_database_properties(tools, &options.scratch, maintenance, &name, source)
        .map_err(|e| format!("cannot restore the database's owner, grants and settings: {e}"))?;

    let restore_started = Instant::now();
    let loaded = restore::load(
        repository,
        snapshot,
        source,
        tools,
        &options.scratch,
        &name,
        &[],
        1,
        &options.temp_dir,
        progress,
    );
    result.restore_secs = restore_started.elapsed().as_secs_f64();
    if let Err(e) = loaded {
        return Err(format!("the restore failed: {e}"));
    }

    let found = read_evidence(tools, &options.scratch, &name, source.evidence.checksums)
        .map_err(|e| format!("cannot read the restored database to compare it: {e}"))?;
    result.tables = found.tables.len();
    result.rows = found.tables.iter().map(|t| t.rows).sum();
    result.differences = evidence::compare(&source.evidence, &found);
    result.amcheck = if options.no_amcheck {
        "skipped: --no-amcheck".into()
    } else {
        amcheck(tools, &options.scratch, &name)
    };
    info!(
        database = %source.name,
        tables = result.tables,
        differences = result.differences.len(),
        amcheck = %result.amcheck,
        "database checked"
    );
    Ok(())
}

/// Records the evidence of a restored scratch database, as the backup did.
fn read_evidence(
    tools: &Tools,
    target: &Target,
    database: &str,
    checksums: bool,
) -> Result<super::meta::Evidence> {
    let mut scratch = Session::connect(tools, target, database)?;
    scratch.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    let found = evidence::collect(&mut scratch, checksums)?;
    scratch.execute("COMMIT")?;
    scratch.close()?;
    Ok(found)
}

/// Runs pg_amcheck on a scratch database (heap and B-tree checks; the
/// amcheck extension is installed in the scratch database if needed).
fn amcheck(tools: &Tools, target: &Target, database: &str) -> String {
    if !tools.has("pg_amcheck") {
        return format!("skipped: no pg_amcheck in {}", tools.bin.display());
    }
    let result = restore::run_tool(
        tools,
        "pg_amcheck",
        &[
            "--no-password".into(),
            "--install-missing".into(),
            target.for_database(database),
        ],
        target,
        None,
        false,
    );
    match result {
        Ok(_) => "passed".into(),
        Err(e) => {
            let text = e.to_string();
            if text.contains("amcheck")
                && (text.contains("not available")
                    || text.contains("could not open extension control file"))
            {
                "skipped: the amcheck extension is not installed on the scratch server".into()
            } else {
                format!(
                    "failed: {}",
                    text.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
                )
            }
        }
    }
}
