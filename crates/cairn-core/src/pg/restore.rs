//! `cairn pg restore`: one database of a snapshot into a server, and the
//! steps that restore drills share with it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::meta::{PgDatabase, PgSnapshot};
use super::session::Session;
use super::{Target, Tools, quote_ident, quote_literal};
use crate::Repository;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::restore::RestoreProgress;
use crate::snapshot::Snapshot;

/// Free space kept beyond the dump's size when it is written to a file.
const SPACE_MARGIN: u64 = 256 * 1024 * 1024;

/// Options of `cairn pg restore`.
#[derive(Debug, Clone)]
pub struct PgRestoreOptions {
    /// Database of the snapshot to restore.
    pub database: String,
    /// Target server; with `create` its database is the one to connect to
    /// for `CREATE DATABASE`, otherwise the database to restore into.
    pub target: Target,
    /// Create the target database, with the snapshot's encoding and locale.
    pub create: bool,
    /// Name of the database to create instead of the source's name.
    pub rename: Option<String>,
    /// Drop the target's objects before recreating them.
    pub clean: bool,
    /// Create the snapshot's roles that the target server lacks first.
    pub globals: bool,
    /// Restore only these schemas (pg_restore `--schema`).
    pub schemas: Vec<String>,
    /// Restore only these tables (pg_restore `--table`).
    pub tables: Vec<String>,
    /// Parallel pg_restore jobs; above 1 the dump is written to a file.
    pub jobs: u32,
    /// Folder for that file.
    pub temp_dir: PathBuf,
    /// Accept a target whose encoding or locale differs from the source's.
    pub force_locale: bool,
    /// Allow restoring into the very database the snapshot came from.
    pub overwrite_source: bool,
    /// Folder of the PostgreSQL client programs.
    pub pg_bin: Option<PathBuf>,
}

/// Outcome of applying `globals.sql`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GlobalsReport {
    /// Roles created from the snapshot.
    pub created: Vec<String>,
    /// Roles that existed on the target and were left unchanged.
    pub kept: Vec<String>,
    /// Errors psql reported for other statements (tablespaces, ...).
    pub errors: Vec<String>,
}

/// Outcome of `cairn pg restore`.
#[derive(Debug, Clone, Serialize)]
pub struct PgRestoreReport {
    /// Database restored into.
    pub database: String,
    /// Whether cairn created it.
    pub created: bool,
    /// Roles applied, with `--globals`.
    pub globals: Option<GlobalsReport>,
    /// Bytes of dump loaded.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub duration_secs: f64,
}

/// Returns the PostgreSQL metadata of a snapshot, or an error that says how
/// to restore a snapshot without it.
pub fn pg_meta<'a>(id: &Id, snapshot: &'a Snapshot) -> Result<&'a PgSnapshot> {
    snapshot.postgres.as_ref().ok_or_else(|| {
        Error::Invalid(format!(
            "snapshot {} was not made by `cairn pg backup`; restore its entries with `cairn restore`",
            id.short()
        ))
    })
}

/// Finds one database of a snapshot; the error lists the others.
pub fn find_database<'a>(meta: &'a PgSnapshot, name: &str) -> Result<&'a PgDatabase> {
    meta.databases
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the snapshot has no database {name}; it has: {}",
                meta.databases
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Finds a pg_restore able to read the snapshot's archives.
pub fn restore_tools(pg_bin: Option<&Path>, meta: &PgSnapshot) -> Result<Tools> {
    Tools::find(
        pg_bin,
        "pg_restore",
        meta.pg_dump_major,
        &format!(
            "restoring a dump written by {} (archives are read only by pg_restore of the same major version or newer)",
            meta.pg_dump_version
        ),
    )
}

#[derive(Deserialize)]
struct ServerIdentity {
    system_identifier: String,
    databases: Vec<String>,
}

/// Queries the server's system identifier and its databases.
fn identify(session: &mut Session) -> Result<ServerIdentity> {
    session.json(
        "SELECT jsonb_build_object(\
         'system_identifier', (SELECT system_identifier::text FROM pg_control_system()), \
         'databases', (SELECT coalesce(jsonb_agg(datname ORDER BY datname), '[]') FROM pg_database))",
    )
}

