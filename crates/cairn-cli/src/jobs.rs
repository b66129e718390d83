//! `cairn run JOB`: one run of a configured job, in order: backup, forget,
//! prune, check of a subset, and a restore drill when one is due.
//!
//! The run stops at the first failed step: after a failed backup, retention
//! does not thin out the snapshots that are still good. Each step appends
//! its own audit record with the job's name. The outcome goes to the job's
//! state file (which the metrics are made from) and to the notification
//! targets.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use cairn_core::Repository;
use cairn_core::audit::AuditRecord;
use cairn_core::backup::{BackupOptions, BackupSummary, NoProgress, Source};
use cairn_core::check::{NoCheckProgress, ReadData};
use cairn_core::pg::Target;
use cairn_core::pg::backup::{PgBackup, PgBackupOptions};
use cairn_core::pg::drill::DrillOptions;
use cairn_core::retention::{self, GroupBy, SnapshotInfo};
use cairn_core::storage::Storage;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::{JobConfig, Loaded, parse_duration, retention_policy};
use crate::metrics;

/// Outcome and time of one step, as stored in the state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepState {
    /// When it ended, RFC 3339.
    pub time: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Wall-clock seconds.
    #[serde(default)]
    pub duration_secs: f64,
}

/// Size and snapshot counts of the job's repository after the last run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepositoryState {
    /// Repository name in the configuration.
    pub name: String,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// Snapshots in the repository.
    pub snapshots: usize,
    /// Snapshots of this job.
    pub job_snapshots: usize,
    /// Start time of the job's oldest snapshot, RFC 3339.
    pub oldest: Option<String>,
    /// Start time of the job's newest snapshot, RFC 3339.
    pub newest: Option<String>,
}

/// State of a job that the metrics and the scheduler read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobState {
    /// Job name.
    pub job: String,
    /// Start of the last run, RFC 3339.
    pub last_start: Option<String>,
    /// End of the last run, RFC 3339.
    pub last_finish: Option<String>,
    /// `success` or `failure`.
    pub last_outcome: Option<String>,
    /// The error of the last run.
    pub last_error: Option<String>,
    /// Wall-clock seconds of the last run.
    pub last_duration_secs: f64,
    /// End of the last successful run, RFC 3339.
    pub last_success: Option<String>,
    /// Snapshot of the last successful backup.
    pub last_snapshot: Option<String>,
    /// Bytes read by the last backup.
    pub bytes_read: u64,
    /// Bytes the last backup added to the repository.
    pub bytes_added: u64,
    /// Bytes read divided by bytes of new chunks, for the last backup.
    pub dedup_ratio: f64,
    /// Repository after the last run.
    pub repository: Option<RepositoryState>,
    /// Last check of a subset.
    pub check: Option<StepState>,
    /// Last restore drill.
    pub drill: Option<StepState>,
    /// Runs since the state file was created.
    pub runs_total: u64,
    /// Failed runs since the state file was created.
    pub failures_total: u64,
}

fn state_path(dir: &Path, job: &str) -> PathBuf {
    dir.join(format!("{job}.json"))
}

/// Reads a job's state; a missing file is an empty state.
pub fn read_state(dir: &Path, job: &str) -> JobState {
    std::fs::read(state_path(dir, job))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| JobState {
            job: job.to_string(),
            ..JobState::default()
        })
}

/// Writes a job's state through a temporary file and a rename, so a reader
/// never sees half a file.
pub fn write_state(dir: &Path, state: &JobState) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = state_path(dir, &state.job);
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| {
        format!(
            "cannot rename {} to {}",
            temporary.display(),
            path.display()
        )
    })?;
    Ok(())
}

/// Returns the tag that marks a job's snapshots.
pub fn job_tag(job: &str) -> String {
    format!("job:{job}")
}

