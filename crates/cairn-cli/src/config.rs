//! The configuration file (`cairn.toml`) for `cairn run` and
//! `cairn schedule`: repositories, jobs, notifications and metrics.
//!
//! Unknown keys are errors, so a misspelt option never silently does
//! nothing. Secrets are never written in the file: each one is a reference
//! to a file, a command or an environment variable. docs/operations.md is
//! the reference.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::cron::Schedule;

/// Lists where the configuration is looked for, in order, after `--config`
/// and `CAIRN_CONFIG`.
pub fn search_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        paths.push(PathBuf::from(dir).join("cairn/cairn.toml"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        paths.push(PathBuf::from(home).join(".config/cairn/cairn.toml"));
    }
    paths.push(PathBuf::from("/etc/cairn/cairn.toml"));
    paths
}

/// Finds the configuration file: `explicit` (from `--config` or
/// `CAIRN_CONFIG`), else the first of [`search_paths`] that exists.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let candidates = search_paths();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            cairn_core::Error::Invalid(format!(
                "no configuration file: pass --config PATH, set CAIRN_CONFIG, or create one of {}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into()
        })
}

/// A secret given by reference: `{ file = "..." }`, `{ command = "..." }`
/// or `{ env = "..." }`. A plain string is rejected without being echoed,
/// since it would be the secret itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretRef {
    /// A file whose first line is the secret.
    pub file: Option<PathBuf>,
    /// A shell command that prints the secret.
    pub command: Option<String>,
    /// An environment variable that contains the secret.
    pub env: Option<String>,
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            file: Option<PathBuf>,
            command: Option<String>,
            env: Option<String>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecretRef;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a table { file = \"...\" }, { command = \"...\" } or { env = \"...\" }",
                )
            }

            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    "secrets are never written into the file: use { file = \"PATH\" }, { command = \"COMMAND\" } or { env = \"VARIABLE\" }",
                ))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecretRef, A::Error> {
                let fields =
                    Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretRef {
                    file: fields.file,
                    command: fields.command,
                    env: fields.env,
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl SecretRef {
    fn count(&self) -> usize {
        usize::from(self.file.is_some())
            + usize::from(self.command.is_some())
            + usize::from(self.env.is_some())
    }

    /// Reads the secret.
    pub fn read(&self, what: &str) -> Result<Zeroizing<String>> {
        let text = if let Some(path) = &self.file {
            Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the {what} file {}", path.display()))?,
            )
        } else if let Some(command) = &self.command {
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("cannot run the {what} command with sh"))?;
            if !output.status.success() {
                bail!("the {what} command failed ({})", output.status);
            }
            Zeroizing::new(
                String::from_utf8(output.stdout).with_context(|| {
                    format!("the {what} command printed bytes that are not UTF-8")
                })?,
            )
        } else if let Some(name) = &self.env {
            Zeroizing::new(std::env::var(name).with_context(|| {
                format!("the environment variable {name} named for the {what} is not set")
            })?)
        } else {
            bail!("no {what} source is configured");
        };
        let mut text = text;
        if let Some(end) = text.find(['\n', '\r']) {
            text.truncate(end);
        }
        if text.is_empty() {
            bail!("the {what} is empty");
        }
        Ok(text)
    }
}

/// A repository and how to unlock it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Repository folder.
    pub path: PathBuf,
    /// The passphrase.
    pub password: Spanned<SecretRef>,
    /// Folder for the local index cache.
    pub cache_dir: Option<PathBuf>,
}

/// PostgreSQL source of a job; a job has exactly one source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// Connection URL or key=value pairs, without password.
    pub connection: Option<String>,
    /// The database password, by reference.
    pub password: Option<SecretRef>,
    /// Databases to back up.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Every database.
    #[serde(default)]
    pub all: bool,
    /// Databases to leave out of `all`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Store `globals.sql`.
    #[serde(default = "yes")]
    pub globals: bool,
    /// Record table checksums.
    #[serde(default = "yes")]
    pub checksums: bool,
    /// Folder of the PostgreSQL client programs.
    pub pg_bin: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// A producer command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSource {
    /// Entry name.
    pub name: String,
    /// Program and arguments, run without a shell.
    pub argv: Vec<String>,
}

