//! Job notifications: webhooks signed with HMAC-SHA256, and command hooks.
//!
//! [`deliver`] sends one [`Event`] to every target whose filter selects it.
//! A failed delivery is returned as a warning line and logged; it never
//! changes the outcome of the job that sent the event.
//!
//! A webhook receives an HTTP POST of the event as JSON. When a secret is
//! set, the header `X-Cairn-Signature: sha256=<hex>` carries the lowercase
//! hex HMAC-SHA256 of the exact body bytes under that secret. The body
//! contains the event's `time`, so a receiver can reject old, replayed requests.
//!
//! A command hook runs its argv without a shell and reads the same JSON,
//! followed by a newline, on stdin.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{JoinHandle, ScopedJoinHandle};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

/// `User-Agent` of every webhook request.
const USER_AGENT: &str = concat!("cairn/", env!("CARGO_PKG_VERSION"));

/// Filter names a target can list in its `events`.
pub const EVENT_FILTERS: [&str; 4] = ["start", "finish", "failure", "success"];

/// Timeout of one webhook attempt that [`Webhook::new`] sets.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries after a failed webhook attempt that [`Webhook::new`] sets.
pub const DEFAULT_WEBHOOK_RETRIES: u32 = 3;
/// Time a command hook may run before it is killed, as [`CommandHook::new`]
/// sets it.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Delay before the first webhook retry. Each later retry waits twice as
/// long as the one before, up to [`MAX_RETRY_DELAY`].
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Maximum delay between two webhook attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Maximum timeout passed to the HTTP client, because ureq 3.5 panics when
/// a deadline does not fit in an `Instant`, as with `Duration::MAX`.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Environment variables that may hold a secret (a passphrase, a connection
/// string with a password) and must not reach a hook.
const SECRET_ENV_VARS: [&str; 6] = [
    "CAIRN_PASSWORD",
    "CAIRN_NEW_PASSWORD",
    "CAIRN_PG_CONNECTION",
    "CAIRN_PG_SCRATCH",
    "CAIRN_WEBHOOK_SECRET",
    "PGPASSWORD",
];
/// Last lines of a hook's stdout or stderr that a warning or log line shows.
const OUTPUT_TAIL_LINES: usize = 5;
/// Bytes of a hook's stdout and stderr kept in memory. Older output is
/// dropped.
const OUTPUT_TAIL_BYTES: usize = 8 * 1024;
/// Interval between two checks whether a hook has exited.
const HOOK_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Time to wait for a hook's output pipes to close after the hook exited.
/// A process that the hook started and left running can keep them open.
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// Point in a job's life that an event reports.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The job has started.
    Start,
    /// The job has ended, and the event carries its outcome.
    Finish,
}

impl EventKind {
    /// Name of the kind in the JSON body and the `X-Cairn-Event` header.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Finish => "finish",
        }
    }
}

/// Result of a finished job.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The job did all its work.
    Success,
    /// The job failed, and the event's `error` contains the reason.
    Failure,
}

/// Notification about one job, sent as the JSON body of a webhook and on
/// the stdin of a command hook.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Event {
    /// `start` or `finish`.
    pub event: EventKind,
    /// Name of the job.
    pub job: String,
    /// Outcome of a `finish` event, or `None` for `start`.
    pub outcome: Option<Outcome>,
    /// Error message of a failed job.
    pub error: Option<String>,
    /// Time the event was created, RFC 3339 in UTC.
    pub time: String,
    /// Host name of the machine that runs the job.
    pub host: String,
    /// Run time of a finished job, in seconds.
    pub duration_secs: Option<f64>,
    /// Id of the snapshot that the job wrote.
    pub snapshot: Option<String>,
    /// Free-form data about the job, an empty object unless the caller sets
    /// it.
    pub details: serde_json::Value,
}

#[allow(
    dead_code,
    reason = "the scheduler creates events once it runs jobs with notifications"
)]
impl Event {
    /// Creates the event sent when a job starts, stamped with the current
    /// time and this host's name.
    pub fn start(job: &str) -> Event {
        Event {
            event: EventKind::Start,
            job: job.to_string(),
            outcome: None,
            error: None,
            time: now_rfc3339(),
            host: cairn_core::host_name(),
            duration_secs: None,
            snapshot: None,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Creates the event sent when a job has succeeded, with its run time
    /// and the snapshot it wrote, if any.
    pub fn success(job: &str, duration: Duration, snapshot: Option<String>) -> Event {
        Event {
            event: EventKind::Finish,
            outcome: Some(Outcome::Success),
            duration_secs: Some(duration.as_secs_f64()),
            snapshot,
            ..Event::start(job)
        }
    }

    /// Creates the event sent when a job has failed, with its run time and
    /// error message.
    pub fn failure(job: &str, duration: Duration, error: &str) -> Event {
        Event {
            event: EventKind::Finish,
            outcome: Some(Outcome::Failure),
            error: Some(error.to_string()),
            duration_secs: Some(duration.as_secs_f64()),
            ..Event::start(job)
        }
    }
}

fn now_rfc3339() -> String {
    // Precision 0 prints whole seconds, as in `2025-01-31T02:00:00Z`.
    format!("{:.0}", jiff::Timestamp::now())
}

/// HTTP endpoint that receives events as a JSON POST.
#[derive(Clone)]
pub struct Webhook {
    /// `http://` or `https://` URL. Credentials in it (`user:password@`) are
    /// sent as HTTP basic authentication and never logged.
    pub url: String,
    /// Key of the HMAC-SHA256 signature in `X-Cairn-Signature`. Without it,
    /// requests are unsigned.
    pub secret: Option<Zeroizing<String>>,
    /// Time limit of one attempt, from name resolution to the response
    /// headers.
    pub timeout: Duration,
    /// Attempts after the first one that fail on a connection error, a
    /// timeout or a 5xx status.
    pub retries: u32,
    /// Filter names from [`EVENT_FILTERS`] that select the events to send.
    pub events: Vec<String>,
}

#[allow(
    dead_code,
    reason = "the scheduler creates targets from its configuration once it is wired in"
)]
impl Webhook {
    /// Creates a webhook with the default timeout and retries, no secret,
    /// and a filter that selects failures only.
    pub fn new(url: &str) -> Webhook {
        Webhook {
            url: url.to_string(),
            secret: None,
            timeout: DEFAULT_WEBHOOK_TIMEOUT,
            retries: DEFAULT_WEBHOOK_RETRIES,
            events: default_filter(),
        }
    }
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("events", &self.events)
            .finish()
    }
}