/// Returns the cache folder of a job's repository.
pub fn cache_dir_of(loaded: &Loaded, job: &JobConfig) -> Result<PathBuf> {
    let (_, repository) = loaded.repository_of(job)?;
    repository
        .cache_dir
        .clone()
        .or_else(Repository::default_cache_dir)
        .context("cannot find a cache folder: set cache_dir in the repository section, or HOME")
}

struct Run<'a> {
    name: &'a str,
    job: &'a JobConfig,
    repository: Repository,
    state: JobState,
}

impl Run<'_> {
    /// Appends the audit record of one step. `outcome` keeps the step's
    /// error with its causes, so the record has the exit code that the
    /// same failure gives on the command line.
    fn audit(&mut self, command: &str, outcome: std::result::Result<Vec<String>, &anyhow::Error>) {
        let mut record = AuditRecord::new(
            command,
            if outcome.is_ok() {
                "success"
            } else {
                "failure"
            },
        );
        record.job = Some(self.name.to_string());
        match outcome {
            Ok(snapshots) => record.snapshots = snapshots,
            Err(e) => {
                record.error = Some(format!("{e:#}"));
                record.exit_code = crate::exit_code(e);
            }
        }
        if let Err(e) = self.repository.append_audit(record) {
            warn!(job = self.name, command, error = %e, "cannot write the audit record");
        }
    }

    fn backup(&mut self) -> Result<BackupSummary> {
        let mut tags = self.job.tags.clone();
        tags.push(job_tag(self.name));
        let options = BackupOptions {
            tags,
            command: Some(vec!["cairn".into(), "run".into(), self.name.to_string()]),
            allow_empty: false,
            time: None,
        };
        if let Some(postgres) = &self.job.postgres {
            let mut target = Target::parse(postgres.connection.as_deref())?;
            if let Some(secret) = &postgres.password {
                target = target.with_password(secret.read("database password")?);
            }
            let pg = PgBackupOptions {
                target,
                databases: postgres.databases.clone(),
                all: postgres.all,
                exclude: postgres.exclude.clone(),
                strict_exclude: false,
                globals: postgres.globals,
                checksums: postgres.checksums,
                pg_bin: postgres.pg_bin.clone(),
            };
            let mut sources = PgBackup::prepare(&pg)?;
            return Ok(self
                .repository
                .backup_sources(&mut sources, &options, &NoProgress)?);
        }
        let sources = if let Some(command) = &self.job.command {
            let mut producer = cairn_core::producer::Producer::spawn(&command.argv)?;
            let stdout = producer
                .take_stdout()
                .context("the producer's stdout is not available")?;
            vec![Source {
                name: command.name.clone(),
                reader: Box::new(stdout),
                producer: Some(producer),
            }]
        } else if let Some(files) = &self.job.files {
            let mut sources = Vec::new();
            for path in &files.paths {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .with_context(|| format!("{} has no file name", path.display()))?;
                sources.push(Source {
                    name,
                    reader: Box::new(file),
                    producer: None,
                });
            }
            sources
        } else {
            anyhow::bail!("job {} has no source", self.name);
        };
        Ok(self.repository.backup(sources, &options, &NoProgress)?)
    }

    /// Snapshots of this job, oldest first, without damaged ones.
    fn job_snapshots(&self) -> Result<Vec<(cairn_core::Id, cairn_core::snapshot::Snapshot)>> {
        let tag = job_tag(self.name);
        Ok(self
            .repository
            .index
            .snapshots()?
            .into_iter()
            .filter(|(_, s)| s.damaged.is_none() && s.tags.contains(&tag))
            .collect())
    }

    fn forget(&mut self) -> Result<Vec<String>> {
        let Some(config) = &self.job.retention else {
            return Ok(Vec::new());
        };
        let policy = retention_policy(config)?;
        policy.validate()?;
        let snapshots = self
            .job_snapshots()?
            .iter()
            .map(|(id, s)| SnapshotInfo::from_snapshot(*id, s))
            .collect::<cairn_core::Result<Vec<_>>>()?;
        let plan = retention::plan(
            &snapshots,
            &policy,
            GroupBy::default(),
            jiff::Timestamp::now(),
            &jiff::tz::TimeZone::system(),
        )?;
        for warning in &plan.warnings {
            warn!(job = self.name, warning = %warning, "retention");
        }
        let removed = plan.removed();
        if !removed.is_empty() {
            self.repository.forget(&removed)?;
        }
        info!(
            job = self.name,
            removed = removed.len(),
            kept = plan.kept_count(),
            "retention applied"
        );
        Ok(removed.iter().map(|id| id.to_hex()).collect())
    }

    fn check(&mut self) -> Result<()> {
        let Some(config) = &self.job.check else {
            return Ok(());
        };
        let share = crate::commands::parse_share(config.read_data_subset.get_ref())
            .map_err(cairn_core::Error::Invalid)?;
        let started = Instant::now();
        let report = self
            .repository
            .check(ReadData::Subset(share), &NoCheckProgress);
        let ok = matches!(&report, Ok(r) if r.unmarked_problems().next().is_none());
        self.state.check = Some(StepState {
            time: cairn_core::snapshot::now_rfc3339(),
            ok,
            duration_secs: started.elapsed().as_secs_f64(),
        });
        let report = report?;
        // Damage that only snapshots marked damaged depend on is known and
        // does not fail the job, as with `cairn check`.
        let unmarked: Vec<_> = report.unmarked_problems().collect();
        if let Some(problem) = unmarked.first() {
            return Err(cairn_core::Error::corrupt(
                problem.object.clone(),
                format!(
                    "{} ({} problem(s) in all); run `cairn check` for the list",
                    problem.message,
                    unmarked.len()
                ),
            )
            .into());
        }
        info!(
            job = self.name,
            packs_read = report.packs_read,
            known_problems = report.problems.len(),
            "check passed"
        );
        Ok(())
    }

    /// Runs a drill of the job's newest snapshot when the newest drill of
    /// any of its snapshots is older than `every`. Returns the drilled
    /// snapshot, if a drill ran.
    fn drill(&mut self) -> Result<Option<String>> {
        let Some(config) = &self.job.drill else {
            return Ok(None);
        };
        let every = parse_duration(config.every.get_ref()).map_err(cairn_core::Error::Invalid)?;
        let snapshots = self.job_snapshots()?;
        let Some((id, snapshot)) = snapshots.last().cloned() else {
            return Ok(None);
        };
        // The job's own record of its last drill: drill records of
        // snapshots that retention removed are gone from the repository.
        let newest_drill = self.state.drill.as_ref().map(|d| d.time.clone());
        let due = match &newest_drill {
            None => true,
            Some(time) => cairn_core::snapshot::parse_rfc3339(time)
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age >= every),
        };
        if !due {
            info!(job = self.name, last = ?newest_drill, "no drill due");
            return Ok(None);
        }
        let mut scratch = Target::parse(Some(&config.scratch))?;
        if let Some(secret) = &config.password {
            scratch = scratch.with_password(secret.read("scratch server password")?);
        }
        let options = DrillOptions {
            scratch,
            keep: false,
            no_amcheck: config.no_amcheck,
            databases: Vec::new(),
            pg_bin: self.job.postgres.as_ref().and_then(|p| p.pg_bin.clone()),
            temp_dir: std::env::temp_dir(),
        };
        let started = Instant::now();
        let result = cairn_core::pg::drill::drill(
            &self.repository,
            &id,
            &snapshot,
            &options,
            &cairn_core::restore::NoRestoreProgress,
        );
        self.state.drill = Some(StepState {
            time: cairn_core::snapshot::now_rfc3339(),
            ok: result.is_ok(),
            duration_secs: started.elapsed().as_secs_f64(),
        });
        result?;
        Ok(Some(id.to_hex()))
    }

    fn record_repository(&mut self, repository_name: &str) -> Result<()> {
        let stats = self.repository.stats()?;
        let snapshots = self.job_snapshots()?;
        self.state.repository = Some(RepositoryState {
            name: repository_name.to_string(),
            stored_bytes: stats.stored_bytes,
            snapshots: stats.snapshots,
            job_snapshots: snapshots.len(),
            oldest: snapshots.first().map(|(_, s)| s.time.clone()),
            newest: snapshots.last().map(|(_, s)| s.time.clone()),
        });
        Ok(())
    }
}

