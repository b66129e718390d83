//! The `cairn` command-line tool: parses arguments, calls cairn-core, prints
//! results and maps errors to documented exit codes.

/// Writes a line to stdout and returns the error from the enclosing
/// function if stdout is closed, where `println!` would panic.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?;
    }};
}

mod audit;
mod commands;
mod config;
mod cron;
mod jobs;
mod metrics;
mod notify;
mod notify_hooks;
mod password;
mod progress;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cairn_core::ErrorKind;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: invalid arguments or input.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: damaged, missing or tampered data was found.
pub const EXIT_INTEGRITY: u8 = 3;
/// Exit code: wrong passphrase or unusable key.
pub const EXIT_KEY: u8 = 4;
/// Exit code: the producer of the stream failed; no snapshot was written.
pub const EXIT_PRODUCER: u8 = 5;
/// Exit code: another process holds a conflicting lock, or the lock was lost.
pub const EXIT_LOCKED: u8 = 6;

/// cairn: encrypted, deduplicating backups of database dumps.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES_HELP: &str = "Exit codes: 0 success, 1 error, 2 invalid arguments or input, \
3 damaged or missing data found, 4 wrong passphrase or key, 5 producer failed (no snapshot), \
6 repository locked by another process.\n\
The passphrase comes from CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD, or a prompt on a terminal.";

/// Options shared by every command.
#[derive(clap::Args, Debug)]
pub struct GlobalArgs {
    /// Repository location: a local folder.
    #[arg(long, global = true, env = "CAIRN_REPOSITORY", value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Folder for the local index cache [default: $XDG_CACHE_HOME/cairn or ~/.cache/cairn].
    #[arg(long, global = true, env = "CAIRN_CACHE_DIR", value_name = "PATH")]
    pub cache_dir: Option<PathBuf>,
    /// Print a machine-readable JSON summary on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr: text, or json with one object per line.
    #[arg(long, global = true, env = "CAIRN_LOG_FORMAT", value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init(commands::init::InitArgs),
    /// Back up a stream, files or a command's output as a new snapshot.
    Backup(commands::backup::BackupArgs),
    /// List snapshots, oldest first.
    Snapshots(commands::snapshots::SnapshotsArgs),
    /// Restore an entry of a snapshot to a file or stdout.
    Restore(commands::restore::RestoreArgs),
    /// Verify the repository's structure and, optionally, its data.
    Check(commands::check::CheckArgs),
    /// Show sizes, counts and the dedup ratio.
    Stats(commands::stats::StatsArgs),
    /// Remove snapshots that a retention policy does not keep.
    Forget(commands::forget::ForgetArgs),
    /// Delete and repack data that no snapshot needs.
    Prune(commands::prune::PruneArgs),
    /// Remove stale locks left by crashed processes.
    Unlock(commands::unlock::UnlockArgs),
    /// Rebuild repository metadata from the data that exists.
    Repair(commands::repair::RepairArgs),
    /// List, add, change and remove the passphrases that open the repository.
    Key(commands::key::KeyArgs),
    /// PostgreSQL: back up a server, restore a database, run restore drills.
    Pg(commands::pg::PgArgs),
    /// List the audit trail: who did what to the repository, and when.
    Audit(commands::audit::AuditArgs),
    /// Validate the configuration file.
    Config(commands::config::ConfigArgs),
    /// Run configured jobs once: backup, retention, check, drill.
    Run(commands::run::RunArgs),
    /// Run configured jobs on their schedules, with metrics, until stopped.
    Schedule(commands::schedule::ScheduleArgs),
}

/// Commands whose output is a listing that may be piped into `head`.
fn is_listing(command: &Command) -> bool {
    matches!(
        command,
        Command::Snapshots(_)
            | Command::Stats(_)
            | Command::Audit(_)
            | Command::Check(_)
            | Command::Forget(_)
            | Command::Key(_)
    )
}

