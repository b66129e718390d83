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

/// Returns the PostgreSQL metadata of a snapshot, or an error that names
/// the command that restores a snapshot without it.
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
    let warnings = run_script(
        tools,
        target,
        maintenance_db,
        &script,
        "database properties",
    )?;
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
    report.errors = run_script(tools, target, maintenance_db, &filtered, "globals.sql")?;
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

/// Runs an SQL script with psql without `ON_ERROR_STOP`, so that one
/// failing statement does not stop the others; returns psql's ERROR lines.
fn run_script(
    tools: &Tools,
    target: &Target,
    database: &str,
    script: &str,
    what: &str,
) -> Result<Vec<String>> {
    let stderr = run_tool(
        tools,
        "psql",
        &[
            "-X".into(),
            "-q".into(),
            "-w".into(),
            "-d".into(),
            target.for_database(database),
        ],
        target,
        Some(&mut |stdin: &mut (dyn Write + Send)| {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| Error::io(format!("writing {what} to psql"), e))
        }),
        false,
    )?;
    Ok(stderr
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_string)
        .collect())
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
            if matches!(&result, Err(e) if !is_broken_pipe(e)) {
                // IMPORTANT: stop the program before its input ends. The
                // entry hash is checked after the last byte was written, and
                // a single-transaction pg_restore that read to the end of its
                // input would commit what it read.
                let _ = child.kill();
            }
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
    // A feed that failed on its own side (a damaged chunk, a missing pack)
    // is the cause, because the program only saw its input end early.
    if let Err(e) = &fed
        && !is_broken_pipe(e)
    {
        return fed.map(|()| text);
    }
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::Postgres(format!(
            "{program} failed ({status}):\n{}",
            tail.join("\n")
        )));
    }
    // pg_restore stops reading once it has what a selection needs, so a
    // broken pipe after a successful exit is not an error.
    match fed {
        Err(e) if !is_broken_pipe(&e) => Err(e),
        _ => Ok(text),
    }
}

fn is_broken_pipe(error: &Error) -> bool {
    matches!(error, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
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

/// Databases that exist on every server and serve as connection targets;
/// restoring another database's dump into one of them is a mistake (a
/// forgotten `--create`).
const SYSTEM_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

/// pg_restore arguments selecting `tables` and `schemas`, checked against
/// the tables and sequences the snapshot recorded. A name with a dot is
/// `schema.table`; pg_restore matches `--table` by name only, so a schema
/// becomes a `--schema` next to it.
fn selection_args(
    source: &PgDatabase,
    tables: &[String],
    schemas: &[String],
) -> Result<Vec<String>> {
    let evidence = &source.evidence;
    let mut args = Vec::new();
    for schema in schemas {
        if !evidence.schemas.contains(schema) {
            return Err(Error::Invalid(format!(
                "database {} has no schema {schema}; its schemas are: {}",
                source.name,
                evidence.schemas.join(", ")
            )));
        }
    }
    let known: Vec<(String, String)> = evidence
        .tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .chain(evidence.sequences.iter().filter_map(|s| {
            s.split_once('.')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        }))
        .collect();
    let mut table_schemas = Vec::new();
    for table in tables {
        let (schema, name) = match table.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, table.as_str()),
        };
        let matches = known
            .iter()
            .filter(|(s, n)| n == name && schema.is_none_or(|schema| s == schema))
            .count();
        if matches == 0 {
            let mut names: Vec<String> = known.iter().map(|(s, n)| format!("{s}.{n}")).collect();
            names.truncate(30);
            return Err(Error::Invalid(format!(
                "database {} has no table {table} (a partitioned table is restored by naming its partitions); tables: {}",
                source.name,
                names.join(", ")
            )));
        }
        if let Some(schema) = schema {
            table_schemas.push(schema.to_string());
        }
        args.push(format!("--table={name}"));
    }
    table_schemas.sort();
    table_schemas.dedup();
    if table_schemas.len() > 1 {
        return Err(Error::Invalid(format!(
            "the tables given are in several schemas ({}); pg_restore selects tables by name within the given schemas, so restore one schema's tables at a time",
            table_schemas.join(", ")
        )));
    }
    for schema in table_schemas.iter().chain(schemas) {
        args.push(format!("--schema={schema}"));
    }
    Ok(args)
}

/// Restores one database of a snapshot; see [`PgRestoreOptions`]. With
/// `check_only`, runs every check on the target and changes nothing.
pub fn restore(
    repository: &Repository,
    id: &Id,
    snapshot: &Snapshot,
    options: &PgRestoreOptions,
    check_only: bool,
    progress: &dyn RestoreProgress,
) -> Result<PgRestoreReport> {
    let started = Instant::now();
    let meta = pg_meta(id, snapshot)?;
    let source = find_database(meta, &options.database)?;
    let tools = restore_tools(options.pg_bin.as_deref(), meta)?;
    let selection = selection_args(source, &options.tables, &options.schemas)?;
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
        if SYSTEM_DATABASES.contains(&database) && database != source.name {
            return Err(Error::Invalid(format!(
                "--to names the database {database}, which is where connections start, not a restore target; to create database {} there, add --create (--as NAME for another name)",
                source.name
            )));
        }
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
        if options.create && !check_only {
            info!(database = %database, "the database exists and is empty: restoring into it");
        }
    } else {
        session.close()?;
    }
    if check_only {
        return Ok(PgRestoreReport {
            database,
            created: false,
            globals: None,
            bytes: 0,
            duration_secs: started.elapsed().as_secs_f64(),
        });
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
    }
    if options.create {
        // Also for an empty database left by an earlier failed attempt.
        apply_database_properties(&tools, &options.target, &connect_db, &database, source)?;
    }
    let mut extra = Vec::new();
    if options.clean {
        extra.extend(["--clean".to_string(), "--if-exists".to_string()]);
    }
    extra.extend(selection);
    if !options.schemas.is_empty() {
        // pg_restore --schema restores the objects in a schema but not the
        // schema itself.
        let mut session = Session::connect(&tools, &options.target, &database)?;
        for schema in &options.schemas {
            session.execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(schema)
            ))?;
        }
        session.close()?;
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
            // The restore ran in one transaction (or failed before loading),
            // so the new database contains nothing worth keeping.
            let dropped =
                Session::connect(&tools, &options.target, &connect_db).and_then(|mut session| {
                    drop_database(&mut session, &database)?;
                    session.close()
                });
            match dropped {
                Ok(()) => {
                    info!(database = %database, "dropped the database created for the failed restore")
                }
                Err(drop_error) => {
                    warn!(database = %database, error = %drop_error, "cannot drop the database created for the failed restore; drop it before retrying")
                }
            }
        }
        return Err(with_hint(e, options.globals));
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

/// Adds the likely fix to a pg_restore failure that cairn recognises.
fn with_hint(error: Error, globals: bool) -> Error {
    match error {
        Error::Postgres(message)
            if !globals && message.contains("role \"") && message.contains("does not exist") =>
        {
            Error::Postgres(format!(
                "{message}\nthe snapshot's roles are missing on the target: add --globals to create them first"
            ))
        }
        other => other,
    }
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
        let advice = if options.create {
            "restore under another name with --as NAME, drop the database first, or restore into it without --create and with --clean"
        } else {
            "pass --clean to drop and recreate the objects in the dump, or restore into a new database with --create"
        };
        return Err(Error::Invalid(format!(
            "database {database} already exists and is not empty ({} tables, views or sequences); {advice}",
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