/// Files, one entry each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSource {
    /// Paths of the files.
    pub paths: Vec<PathBuf>,
}

/// Retention applied after each backup of a job.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the N newest snapshots.
    pub keep_last: Option<u32>,
    /// Keep one per hour for N hours.
    pub keep_hourly: Option<u32>,
    /// Keep one per day for N days.
    pub keep_daily: Option<u32>,
    /// Keep one per week for N weeks.
    pub keep_weekly: Option<u32>,
    /// Keep one per month for N months.
    pub keep_monthly: Option<u32>,
    /// Keep one per year for N years.
    pub keep_yearly: Option<u32>,
    /// Keep all within this span, such as `30d`.
    pub keep_within: Option<Spanned<String>>,
    /// Keep snapshots with these tags.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Run prune after forgetting.
    #[serde(default = "yes")]
    pub prune: bool,
}

/// The daily check of part of the repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Share of packs to read and verify per run: `10%` or `0.1`.
    pub read_data_subset: Spanned<String>,
}

/// Restore drills of the job's PostgreSQL snapshots.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// Scratch server connection, without password.
    pub scratch: String,
    /// The scratch server's password, by reference.
    pub password: Option<SecretRef>,
    /// Minimum time between drills, such as `7d`.
    pub every: Spanned<String>,
    /// Skip pg_amcheck.
    #[serde(default)]
    pub no_amcheck: bool,
}

/// One job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Repository name; may be left out when there is only one.
    pub repository: Option<Spanned<String>>,
    /// Cron expression (5 fields, local time) or `@daily` and friends.
    pub schedule: Option<Spanned<String>>,
    /// Fixed interval instead of a cron expression, such as `6h`.
    pub every: Option<Spanned<String>>,
    /// After downtime: run a missed run once (`once`) or wait for the next
    /// time (`skip`).
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Extra snapshot tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// PostgreSQL source.
    pub postgres: Option<PostgresSource>,
    /// Command source.
    pub command: Option<CommandSource>,
    /// Files source.
    pub files: Option<FilesSource>,
    /// Retention.
    pub retention: Option<RetentionConfig>,
    /// Subset check.
    pub check: Option<CheckConfig>,
    /// Restore drills.
    pub drill: Option<DrillConfig>,
}

/// Policy for runs missed while the scheduler was not running.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Run once right away.
    #[default]
    Once,
    /// Wait for the next scheduled time.
    Skip,
}

/// One notification target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Webhook URL (POST).
    pub webhook: Option<String>,
    /// HMAC-SHA256 key for the webhook signature, by reference.
    pub secret: Option<SecretRef>,
    /// Program and arguments that get the event as JSON on stdin.
    pub command: Option<Vec<String>>,
    /// Events to send: `start`, `finish`, `success`, `failure`.
    #[serde(default = "failure_only")]
    pub events: Vec<Spanned<String>>,
    /// Only these jobs; all when empty.
    #[serde(default)]
    pub jobs: Vec<String>,
    /// Time limit per attempt, such as `10s`.
    pub timeout: Option<Spanned<String>>,
    /// Attempts after the first.
    #[serde(default = "three")]
    pub retries: u32,
}

fn failure_only() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "failure".to_string())]
}

fn three() -> u32 {
    3
}

/// Metrics output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// node_exporter textfile to write after every run.
    pub textfile: Option<PathBuf>,
    /// Address for `cairn schedule` to serve /metrics on.
    pub listen: Option<Spanned<String>>,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Repositories by name.
    #[serde(default)]
    pub repository: BTreeMap<String, RepositoryConfig>,
    /// Jobs by name.
    #[serde(default)]
    pub job: BTreeMap<String, JobConfig>,
    /// Notification targets by name.
    #[serde(default)]
    pub notify: BTreeMap<String, NotifyConfig>,
    /// Metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Folder for job state (last results, for metrics) [default: the cache
    /// folder's `jobs/`].
    pub state_dir: Option<PathBuf>,
}

/// A loaded and validated configuration.
pub struct Loaded {
    /// The file it came from.
    pub path: PathBuf,
    /// Its contents.
    pub config: Config,
    text: String,
}

