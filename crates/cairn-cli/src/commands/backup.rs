//! `cairn backup`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use cairn_core::backup::{BackupOptions, Source};
use cairn_core::producer::Producer;
use clap::Args;
use indicatif::HumanBytes;

use crate::GlobalArgs;
use crate::progress::Bar;

/// Arguments of `cairn backup`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cairn backup --name app.dump -- pg_dump -Fc -Z0 app\n  \
    cairn backup /var/backups/globals.sql /var/backups/app.dump\n\n\
Prefer running the producer after `--`: cairn then sees its exit status and writes no snapshot \
when it fails. With --stdin, cairn cannot tell a dump cut short by a failing producer from a \
complete one, and stores what it received.")]
pub struct BackupArgs {
    /// Entry name for --stdin or a command [required with them], or for a single file.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Read the stream from standard input.
    #[arg(long)]
    pub stdin: bool,
    /// Tag to store with the snapshot; repeat for several.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Accept an empty stream instead of failing.
    #[arg(long)]
    pub allow_empty: bool,
    /// Start time to record instead of now, RFC 3339; for tests and imports of old dumps.
    #[arg(long, hide = true, value_name = "RFC3339")]
    pub time: Option<String>,
    /// Files to back up, one entry each, named by file name.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Producer command after `--`; cairn runs it and stores its stdout.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn build_sources(args: &BackupArgs) -> Result<(Vec<Source>, Option<Vec<String>>)> {
    let modes = usize::from(args.stdin)
        + usize::from(!args.files.is_empty())
        + usize::from(!args.command.is_empty());
    if modes != 1 {
        return Err(cairn_core::Error::Invalid(
            "give exactly one input: --stdin, one or more FILEs, or a command after `--`".into(),
        )
        .into());
    }
    if args.stdin {
        let name = args.name.clone().ok_or_else(|| {
            cairn_core::Error::Invalid("--stdin needs --name NAME for the entry".into())
        })?;
        if std::io::stdin().is_terminal() {
            return Err(cairn_core::Error::Invalid(
                "--stdin is a terminal; pipe a stream into cairn, or let cairn run the producer: `cairn backup --name app.dump -- pg_dump -Fc -Z0 app`".into(),
            )
            .into());
        }
        cairn_core::producer::enlarge_pipe(&std::io::stdin());
        let source = Source {
            name,
            reader: Box::new(std::io::stdin()),
            producer: None,
        };
        return Ok((vec![source], None));
    }
    if !args.command.is_empty() {
        let name = args.name.clone().ok_or_else(|| {
            cairn_core::Error::Invalid("a producer command needs --name NAME for the entry".into())
        })?;
        let mut producer = Producer::spawn(&args.command)?;
        let stdout = producer
            .take_stdout()
            .context("the producer's stdout is not available")?;
        let source = Source {
            name,
            reader: Box::new(stdout),
            producer: Some(producer),
        };
        return Ok((vec![source], Some(args.command.clone())));
    }
    for path in &args.files {
        if !path.exists() {
            let words: Vec<String> = args.files.iter().map(|p| p.display().to_string()).collect();
            return Err(cairn_core::Error::Invalid(format!(
                "file {} does not exist; to run a command, put it after `--`: cairn backup --name NAME -- {}",
                path.display(),
                words.join(" ")
            ))
            .into());
        }
        if path.is_dir() {
            return Err(cairn_core::Error::Invalid(format!(
                "{} is a directory; cairn backs up streams and single files",
                path.display()
            ))
            .into());
        }
    }
    if args.name.is_some() && args.files.len() > 1 {
        return Err(cairn_core::Error::Invalid("--name applies to a single FILE; entries of several files are named by their file names".into()).into());
    }
    let mut sources = Vec::new();
    for path in &args.files {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let name = match &args.name {
            Some(name) => name.clone(),
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .with_context(|| format!("{} has no file name", path.display()))?,
        };
        sources.push(Source {
            name,
            reader: Box::new(file),
            producer: None,
        });
    }
    Ok((sources, None))
}

/// Runs one backup.
pub fn run(global: &GlobalArgs, args: &BackupArgs) -> Result<()> {
    // Checked before a producer starts; the backup checks it again.
    if let Some(time) = &args.time {
        cairn_core::snapshot::parse_rfc3339(time)?;
    }
    let mut repository = super::open_repository(global)?;
    let (sources, command) = build_sources(args)?;
    let options = BackupOptions {
        tags: args.tags.clone(),
        command,
        allow_empty: args.allow_empty,
        time: args.time.clone(),
    };
    let bar = Bar::new(
        global.json,
        None,
        "{spinner} {elapsed_precise} read {bytes} ({bytes_per_sec}) {msg}",
    );
    let result = repository.backup(sources, &options, &bar);
    bar.finish();
    let summary = result?;
    crate::audit::note_snapshot(&summary.snapshot);
    let printed = if global.json {
        super::print_json(&summary)
    } else {
        print_summary(&summary, "")
    };
    super::ignore_broken_pipe(printed)
}

/// Prints a backup summary: one line for the snapshot, then one per entry.
/// `what` is inserted after "saved: ", such as "3 database(s), ".
pub fn print_summary(summary: &cairn_core::backup::BackupSummary, what: &str) -> Result<()> {
    let rate = summary.bytes_read as f64 / summary.duration_secs.max(1e-9) / 1e6;
    crate::say!(
        "snapshot {} saved: {what}read {} in {:.1} s ({rate:.0} MB/s), {} new, {} added to the repository",
        &summary.snapshot[..8],
        HumanBytes(summary.bytes_read),
        summary.duration_secs,
        HumanBytes(summary.new_bytes),
        HumanBytes(summary.stored_bytes)
    );
    for entry in &summary.entries {
        crate::say!(
            "  {}: {} in {} chunk(s), {} new",
            entry.name,
            HumanBytes(entry.size),
            entry.chunks,
            HumanBytes(entry.new_bytes)
        );
    }
    Ok(())
}