/// The job this process runs, for [`record_interruption`].
struct RunningJob {
    state_dir: PathBuf,
    name: String,
    started: Instant,
    /// The metrics textfile, and the jobs and repositories it lists.
    textfile: Option<(PathBuf, Vec<(String, String)>)>,
}

static RUNNING: std::sync::Mutex<Option<RunningJob>> = std::sync::Mutex::new(None);

/// Records in the running job's state, and in the metrics textfile, that a
/// signal stopped it, so the metrics show a failed run rather than the
/// previous outcome. Called by the signal handler's thread just before
/// cairn exits. No notification is sent, because its retries would delay
/// the exit.
pub fn record_interruption(signal: i32) {
    let Some(running) = RUNNING.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    let mut state = read_state(&running.state_dir, &running.name);
    state.last_outcome = Some("failure".into());
    state.last_error = Some(format!("stopped by signal {signal} before it finished"));
    state.last_finish = Some(cairn_core::snapshot::now_rfc3339());
    state.last_duration_secs = running.started.elapsed().as_secs_f64();
    state.runs_total += 1;
    state.failures_total += 1;
    let _ = write_state(&running.state_dir, &state);
    if let Some((path, jobs)) = &running.textfile {
        let _ = metrics::write_textfile(path, &metrics::render_jobs(&running.state_dir, jobs));
    }
}