/// `CREATE DATABASE` with the source's encoding and locale.
pub fn create_database(session: &mut Session, name: &str, source: &PgDatabase) -> Result<()> {
    let mut sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(name),
        quote_literal(&source.encoding),
        quote_literal(&source.collate),
        quote_literal(&source.ctype)
    );
    if source.locale_provider.as_deref() == Some("i")
        && let Some(icu) = &source.icu_locale
    {
        sql.push_str(&format!(
            " LOCALE_PROVIDER icu ICU_LOCALE {}",
            quote_literal(icu)
        ));
    }
    session.execute(&sql).map_err(|e| {
        Error::Postgres(format!(
            "cannot create database {name} with encoding {} and locale {}/{}: {e}",
            source.encoding, source.collate, source.ctype
        ))
    })
}

/// Settings whose value is a list: pg_db_role_setting stores them with
/// their elements already quoted, so they are passed on verbatim.
const LIST_SETTINGS: [&str; 5] = [
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
    "default_text_search_config",
];

/// Gives a database created by cairn the source's owner, privileges and
/// settings, which pg_dump stores only for `pg_restore --create`. Returns a
/// warning for each statement that failed (a role missing on the target).
pub fn apply_database_properties(
    tools: &Tools,
    target: &Target,
    maintenance_db: &str,
    name: &str,
    source: &PgDatabase,
) -> Result<Vec<String>> {
    let database = quote_ident(name);
    let mut statements = Vec::new();
    if let Some(owner) = &source.owner {
        statements.push(format!(
            "ALTER DATABASE {database} OWNER TO {}",
            quote_ident(owner)
        ));
    }
    if let Some(grants) = &source.grants {
        statements.push(format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"));
        for grant in grants {
            let grantee = if grant.grantee == "PUBLIC" {
                "PUBLIC".to_string()
            } else {
                quote_ident(&grant.grantee)
            };
            statements.push(format!(
                "GRANT {} ON DATABASE {database} TO {grantee}{}",
                grant.privilege,
                if grant.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            ));
        }
    }
    for group in &source.settings {
        for item in &group.settings {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let value = if LIST_SETTINGS.contains(&key) {
                value.to_string()
            } else {
                quote_literal(value)
            };
            statements.push(match &group.role {
                None => format!(
                    "ALTER DATABASE {database} SET {} TO {value}",
                    quote_ident(key)
                ),
                Some(role) => format!(
                    "ALTER ROLE {} IN DATABASE {database} SET {} TO {value}",
                    quote_ident(role),
                    quote_ident(key)
                ),
            });
        }
    }
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    // One psql without ON_ERROR_STOP: a role missing on the target fails
    // its statement and the others still run.
    let script: String = statements.iter().map(|s| format!("{s};\n")).collect();
    let stderr = run_tool(
        tools,
        "psql",
        &[
            "-X".into(),
            "-q".into(),
            "-w".into(),
            "-d".into(),
            target.for_database(maintenance_db),
        ],
        target,
        Some(&mut |stdin: &mut (dyn Write + Send)| {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| Error::io("writing database properties to psql", e))
        }),
        false,
    )?;
    let warnings: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    for warning in &warnings {
        warn!(database = name, error = %warning, "cannot restore a database property");
    }
    Ok(warnings)
}

/// Drops a database cairn created.
pub fn drop_database(session: &mut Session, name: &str) -> Result<()> {
    session.execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
}

/// Reads one entry of the snapshot into memory; for small entries only
/// (`globals.sql`).
fn read_small_entry(repository: &Repository, snapshot: &Snapshot, name: &str) -> Result<Vec<u8>> {
    let entry = snapshot.entry(name).ok_or_else(|| {
        Error::corrupt(format!("entry {name}"), "named by the metadata but missing")
    })?;
    let mut out = Vec::with_capacity(entry.size as usize);
    repository.restore_entry(entry, &mut out, &crate::restore::NoRestoreProgress)?;
    Ok(out)
}