/// One problem found by validation, with the line it is on.
pub struct Problem {
    line: Option<usize>,
    message: String,
    /// A warning does not make the file invalid: a secret file that does
    /// not exist yet, for example.
    pub warning: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn line_of(text: &str, span: std::ops::Range<usize>) -> Option<usize> {
    (span.end > 0 && span.start <= text.len()).then(|| text[..span.start].matches('\n').count() + 1)
}

/// Parses `text`; syntax errors, unknown keys and wrong types are reported
/// with their line. The parser's message is shown without the offending
/// line itself, which could hold a secret written by mistake.
pub fn parse(path: &Path, text: &str) -> Result<Config> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .and_then(|span| line_of(text, span))
            .map(|line| format!(" line {line}"))
            .unwrap_or_default();
        cairn_core::Error::Invalid(format!("{}{line}: {}", path.display(), e.message().trim()))
            .into()
    })
}

/// Reads, parses and validates the configuration at `path`.
pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    let config = parse(path, &text)?;
    let loaded = Loaded {
        path: path.to_path_buf(),
        config,
        text,
    };
    let (warnings, problems): (Vec<Problem>, Vec<Problem>) =
        loaded.validate().into_iter().partition(|p| p.warning);
    for warning in &warnings {
        tracing::warn!("{}: {warning}", path.display());
    }
    if !problems.is_empty() {
        return Err(cairn_core::Error::Invalid(format!(
            "{} has {} problem(s):\n  {}",
            path.display(),
            problems.len(),
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  ")
        ))
        .into());
    }
    Ok(loaded)
}

/// Parses a duration such as `30s`, `6h` or `7d`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write it as 30s, 15m, 6h or 7d"))
}

impl Loaded {
    fn problem(&self, span: Option<std::ops::Range<usize>>, message: String) -> Problem {
        Problem {
            line: span.and_then(|s| line_of(&self.text, s)),
            message,
            warning: false,
        }
    }

    fn warning(&self, message: String) -> Problem {
        Problem {
            line: None,
            message,
            warning: true,
        }
    }

    /// Checks that a secret file exists, can be read, and is private.
    fn check_secret(&self, what: &str, secret: &SecretRef, problems: &mut Vec<Problem>) {
        let Some(path) = &secret.file else {
            return;
        };
        match std::fs::metadata(path) {
            Err(e) => problems.push(self.warning(format!(
                "{what}: cannot read the file {}: {e}; runs will fail until it exists",
                path.display()
            ))),
            Ok(metadata) if metadata.permissions().mode() & 0o077 != 0 => {
                problems.push(self.problem(None, format!(
                    "{what}: other users can read or change the file {} (mode {:o}). Run: chmod 600 {}",
                    path.display(),
                    metadata.permissions().mode() & 0o777,
                    path.display()
                )));
            }
            Ok(_) => {
                if let Err(e) = std::fs::File::open(path) {
                    problems.push(self.warning(format!(
                        "{what}: cannot read the file {}: {e}; runs will fail until cairn can read it",
                        path.display()
                    )));
                }
            }
        }
    }

    /// Checks that a connection string carries no password.
    fn check_connection(&self, what: &str, text: Option<&str>, problems: &mut Vec<Problem>) {
        match cairn_core::pg::Target::parse(text) {
            Err(e) => problems.push(self.problem(None, format!("{what}: {e}"))),
            Ok(target) if target.has_password() => problems.push(self.problem(None, format!(
                "{what} contains a password, and secrets are never written into the file: remove it and add password = {{ file = \"PATH\" }} next to it"
            ))),
            Ok(_) => {}
        }
    }

