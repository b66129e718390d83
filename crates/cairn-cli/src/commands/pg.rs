//! `cairn pg backup | restore | verify`.

use std::path::PathBuf;

use anyhow::Result;
use cairn_core::backup::BackupOptions;
use cairn_core::pg::Target;
use cairn_core::pg::backup::{PgBackup, PgBackupOptions};
use cairn_core::pg::drill::{DrillOptions, drill};
use cairn_core::pg::restore::{PgRestoreOptions, list, pg_meta, restore};
use clap::{Args, Subcommand};
use indicatif::HumanBytes;

use crate::GlobalArgs;
use crate::progress::Bar;

/// Arguments of `cairn pg`.
#[derive(Args, Debug)]
pub struct PgArgs {
    /// The PostgreSQL command.
    #[command(subcommand)]
    pub command: PgCommand,
}

/// PostgreSQL commands.
#[derive(Subcommand, Debug)]
pub enum PgCommand {
    /// Back up databases and roles of a server as one snapshot.
    Backup(PgBackupArgs),
    /// Restore one database of a snapshot into a server.
    Restore(PgRestoreArgs),
    /// Restore drill: restore a snapshot into scratch databases and compare
    /// with the evidence recorded at backup time.
    Verify(PgVerifyArgs),
}

/// Arguments of `cairn pg backup`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cairn pg backup --all --connection postgres://backup@db1/postgres\n  \
    PGHOST=/run/postgresql cairn pg backup app billing\n\n\
