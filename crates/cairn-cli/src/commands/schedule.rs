//! `cairn schedule`: runs configured jobs on their schedules until stopped.
//!
//! Each run is a child process (`cairn run JOB`), so a run's memory goes
//! back to the system when it ends and a failing run cannot take the
//! scheduler down. Runs happen one at a time: a job never overlaps itself,
//! and a job that falls due while another runs starts after it. On SIGTERM
//! or SIGINT the scheduler stops the running child with SIGTERM: a backup
//! that is cut off writes no snapshot, because a snapshot is written last.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use jiff::Timestamp;
use tracing::{info, warn};

use crate::GlobalArgs;
use crate::config::{CatchUp, Loaded};
use crate::cron::Schedule;

/// Arguments of `cairn schedule`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cairn schedule --config /etc/cairn/cairn.toml --metrics-listen 127.0.0.1:9187\n  \
    cairn schedule --print-systemd > /etc/systemd/system/cairn-schedule.service\n  \
    cairn schedule --print-systemd-timers\n\n\
Logs go to stderr; --log-format json writes one JSON object per line.")]
pub struct ScheduleArgs {
    /// Configuration file [default: CAIRN_CONFIG, then the search path of `cairn config check`].
    #[arg(long, env = "CAIRN_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics on this address at /metrics [default: metrics.listen].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Print a systemd service that runs the scheduler, then exit.
    #[arg(long, conflicts_with_all = ["print_cron", "print_systemd_timers"])]
    pub print_systemd: bool,
    /// Print a systemd service template and one timer per job, for running
    /// jobs from systemd's timers instead of the scheduler, then exit.
    #[arg(long, conflicts_with = "print_cron")]
    pub print_systemd_timers: bool,
    /// Print crontab lines that run each job with `cairn run`, then exit.
    #[arg(long)]
    pub print_cron: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[expect(unsafe_code, reason = "signal(2) has no safe wrapper in std")]
fn install_signal_handlers() {
    let handler = request_stop as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

#[expect(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
fn send_signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill takes plain integers; the child has not been reaped, so
    // its pid is still ours.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Next run time of each scheduled job.
type NextRuns = Arc<Mutex<BTreeMap<String, Timestamp>>>;

fn parse_time(text: Option<&str>) -> Option<Timestamp> {
    text?.parse().ok()
}

/// Computes the first run time of a job when the scheduler starts.
fn first_run(
    schedule: &Schedule,
    catch_up: CatchUp,
    last: Option<Timestamp>,
    now: Timestamp,
    tz: &jiff::tz::TimeZone,
) -> Option<Timestamp> {
    let missed = match (schedule, last) {
        (Schedule::Every(_), None) => return Some(now),
        (_, Some(last)) => schedule
            .next_after(last, Some(last), tz)
            .is_some_and(|t| t <= now),
        (Schedule::Cron(_), None) => false,
    };
    if missed && catch_up == CatchUp::Once {
        return Some(now);
    }
    match (schedule, last) {
        // Not missed: the interval since the last start still runs.
        (Schedule::Every(_), Some(last)) if !missed => schedule.next_after(now, Some(last), tz),
        (Schedule::Every(interval), _) => jiff::SignedDuration::try_from(*interval)
            .ok()
            .and_then(|d| now.checked_add(d).ok()),
        (Schedule::Cron(_), _) => schedule.next_after(now, None, tz),
    }
}

/// Runs the scheduler until SIGTERM or SIGINT.
pub fn run(global: &GlobalArgs, args: &ScheduleArgs) -> Result<()> {
    let path = crate::config::locate(args.config.as_deref())?;
    let loaded = crate::config::load(&path)?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    if args.print_systemd {
        return print_systemd(&path);
    }
    if args.print_systemd_timers {
        return print_systemd_timers(&loaded, &path);
    }
    if args.print_cron {
        return print_cron(&loaded, &path);
    }
    let tz = jiff::tz::TimeZone::system();
    let now = Timestamp::now();
    let mut schedules = BTreeMap::new();
    let next: NextRuns = Arc::new(Mutex::new(BTreeMap::new()));
    for (name, job) in &loaded.config.job {
        let Some(schedule) = loaded.schedule_of(job) else {
            info!(job = %name, "job has no schedule; run it with `cairn run`");
            continue;
        };
        let cache_dir = crate::jobs::cache_dir_of(&loaded, job)?;
        let state = crate::jobs::read_state(&loaded.state_dir(&cache_dir), name);
        let last = parse_time(state.last_start.as_deref());
        let first = first_run(&schedule, job.catch_up, last, now, &tz)
            .with_context(|| format!("job {name}: its schedule never runs"))?;
        info!(job = %name, schedule = %schedule.describe(), next_run = %first, "job scheduled");
        if let Ok(mut next) = next.lock() {
            next.insert(name.clone(), first);
        }
        schedules.insert(name.clone(), (schedule, cache_dir));
    }
    if schedules.is_empty() {
        return Err(cairn_core::Error::Invalid(format!(
            "{} has no job with a schedule or every; add schedule = \"30 2 * * *\" to a job",
            path.display()
        ))
        .into());
    }
    install_signal_handlers();
    let listen = args.metrics_listen.or_else(|| {
        loaded
            .config
            .metrics
            .listen
            .as_ref()
            .and_then(|l| l.get_ref().parse().ok())
    });
    if let Some(address) = listen {
        let state_dirs: BTreeMap<String, PathBuf> = schedules
            .iter()
            .map(|(name, (_, cache))| (name.clone(), loaded.state_dir(cache)))
            .collect();
        serve_metrics(
            address,
            state_dirs,
            loaded.job_repositories(),
            Arc::clone(&next),
        )?;
    }
    info!(config = %path.display(), jobs = schedules.len(), "scheduler started");

    while !STOP.load(Ordering::SeqCst) {
        let due = next.lock().ok().and_then(|next| {
            next.iter()
                .min_by_key(|(_, t)| **t)
                .map(|(n, t)| (n.clone(), *t))
        });
        let Some((name, at)) = due else {
            break;
        };
        if Timestamp::now() < at {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let started = Timestamp::now();
        let stopped = run_child(global, &path, &name)?;
        if stopped {
            break;
        }
        if let Some((schedule, _)) = schedules.get(&name) {
            let following = schedule
                .next_after(Timestamp::now(), Some(started), &tz)
                .map(|t| t.max(Timestamp::now()));
            if let (Some(following), Ok(mut next)) = (following, next.lock()) {
                info!(job = %name, next_run = %following, "job scheduled");
                next.insert(name.clone(), following);
            }
        }
    }
    info!("scheduler stopped");
    Ok(())
}

/// Runs `cairn run JOB` and waits for it; returns true when a stop signal
/// arrived and the child was stopped.
fn run_child(global: &GlobalArgs, config: &Path, job: &str) -> Result<bool> {
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let mut command = std::process::Command::new(exe);
    for _ in 0..global.verbose {
        command.arg("-v");
    }
    command
        .args(["--log-format", global.log_format.as_str()])
        .arg("run")
        .arg(job)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null());
    info!(job, "run started");
    let mut child = command.spawn().context("cannot start `cairn run`")?;
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for `cairn run`")? {
            if status.success() {
                info!(job, "run succeeded");
            } else {
                warn!(job, status = %status, "run failed");
            }
            return Ok(false);
        }
        if STOP.load(Ordering::SeqCst) {
            warn!(
                job,
                "stopping the running job: a backup that is cut off writes no snapshot"
            );
            send_signal(&child, libc::SIGTERM);
            for _ in 0..300 {
                if child.try_wait().ok().flatten().is_some() {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            warn!(job, "the job did not stop within 30 s; killing it");
            send_signal(&child, libc::SIGKILL);
            let _ = child.wait();
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serve_metrics(
    address: SocketAddr,
    state_dirs: BTreeMap<String, PathBuf>,
    all_jobs: Vec<(String, String)>,
    next: NextRuns,
) -> Result<()> {
    let listener = TcpListener::bind(address)
        .with_context(|| format!("cannot listen for metrics on {address}"))?;
    let bound = listener.local_addr().unwrap_or(address);
    info!(address = %bound, "serving metrics at http://{bound}/metrics");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 2048];
            let length = stream.read(&mut request).unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..length]);
            let (status, body) = if request.starts_with("GET /metrics ") {
                ("200 OK", render(&state_dirs, &all_jobs, &next))
            } else {
                (
                    "404 Not Found",
                    "not found; metrics are at /metrics\n".to_string(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Ok(())
}

fn render(
    state_dirs: &BTreeMap<String, PathBuf>,
    all_jobs: &[(String, String)],
    next: &NextRuns,
) -> String {
    let mut out = String::new();
    // Jobs of one state folder are rendered together.
    let mut by_dir: BTreeMap<&PathBuf, Vec<(String, String)>> = BTreeMap::new();
    for (job, repository) in all_jobs {
        if let Some(dir) = state_dirs.get(job) {
            by_dir
                .entry(dir)
                .or_default()
                .push((job.clone(), repository.clone()));
        }
    }
    for (dir, jobs) in by_dir {
        out.push_str(&crate::metrics::render_jobs(dir, &jobs));
    }
    out.push_str(
        "# HELP cairn_job_next_run_timestamp_seconds When the scheduler runs the job next.\n",
    );
    out.push_str("# TYPE cairn_job_next_run_timestamp_seconds gauge\n");
    if let Ok(next) = next.lock() {
        for (job, at) in next.iter() {
            out.push_str(&format!(
                "cairn_job_next_run_timestamp_seconds{{cairn_job=\"{}\"}} {}\n",
                job.replace('\\', "\\\\").replace('"', "\\\""),
                at.as_second()
            ));
        }
    }
    out.push_str("# HELP cairn_scheduler_up 1 while the scheduler runs.\n# TYPE cairn_scheduler_up gauge\ncairn_scheduler_up 1\n");
    out
}

fn print_systemd(config: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let exe = exe.display();
    let config = config.display();
    crate::say!(
        "# /etc/systemd/system/cairn-schedule.service: the scheduler as a service.\n\
# Add User= (and Group=) for the account that owns the repository, cache and config.\n\
[Unit]\n\
Description=cairn backup scheduler\n\
Wants=network-online.target\n\
After=network-online.target\n\
\n\
[Service]\n\
Type=simple\n\
ExecStart={exe} schedule --config {config}\n\
Restart=on-failure\n\
RestartSec=30\n\
# A running job gets SIGTERM and writes no snapshot if cut off.\n\
TimeoutStopSec=60\n\
NoNewPrivileges=yes\n\
\n\
[Install]\n\
WantedBy=multi-user.target"
    );
    Ok(())
}

fn print_systemd_timers(loaded: &Loaded, config: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let exe = exe.display();
    let config = config.display();
    crate::say!(
        "# Save each unit below in its own file under /etc/systemd/system/, then\n\
# run `systemctl daemon-reload` and `systemctl enable --now cairn-run@JOB.timer`.\n\
\n\
# --- cairn-run@.service\n\
[Unit]\n\
Description=cairn job %i\n\
Wants=network-online.target\n\
After=network-online.target\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart={exe} run %i --config {config}\n\
NoNewPrivileges=yes\n"
    );
    for (name, job) in &loaded.config.job {
        let timer = match loaded.schedule_of(job) {
            Some(Schedule::Every(interval)) => format!(
                "OnBootSec=5min\nOnUnitActiveSec={}",
                humantime::format_duration(interval)
            ),
            Some(Schedule::Cron(_)) => match job
                .schedule
                .as_ref()
                .and_then(|s| crate::cron::to_on_calendar(s.get_ref()))
            {
                Some(calendar) => format!(
                    "OnCalendar={calendar}\nPersistent={}",
                    job.catch_up == CatchUp::Once
                ),
                None => {
                    crate::say!(
                        "# job {name}: its cron expression has no OnCalendar equivalent; run it with cairn-schedule.service (--print-systemd)\n"
                    );
                    continue;
                }
            },
            None => continue,
        };
        crate::say!(
            "# --- cairn-run@{name}.timer\n[Unit]\nDescription=cairn job {name}\n\n[Timer]\n{timer}\n\n[Install]\nWantedBy=timers.target\n"
        );
    }
    Ok(())
}

/// Returns a cron expression for an interval that divides an hour or a day
/// evenly. Cron counts from the full hour or midnight, not from the last run.
fn every_as_cron(interval: Duration) -> Option<String> {
    let minutes = interval.as_secs() / 60;
    if !interval.as_secs().is_multiple_of(60) || minutes == 0 {
        return None;
    }
    if minutes == 1 {
        return Some("* * * * *".to_string());
    }
    if minutes < 60 && 60 % minutes == 0 {
        return Some(format!("*/{minutes} * * * *"));
    }
    if minutes == 60 {
        return Some("0 * * * *".to_string());
    }
    if minutes.is_multiple_of(60) {
        let hours = minutes / 60;
        if hours < 24 && 24 % hours == 0 {
            return Some(format!("0 */{hours} * * *"));
        }
        if hours == 24 {
            return Some("0 0 * * *".to_string());
        }
    }
    None
}

fn print_cron(loaded: &Loaded, config: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    crate::say!("# crontab lines for cairn jobs; cron runs them in the local time zone.");
    for (name, job) in &loaded.config.job {
        match (&job.schedule, &job.every) {
            (Some(schedule), _) => crate::say!(
                "{} {} run {name} --config {}",
                schedule.get_ref(),
                exe.display(),
                config.display()
            ),
            (None, Some(every)) => {
                match crate::config::parse_duration(every.get_ref())
                    .ok()
                    .and_then(every_as_cron)
                {
                    Some(expression) => crate::say!(
                        "{expression} {} run {name} --config {}",
                        exe.display(),
                        config.display()
                    ),
                    None => crate::say!(
                        "# job {name} runs every {}, which cron cannot express; use `cairn schedule`",
                        every.get_ref()
                    ),
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}