/// Program that is run for each selected event, with the event on stdin.
#[derive(Debug, Clone)]
pub struct CommandHook {
    /// Program and its arguments, run without a shell.
    pub argv: Vec<String>,
    /// Time the program may run before it is killed.
    pub timeout: Duration,
    /// Filter names from [`EVENT_FILTERS`] that select the events to send.
    pub events: Vec<String>,
}

#[allow(
    dead_code,
    reason = "the scheduler creates targets from its configuration once it is wired in"
)]
impl CommandHook {
    /// Creates a hook with the default timeout and a filter that selects
    /// failures only.
    pub fn new(argv: Vec<String>) -> CommandHook {
        CommandHook {
            argv,
            timeout: DEFAULT_HOOK_TIMEOUT,
            events: default_filter(),
        }
    }
}

fn default_filter() -> Vec<String> {
    vec!["failure".to_string()]
}

/// Checks that every name in a target's `events` is one of
/// [`EVENT_FILTERS`]. Returns an error message that names the first unknown
/// one, for the caller to report when it loads its configuration.
pub fn validate_filter(events: &[String]) -> Result<(), String> {
    match events
        .iter()
        .find(|name| !EVENT_FILTERS.contains(&name.as_str()))
    {
        Some(name) => Err(format!(
            "unknown notification event `{name}`: expected start, finish, failure or success"
        )),
        None => Ok(()),
    }
}

/// Returns whether the filter `events` selects `event`. Unknown names select
/// nothing.
fn selects(events: &[String], event: &Event) -> bool {
    events.iter().any(|name| match name.as_str() {
        "start" => event.event == EventKind::Start,
        "finish" => event.event == EventKind::Finish,
        "failure" => event.event == EventKind::Finish && event.outcome == Some(Outcome::Failure),
        "success" => event.event == EventKind::Finish && event.outcome == Some(Outcome::Success),
        _ => false,
    })
}

/// Delivery settings that tests change: the retry delays, and whether to
/// send through the proxy named by `HTTPS_PROXY` and related variables.
#[derive(Debug, Clone, Copy)]
struct Settings {
    retry_delay: Duration,
    max_retry_delay: Duration,
    proxy_from_env: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry_delay: RETRY_DELAY,
            max_retry_delay: MAX_RETRY_DELAY,
            proxy_from_env: true,
        }
    }
}

/// Sends `event` to every webhook and command hook whose filter selects it,
/// all at once, and waits until each has succeeded or failed. Returns one
/// warning line per failed delivery, in the order of `webhooks` and then
/// `hooks`. A failure is also logged and never propagated, so the outcome
/// of the job that sent the event stays as it was.
#[allow(
    dead_code,
    reason = "the scheduler calls this once it runs jobs with notifications"
)]
pub fn deliver(event: &Event, webhooks: &[Webhook], hooks: &[CommandHook]) -> Vec<String> {
    deliver_with(event, webhooks, hooks, Settings::default())
}

/// One webhook or command hook that an event goes to.
#[derive(Clone, Copy)]
enum Target<'a> {
    Webhook(&'a Webhook),
    Hook(&'a CommandHook),
}

impl<'a> Target<'a> {
    /// Name of the target for messages, with credentials removed.
    fn label(self) -> String {
        match self {
            Target::Webhook(webhook) => format!("webhook {}", redact_url(&webhook.url)),
            Target::Hook(hook) => format!("command hook {:?}", hook.argv),
        }
    }

    fn events(self) -> &'a [String] {
        match self {
            Target::Webhook(webhook) => &webhook.events,
            Target::Hook(hook) => &hook.events,
        }
    }
}

/// Delivery on its own thread, or its result when no thread could be
/// started and it ran on the caller's.
enum Pending<'scope> {
    Thread(ScopedJoinHandle<'scope, Result<(), String>>),
    Done(Result<(), String>),
}

fn deliver_with(
    event: &Event,
    webhooks: &[Webhook],
    hooks: &[CommandHook],
    settings: Settings,
) -> Vec<String> {
    // A warning-level span, so that the job's name shows in the warnings
    // at cairn's default log level.
    let span = tracing::warn_span!("notify", job = %event.job, event = event.event.as_str());
    let _entered = span.enter();
    let targets: Vec<Target<'_>> = webhooks
        .iter()
        .map(Target::Webhook)
        .chain(hooks.iter().map(Target::Hook))
        .collect();
    for target in &targets {
        if let Err(message) = validate_filter(target.events()) {
            warn!(target = %target.label(), error = %message, "ignoring an unknown event filter");
        }
    }
    let selected: Vec<Target<'_>> = targets
        .into_iter()
        .filter(|target| selects(target.events(), event))
        .collect();
    if selected.is_empty() {
        return Vec::new();
    }

    let body = match serde_json::to_vec(event) {
        Ok(body) => body,
        Err(e) => {
            let error = format!("cannot encode the event as JSON: {e}");
            return selected
                .iter()
                .map(|target| fail(*target, 1, &error))
                .collect();
        }
    };

    run_all(&selected, event.event, &body, settings, &span)
}