/// Creates the snapshot's roles that the target server lacks, from
/// `globals.sql`. Statements about roles that exist already are skipped,
/// so a restore never changes an existing role's password or attributes.
pub fn apply_globals(
    repository: &Repository,
    snapshot: &Snapshot,
    meta: &PgSnapshot,
    tools: &Tools,
    target: &Target,
    maintenance_db: &str,
) -> Result<GlobalsReport> {
    let Some(globals) = &meta.globals else {
        return Err(Error::Invalid(
            "the snapshot has no globals.sql entry (it was taken with --no-globals)".into(),
        ));
    };
    let script = read_small_entry(repository, snapshot, &globals.entry)?;
    let script = String::from_utf8_lossy(&script).into_owned();
    let mut session = Session::connect(tools, target, maintenance_db)?;
    let existing: Vec<String> = super::evidence::roles(&mut session)?;
    session.close()?;
    let mut report = GlobalsReport::default();
    let mut filtered = String::new();
    for line in script.lines() {
        if let Some(role) = role_statement(line) {
            if existing.contains(&role) {
                if line.starts_with("CREATE ROLE") {
                    report.kept.push(role);
                }
                continue;
            }
            if line.starts_with("CREATE ROLE") {
                report.created.push(role);
            }
        }
        filtered.push_str(line);
        filtered.push('\n');
    }
    let stderr = run_tool(
        tools,
        "psql",
        &[
            "-X".into(),
            "-q".into(),
            "-w".into(),
            "-d".into(),
            target.for_database(maintenance_db),
        ],
        target,
        Some(&mut |stdin: &mut (dyn Write + Send)| {
            stdin
                .write_all(filtered.as_bytes())
                .map_err(|e| Error::io("writing globals.sql to psql", e))
        }),
        false,
    )?;
    report.errors = stderr
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    for error in &report.errors {
        warn!(error = %error, "a statement of globals.sql failed");
    }
    Ok(report)
}

/// Returns the role that a `CREATE ROLE`, `ALTER ROLE` or role-membership
/// `GRANT ... TO` line of pg_dumpall's output is about.
fn role_statement(line: &str) -> Option<String> {
    if let Some(rest) = line
        .strip_prefix("CREATE ROLE ")
        .or_else(|| line.strip_prefix("ALTER ROLE "))
    {
        return parse_identifier(rest);
    }
    if line.starts_with("GRANT ")
        && let Some(position) = line.find(" TO ")
    {
        return parse_identifier(&line[position + 4..]);
    }
    None
}

fn parse_identifier(text: &str) -> Option<String> {
    let mut chars = text.chars();
    if text.starts_with('"') {
        chars.next();
        let mut out = String::new();
        loop {
            match chars.next()? {
                '"' => {
                    if chars.clone().next() == Some('"') {
                        chars.next();
                        out.push('"');
                    } else {
                        return Some(out);
                    }
                }
                c => out.push(c),
            }
        }
    }
    let word: String = text
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ';')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// Writes a program's stdin.
pub type Feed<'a> = &'a mut dyn FnMut(&mut (dyn Write + Send)) -> Result<()>;

/// Runs a PostgreSQL program with `args`, optionally feeding its stdin.
/// Its stdout goes to cairn's stdout when `show_stdout`, else nowhere;
/// its stderr is collected and returned. A non-zero exit is an error that
/// quotes the end of its stderr.
pub fn run_tool(
    tools: &Tools,
    program: &str,
    args: &[String],
    target: &Target,
    feed: Option<Feed<'_>>,
    show_stdout: bool,
) -> Result<String> {
    let path = tools.program(program);
    let mut command = Command::new(&path);
    crate::producer::prepare_child(&mut command);
    command
        .args(args)
        .envs(target.env())
        .env("PGAPPNAME", "cairn")
        .stdin(if feed.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if show_stdout {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| Error::Postgres(format!("cannot start {}: {e}", path.display())))?;
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&stderr);
    let mut pipe = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Some(Ok(n)) = pipe.as_mut().map(|p| p.read(&mut buffer)) {
            if n == 0 {
                break;
            }
            if let Ok(mut text) = sink.lock() {
                text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                if text.len() > 256 * 1024 {
                    let cut = text.len() - 128 * 1024;
                    let cut = (cut..text.len())
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(0);
                    text.drain(..cut);
                }
            }
        }
    });
    let fed = match (feed, child.stdin.take()) {
        (Some(feed), Some(mut stdin)) => {
            let result = feed(&mut stdin);
            drop(stdin);
            result
        }
        _ => Ok(()),
    };
    let status = child
        .wait()
        .map_err(|e| Error::Postgres(format!("cannot wait for {program}: {e}")))?;
    let _ = reader.join();
    let text = stderr.lock().map(|s| s.clone()).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::Postgres(format!(
            "{program} failed ({status}):\n{}",
            tail.join("\n")
        )));
    }
    fed?;
    Ok(text)
}