/// Returns whether `command` restores data, so that damage it meets gets a
/// next step in the error output.
fn is_restore(command: &Command) -> bool {
    match command {
        Command::Restore(_) => true,
        Command::Pg(args) => matches!(
            args.command,
            commands::pg::PgCommand::Restore(_) | commands::pg::PgCommand::Verify(_)
        ),
        _ => false,
    }
}

/// Name of a command in the audit trail; `None` for commands that only list
/// (snapshots, stats, audit) or create a repository.
fn audit_name(command: &Command) -> Option<String> {
    let name = match command {
        Command::Init(_) => "init",
        Command::Backup(_) => "backup",
        Command::Restore(_) => "restore",
        Command::Check(_) => "check",
        // A dry run changes nothing, so it is a listing.
        Command::Forget(args) if args.dry_run => return None,
        Command::Prune(args) if args.dry_run => return None,
        Command::Forget(_) => "forget",
        Command::Prune(_) => "prune",
        Command::Unlock(_) => "unlock",
        Command::Repair(_) => "repair",
        Command::Key(_) => "key",
        Command::Pg(args) => match args.command {
            commands::pg::PgCommand::Backup(_) => "pg backup",
            commands::pg::PgCommand::Restore(_) => "pg restore",
            commands::pg::PgCommand::Verify(_) => "pg verify",
        },
        // `run` writes one record per step itself.
        Command::Snapshots(_)
        | Command::Stats(_)
        | Command::Audit(_)
        | Command::Config(_)
        | Command::Run(_)
        | Command::Schedule(_) => {
            return None;
        }
    };
    Some(name.to_string())
}