/// Runs the deliveries to `targets` at once, each on its own thread, so a
/// slow target does not delay the others. The threads log to the caller's
/// subscriber, inside `span`. Returns the warning lines in target order.
fn run_all(
    targets: &[Target<'_>],
    kind: EventKind,
    body: &[u8],
    settings: Settings,
    span: &tracing::Span,
) -> Vec<String> {
    let dispatch = tracing::dispatcher::get_default(|dispatch| dispatch.clone());
    std::thread::scope(|scope| {
        let pending: Vec<Pending<'_>> = targets
            .iter()
            .map(|&target| {
                let work = move || run_target(target, kind, body, settings);
                let dispatch = &dispatch;
                let spawned = std::thread::Builder::new()
                    .name("cairn-notify".into())
                    .spawn_scoped(scope, move || {
                        tracing::dispatcher::with_default(dispatch, || span.in_scope(work))
                    });
                match spawned {
                    Ok(handle) => Pending::Thread(handle),
                    Err(e) => {
                        debug!(error = %e, "cannot start a notification thread, so delivering on the calling thread");
                        Pending::Done(work())
                    }
                }
            })
            .collect();

        let mut warnings = Vec::new();
        for (pending, target) in pending.into_iter().zip(targets) {
            let result = match pending {
                Pending::Thread(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(fail(*target, 1, "the delivery thread panicked"))),
                Pending::Done(result) => result,
            };
            if let Err(warning) = result {
                warnings.push(warning);
            }
        }
        warnings
    })
}

fn run_target(
    target: Target<'_>,
    kind: EventKind,
    body: &[u8],
    settings: Settings,
) -> Result<(), String> {
    match target {
        Target::Webhook(webhook) => send_webhook(webhook, kind, body, settings),
        Target::Hook(hook) => run_hook(hook, body),
    }
}

/// Logs a failed delivery and returns its warning line.
fn fail(target: Target<'_>, attempt: u32, error: &str) -> String {
    let label = target.label();
    warn!(target = %label, attempt, error, "notification failed");
    format!("{label} failed: {error}")
}

// Webhooks.

/// Failed webhook attempt, and whether another attempt may succeed.
struct AttemptError {
    message: String,
    retry: bool,
}

/// Posts `body` to the webhook, retrying with exponential backoff after a
/// connection error, a timeout or a 5xx status. Returns the warning line of
/// the last failed attempt.
fn send_webhook(
    webhook: &Webhook,
    kind: EventKind,
    body: &[u8],
    settings: Settings,
) -> Result<(), String> {
    let target = Target::Webhook(webhook);
    let signature = match &webhook.secret {
        Some(secret) => Some(sign(secret.as_bytes(), body).map_err(|e| fail(target, 1, &e))?),
        None => None,
    };
    let agent = http_agent(webhook.timeout, settings);
    let attempts = webhook.retries.saturating_add(1);
    let mut attempt = 1;
    loop {
        let failure = match post(&agent, webhook, kind, body, signature.as_deref()) {
            Ok(()) => {
                if attempt > 1 {
                    info!(target = %target.label(), attempt, "webhook delivered after a retry");
                }
                return Ok(());
            }
            Err(failure) => failure,
        };
        let error = scrub_url(&failure.message, &webhook.url);
        if !failure.retry {
            let error = format!("{error} (attempt {attempt} of {attempts}, not retried)");
            return Err(fail(target, attempt, &error));
        }
        if attempt >= attempts {
            let error = format!("{error} (attempt {attempt} of {attempts})");
            return Err(fail(target, attempt, &error));
        }
        let delay = retry_delay(settings, attempt);
        warn!(
            target = %target.label(),
            attempt,
            error = %error,
            retry_in = %humantime::format_duration(delay),
            "webhook attempt failed, retrying",
        );
        std::thread::sleep(delay);
        attempt += 1;
    }
}

/// Returns the header value `sha256=<lowercase hex HMAC-SHA256>` of `body`
/// under `secret`.
fn sign(secret: &[u8], body: &[u8]) -> Result<String, String> {
    // An empty key gives a signature that anyone can compute, so it would
    // only look like authentication.
    if secret.is_empty() {
        return Err("the webhook secret is empty: set a secret or remove it".to_string());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|e| format!("cannot use the webhook secret as an HMAC key: {e}"))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

fn http_agent(timeout: Duration, settings: Settings) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        // Statuses are checked by `check_status`, which decides on retries.
        .http_status_as_error(false)
        // A redirect would send the body and its signature to a URL that
        // the configuration does not name.
        .max_redirects(0)
        .user_agent(USER_AGENT)
        .timeout_global(Some(timeout.min(MAX_HTTP_TIMEOUT)));
    if !settings.proxy_from_env {
        config = config.proxy(None);
    }
    ureq::Agent::new_with_config(config.build())
}

fn post(
    agent: &ureq::Agent,
    webhook: &Webhook,
    kind: EventKind,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), AttemptError> {
    let mut request = agent
        .post(webhook.url.as_str())
        .header("Content-Type", "application/json")
        .header("X-Cairn-Event", kind.as_str());
    if let Some(signature) = signature {
        request = request.header("X-Cairn-Signature", signature);
    }
    match request.send(body) {
        Ok(response) => check_status(response.status()),
        Err(e) => Err(classify(e, webhook.timeout)),
    }
}

fn check_status(status: ureq::http::StatusCode) -> Result<(), AttemptError> {
    if status.is_success() {
        return Ok(());
    }
    let mut message = format!("HTTP status {status}");
    if status.is_redirection() {
        message.push_str("; redirects are not followed, so set the final URL");
    }
    Err(AttemptError {
        message,
        retry: status.is_server_error(),
    })
}

fn classify(error: ureq::Error, timeout: Duration) -> AttemptError {
    match error {
        ureq::Error::Timeout(_) => AttemptError {
            message: format!("timed out after {}", humantime::format_duration(timeout)),
            retry: true,
        },
        // rustls reports a failed handshake or an invalid certificate as
        // invalid data, which a second attempt would meet again.
        ureq::Error::Io(e) => AttemptError {
            retry: e.kind() != std::io::ErrorKind::InvalidData,
            message: format!("connection failed: {e}"),
        },
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => AttemptError {
            message: error.to_string(),
            retry: true,
        },
        other => AttemptError {
            message: other.to_string(),
            retry: false,
        },
    }
}

/// Returns the delay before retry number `retry`, counted from 1: the base
/// delay doubled for each earlier retry, up to the maximum.
fn retry_delay(settings: Settings, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1));
    settings
        .retry_delay
        .saturating_mul(factor)
        .min(settings.max_retry_delay)
}