/// Loads one database entry into `database` on `target` with pg_restore:
/// streamed through a pipe, or with `jobs` > 1 written to a file in
/// `temp_dir` first (parallel pg_restore needs to seek).
#[allow(clippy::too_many_arguments)]
pub fn load(
    repository: &Repository,
    snapshot: &Snapshot,
    source: &PgDatabase,
    tools: &Tools,
    target: &Target,
    database: &str,
    extra: &[String],
    jobs: u32,
    temp_dir: &Path,
    progress: &dyn RestoreProgress,
) -> Result<()> {
    let entry = snapshot.entry(&source.entry).ok_or_else(|| {
        Error::corrupt(
            format!("entry {}", source.entry),
            "named by the metadata but missing",
        )
    })?;
    let mut args = vec![
        "--no-password".to_string(),
        "--exit-on-error".to_string(),
        "-d".to_string(),
        target.for_database(database),
    ];
    args.extend(extra.iter().cloned());
    if jobs <= 1 {
        args.push("--single-transaction".into());
        run_tool(
            tools,
            "pg_restore",
            &args,
            target,
            Some(&mut |stdin: &mut (dyn Write + Send)| {
                repository.restore_entry(entry, stdin, progress)
            }),
            false,
        )?;
        return Ok(());
    }
    let available = crate::prune::available_bytes(temp_dir).unwrap_or(u64::MAX);
    if available < entry.size.saturating_add(SPACE_MARGIN) {
        return Err(Error::Invalid(format!(
            "--jobs {jobs} needs the dump as a file: {} bytes plus a margin of {} MiB in {}, which has only {} bytes free; pass --temp-dir on a larger filesystem or use --jobs 1 (streams without a file)",
            entry.size,
            SPACE_MARGIN >> 20,
            temp_dir.display(),
            available
        )));
    }
    let file = tempfile::Builder::new()
        .prefix("cairn-restore-")
        .suffix(".dump")
        .tempfile_in(temp_dir)
        .map_err(|e| Error::io(format!("creating a file in {}", temp_dir.display()), e))?;
    info!(path = %file.path().display(), size = entry.size, "dump written to a file for parallel pg_restore");
    {
        let mut writer = std::io::BufWriter::new(file.as_file());
        repository.restore_entry(entry, &mut writer, progress)?;
    }
    args.push(format!("--jobs={jobs}"));
    args.push(file.path().display().to_string());
    run_tool(tools, "pg_restore", &args, target, None, false)?;
    Ok(())
}

/// `pg_restore --list` of one database entry, printed on stdout.
pub fn list(
    repository: &Repository,
    id: &Id,
    snapshot: &Snapshot,
    database: &str,
    pg_bin: Option<&Path>,
) -> Result<()> {
    let meta = pg_meta(id, snapshot)?;
    let source = find_database(meta, database)?;
    let tools = restore_tools(pg_bin, meta)?;
    let entry = snapshot.entry(&source.entry).ok_or_else(|| {
        Error::corrupt(
            format!("entry {}", source.entry),
            "named by the metadata but missing",
        )
    })?;
    run_tool(
        &tools,
        "pg_restore",
        &["--list".into()],
        &Target::parse(None)?,
        Some(&mut |stdin: &mut (dyn Write + Send)| {
            repository.restore_entry(entry, stdin, &crate::restore::NoRestoreProgress)
        }),
        true,
    )?;
    Ok(())
}