Each database is dumped with pg_dump -Fc -Z0 from one exported snapshot, in which cairn also \
records row counts, checksums, schemas, policies, roles and extensions for `cairn pg verify`. \
Roles and other cluster-wide objects are stored as globals.sql. If any database fails, no \
snapshot is written (exit code 5).")]
pub struct PgBackupArgs {
    /// Databases to back up [default: the database named by --connection].
    #[arg(value_name = "DATABASE")]
    pub databases: Vec<String>,
    /// Back up every database that accepts connections, except templates.
    #[arg(long)]
    pub all: bool,
    /// Leave a database out of --all; repeat for several.
    #[arg(long, value_name = "DATABASE", requires = "all")]
    pub exclude: Vec<String>,
    /// Server to back up: a postgres:// URL or key=value pairs; without it,
    /// libpq's PGHOST, PGPORT, PGUSER, PGSERVICE and ~/.pgpass apply.
    #[arg(long, short = 'c', env = "CAIRN_PG_CONNECTION", value_name = "URL")]
    pub connection: Option<String>,
    /// Do not store globals.sql (roles, tablespaces).
    #[arg(long)]
    pub no_globals: bool,
    /// Record row counts only, without table checksums (saves one read of
    /// every table on the server).
    #[arg(long)]
    pub no_checksums: bool,
    /// Folder of the PostgreSQL client programs [default: the oldest in
    /// /usr/lib/postgresql/*/bin or PATH that is as new as the server].
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Tag to store with the snapshot; repeat for several.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

/// Arguments of `cairn pg restore`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cairn pg restore latest --db app --to postgres://admin@db2/postgres --create --globals\n  \
    cairn pg restore latest --all --create --globals   (a whole server; PGHOST names the new one)\n  \
    cairn pg restore 3f2a9c --db app --to postgres://admin@db2/app_copy --table public.orders\n  \
    cairn pg restore latest --db app --list\n\n\
With --create, --to names the server (its database is used only to connect) and the new \
database gets the snapshot's encoding and locale. Without --create, --to names an existing, \
empty database. The restore runs in one transaction and stops at the first error, unless \
--jobs is above 1.")]
pub struct PgRestoreArgs {
    /// Snapshot id prefix or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Database of the snapshot to restore.
    #[arg(long, value_name = "NAME", required_unless_present = "all")]
    pub db: Option<String>,
    /// Restore every database of the snapshot (needs --create); for a
    /// server that was lost.
    #[arg(long, conflicts_with_all = ["db", "rename", "list", "schema", "table"], requires = "create")]
    pub all: bool,
    /// Target: a postgres:// URL or key=value pairs [default: libpq's PGHOST,
    /// PGPORT, PGUSER; with --create the database `postgres`].
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Create the database on the target, with the snapshot's encoding and locale.
    #[arg(long)]
    pub create: bool,
    /// With --create: name of the new database [default: the source's name].
    #[arg(long = "as", value_name = "NAME", requires = "create")]
    pub rename: Option<String>,
    /// Drop objects of the dump that exist in the target before recreating them.
    #[arg(long)]
    pub clean: bool,
    /// First create the snapshot's roles that the target lacks (existing roles are left unchanged).
    #[arg(long)]
    pub globals: bool,
    /// Restore only this schema; repeat for several (pg_restore --schema).
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Vec<String>,
    /// Restore only this table; repeat for several (pg_restore --table).
    #[arg(long, value_name = "TABLE")]
    pub table: Vec<String>,
    /// Print the archive's table of contents (pg_restore --list) and restore nothing.
    #[arg(long)]
    pub list: bool,
    /// Parallel pg_restore jobs; above 1 the dump is first written to a file in --temp-dir.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: u32,
    /// Folder for that file [default: TMPDIR or /tmp].
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Restore into a database whose encoding or locale differs from the snapshot's.
    #[arg(long)]
    pub force_locale: bool,
    /// Allow restoring into the database the snapshot was taken from, on the same server.
    #[arg(long)]
    pub overwrite_source: bool,
    /// Folder of the PostgreSQL client programs.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
}

/// Arguments of `cairn pg verify`.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  \
    cairn pg verify latest --scratch postgres://drill@scratch-db/postgres\n\n\
The scratch role needs CREATEDB and must be able to create the snapshot's roles (a superuser \
on a dedicated scratch server). Missing roles are created there from globals.sql; existing \
roles are left unchanged. The outcome is stored in the repository and shown by `cairn \
snapshots`. Exit code 3 when a restored database differs from the evidence.")]
pub struct PgVerifyArgs {
    /// Snapshot id prefix or `latest`.
    #[arg(value_name = "SNAPSHOT", default_value = "latest")]
    pub snapshot: String,
    /// Scratch server: a postgres:// URL or key=value pairs.
    #[arg(long, value_name = "URL", env = "CAIRN_PG_SCRATCH")]
    pub scratch: String,
    /// Check only this database of the snapshot; repeat for several [default: all].
    #[arg(long = "db", value_name = "NAME")]
    pub databases: Vec<String>,
    /// Keep the scratch databases instead of dropping them.
    #[arg(long)]
    pub keep: bool,
    /// Do not run pg_amcheck on the restored databases.
    #[arg(long)]
    pub no_amcheck: bool,
    /// Folder of the PostgreSQL client programs.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
}

/// Runs a `cairn pg` command.
pub fn run(global: &GlobalArgs, args: &PgArgs) -> Result<()> {
    match &args.command {
        PgCommand::Backup(args) => run_backup(global, args),
        PgCommand::Restore(args) => run_restore(global, args),
        PgCommand::Verify(args) => run_verify(global, args),
    }
}

fn run_backup(global: &GlobalArgs, args: &PgBackupArgs) -> Result<()> {
    let mut repository = super::open_repository(global)?;
    let options = PgBackupOptions {
        target: Target::parse(args.connection.as_deref())?,
        databases: args.databases.clone(),
        all: args.all,
        exclude: args.exclude.clone(),
        strict_exclude: true,
        globals: !args.no_globals,
        checksums: !args.no_checksums,
        pg_bin: args.pg_bin.clone(),
    };
    let mut sources = PgBackup::prepare(&options)?;
    let databases: Vec<String> = sources.databases().iter().map(|s| s.to_string()).collect();
    tracing::info!(databases = %databases.join(","), pg_dump = %sources.pg_dump_version(), "backing up");
    let mut command = vec!["cairn".to_string(), "pg".into(), "backup".into()];
    if args.all {
        command.push("--all".into());
        command.extend(args.exclude.iter().map(|db| format!("--exclude={db}")));
    } else {
        command.extend(databases.iter().cloned());
    }
    let backup_options = BackupOptions {
        tags: args.tags.clone(),
        command: Some(command),
        allow_empty: false,
        time: None,
    };
    let bar = Bar::new(
        global.json,
        None,
        "{spinner} {elapsed_precise} read {bytes} ({bytes_per_sec}) {msg}",
    );
    let result = repository.backup_sources(&mut sources, &backup_options, &bar);
    bar.finish();
    let summary = result?;
    crate::audit::note_snapshot(&summary.snapshot);
    let printed = if global.json {
        super::print_json(&summary)
    } else {
        super::backup::print_summary(&summary, &format!("{} database(s), ", databases.len()))
    };
    super::ignore_broken_pipe(printed)
}

/// Resolves a snapshot reference for a `cairn pg` command. `latest` is the
/// newest intact snapshot made by `cairn pg backup` that has `database`;
/// with `want_all`, preferably one made with `--all`.
fn find_pg_snapshot(
    repository: &cairn_core::Repository,
    reference: &str,
    database: Option<&str>,
    want_all: bool,
) -> Result<(cairn_core::Id, cairn_core::snapshot::Snapshot)> {
    if reference != "latest" {
        return Ok(repository.find_snapshot(reference)?);
    }
    repository.ensure_latest_is_known()?;
    let candidates: Vec<_> = repository
        .index
        .snapshots()?
        .into_iter()
        .rev()
        .filter(|(_, s)| s.damaged.is_none())
        .filter(|(_, s)| {
            s.postgres.as_ref().is_some_and(|meta| {
                database.is_none_or(|db| meta.databases.iter().any(|d| d.name == db))
            })
        })
        .collect();
    if want_all {
        if let Some(found) = candidates
            .iter()
            .find(|(_, s)| s.postgres.as_ref().is_some_and(|m| m.all))
        {
            return Ok(found.clone());
        }
        if let Some(found) = candidates.first() {
            eprintln!(
                "cairn: warning: no snapshot was made with `cairn pg backup --all`; using {}, the newest PostgreSQL snapshot, with database(s) {}",
                found.0.short(),
                found
                    .1
                    .postgres
                    .as_ref()
                    .map(|m| m
                        .databases
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            );
        }
    }
    candidates.into_iter().next().ok_or_else(|| {
        cairn_core::Error::Invalid(match database {
            Some(db) => format!(
                "no intact snapshot made by `cairn pg backup` has database {db}; run `cairn snapshots` to list them"
            ),
            None => "no intact snapshot was made by `cairn pg backup`; run `cairn snapshots` to list them".into(),
        })
        .into()
    })
}

fn run_restore(global: &GlobalArgs, args: &PgRestoreArgs) -> Result<()> {
    if args.jobs == 0 {
        return Err(cairn_core::Error::Invalid("--jobs must be 1 or more".into()).into());
    }
    let repository = super::open_repository(global)?;
    let _lock = super::read_lock(&repository, "pg restore")?;
    let (id, snapshot) =
        find_pg_snapshot(&repository, &args.snapshot, args.db.as_deref(), args.all)?;
    crate::audit::note_snapshot(&id.to_hex());
    let databases: Vec<String> = match &args.db {
        Some(db) => vec![db.clone()],
        None => pg_meta(&id, &snapshot)?
            .databases
            .iter()
            .map(|d| d.name.clone())
            .collect(),
    };
    if args.list {
        for db in &databases {
            list(&repository, &id, &snapshot, db, args.pg_bin.as_deref())?;
        }
        return Ok(());
    }
    let temp_dir = args.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    if args.jobs > 1 && !global.json {
        eprintln!(
            "cairn: --jobs {} needs a seekable file: each dump is first written to {} (free space checked first) and removed afterwards",
            args.jobs,
            temp_dir.display()
        );
    }
    let options_for = |i: usize, db: &String| -> Result<PgRestoreOptions> {
        Ok(PgRestoreOptions {
            database: db.clone(),
            target: Target::parse(args.to.as_deref())?,
            create: args.create,
            rename: args.rename.clone(),
            clean: args.clean,
            // Roles once, before the first database.
            globals: args.globals && i == 0,
            schemas: args.schema.clone(),
            tables: args.table.clone(),
            jobs: args.jobs,
            temp_dir: temp_dir.clone(),
            force_locale: args.force_locale,
            overwrite_source: args.overwrite_source,
            pg_bin: args.pg_bin.clone(),
        })
    };
    if databases.len() > 1 {
        // Check every target before restoring any, so that a conflict found
        // on the third database does not leave two restored.
        for (i, db) in databases.iter().enumerate() {
            restore(
                &repository,
                &id,
                &snapshot,
                &options_for(i, db)?,
                true,
                &cairn_core::restore::NoRestoreProgress,
            )
            .map_err(|e| {
                anyhow::Error::from(e).context(format!(
                    "database {db} cannot be restored; nothing was restored"
                ))
            })?;
        }
    }
    let mut reports = Vec::new();
    for (i, db) in databases.iter().enumerate() {
        let options = options_for(i, db)?;
        let bar = Bar::new(
            global.json,
            None,
            "{spinner} {elapsed_precise} restored {bytes} ({bytes_per_sec})",
        );
        let result = restore(&repository, &id, &snapshot, &options, false, &bar);
        bar.finish();
        let report = result.map_err(|e| {
            let done: Vec<&str> = reports
                .iter()
                .map(|r: &cairn_core::pg::restore::PgRestoreReport| r.database.as_str())
                .collect();
            let context = if done.is_empty() {
                format!("restoring database {db} failed")
            } else {
                format!(
                    "restoring database {db} failed after {} were restored",
                    done.join(", ")
                )
            };
            anyhow::Error::from(e).context(context)
        })?;
        if !global.json {
            if let Some(globals) = &report.globals {
                crate::say!(
                    "roles: {} created, {} existed and were left unchanged{}",
                    globals.created.len(),
                    globals.kept.len(),
                    if globals.errors.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", {} statement(s) failed (see warnings)",
                            globals.errors.len()
                        )
                    }
                );
            }
            crate::say!(
                "restored database {db} of snapshot {} into {}{}: {} in {:.1} s",
                id.short(),
                report.database,
                if report.created { " (created)" } else { "" },
                HumanBytes(report.bytes),
                report.duration_secs
            );
        }
        reports.push(report);
    }
    if global.json {
        return super::print_json(&reports);
    }
    Ok(())
}