/// Returns the byte ranges of `url` that can hold credentials: the user
/// information before `@`, and the query.
fn secret_ranges(url: &str) -> Vec<std::ops::Range<usize>> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let query = url.find('?').unwrap_or(url.len());
    let fragment = url.find('#').unwrap_or(url.len());
    let before_query = query.min(fragment);
    let mut ranges = Vec::new();

    // The last `@` before the query ends the user information, even when a
    // password contains an unencoded `/`. A path that contains `@` is
    // redacted up to it, which hides more than needed.
    if let Some(at) = url.get(start..before_query).and_then(|s| s.rfind('@'))
        && at > 0
    {
        ranges.push(start..start + at);
    }
    if query < fragment && query + 1 < fragment {
        ranges.push(query + 1..fragment);
    }
    ranges
}

/// Returns `url` with its user information and query replaced by `***`.
fn redact_url(url: &str) -> String {
    let mut redacted = url.to_string();
    for range in secret_ranges(url).into_iter().rev() {
        redacted.replace_range(range, "***");
    }
    redacted
}

/// Replaces every copy of the credentials in `url` within `text`, such as
/// an error message that quotes the URL, by `***`.
fn scrub_url(text: &str, url: &str) -> String {
    let mut scrubbed = text.replace(url, &redact_url(url));
    for range in secret_ranges(url) {
        scrubbed = scrubbed.replace(&url[range], "***");
    }
    scrubbed
}

// Command hooks.

/// Output of a hook's stdout or stderr, of which the last
/// [`OUTPUT_TAIL_BYTES`] are kept.
#[derive(Clone, Default)]
struct OutputTail(Arc<Mutex<Vec<u8>>>);

impl OutputTail {
    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.extend_from_slice(bytes);
        if kept.len() > OUTPUT_TAIL_BYTES {
            let excess = kept.len() - OUTPUT_TAIL_BYTES;
            kept.drain(..excess);
        }
    }

    /// Returns up to `count` last non-empty lines.
    fn last_lines(&self, count: usize) -> Vec<String> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let text = String::from_utf8_lossy(&kept);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.is_empty())
            .collect();
        lines[lines.len().saturating_sub(count)..]
            .iter()
            .map(|line| line.to_string())
            .collect()
    }
}

/// Builds the command for a hook: no shell, all three standard streams
/// piped, and no passphrase in its environment. Returns `None` for an empty
/// argv.
fn hook_command(hook: &CommandHook) -> Option<Command> {
    let (program, args) = hook.argv.split_first()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in SECRET_ENV_VARS {
        command.env_remove(name);
    }
    Some(command)
}

/// Runs a hook with `body` and a newline on its stdin. Returns the warning
/// line when it cannot start, exits with a status other than 0, or runs
/// past its timeout.
fn run_hook(hook: &CommandHook, body: &[u8]) -> Result<(), String> {
    let target = Target::Hook(hook);
    let Some(mut command) = hook_command(hook) else {
        return Err(fail(target, 1, "the command line is empty"));
    };
    let mut child = command
        .spawn()
        .map_err(|e| fail(target, 1, &format!("cannot start the program: {e}")))?;

    let mut input = body.to_vec();
    input.push(b'\n');
    let stdout = OutputTail::default();
    let stderr = OutputTail::default();
    let helpers = [
        child.stdin.take().and_then(|pipe| feed_input(pipe, input)),
        child
            .stdout
            .take()
            .and_then(|pipe| collect_output(pipe, stdout.clone())),
        child
            .stderr
            .take()
            .and_then(|pipe| collect_output(pipe, stderr.clone())),
    ];

    let waited = wait_or_kill(&mut child, hook.timeout);
    let pipes_deadline = Instant::now() + PIPE_GRACE;
    for helper in helpers.into_iter().flatten() {
        join_until(helper, pipes_deadline);
    }

    debug!(
        target = %target.label(),
        stdout = %stdout.last_lines(OUTPUT_TAIL_LINES).join(" | "),
        stderr = %stderr.last_lines(OUTPUT_TAIL_LINES).join(" | "),
        "command hook ended",
    );
    let error = match waited {
        Ok(Some(status)) if status.success() => return Ok(()),
        Ok(Some(status)) => format!("the program ended with {status}"),
        Ok(None) => format!(
            "timed out after {} and was killed",
            humantime::format_duration(hook.timeout)
        ),
        Err(e) => format!("cannot wait for the program: {e}"),
    };
    let tail = stderr.last_lines(OUTPUT_TAIL_LINES);
    let error = if tail.is_empty() {
        error
    } else {
        format!("{error}; last lines of its stderr: {}", tail.join(" | "))
    };
    Err(fail(target, 1, &error))
}

/// Writes `input` to a hook's stdin on a helper thread, then closes it. A
/// hook that exits without reading it all is not an error.
fn feed_input(mut pipe: impl Write + Send + 'static, input: Vec<u8>) -> Option<JoinHandle<()>> {
    spawn_helper(move || {
        if let Err(e) = pipe.write_all(&input) {
            debug!(error = %e, "the command hook did not read the whole event");
        }
    })
}