/// Restores one database of a snapshot; see [`PgRestoreOptions`].
pub fn restore(
    repository: &Repository,
    id: &Id,
    snapshot: &Snapshot,
    options: &PgRestoreOptions,
    progress: &dyn RestoreProgress,
) -> Result<PgRestoreReport> {
    let started = Instant::now();
    let meta = pg_meta(id, snapshot)?;
    let source = find_database(meta, &options.database)?;
    let tools = restore_tools(options.pg_bin.as_deref(), meta)?;
    let (connect_db, database) = if options.create {
        let database = options
            .rename
            .clone()
            .unwrap_or_else(|| source.name.clone());
        (
            options.target.database().unwrap_or("postgres").to_string(),
            database,
        )
    } else {
        if options.rename.is_some() {
            return Err(Error::Invalid(
                "--as names a database to create; use it with --create, or name the target database in --to".into(),
            ));
        }
        let database = options.target.database().ok_or_else(|| {
            Error::Invalid(
                "--to does not name a database: name the existing empty database to restore into (postgres://host/NAME), or pass --create to create one".into(),
            )
        })?;
        (database.to_string(), database.to_string())
    };
    let mut session = match Session::connect(&tools, &options.target, &connect_db) {
        Ok(session) => session,
        Err(e) if !options.create && e.to_string().contains("does not exist") => {
            return Err(Error::Invalid(format!(
                "database {connect_db} does not exist on the target ({e}); pass --create to create it with the snapshot's encoding and locale"
            )));
        }
        Err(e) => return Err(e),
    };
    let server = identify(&mut session)?;
    if server.system_identifier == meta.system_identifier
        && database == source.name
        && server.databases.contains(&database)
        && !options.overwrite_source
    {
        return Err(Error::Invalid(format!(
            "database {database} on this server is the one the snapshot was taken from (same system identifier {}); restoring into it would overwrite the source. Restore under another name (--create --as {}_restored), or pass --overwrite-source if that is really what you want",
            meta.system_identifier, source.name
        )));
    }
    // Check the target before changing anything on the server.
    let exists = server.databases.contains(&database);
    if !exists && !options.create {
        return Err(Error::Invalid(format!(
            "database {database} does not exist on the target; pass --create to create it with the snapshot's encoding and locale"
        )));
    }
    if exists {
        let mut target_session = if connect_db == database {
            session
        } else {
            session.close()?;
            Session::connect(&tools, &options.target, &database)?
        };
        check_existing_target(&mut target_session, &database, source, options)?;
        target_session.close()?;
        if options.create {
            info!(database = %database, "the database exists and is empty: restoring into it");
        }
    } else {
        session.close()?;
    }
    let globals = if options.globals {
        Some(apply_globals(
            repository,
            snapshot,
            meta,
            &tools,
            &options.target,
            &connect_db,
        )?)
    } else {
        None
    };
    let created = !exists;
    if created {
        let mut session = Session::connect(&tools, &options.target, &connect_db)?;
        create_database(&mut session, &database, source)?;
        session.close()?;
        apply_database_properties(&tools, &options.target, &connect_db, &database, source)?;
    }
    let mut extra = Vec::new();
    if options.clean {
        extra.extend(["--clean".to_string(), "--if-exists".to_string()]);
    }
    for schema in &options.schemas {
        extra.push(format!("--schema={schema}"));
    }
    for table in &options.tables {
        extra.push(format!("--table={table}"));
    }
    let loaded = load(
        repository,
        snapshot,
        source,
        &tools,
        &options.target,
        &database,
        &extra,
        options.jobs,
        &options.temp_dir,
        progress,
    );
    if let Err(e) = loaded {
        if created {
            warn!(database = %database, "the restore failed; the database cairn created is left for inspection: drop it before retrying");
        }
        return Err(e);
    }
    let bytes = snapshot.entry(&source.entry).map(|e| e.size).unwrap_or(0);
    Ok(PgRestoreReport {
        database,
        created,
        globals,
        bytes,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Rejects an existing target database whose encoding or locale differs
/// from the source's, or that is not empty, unless the options allow it.
fn check_existing_target(
    session: &mut Session,
    database: &str,
    source: &PgDatabase,
    options: &PgRestoreOptions,
) -> Result<()> {
    let target_row: TargetDatabase = session.json(
        "SELECT jsonb_build_object('encoding', pg_encoding_to_char(d.encoding), \
         'collate', d.datcollate, 'ctype', d.datctype, \
         'relations', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' AND c.relkind IN ('r','p','v','m','S','f'))) \
         FROM pg_database d WHERE d.datname = current_database()",
    )?;
    let same = (&target_row.encoding, &target_row.collate, &target_row.ctype)
        == (&source.encoding, &source.collate, &source.ctype);
    if !same && !options.force_locale {
        return Err(Error::Invalid(format!(
            "database {database} has encoding {} and locale {}/{}, but the snapshot's {} had {} and {}/{}; text may be converted or sorted differently. Restore into a new database with --create (it gets the snapshot's settings), or pass --force-locale",
            target_row.encoding,
            target_row.collate,
            target_row.ctype,
            source.name,
            source.encoding,
            source.collate,
            source.ctype
        )));
    }
    if target_row.relations > 0 && !options.clean {
        return Err(Error::Invalid(format!(
            "database {database} exists and is not empty ({} tables, views or sequences); pass --clean to drop and recreate the objects in the dump, or restore under another name with --create --as NAME",
            target_row.relations
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct TargetDatabase {
    encoding: String,
    collate: String,
    ctype: String,
    relations: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_lines() {
        assert_eq!(role_statement("CREATE ROLE alice;"), Some("alice".into()));
        assert_eq!(
            role_statement("ALTER ROLE \"Odd \"\"Name\" WITH LOGIN;"),
            Some("Odd \"Name".into())
        );
        assert_eq!(
            role_statement("GRANT app TO alice GRANTED BY postgres;"),
            Some("alice".into())
        );
        assert_eq!(
            role_statement("SET default_transaction_read_only = off;"),
            None
        );
        assert_eq!(role_statement("CREATE TABLESPACE x LOCATION '/y';"), None);
    }
}
