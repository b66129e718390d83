//! `cairn pg backup`: every database of a server, plus its roles, as the
//! entries of one snapshot.
//!
//! For each database cairn opens a `psql` session, starts a REPEATABLE READ
//! transaction, exports its snapshot and starts `pg_dump --snapshot` on it.
//! While pg_dump streams the dump into the repository, the session records
//! the evidence (row counts, checksums, catalog facts) in that same
//! snapshot, so the evidence describes exactly the dumped data. Databases
//! are dumped one after another; the next pg_dump starts only when the
//! previous entry is stored.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::thread::JoinHandle;

use serde::Deserialize;
use tracing::{info, warn};

use super::meta::{Evidence, GlobalsInfo, PgDatabase, PgSnapshot};
use super::session::Session;
use super::{Target, Tools, evidence};
use crate::backup::{EntrySummary, Source, Sources};
use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::snapshot::{self, Snapshot};

/// Entry name of the roles and other cluster-wide objects.
pub const GLOBALS_ENTRY: &str = "globals.sql";

/// Server, databases and options of a PostgreSQL backup.
#[derive(Debug, Clone)]
pub struct PgBackupOptions {
    /// The server.
    pub target: Target,
    /// Databases to dump; empty with `all` for every database.
    pub databases: Vec<String>,
    /// Dump every database that accepts connections, except templates.
    pub all: bool,
    /// Databases to leave out of `all`.
    pub exclude: Vec<String>,
    /// Reject an `exclude` name that the server does not have, which is
    /// most likely a typing mistake. A scheduled job turns this off, so
    /// that dropping an excluded database does not stop its backups.
    pub strict_exclude: bool,
    /// Dump roles and other cluster-wide objects (`globals.sql`).
    pub globals: bool,
    /// Record table checksums besides row counts.
    pub checksums: bool,
    /// Folder of the PostgreSQL client programs to use.
    pub pg_bin: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ServerRow {
    version: String,
    version_num: u32,
    system_identifier: String,
    superuser: bool,
    databases: Vec<String>,
    roles: Vec<String>,
}

#[derive(Deserialize)]
struct DatabaseRow {
    owner: Option<String>,
    grants: Option<Vec<super::meta::DatabaseGrant>>,
    settings: Vec<super::meta::DatabaseSettings>,
    encoding: String,
    collate: String,
    ctype: String,
    size: u64,
    lsn: String,
    row: serde_json::Value,
}

enum Step {
    Globals,
    Database(String),
}

/// A database being dumped: the session holding the exported snapshot, the
/// evidence thread and what is known so far.
struct Running {
    record: PgDatabase,
    exporter: Session,
    group: i32,
    thread: JoinHandle<Result<(Session, Evidence)>>,
}

/// The [`Sources`] of a PostgreSQL backup.
pub struct PgBackup {
    tools: Tools,
    target: Target,
    maintenance_db: String,
    superuser: bool,
    checksums: bool,
    steps: VecDeque<Step>,
    entry_names: HashSet<String>,
    running: Option<Running>,
    meta: PgSnapshot,
}

fn failed(message: impl std::fmt::Display) -> Error {
    Error::Producer(format!("{message}; no snapshot was written"))
}

impl PgBackup {
    /// Connects to the server, picks the client programs and lists the
    /// databases; nothing is dumped yet.
    pub fn prepare(options: &PgBackupOptions) -> Result<PgBackup> {
        let maintenance_db = options
            .target
            .database()
            .filter(|_| options.all || options.databases.is_empty())
            .unwrap_or("postgres")
            .to_string();
        let psql = Tools::find(
            options.pg_bin.as_deref(),
            "psql",
            0,
            "connecting to the server",
        )?;
        let mut session =
            Session::connect(&psql, &options.target, &maintenance_db).map_err(|e| {
                let text = e.to_string();
                // libpq rejects a misspelt option before any network access:
                // that is invalid input, not a failed producer.
                if [
                    "invalid connection option",
                    "invalid sslmode value",
                    "invalid URI",
                ]
                .iter()
                .any(|m| text.contains(m))
                {
                    Error::Invalid(format!("the connection is invalid: {text}"))
                } else {
                    failed(format!("cannot connect: {text}"))
                }
            })?;
        let server: ServerRow = session
            .json(&format!(
                "SELECT jsonb_build_object(\
                 'version', current_setting('server_version'), \
                 'version_num', current_setting('server_version_num')::int, \
                 'system_identifier', (SELECT system_identifier::text FROM pg_control_system()), \
                 'superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
                 'databases', (SELECT coalesce(jsonb_agg(datname ORDER BY datname), '[]') \
                   FROM pg_database WHERE datallowconn AND NOT datistemplate \
                   AND has_database_privilege(oid, 'CONNECT')), \
                 'roles', ({}))",
                evidence::ROLES_SQL
            ))
            .map_err(failed)?;
        session.close().map_err(failed)?;
        let server_major = super::tools::major_of_version_num(server.version_num);
        let tools = Tools::find(
            options.pg_bin.as_deref(),
            "pg_dump",
            server_major,
            &format!("a backup of this PostgreSQL {} server", server.version),
        )?;
        let databases = select_databases(options, &server.databases)?;
        let mut steps: VecDeque<Step> = databases.into_iter().map(Step::Database).collect();
        if options.globals {
            steps.push_front(Step::Globals);
        }
        let pg_dump_version = tools.version.clone();
        info!(server = %server.version, pg_dump = %pg_dump_version, "PostgreSQL backup prepared");
        Ok(PgBackup {
            target: options.target.clone(),
            maintenance_db,
            superuser: server.superuser,
            checksums: options.checksums,
            steps,
            entry_names: HashSet::from([GLOBALS_ENTRY.to_string()]),
            running: None,
            meta: PgSnapshot {
                server_version: server.version,
                server_version_num: server.version_num,
                pg_dump_version,
                pg_dump_major: tools.major,
                system_identifier: server.system_identifier,
                connection: options.target.display(),
                all: options.all,
                globals: None,
                roles: server.roles,
                databases: Vec::new(),
            },
            tools,
        })
    }