    /// Checks everything the parser cannot: references between sections,
    /// schedules, durations, exactly one source per job, file modes.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let config = &self.config;
        let has_secrets = config
            .repository
            .values()
            .any(|r| r.password.get_ref().count() > 0)
            || config.job.values().any(|j| {
                j.postgres.as_ref().is_some_and(|p| p.password.is_some())
                    || j.drill.as_ref().is_some_and(|d| d.password.is_some())
            })
            || config.notify.values().any(|n| n.secret.is_some());
        if let Ok(metadata) = std::fs::metadata(&self.path) {
            let mode = metadata.permissions().mode();
            if mode & 0o022 != 0 {
                problems.push(self.problem(None, format!(
                    "the file can be changed by other users (mode {:o}); anyone who can edit it can run commands as cairn. Run: chmod 600 {}",
                    mode & 0o777,
                    self.path.display()
                )));
            } else if has_secrets && mode & 0o044 != 0 {
                problems.push(self.problem(None, format!(
                    "the file names secret sources but other users can read it (mode {:o}). Run: chmod 600 {}",
                    mode & 0o777,
                    self.path.display()
                )));
            }
        }
        if config.repository.is_empty() {
            problems.push(self.problem(None, "no [repository.NAME] section: name at least one repository with its path and password".into()));
        }
        for (name, repository) in &config.repository {
            self.check_secret(
                &format!("repository {name}: password"),
                repository.password.get_ref(),
                &mut problems,
            );
            if repository.password.get_ref().count() != 1 {
                problems.push(self.problem(
                    Some(repository.password.span()),
                    format!(
                        "repository {name}: password needs exactly one of file, command or env"
                    ),
                ));
            }
        }
        for (name, job) in &config.job {
            self.validate_job(name, job, &mut problems);
        }
        for (name, notify) in &config.notify {
            let targets =
                usize::from(notify.webhook.is_some()) + usize::from(notify.command.is_some());
            if targets != 1 {
                problems.push(self.problem(None, format!(
                    "notify {name}: give exactly one of webhook = \"URL\" or command = [\"program\", ...]"
                )));
            }
            if let Some(url) = &notify.webhook
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                problems.push(self.problem(
                    None,
                    format!("notify {name}: webhook must be an http:// or https:// URL"),
                ));
            }
            if let Some(secret) = &notify.secret {
                self.check_secret(&format!("notify {name}: secret"), secret, &mut problems);
            }
            if notify.secret.as_ref().is_some_and(|s| s.count() != 1) {
                problems.push(self.problem(
                    None,
                    format!("notify {name}: secret needs exactly one of file, command or env"),
                ));
            }
            for event in &notify.events {
                if !["start", "finish", "success", "failure"].contains(&event.get_ref().as_str()) {
                    problems.push(self.problem(Some(event.span()), format!(
                        "notify {name}: unknown event {:?}; use start, finish, success or failure",
                        event.get_ref()
                    )));
                }
            }
            if let Some(timeout) = &notify.timeout
                && let Err(e) = parse_duration(timeout.get_ref())
            {
                problems.push(
                    self.problem(Some(timeout.span()), format!("notify {name}: timeout {e}")),
                );
            }
            for job in &notify.jobs {
                if !config.job.contains_key(job) {
                    problems
                        .push(self.problem(None, format!("notify {name}: there is no job {job}")));
                }
            }
        }
        if let Some(listen) = &config.metrics.listen
            && listen.get_ref().parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(self.problem(
                Some(listen.span()),
                format!(
                    "metrics.listen {:?} is not an address such as 127.0.0.1:9187",
                    listen.get_ref()
                ),
            ));
        }
        problems
    }

    fn validate_job(&self, name: &str, job: &JobConfig, problems: &mut Vec<Problem>) {
        let config = &self.config;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            problems.push(self.problem(None, format!(
                "job name {name:?} is invalid: use letters, digits, '-', '_' and '.', because it names files, systemd units and metric labels"
            )));
        }
        match &job.repository {
            Some(repository) if !config.repository.contains_key(repository.get_ref()) => {
                problems.push(self.problem(
                    Some(repository.span()),
                    format!(
                    "job {name}: there is no repository {}; defined: {}",
                    repository.get_ref(),
                    config.repository.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                ));
            }
            None if config.repository.len() > 1 => {
                problems.push(self.problem(None, format!(
                    "job {name}: several repositories are defined, so name one with repository = \"NAME\""
                )));
            }
            _ => {}
        }
        match (&job.schedule, &job.every) {
            (Some(_), Some(every)) => problems.push(self.problem(
                Some(every.span()),
                format!("job {name}: give either schedule or every, not both"),
            )),
            (Some(schedule), None) => match Schedule::parse_cron(schedule.get_ref()) {
                Err(e) => problems
                    .push(self.problem(Some(schedule.span()), format!("job {name}: schedule {e}"))),
                Ok(parsed) => {
                    let next = parsed.next_after(
                        jiff::Timestamp::now(),
                        None,
                        &jiff::tz::TimeZone::system(),
                    );
                    if next.is_none() {
                        problems.push(self.problem(Some(schedule.span()), format!(
                            "job {name}: schedule {:?} matches no time in the next four years (such as the 31st of a short month)",
                            schedule.get_ref()
                        )));
                    }
                }
            },
            (None, Some(every)) => match parse_duration(every.get_ref()) {
                Err(e) => problems
                    .push(self.problem(Some(every.span()), format!("job {name}: every {e}"))),
                Ok(interval) if interval < Duration::from_secs(1) => problems.push(self.problem(
                    Some(every.span()),
                    format!("job {name}: every must be at least 1s"),
                )),
                Ok(_) => {}
            },
            (None, None) => {}
        }
        let sources = usize::from(job.postgres.is_some())
            + usize::from(job.command.is_some())
            + usize::from(job.files.is_some());
        if sources != 1 {
            problems.push(self.problem(None, format!(
                "job {name}: give exactly one source: [job.{name}.postgres], [job.{name}.command] or [job.{name}.files]"
            )));
        }
        if let Some(postgres) = &job.postgres {
            self.check_connection(
                &format!("job {name}: postgres.connection"),
                postgres.connection.as_deref(),
                problems,
            );
            if let Some(secret) = &postgres.password {
                self.check_secret(&format!("job {name}: postgres.password"), secret, problems);
            }
            if !postgres.all && postgres.databases.is_empty() {
                problems.push(self.problem(
                    None,
                    format!("job {name}: postgres needs databases = [\"app\", ...] or all = true"),
                ));
            }
            if postgres.password.as_ref().is_some_and(|s| s.count() != 1) {
                problems.push(self.problem(
                    None,
                    format!(
                        "job {name}: postgres.password needs exactly one of file, command or env"
                    ),
                ));
            }
        }
        if let Some(command) = &job.command {
            if command.argv.is_empty() {
                problems.push(self.problem(None, format!("job {name}: command.argv is empty")));
            }
            if let Err(e) = cairn_core::backup::validate_entry_name(&command.name) {
                problems.push(self.problem(None, format!("job {name}: command.name: {e}")));
            }
        }
        if let Some(retention) = &job.retention {
            if let Some(within) = &retention.keep_within
                && let Err(e) = within
                    .get_ref()
                    .parse::<cairn_core::retention::KeepWithin>()
            {
                problems.push(
                    self.problem(Some(within.span()), format!("job {name}: keep_within: {e}")),
                );
            }
            if let Err(e) =
                retention_policy(retention).and_then(|p| p.validate().map_err(Into::into))
            {
                problems.push(self.problem(None, format!("job {name}: retention: {e}")));
            }
        }
        if let Some(check) = &job.check
            && let Err(e) = crate::commands::parse_share(check.read_data_subset.get_ref())
        {
            problems.push(self.problem(
                Some(check.read_data_subset.span()),
                format!("job {name}: read_data_subset {e}"),
            ));
        }
        if let Some(drill) = &job.drill {
            if job.postgres.is_none() {
                problems.push(self.problem(
                    None,
                    format!("job {name}: a drill needs a [job.{name}.postgres] source"),
                ));
            }
            if let Err(e) = parse_duration(drill.every.get_ref()) {
                problems.push(self.problem(
                    Some(drill.every.span()),
                    format!("job {name}: drill.every {e}"),
                ));
            }
            self.check_connection(
                &format!("job {name}: drill.scratch"),
                Some(&drill.scratch),
                problems,
            );
            if let Some(secret) = &drill.password {
                self.check_secret(&format!("job {name}: drill.password"), secret, problems);
            }
        }
    }

    /// Returns the name and settings of the repository a job uses.
    pub fn repository_of<'a>(
        &'a self,
        job: &'a JobConfig,
    ) -> Result<(&'a str, &'a RepositoryConfig)> {
        let name = match &job.repository {
            Some(name) => name.get_ref().as_str(),
            None => self
                .config
                .repository
                .keys()
                .next()
                .map(String::as_str)
                .context("no repository is configured")?,
        };
        let repository = self
            .config
            .repository
            .get(name)
            .with_context(|| format!("there is no repository {name}"))?;
        Ok((name, repository))
    }

    /// Finds a job by name; the error lists the jobs.
    pub fn job(&self, name: &str) -> Result<&JobConfig> {
        self.config.job.get(name).ok_or_else(|| {
            cairn_core::Error::Invalid(format!(
                "{} has no job {name}; its jobs are: {}",
                self.path.display(),
                self.config
                    .job
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into()
        })
    }

    /// Returns the schedule of a job, if it has one.
    pub fn schedule_of(&self, job: &JobConfig) -> Option<Schedule> {
        if let Some(cron) = &job.schedule {
            return Schedule::parse_cron(cron.get_ref()).ok();
        }
        job.every
            .as_ref()
            .and_then(|every| parse_duration(every.get_ref()).ok())
            .map(Schedule::Every)
    }

    /// Pairs of job name and repository name, for metrics.
    pub fn job_repositories(&self) -> Vec<(String, String)> {
        self.config
            .job
            .iter()
            .map(|(name, job)| {
                let repository = self
                    .repository_of(job)
                    .map(|(r, _)| r.to_string())
                    .unwrap_or_default();
                (name.clone(), repository)
            })
            .collect()
    }

    /// Folder of job state files.
    pub fn state_dir(&self, cache_dir: &Path) -> PathBuf {
        self.config
            .state_dir
            .clone()
            .unwrap_or_else(|| cache_dir.join("jobs"))
    }
}

/// Builds the retention policy of a job.
pub fn retention_policy(retention: &RetentionConfig) -> Result<cairn_core::retention::Policy> {
    Ok(cairn_core::retention::Policy {
        keep_last: retention.keep_last,
        keep_hourly: retention.keep_hourly,
        keep_daily: retention.keep_daily,
        keep_weekly: retention.keep_weekly,
        keep_monthly: retention.keep_monthly,
        keep_yearly: retention.keep_yearly,
        keep_within: retention
            .keep_within
            .as_ref()
            .map(|w| w.get_ref().parse())
            .transpose()?,
        keep_tags: retention.keep_tags.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the problems of `config` that are errors, not warnings.
    fn errors(config: &Loaded) -> Vec<String> {
        config
            .validate()
            .iter()
            .filter(|p| !p.warning)
            .map(ToString::to_string)
            .collect()
    }

    fn loaded(text: &str) -> Result<Loaded> {
        let config = parse(Path::new("test.toml"), text)?;
        Ok(Loaded {
            path: PathBuf::from("/nonexistent/test.toml"),
            config,
            text: text.to_string(),
        })
    }

    const GOOD: &str = r#"
[repository.main]
path = "/srv/cairn"
password = { file = "/etc/cairn/passphrase" }

[job.nightly]
schedule = "30 2 * * *"

[job.nightly.postgres]
connection = "postgres://backup@db1/postgres"
all = true

[job.nightly.retention]
keep_daily = 30

[notify.ops]
webhook = "https://hooks.example/cairn"
secret = { env = "CAIRN_WEBHOOK_SECRET" }
"#;

    #[test]
    fn good_config_has_no_problems() {
        let config = loaded(GOOD).expect("parses");
        let problems = errors(&config);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn unknown_key_and_inline_secret_are_errors() {
        let error = loaded(&GOOD.replace("keep_daily", "keep_dialy"))
            .err()
            .expect("unknown key rejected")
            .to_string();
        assert!(error.contains("keep_dialy"), "{error}");
        assert!(error.contains("line 14"), "{error}");
        let error = loaded(&GOOD.replace(
            "password = { file = \"/etc/cairn/passphrase\" }",
            "password = \"hunter2\"",
        ))
        .err()
        .expect("inline secret rejected")
        .to_string();
        assert!(error.contains("never written into the file"), "{error}");
        assert!(!error.contains("hunter2"), "the secret was echoed: {error}");
    }

    #[test]
    fn semantic_problems_name_their_line() {
        let text = GOOD.replace("30 2 * * *", "61 2 * * *");
        let config = loaded(&text).expect("parses");
        let problems = errors(&config);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("line 7: job nightly: schedule"),
            "{problems:?}"
        );
    }
}