fn run_verify(global: &GlobalArgs, args: &PgVerifyArgs) -> Result<()> {
    let repository = super::open_repository(global)?;
    let _lock = super::read_lock(&repository, "pg verify")?;
    let (id, snapshot) = find_pg_snapshot(
        &repository,
        &args.snapshot,
        args.databases.first().map(String::as_str),
        args.databases.is_empty(),
    )?;
    crate::audit::note_snapshot(&id.to_hex());
    let options = DrillOptions {
        scratch: Target::parse(Some(&args.scratch))?,
        keep: args.keep,
        no_amcheck: args.no_amcheck,
        databases: args.databases.clone(),
        pg_bin: args.pg_bin.clone(),
        temp_dir: std::env::temp_dir(),
    };
    let bar = Bar::new(
        global.json,
        None,
        "{spinner} {elapsed_precise} restored {bytes} ({bytes_per_sec})",
    );
    let result = drill(&repository, &id, &snapshot, &options, &bar);
    bar.finish();
    let record = result?;
    if global.json {
        return super::print_json(&record);
    }
    for db in &record.databases {
        crate::say!(
            "  {}: restored in {:.1} s into {}{}, {} tables and {} rows match, pg_amcheck {}",
            db.name,
            db.restore_secs,
            db.scratch_name,
            if db.kept { " (kept)" } else { "" },
            db.tables,
            db.rows,
            db.amcheck
        );
    }
    crate::say!(
        "restore drill of snapshot {} passed in {:.1} s",
        id.short(),
        record.duration_secs
    );
    Ok(())
}