/// Runs every step of one job and records the outcome.
pub fn run_job(loaded: &Loaded, name: &str) -> Result<()> {
    let job = loaded.job(name)?;
    let (repository_name, repository_config) = loaded.repository_of(job)?;
    let cache_dir = cache_dir_of(loaded, job)?;
    let state_dir = loaded.state_dir(&cache_dir);
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state folder {}", state_dir.display()))?;

    // One run of a job at a time, also when cron starts runs.
    let lock_path = state_dir.join(format!("{name}.lock"));
    let lock_file = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    if lock_file.try_lock().is_err() {
        return Err(cairn_core::Error::Locked(format!(
            "job {name} is already running (lock {} is held); this run was skipped",
            lock_path.display()
        ))
        .into());
    }

    let started = Instant::now();
    let mut state = read_state(&state_dir, name);
    state.job = name.to_string();
    state.last_start = Some(cairn_core::snapshot::now_rfc3339());
    write_state(&state_dir, &state)?;
    if let Ok(mut running) = RUNNING.lock() {
        *running = Some(RunningJob {
            state_dir: state_dir.clone(),
            name: name.to_string(),
            started,
            textfile: loaded
                .config
                .metrics
                .textfile
                .clone()
                .map(|path| (path, loaded.job_repositories())),
        });
    }
    crate::notify_hooks::job_event(loaded, name, &crate::notify::Event::start(name));
    info!(job = name, "job started");

    let outcome = run_steps(
        loaded,
        name,
        job,
        repository_name,
        repository_config,
        &cache_dir,
        &mut state,
    );

    if let Ok(mut running) = RUNNING.lock() {
        running.take();
    }
    let duration = started.elapsed().as_secs_f64();
    state.last_finish = Some(cairn_core::snapshot::now_rfc3339());
    state.last_duration_secs = duration;
    state.runs_total += 1;
    match &outcome {
        Ok(()) => {
            state.last_outcome = Some("success".into());
            state.last_error = None;
            state.last_success = state.last_finish.clone();
        }
        Err(e) => {
            state.last_outcome = Some("failure".into());
            state.last_error = Some(format!("{e:#}"));
            state.failures_total += 1;
        }
    }
    write_state(&state_dir, &state)?;
    if let Some(path) = &loaded.config.metrics.textfile {
        let text = metrics::render_jobs(&state_dir, &loaded.job_repositories());
        if let Err(e) = metrics::write_textfile(path, &text) {
            warn!(path = %path.display(), error = %e, "cannot write the metrics textfile");
        }
    }
    let event = match &outcome {
        Ok(()) => {
            crate::notify::Event::success(name, started.elapsed(), state.last_snapshot.clone())
        }
        Err(e) => crate::notify::Event::failure(name, started.elapsed(), &format!("{e:#}")),
    };
    crate::notify_hooks::job_event(loaded, name, &event);
    match &outcome {
        Ok(()) => info!(job = name, duration_secs = duration, "job finished"),
        Err(e) => {
            warn!(job = name, duration_secs = duration, error = %format!("{e:#}"), "job failed")
        }
    }
    outcome
}