/// Reads a hook's stdout or stderr into `tail` on a helper thread until the
/// pipe closes.
fn collect_output(
    mut pipe: impl Read + Send + 'static,
    tail: OutputTail,
) -> Option<JoinHandle<()>> {
    spawn_helper(move || {
        let mut buffer = [0u8; 4096];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => tail.push(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })
}

/// Starts a helper thread. On failure the closure and the pipe it owns are
/// dropped, which closes that pipe for the hook.
fn spawn_helper(work: impl FnOnce() + Send + 'static) -> Option<JoinHandle<()>> {
    match std::thread::Builder::new()
        .name("cairn-hook-io".into())
        .spawn(work)
    {
        Ok(handle) => Some(handle),
        Err(e) => {
            debug!(error = %e, "cannot start a thread for a command hook's pipe");
            None
        }
    }
}

/// Waits for `child` until `timeout` has passed, then kills it by its PID.
/// Returns `None` when it was killed.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    // A timeout too large for `Instant` never expires.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        let now = Instant::now();
        if let Some(deadline) = deadline
            && now >= deadline
        {
            // NOTE: only the hook's own process is killed. A process that
            // it started keeps running, and its output is abandoned after
            // PIPE_GRACE.
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        let remaining = deadline.map_or(HOOK_POLL_INTERVAL, |deadline| deadline - now);
        std::thread::sleep(HOOK_POLL_INTERVAL.min(remaining));
    }
}