    /// Names of the databases that will be dumped, in order.
    pub fn databases(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Database(name) => Some(name.as_str()),
                Step::Globals => None,
            })
            .collect()
    }

    /// Returns the `--version` line of the pg_dump in use.
    pub fn pg_dump_version(&self) -> &str {
        &self.tools.version
    }

    fn globals_source(&mut self) -> Result<Source> {
        let mut argv = vec![self.tools.program("pg_dumpall").display().to_string()];
        if self.superuser {
            argv.push("--globals-only".into());
        } else {
            warn!(
                "the backup role is not a superuser: dumping roles only, without passwords (pg_dumpall --roles-only --no-role-passwords); tablespaces and role passwords must be recreated by hand after a restore"
            );
            argv.extend(["--roles-only".into(), "--no-role-passwords".into()]);
        }
        argv.extend([
            "--no-password".into(),
            "-l".into(),
            self.maintenance_db.clone(),
            "-d".into(),
            self.target.for_database(&self.maintenance_db),
        ]);
        let mut producer = Producer::spawn_with_env(&argv, &self.target.env())?;
        let reader = producer
            .take_stdout()
            .ok_or_else(|| Error::Producer("pg_dumpall's stdout is not available".into()))?;
        self.meta.globals = Some(GlobalsInfo {
            entry: GLOBALS_ENTRY.into(),
            complete: self.superuser,
        });
        Ok(Source {
            name: GLOBALS_ENTRY.into(),
            reader: Box::new(reader),
            producer: Some(producer),
        })
    }

    fn database_source(&mut self, name: &str) -> Result<Source> {
        let mut session = Session::connect(&self.tools, &self.target, name)
            .map_err(|e| failed(format!("cannot connect to database {name}: {e}")))?;
        session
            .execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .map_err(failed)?;
        let snapshot_id = session
            .value("SELECT pg_export_snapshot()")
            .map_err(failed)?;
        let started = snapshot::now_rfc3339();
        let row: DatabaseRow = session
            .json(
                "SELECT jsonb_build_object('encoding', pg_encoding_to_char(d.encoding), \
                 'collate', d.datcollate, 'ctype', d.datctype, 'size', pg_database_size(d.oid), \
                 'lsn', (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                   ELSE pg_current_wal_lsn() END)::text, \
                 'owner', pg_get_userbyid(d.datdba), \
                 'grants', CASE WHEN d.datacl IS NULL THEN NULL ELSE \
                   (SELECT coalesce(jsonb_agg(jsonb_build_object(\
                     'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, \
                     'privilege', a.privilege_type, 'grantable', a.is_grantable)), '[]') \
                    FROM aclexplode(d.datacl) a) END, \
                 'settings', (SELECT coalesce(jsonb_agg(jsonb_build_object(\
                   'role', CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, \
                   'settings', to_jsonb(s.setconfig))), '[]') \
                   FROM pg_db_role_setting s WHERE s.setdatabase = d.oid), \
                 'row', to_jsonb(d) - 'datacl') \
                 FROM pg_database d WHERE d.datname = current_database()",
            )
            .map_err(failed)?;
        let text_field = |key: &str| {
            row.row
                .get(key)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let record = PgDatabase {
            name: name.to_string(),
            entry: self.entry_name(name),
            encoding: row.encoding,
            collate: row.collate,
            ctype: row.ctype,
            locale_provider: text_field("datlocprovider"),
            icu_locale: text_field("daticulocale").or_else(|| text_field("datlocale")),
            owner: row.owner,
            grants: row.grants,
            settings: row.settings,
            size_bytes: row.size,
            wal_lsn: row.lsn,
            started,
            finished: String::new(),
            evidence: Evidence::default(),
        };
        let argv = vec![
            self.tools.program("pg_dump").display().to_string(),
            "--format=custom".into(),
            "--compress=0".into(),
            "--no-password".into(),
            format!("--snapshot={snapshot_id}"),
            "-d".into(),
            self.target.for_database(name),
        ];
        // The evidence gets its own session on the same snapshot: if one
        // of its queries fails, psql ends that session, and the exporting
        // transaction that pg_dump depends on must outlive it.
        let mut evidence_session = Session::connect(&self.tools, &self.target, name)
            .map_err(|e| failed(format!("cannot connect to database {name}: {e}")))?;
        evidence_session
            .execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
                super::quote_literal(&snapshot_id)
            ))
            .map_err(failed)?;
        let mut producer = Producer::spawn_with_env(&argv, &self.target.env())?;
        let reader = producer
            .take_stdout()
            .ok_or_else(|| Error::Producer("pg_dump's stdout is not available".into()))?;
        let checksums = self.checksums;
        let group = evidence_session.process_group();
        let thread = std::thread::spawn(move || {
            let evidence = evidence::collect(&mut evidence_session, checksums)?;
            Ok((evidence_session, evidence))
        });
        let entry = record.entry.clone();
        self.running = Some(Running {
            record,
            exporter: session,
            group,
            thread,
        });
        info!(database = name, entry = %entry, "dumping database");
        Ok(Source {
            name: entry,
            reader: Box::new(reader),
            producer: Some(producer),
        })
    }

    /// `<name>.dump`, made a valid and unique entry name.
    fn entry_name(&mut self, database: &str) -> String {
        let clean: String = database
            .chars()
            .map(|c| {
                if c == '/' || c == ':' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .take(200)
            .collect();
        let mut name = format!("{clean}.dump");
        let mut n = 2;
        while !self.entry_names.insert(name.clone()) {
            name = format!("{clean}-{n}.dump");
            n += 1;
        }
        name
    }
}

fn select_databases(options: &PgBackupOptions, available: &[String]) -> Result<Vec<String>> {
    if options.all && !options.databases.is_empty() {
        return Err(Error::Invalid(
            "give either database names or --all, not both".into(),
        ));
    }
    for db in &options.exclude {
        if available.contains(db) {
            continue;
        }
        if options.strict_exclude {
            return Err(Error::Invalid(format!(
                "--exclude {db}: the server has no such database; it has: {}",
                available.join(", ")
            )));
        }
        warn!(
            database = %db,
            available = %available.join(", "),
            "an excluded database is not on the server; remove it from exclude if it was dropped for good"
        );
    }
    let mut chosen: Vec<String> = if options.all {
        available
            .iter()
            .filter(|d| !options.exclude.contains(d))
            .cloned()
            .collect()
    } else if options.databases.is_empty() {
        match options.target.database() {
            Some(db) => vec![db.to_string()],
            None => {
                return Err(Error::Invalid(
                    "name the databases to back up, or pass --all for every database".into(),
                ));
            }
        }
    } else {
        options.databases.clone()
    };
    chosen.dedup();
    for db in &chosen {
        if !available.contains(db) {
            return Err(Error::Invalid(format!(
                "database {db} does not exist or does not accept connections from this role; the server has: {}",
                available.join(", ")
            )));
        }
    }
    if chosen.is_empty() {
        return Err(Error::Invalid(
            "no database left to back up after --exclude".into(),
        ));
    }
    Ok(chosen)
}

impl Sources for PgBackup {
    fn next_source(&mut self) -> Result<Option<Source>> {
        match self.steps.pop_front() {
            None => Ok(None),
            Some(Step::Globals) => self.globals_source().map(Some),
            Some(Step::Database(name)) => self.database_source(&name).map(Some),
        }
    }

    fn entry_stored(&mut self, summary: &EntrySummary) -> Result<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let Running {
            mut record,
            thread,
            exporter,
            ..
        } = running;
        let (session, evidence) = thread
            .join()
            .map_err(|_| failed("the evidence thread panicked"))?
            .map_err(|e| {
                failed(format!(
                    "recording row counts and checksums of database {} failed: {e}",
                    record.name
                ))
            })?;
        for mut session in [session, exporter] {
            session.execute("COMMIT").map_err(failed)?;
            session.close().map_err(failed)?;
        }
        record.evidence = evidence;
        record.finished = snapshot::now_rfc3339();
        info!(
            database = %record.name,
            size = summary.size,
            tables = record.evidence.tables.len(),
            "database dumped and evidence recorded"
        );
        self.meta.databases.push(record);
        Ok(())
    }

    fn complete(&mut self, snapshot: &mut Snapshot) -> Result<()> {
        snapshot.postgres = Some(self.meta.clone());
        Ok(())
    }
}

impl Drop for PgBackup {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // The session is still inside the thread (alive or not yet
            // reaped), so its process group id cannot have been reused.
            if !running.thread.is_finished() {
                crate::producer::kill_group(running.group, libc::SIGTERM);
            }
            let _ = running.thread.join();
        }
    }
}