fn run_steps(
    loaded: &Loaded,
    name: &str,
    job: &JobConfig,
    repository_name: &str,
    repository_config: &crate::config::RepositoryConfig,
    cache_dir: &Path,
    state: &mut JobState,
) -> Result<()> {
    let _ = loaded;
    let storage = Storage::open_local(&repository_config.path)?;
    let passphrase = repository_config
        .password
        .get_ref()
        .read("repository passphrase")?;
    let repository =
        Repository::open(storage, passphrase.as_bytes(), cache_dir).with_context(|| {
            format!(
                "cannot open repository {repository_name} at {}",
                repository_config.path.display()
            )
        })?;
    let mut run = Run {
        name,
        job,
        repository,
        state: std::mem::take(state),
    };
    let result = run_steps_on(&mut run, repository_name);
    *state = run.state;
    result
}

fn run_steps_on(run: &mut Run<'_>, repository_name: &str) -> Result<()> {
    let backup = run.backup();
    let command = if run.job.postgres.is_some() {
        "pg backup"
    } else {
        "backup"
    };
    run.audit(command, backup.as_ref().map(|s| vec![s.snapshot.clone()]));
    let summary = backup?;
    run.state.last_snapshot = Some(summary.snapshot.clone());
    run.state.bytes_read = summary.bytes_read;
    run.state.bytes_added = summary.stored_bytes;
    run.state.dedup_ratio = if summary.new_bytes > 0 {
        summary.bytes_read as f64 / summary.new_bytes as f64
    } else {
        0.0
    };
    info!(job = run.name, snapshot = %summary.snapshot, bytes_read = summary.bytes_read, added = summary.stored_bytes, "backup stored");
    run.record_repository(repository_name)?;
    let after_backup = |step: &str, e: anyhow::Error| {
        e.context(format!(
            "the backup succeeded (snapshot {}), then the {step} failed",
            &summary.snapshot[..8]
        ))
    };

    if run.job.retention.is_some() {
        let forgotten = run.forget();
        run.audit("forget", forgotten.as_ref().map(Clone::clone));
        forgotten.map_err(|e| after_backup("retention", e))?;
        if run.job.retention.as_ref().is_some_and(|r| r.prune) {
            let pruned = run
                .repository
                .prune(Default::default())
                .map_err(anyhow::Error::from);
            run.audit("prune", pruned.as_ref().map(|_| Vec::new()));
            let report = pruned.map_err(|e| after_backup("prune", e))?;
            info!(
                job = run.name,
                freed = report.bytes_freed(),
                "prune finished"
            );
        }
    }

    if run.job.check.is_some() {
        let checked = run.check();
        run.audit("check", checked.as_ref().map(|()| Vec::new()));
        checked.map_err(|e| after_backup("check", e))?;
    }

    if run.job.drill.is_some() {
        let drilled = run.drill();
        if !matches!(drilled, Ok(None)) {
            run.audit(
                "pg verify",
                drilled.as_ref().map(|id| id.iter().cloned().collect()),
            );
        }
        drilled.map_err(|e| after_backup("restore drill", e))?;
    }

    run.record_repository(repository_name)?;
    Ok(())
}