/// Joins a helper thread if it ends before `deadline`, and leaves it running
/// otherwise.
fn join_until(helper: JoinHandle<()>, deadline: Instant) {
    while !helper.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if helper.is_finished() {
        let _ = helper.join();
    } else {
        debug!("a command hook's pipe is still open after the hook ended; not waiting for it");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Settings with short retry delays and no proxy, so tests are fast and
    /// their requests go only to the local receiver. Also installs the test
    /// log before the first delivery.
    fn test_settings() -> Settings {
        test_log();
        Settings {
            retry_delay: Duration::from_millis(10),
            max_retry_delay: Duration::from_millis(100),
            proxy_from_env: false,
        }
    }

    fn failure_event() -> Event {
        Event::failure(
            "nightly",
            Duration::from_millis(1500),
            "pg_dump exited with 1",
        )
    }

    fn hmac_hex(secret: &str, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Response of the test receiver to one request.
    #[derive(Clone, Copy, Debug)]
    enum Reply {
        Status(u16),
        /// Read the request, then keep the connection open without a response.
        Hang,
    }

    /// Request recorded by the test receiver.
    #[derive(Clone, Debug)]
    struct Request {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Request {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        }
    }

    /// HTTP/1.1 receiver on 127.0.0.1 with a port the system picks. It
    /// responds to the n-th request with the n-th reply and to every later
    /// one with the last reply. It closes each connection after responding.
    struct Receiver {
        address: SocketAddr,
        requests: Arc<Mutex<Vec<Request>>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Receiver {
        fn start(replies: &[Reply]) -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test receiver");
            let address = listener.local_addr().expect("receiver address");
            let requests = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let replies = replies.to_vec();
            let thread = {
                let requests = Arc::clone(&requests);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || serve(listener, &replies, &requests, &stop))
            };
            Receiver {
                address,
                requests,
                stop,
                thread: Some(thread),
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.address)
        }

        fn requests(&self) -> Vec<Request> {
            self.requests.lock().expect("requests lock").clone()
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            // Connects once to wake the accept loop, which then checks the flag.
            let _ = TcpStream::connect(self.address);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn serve(
        listener: TcpListener,
        replies: &[Reply],
        requests: &Mutex<Vec<Request>>,
        stop: &AtomicBool,
    ) {
        // Connections of hanging replies stay open until the receiver stops.
        let mut held = Vec::new();
        for stream in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let Some(request) = read_request(&stream) else {
                continue;
            };
            let index = {
                let mut requests = requests.lock().expect("requests lock");
                requests.push(request);
                requests.len() - 1
            };
            let reply = replies
                .get(index)
                .or(replies.last())
                .copied()
                .unwrap_or(Reply::Status(200));
            match reply {
                Reply::Status(code) => {
                    let response = format!(
                        "HTTP/1.1 {code} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = (&stream).write_all(response.as_bytes());
                }
                Reply::Hang => held.push(stream),
            }
        }
    }

    /// Parses the request line, the headers and a body of Content-Length
    /// bytes. Returns `None` for a connection that sends no request.
    fn read_request(stream: &TcpStream) -> Option<Request> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let path = parts.next()?.to_string();

        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).ok()?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':')?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let length = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Request {
            method,
            path,
            headers,
            body,
        })
    }

    /// Log output of a test subscriber.
    #[derive(Clone, Default)]
    struct LogBuffer(Arc<Mutex<Vec<u8>>>);

    impl Write for LogBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LogBuffer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
        }
    }

    /// Returns the log of the whole test binary. Its subscriber is the
    /// global default, installed before the first delivery. A per-test
    /// subscriber from `with_default` lost lines in parallel runs, because
    /// tracing caches per call site whether any subscriber wants its events.
    fn test_log() -> &'static LogBuffer {
        static LOG: OnceLock<LogBuffer> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = LogBuffer::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::TRACE)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other test sets a global subscriber");
            log
        })
    }

    /// Runs `deliver_with` and returns the warnings and the log lines of
    /// this delivery, identified by the job name in the `notify` span.
    fn deliver_logged(
        event: &Event,
        webhooks: &[Webhook],
        hooks: &[CommandHook],
    ) -> (Vec<String>, String) {
        let log = test_log();
        let warnings = deliver_with(event, webhooks, hooks, test_settings());
        let marker = format!("{{job={} ", event.job);
        let lines: Vec<String> = log
            .text()
            .lines()
            .filter(|line| line.contains(&marker))
            .map(str::to_string)
            .collect();
        (warnings, lines.join("\n"))
    }

    fn job_event(job: &str) -> Event {
        Event::failure(job, Duration::from_secs(1), "failed")
    }

    fn webhook(url: &str) -> Webhook {
        Webhook {
            timeout: Duration::from_secs(5),
            ..Webhook::new(url)
        }
    }

    fn hook(argv: &[&str]) -> CommandHook {
        CommandHook {
            timeout: Duration::from_secs(10),
            ..CommandHook::new(argv.iter().map(|arg| arg.to_string()).collect())
        }
    }

    #[test]
    fn event_serializes_all_fields() {
        let mut event = failure_event();
        event.details = serde_json::json!({"database": "shop"});
        let json = serde_json::to_value(&event).expect("encode event");

        assert_eq!(json["event"], "finish");
        assert_eq!(json["job"], "nightly");
        assert_eq!(json["outcome"], "failure");
        assert_eq!(json["error"], "pg_dump exited with 1");
        assert_eq!(json["duration_secs"], 1.5);
        assert_eq!(json["snapshot"], serde_json::Value::Null);
        assert_eq!(json["host"], cairn_core::host_name());
        assert_eq!(json["details"]["database"], "shop");
        let time = json["time"].as_str().expect("time is a string");
        let parsed: jiff::Timestamp = time.parse().expect("time is RFC 3339");
        assert!(time.ends_with('Z'), "time {time} is not UTC");
        assert!((jiff::Timestamp::now() - parsed).get_seconds().abs() < 60);
    }

    #[test]
    fn event_constructors_set_outcome() {
        let start = Event::start("nightly");
        let success = Event::success("nightly", Duration::from_secs(2), Some("1a2b".into()));

        assert_eq!(start.event, EventKind::Start);
        assert_eq!(start.outcome, None);
        assert_eq!(start.duration_secs, None);
        assert_eq!(start.details, serde_json::json!({}));
        assert_eq!(success.event, EventKind::Finish);
        assert_eq!(success.outcome, Some(Outcome::Success));
        assert_eq!(success.snapshot.as_deref(), Some("1a2b"));
        assert_eq!(success.error, None);
        assert_eq!(success.duration_secs, Some(2.0));
    }

    #[test]
    fn filters_select_events() {
        let start = Event::start("job");
        let success = Event::success("job", Duration::ZERO, None);
        let failure = failure_event();
        let cases: [(&[&str], [bool; 3]); 7] = [
            (&["start"], [true, false, false]),
            (&["finish"], [false, true, true]),
            (&["failure"], [false, false, true]),
            (&["success"], [false, true, false]),
            (&["start", "failure"], [true, false, true]),
            (&[], [false, false, false]),
            (&["failures"], [false, false, false]),
        ];
        for (names, expected) in cases {
            let filter: Vec<String> = names.iter().map(|name| name.to_string()).collect();
            let got = [
                selects(&filter, &start),
                selects(&filter, &success),
                selects(&filter, &failure),
            ];
            assert_eq!(
                got, expected,
                "filter {names:?} for start, success, failure"
            );
        }
    }

    #[test]
    fn default_filter_is_failure_only() {
        assert_eq!(Webhook::new("http://127.0.0.1/").events, ["failure"]);
        assert_eq!(CommandHook::new(vec!["true".into()]).events, ["failure"]);
    }

    #[test]
    fn validate_filter_rejects_unknown_name() {
        let good: Vec<String> = EVENT_FILTERS.iter().map(|name| name.to_string()).collect();
        let error =
            validate_filter(&["start".into(), "failures".into()]).expect_err("unknown name");

        assert_eq!(validate_filter(&good), Ok(()));
        assert!(error.contains("`failures`"), "{error}");
    }

    #[test]
    fn sign_matches_rfc4231_vector() {
        // RFC 4231, test case 2: key "Jefe".
        let signature = sign(b"Jefe", b"what do ya want for nothing?").expect("sign");

        assert_eq!(
            signature,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sign_rejects_empty_secret() {
        assert!(sign(b"", b"body").is_err());
    }

    #[test]
    fn retry_delay_doubles_and_caps() {
        let settings = Settings {
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(30),
            proxy_from_env: false,
        };
        let delays: Vec<u64> = [1, 2, 3, 4, 5, 6, 40, u32::MAX]
            .iter()
            .map(|&retry| retry_delay(settings, retry).as_secs())
            .collect();

        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn redact_url_hides_credentials() {
        let cases = [
            (
                "https://hooks.example.com/cairn",
                "https://hooks.example.com/cairn",
            ),
            (
                "https://alice:hunter2@hooks.example.com/cairn",
                "https://***@hooks.example.com/cairn",
            ),
            ("http://alice@127.0.0.1:8080/", "http://***@127.0.0.1:8080/"),
            (
                "https://hooks.example.com/cairn?token=abc#top",
                "https://hooks.example.com/cairn?***#top",
            ),
            (
                "https://a:b@hooks.example.com/x?token=abc",
                "https://***@hooks.example.com/x?***",
            ),
            (
                "https://a:pass/word@hooks.example.com/",
                "https://***@hooks.example.com/",
            ),
            ("alice:hunter2@hooks.example.com", "***@hooks.example.com"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "redacting {url}");
        }
    }

    #[test]
    fn scrub_url_hides_credentials_in_text() {
        let url = "https://alice:hunter2@hooks.example.com/x?token=abc";
        let text = format!("bad uri: {url}; user alice:hunter2, token=abc");

        assert_eq!(
            scrub_url(&text, url),
            "bad uri: https://***@hooks.example.com/x?***; user ***, ***"
        );
    }

    #[test]
    fn webhook_debug_hides_secret() {
        let mut target = Webhook::new("https://alice:hunter2@hooks.example.com/");
        target.secret = Some(Zeroizing::new("s3cret-key".to_string()));
        let text = format!("{target:?}");

        assert!(!text.contains("s3cret-key"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn webhook_posts_signed_event() {
        let receiver = Receiver::start(&[Reply::Status(200)]);
        let mut target = webhook(&receiver.url("/cairn"));
        target.secret = Some(Zeroizing::new("s3cret-key".to_string()));
        let event = failure_event();

        let warnings = deliver_with(&event, &[target], &[], test_settings());

        assert_eq!(warnings, Vec::<String>::new());
        let requests = receiver.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/cairn");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("user-agent"), Some(USER_AGENT));
        assert_eq!(request.header("x-cairn-event"), Some("finish"));
        let received: serde_json::Value =
            serde_json::from_slice(&request.body).expect("body is JSON");
        assert_eq!(
            received,
            serde_json::to_value(&event).expect("encode event")
        );

        let signature = request
            .header("x-cairn-signature")
            .expect("signature header");
        let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
        assert_eq!(hex, hmac_hex("s3cret-key", &request.body));
        assert_ne!(hex, hmac_hex("another-key", &request.body));
        assert_eq!(hex, hex.to_lowercase());
    }

    #[test]
    fn webhook_without_secret_is_unsigned() {
        let receiver = Receiver::start(&[Reply::Status(204)]);

        let warnings = deliver_with(
            &failure_event(),
            &[webhook(&receiver.url("/"))],
            &[],
            test_settings(),
        );

        assert_eq!(warnings, Vec::<String>::new());
        let requests = receiver.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].header("x-cairn-signature"), None);
    }

    #[test]
    fn webhook_retries_after_503() {
        let receiver = Receiver::start(&[Reply::Status(503), Reply::Status(200)]);

        let (warnings, log) =
            deliver_logged(&job_event("retry-503"), &[webhook(&receiver.url("/"))], &[]);

        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(receiver.requests().len(), 2);
        assert!(log.contains("webhook attempt failed, retrying"), "{log}");
        assert!(log.contains("attempt=1"), "{log}");
        assert!(log.contains("503"), "{log}");
    }

    #[test]
    fn webhook_backoff_doubles_delay() {
        let receiver =
            Receiver::start(&[Reply::Status(500), Reply::Status(502), Reply::Status(200)]);
        let settings = Settings {
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(1),
            ..test_settings()
        };
        let started = Instant::now();

        let warnings = deliver_with(
            &failure_event(),
            &[webhook(&receiver.url("/"))],
            &[],
            settings,
        );

        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(receiver.requests().len(), 3);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300),
            "took {elapsed:?}, expected 100 ms + 200 ms of delays"
        );
    }

    #[test]
    fn webhook_gives_up_after_retries() {
        let receiver = Receiver::start(&[Reply::Status(503)]);
        let mut target = webhook(&receiver.url("/"));
        target.retries = 2;

        let warnings = deliver_with(&failure_event(), &[target], &[], test_settings());

        assert_eq!(receiver.requests().len(), 3);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("HTTP status 503"), "{warnings:?}");
        assert!(warnings[0].contains("attempt 3 of 3"), "{warnings:?}");
    }

    #[test]
    fn webhook_no_retry_after_400() {
        let receiver = Receiver::start(&[Reply::Status(400), Reply::Status(200)]);

        let warnings = deliver_with(
            &failure_event(),
            &[webhook(&receiver.url("/"))],
            &[],
            test_settings(),
        );

        assert_eq!(receiver.requests().len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("HTTP status 400"), "{warnings:?}");
        assert!(warnings[0].contains("not retried"), "{warnings:?}");
    }

    #[test]
    fn webhook_no_redirect_followed() {
        let receiver = Receiver::start(&[Reply::Status(302)]);

        let warnings = deliver_with(
            &failure_event(),
            &[webhook(&receiver.url("/"))],
            &[],
            test_settings(),
        );

        assert_eq!(receiver.requests().len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("redirects are not followed"),
            "{warnings:?}"
        );
    }

    #[test]
    fn webhook_timeout_warns() {
        let receiver = Receiver::start(&[Reply::Hang]);
        let mut target = webhook(&receiver.url("/"));
        target.timeout = Duration::from_millis(300);
        target.retries = 1;
        let started = Instant::now();

        let (warnings, log) = deliver_logged(&job_event("timeout"), &[target], &[]);

        let elapsed = started.elapsed();
        assert_eq!(receiver.requests().len(), 2);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("timed out after 300ms"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("attempt 2 of 2"), "{warnings:?}");
        assert!(log.contains("timed out after 300ms"), "{log}");
        assert!(elapsed >= Duration::from_millis(600), "took {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    }

    #[test]
    fn webhook_connection_refused_is_retried() {
        // A port that was just free and has no listener now.
        let address = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port");
        let mut target = webhook(&format!("http://{address}/"));
        target.retries = 1;

        let warnings = deliver_with(&failure_event(), &[target], &[], test_settings());

        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("connection failed"), "{warnings:?}");
        assert!(warnings[0].contains("attempt 2 of 2"), "{warnings:?}");
    }

    #[test]
    fn webhook_credentials_never_logged() {
        let receiver = Receiver::start(&[Reply::Status(400)]);
        let url = format!("http://alice:hunter2@{}/hook?token=t0ken", receiver.address);
        let mut target = webhook(&url);
        target.secret = Some(Zeroizing::new("s3cret-key".to_string()));

        let (warnings, log) = deliver_logged(&job_event("credentials"), &[target], &[]);

        let requests = receiver.requests();
        assert_eq!(requests.len(), 1);
        // base64("alice:hunter2"): the credentials go out as basic authentication.
        assert_eq!(
            requests[0].header("authorization"),
            Some("Basic YWxpY2U6aHVudGVyMg==")
        );
        assert_eq!(warnings.len(), 1);
        let expected = format!("webhook http://***@{}/hook?***", receiver.address);
        assert!(warnings[0].starts_with(&expected), "{warnings:?}");
        assert!(log.contains("attempt=1"), "{log}");
        for secret in ["hunter2", "t0ken", "s3cret-key"] {
            assert!(!warnings[0].contains(secret), "{secret} in {warnings:?}");
            assert!(!log.contains(secret), "{secret} in {log}");
        }
    }

    #[test]
    fn webhook_https_uses_tls() {
        // A plain TCP server that responds to the TLS handshake with plain
        // HTTP, which the client's TLS layer rejects without retrying.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let mut target = webhook(&format!("https://{address}/"));
        target.retries = 1;

        let warnings = deliver_with(&failure_event(), &[target], &[], test_settings());

        server.join().expect("server thread");
        assert_eq!(warnings.len(), 1);
        // rustls 0.23.48 reports a reply that is not TLS as a corrupt message.
        assert!(warnings[0].contains("corrupt message"), "{warnings:?}");
        assert!(
            warnings[0].contains("attempt 1 of 2, not retried"),
            "{warnings:?}"
        );
    }

    #[test]
    fn deliver_sends_only_selected_events() {
        let receiver = Receiver::start(&[Reply::Status(200)]);
        let failures_only = webhook(&receiver.url("/failure"));
        let starts = Webhook {
            events: vec!["start".into()],
            ..webhook(&receiver.url("/start"))
        };
        let targets = [failures_only, starts];

        for event in [
            Event::start("job"),
            Event::success("job", Duration::ZERO, None),
            failure_event(),
        ] {
            let warnings = deliver_with(&event, &targets, &[], test_settings());
            assert_eq!(warnings, Vec::<String>::new());
        }

        let mut paths: Vec<String> = receiver.requests().into_iter().map(|r| r.path).collect();
        paths.sort();
        assert_eq!(paths, ["/failure", "/start"]);
    }

    #[test]
    fn deliver_returns_warning_per_failure() {
        let receiver = Receiver::start(&[Reply::Status(400)]);
        let hooks = [hook(&["false"]), hook(&["true"])];

        let warnings = deliver_with(
            &failure_event(),
            &[webhook(&receiver.url("/"))],
            &hooks,
            test_settings(),
        );

        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("webhook "), "{warnings:?}");
        assert!(
            warnings[1].starts_with("command hook [\"false\"]"),
            "{warnings:?}"
        );
    }

    #[test]
    fn deliver_without_targets_does_nothing() {
        assert_eq!(deliver(&failure_event(), &[], &[]), Vec::<String>::new());
    }

    #[test]
    fn maximum_timeouts_do_not_panic() {
        let receiver = Receiver::start(&[Reply::Status(200)]);
        let mut target = webhook(&receiver.url("/"));
        target.timeout = Duration::MAX;
        let mut quick = hook(&["true"]);
        quick.timeout = Duration::MAX;

        let warnings = deliver_with(&failure_event(), &[target], &[quick], test_settings());

        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(receiver.requests().len(), 1);
    }

    #[test]
    fn hook_reads_event_on_stdin() {
        let folder = tempfile::tempdir().expect("temp folder");
        let path = folder.path().join("event.json");
        let script = format!("cat > '{}'", path.display());
        let event = failure_event();

        let warnings = deliver_with(
            &event,
            &[],
            &[hook(&["sh", "-c", &script])],
            test_settings(),
        );

        assert_eq!(warnings, Vec::<String>::new());
        let written = std::fs::read(&path).expect("hook wrote the event");
        assert_eq!(written.last(), Some(&b'\n'));
        let received: serde_json::Value = serde_json::from_slice(&written).expect("stdin is JSON");
        assert_eq!(
            received,
            serde_json::to_value(&event).expect("encode event")
        );
    }

    #[test]
    fn hook_environment_drops_passphrases() {
        let command = hook_command(&hook(&["env"])).expect("command");
        let removed: Vec<String> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();

        assert!(
            removed.contains(&"CAIRN_PASSWORD".to_string()),
            "{removed:?}"
        );
        assert!(
            removed.contains(&"CAIRN_NEW_PASSWORD".to_string()),
            "{removed:?}"
        );
    }

    #[test]
    fn hook_failure_warns_with_stderr() {
        let script = "for i in 1 2 3 4 5 6 7; do echo line $i >&2; done; exit 3";

        let (warnings, log) = deliver_logged(
            &job_event("hook-stderr"),
            &[],
            &[hook(&["sh", "-c", script])],
        );

        assert_eq!(warnings.len(), 1);
        let warning = &warnings[0];
        assert!(warning.contains("exit status: 3"), "{warning}");
        assert!(
            warning.contains("line 3 | line 4 | line 5 | line 6 | line 7"),
            "{warning}"
        );
        assert!(!warning.contains("line 2"), "{warning}");
        assert!(!warning.contains('\n'), "{warning}");
        assert!(log.contains("exit status: 3"), "{log}");
    }

    #[test]
    fn hook_killed_at_timeout() {
        let folder = tempfile::tempdir().expect("temp folder");
        let pid_file = folder.path().join("pid");
        let script = format!(
            "echo $$ > '{}'; echo waiting >&2; exec sleep 30",
            pid_file.display()
        );
        let mut slow = hook(&["sh", "-c", &script]);
        slow.timeout = Duration::from_millis(500);
        let started = Instant::now();

        let warnings = deliver_with(&failure_event(), &[], &[slow], test_settings());

        let elapsed = started.elapsed();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("timed out after 500ms and was killed"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("waiting"), "{warnings:?}");
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        let pid = std::fs::read_to_string(&pid_file).expect("hook wrote its PID");
        let proc_path = format!("/proc/{}", pid.trim());
        assert!(
            !std::path::Path::new(&proc_path).exists(),
            "hook {} still runs",
            pid.trim()
        );
    }

    #[test]
    fn hook_missing_program_warns() {
        let warnings = deliver_with(
            &failure_event(),
            &[],
            &[hook(&["/nonexistent/cairn-hook"])],
            test_settings(),
        );

        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("cannot start the program"),
            "{warnings:?}"
        );
    }

    #[test]
    fn hook_empty_argv_warns() {
        let warnings = deliver_with(&failure_event(), &[], &[hook(&[])], test_settings());

        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("the command line is empty"),
            "{warnings:?}"
        );
    }

    #[test]
    fn hook_large_event_without_reader() {
        // The event is larger than a pipe buffer and the hook never reads
        // stdin, so writing it fails once the hook exits.
        let mut event = failure_event();
        event.details = serde_json::json!({ "padding": "x".repeat(1 << 20) });

        let warnings = deliver_with(&event, &[], &[hook(&["true"])], test_settings());

        assert_eq!(warnings, Vec::<String>::new());
    }
}