fn init_logging(verbose: u8, json: bool, long_running: bool) {
    // The scheduler and job runs log their starts and ends by default.
    let default = match (verbose, long_running) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// An error that has already been reported; carries only the exit code.
#[derive(Debug)]
pub struct Reported(pub u8);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for Reported {}

fn exit_code(error: &anyhow::Error) -> u8 {
    if let Some(reported) = error.downcast_ref::<Reported>() {
        return reported.0;
    }
    for cause in error.chain() {
        if let Some(core) = cause.downcast_ref::<cairn_core::Error>() {
            return match core.kind() {
                ErrorKind::Usage => EXIT_USAGE,
                ErrorKind::WrongPassphrase => EXIT_KEY,
                ErrorKind::Integrity => EXIT_INTEGRITY,
                ErrorKind::Producer => EXIT_PRODUCER,
                ErrorKind::Locked => EXIT_LOCKED,
                ErrorKind::Other => EXIT_ERROR,
            };
        }
    }
    EXIT_ERROR
}

pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(cause.downcast_ref::<cairn_core::Error>(),
                Some(cairn_core::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Makes every file cairn creates (repository objects, cache, restored
/// files) unreadable to group and others.
#[expect(unsafe_code, reason = "umask(2) has no safe wrapper in std")]
fn restrict_file_modes() {
    // SAFETY: umask only changes the process's file mode creation mask; it
    // cannot fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Keeps glibc from moving freed 16 MiB pack buffers into its heap arenas,
/// where they stayed resident. With glibc's adaptive threshold, peak memory
/// of a backup of new data grew from 103 MiB at 1 GB to 145 MiB at 10 GB.
/// At 8 MiB, packs are mapped and unmapped while smaller buffers stay on the
/// heap: 84 and 115 MiB, for about 13% more CPU in a first backup (a 1 MiB
/// threshold gave 72 and 104 MiB for about 25%). docs/benchmarks.md has the runs.
#[expect(unsafe_code, reason = "mallopt(3) has no safe wrapper")]
fn fix_malloc_thresholds() {
    // SAFETY: mallopt only changes allocator tuning parameters, before any
    // thread starts; it touches no memory of ours.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
    }
}

static TERMINATE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn record_signal(signal: libc::c_int) {
    TERMINATE.store(signal, std::sync::atomic::Ordering::SeqCst);
}

/// On SIGTERM, SIGINT or SIGHUP: stops the producers' process groups and
/// exits with 128 + the signal number. The default action would end cairn
/// alone and leave programs started by a producer (`sh -c 'pg_dump ...'`)
/// running. Exiting at any moment is safe for the repository, because a
/// snapshot is written only after everything it names.
#[expect(unsafe_code, reason = "signal(2) has no safe wrapper in std")]
fn stop_producers_on_signals() {
    let handler = record_signal as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let signal = TERMINATE.load(std::sync::atomic::Ordering::SeqCst);
            if signal != 0 {
                cairn_core::producer::stop_all_producers();
                jobs::record_interruption(signal);
                eprintln!(
                    "cairn: stopped by signal {signal}; an unfinished backup wrote no snapshot"
                );
                std::process::exit(128 + signal);
            }
        }
    });
}

fn main() -> ExitCode {
    fix_malloc_thresholds();
    restrict_file_modes();
    let cli = Cli::parse();
    // The scheduler handles these signals itself.
    if !matches!(cli.command, Command::Schedule(_)) {
        stop_producers_on_signals();
    }
    init_logging(
        cli.global.verbose,
        cli.global.log_format == "json",
        matches!(cli.command, Command::Run(_) | Command::Schedule(_)),
    );
    let result = match &cli.command {
        Command::Init(args) => commands::init::run(&cli.global, args),
        Command::Backup(args) => commands::backup::run(&cli.global, args),
        Command::Snapshots(args) => commands::snapshots::run(&cli.global, args),
        Command::Restore(args) => commands::restore::run(&cli.global, args),
        Command::Check(args) => commands::check::run(&cli.global, args),
        Command::Stats(args) => commands::stats::run(&cli.global, args),
        Command::Forget(args) => commands::forget::run(&cli.global, args),
        Command::Prune(args) => commands::prune::run(&cli.global, args),
        Command::Unlock(args) => commands::unlock::run(&cli.global, args),
        Command::Repair(args) => commands::repair::run(&cli.global, args),
        Command::Key(args) => commands::key::run(&cli.global, args),
        Command::Pg(args) => commands::pg::run(&cli.global, args),
        Command::Audit(args) => commands::audit::run(&cli.global, args),
        Command::Config(args) => commands::config::run(&cli.global, args),
        Command::Run(args) => commands::run::run(&cli.global, args),
        Command::Schedule(args) => commands::schedule::run(&cli.global, args),
    };
    if let Some(name) = audit_name(&cli.command) {
        let (code, error) = match &result {
            Ok(()) => (EXIT_OK, None),
            Err(error) => (exit_code(error), Some(format!("{error:#}"))),
        };
        audit::finish(&name, code, error);
    }
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        // A listing piped into `head` is not a failure. A restore whose
        // reader stopped early is a failure and prints a message below.
        Err(error) if is_broken_pipe(&error) && is_listing(&cli.command) => ExitCode::from(EXIT_OK),
        Err(error) => {
            let code = exit_code(&error);
            if error.downcast_ref::<Reported>().is_none() {
                if is_broken_pipe(&error) {
                    eprintln!(
                        "cairn: output closed early (broken pipe); the reader stopped before the end"
                    );
                } else {
                    let message = format!("{error:#}");
                    eprintln!("cairn: error: {message}");
                    if code == EXIT_INTEGRITY
                        && is_restore(&cli.command)
                        && !message.contains("cairn check")
                    {
                        eprintln!(
                            "cairn: run `cairn check --read-data` to list every damaged object and the snapshots that need it; an older snapshot may restore in full (`cairn snapshots`, then name its id)"
                        );
                    }
                    if cli.global.json {
                        // Monitoring that parses --json output gets the
                        // failure in the same form as a success.
                        let report = serde_json::json!({
                            "error": format!("{error:#}"),
                            "exit_code": code,
                        });
                        println!("{report}");
                    }
                }
            }
            ExitCode::from(code)
        }
    }
}
