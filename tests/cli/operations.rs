//! Automated operation: the configuration examples of docs/operations.md,
//! `cairn schedule` running jobs against a throwaway PostgreSQL cluster,
//! metrics scraped over loopback, signed webhooks to a receiver on
//! 127.0.0.1, the audit trail, and SIGTERM during a backup.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::harness::{PASSWORD, Repo, array_field, string_field, wait_with_timeout};
use crate::pg::Cluster;

fn docs(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"))
}

/// Code blocks that follow `<!-- MARKER... -->` lines, by the marker's text.
fn marked_blocks(text: &str, prefix: &str) -> BTreeMap<String, String> {
    let mut blocks = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(&format!("<!-- {prefix}")) else {
            continue;
        };
        let name = rest
            .trim_start_matches(':')
            .trim_end_matches("-->")
            .trim()
            .to_string();
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "marker {line} is not followed by a code block"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.insert(name, body.join("\n"));
    }
    blocks
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

#[test]
fn config_examples_and_errors() {
    let repo = Repo::uninitialized();
    let examples = marked_blocks(&docs("operations.md"), "example-config");
    assert!(examples.len() >= 2, "examples found: {:?}", examples.keys());
    for (name, text) in &examples {
        let path = repo.work_path(&format!("{name}.toml"));
        write_private(&path, text);
        let output = repo
            .bare_command()
            .args(["config", "check", "--config"])
            .arg(&path)
            .output()
            .expect("run cairn config check");
        assert!(
            output.status.success(),
            "example {name} is invalid:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let nightly = &examples["nightly"];
    let check = |text: &str, mode: u32| -> (Option<i32>, String) {
        let path = repo.work_path("case.toml");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let output = repo
            .bare_command()
            .args(["config", "check", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let schedule_line = nightly
        .lines()
        .position(|l| l.starts_with("schedule"))
        .expect("schedule line")
        + 1;
    let renamed_job = nightly
        .replace("[job.nightly]", "[job.\"night ly\"]")
        .replace("[job.nightly.", "[job.\"night ly\".");
    // Each case: the edited config, its file mode, texts the error must
    // contain, and text it must not echo (a secret).
    let cases: Vec<(String, u32, Vec<String>, Option<&str>)> = vec![
        (
            nightly.replace("keep_daily", "keep_dayly"),
            0o600,
            vec!["unknown field `keep_dayly`".into(), "line ".into()],
            None,
        ),
        (
            nightly.replace(
                "password = { file = \"/etc/cairn/passphrase\" }",
                "password = \"s3cret-value\"",
            ),
            0o600,
            vec!["never written into the file".into()],
            Some("s3cret-value"),
        ),
        (
            nightly.replace(
                "postgres://backup@db1.internal",
                "postgres://backup:pw@db1.internal",
            ),
            0o600,
            vec!["contains a password".into()],
            Some(":pw@"),
        ),
        (
            nightly.replace("30 2 * * *", "30 2 31 2 *"),
            0o600,
            vec!["matches no time".into()],
            None,
        ),
        (
            renamed_job,
            0o600,
            vec!["job name \"night ly\" is invalid".into()],
            None,
        ),
        (
            nightly.replace("schedule = \"30 2 * * *\"", "every = \"0s\""),
            0o600,
            vec!["every must be at least 1s".into()],
            None,
        ),
        (nightly.clone(), 0o644, vec!["chmod 600".into()], None),
        (
            nightly.replace("30 2 * * *", "30 25 * * *"),
            0o600,
            vec![format!("line {schedule_line}: job nightly: schedule")],
            None,
        ),
    ];
    for (text, mode, expected, secret) in &cases {
        let (code, stderr) = check(text, *mode);
        assert_eq!(code, Some(2), "expected exit 2 with {expected:?}: {stderr}");
        for wanted in expected {
            assert!(
                stderr.contains(wanted.as_str()),
                "expected {wanted:?}: {stderr}"
            );
        }
        if let Some(secret) = secret {
            assert!(!stderr.contains(secret), "the secret was echoed: {stderr}");
        }
    }

    // Units and crontab lines for the system schedulers.
    let path = repo.work_path("nightly.toml");
    let systemd = repo
        .bare_command()
        .args(["schedule", "--print-systemd", "--config"])
        .arg(&path)
        .output()
        .expect("print-systemd");
    let systemd = String::from_utf8_lossy(&systemd.stdout).to_string();
    assert!(systemd.contains("schedule --config"), "{systemd}");
    assert_eq!(
        systemd.matches("[Service]").count(),
        1,
        "one unit only: {systemd}"
    );
    let timers = repo
        .bare_command()
        .args(["schedule", "--print-systemd-timers", "--config"])
        .arg(&path)
        .output()
        .expect("print-systemd-timers");
    let timers = String::from_utf8_lossy(&timers.stdout).to_string();
    assert!(timers.contains("OnCalendar=*-*-* 2:30:00"), "{timers}");
    assert!(timers.contains("# --- cairn-run@nightly.timer"), "{timers}");
    let cron = repo
        .bare_command()
        .args(["schedule", "--print-cron", "--config"])
        .arg(&path)
        .output()
        .expect("print-cron");
    let cron = String::from_utf8_lossy(&cron.stdout).to_string();
    assert!(
        cron.lines()
            .any(|l| l.starts_with("30 2 * * * ") && l.contains(" run nightly --config ")),
        "{cron}"
    );
}

/// One HTTP request received by the test webhook receiver.
#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Starts a webhook receiver on 127.0.0.1 that replies 200 and records
/// requests.
fn start_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut headers = BTreeMap::new();
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                }
            }
            let length: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Ok(mut all) = sink.lock() {
                all.push(Received { headers, body });
            }
        }
    });
    (url, received)
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A running `cairn schedule` whose stderr goes to a file.
struct Scheduler {
    child: Child,
    log: PathBuf,
}

impl Scheduler {
    fn start(repo: &Repo, config: &Path) -> Scheduler {
        let log = repo.work_path("schedule.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = repo
            .bare_command()
            .args(["schedule", "--metrics-listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start cairn schedule");
        Scheduler { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Returns the metrics address from the log line the scheduler writes.
    fn metrics_address(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(start) = self.log().find("serving metrics at http://") {
                let rest = &self.log()[start + "serving metrics at http://".len()..];
                return rest.split('/').next().unwrap_or_default().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no metrics address in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[allow(unsafe_code)]
    fn terminate(mut self) -> (Option<i32>, String) {
        // SAFETY: kill takes plain integers; the child is ours and not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(60), "cairn schedule");
        (status.code(), self.log())
    }
}

fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Returns the value of the sample `name{cairn_job="JOB",...}`.
fn sample(metrics: &str, name: &str, job: &str) -> Option<f64> {
    let prefix = format!("{name}{{cairn_job=\"{job}\"");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn schedule_runs_jobs_with_metrics_and_alerts() {
    let cluster = Cluster::start();
    cluster.run_script("postgres", "CREATE DATABASE app;");
    cluster.run_script(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text); \
         INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 5000) i;",
    );
    let repo = Repo::init();
    let (url, received) = start_receiver();
    let secret = "webhook-secret-for-tests";
    write_private(&repo.work_path("webhook-secret"), secret);
    let config = format!(
        r#"
state_dir = "{work}/state"

{repository}
[job.good]
every = "2s"

[job.good.postgres]
connection = "host={socket} user=postgres"
databases = ["app"]

[job.good.retention]
keep_last = 2

[job.good.check]
read_data_subset = "100%"

[job.broken]
every = "2s"

[job.broken.postgres]
connection = "host={socket} user=postgres"
databases = ["gone"]

[notify.receiver]
webhook = "{url}"
secret = {{ file = "{work}/webhook-secret" }}
events = ["start", "finish"]
timeout = "5s"

[metrics]
textfile = "{work}/cairn.prom"
"#,
        work = repo.work.display(),
        repository = repository_section(&repo),
        socket = cluster.socket_dir(),
    );
    let config_path = repo.work_path("cairn.toml");
    write_private(&config_path, &config);
    let scheduler = Scheduler::start(&repo, &config_path);
    let address = scheduler.metrics_address();

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut metrics = String::new();
    while Instant::now() < deadline {
        metrics = scrape(&address);
        if sample(&metrics, "cairn_job_runs_total", "good").unwrap_or(0.0) >= 3.0
            && sample(&metrics, "cairn_job_runs_total", "broken").unwrap_or(0.0) >= 1.0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, log) = scheduler.terminate();
    assert_eq!(code, Some(0), "scheduler exit:\n{log}");

    assert!(
        sample(&metrics, "cairn_job_runs_total", "good").unwrap_or(0.0) >= 3.0,
        "{metrics}\n{log}"
    );
    assert_eq!(
        sample(&metrics, "cairn_job_last_run_success", "good"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "cairn_job_failures_total", "good"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "cairn_job_snapshots", "good"),
        Some(2.0),
        "retention keep_last 2: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "cairn_job_last_check_success", "good"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "cairn_repository_stored_bytes", "good").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "cairn_job_next_run_timestamp_seconds", "good").is_some(),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_scheduler_up 1"), "{metrics}");
    assert_eq!(
        sample(&metrics, "cairn_job_last_run_success", "broken"),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "cairn_job_failures_total", "broken").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );

    // Every metric the alerting rules use is one that cairn exports.
    let rules = docs("prometheus/cairn-alerts.yml");
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        // `cairn_job` is the label, not a metric.
        .filter(|w| w.starts_with("cairn_") && *w != "cairn_job")
        .collect();
    used.sort();
    used.dedup();
    assert!(used.len() >= 6, "{used:?}");
    for name in used {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "alert rules use {name}, which is not exported:\n{metrics}"
        );
    }

    // The textfile contains the same families.
    let textfile = std::fs::read_to_string(repo.work_path("cairn.prom")).expect("textfile");
    assert!(
        textfile.contains(
            "cairn_job_last_success_timestamp_seconds{cairn_job=\"good\",repository=\"main\"}"
        ),
        "{textfile}"
    );
    let mode = std::fs::metadata(repo.work_path("cairn.prom"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o644,
        "node_exporter must be able to read the textfile"
    );

    // Start and finish events arrived, signed.
    let received = received.lock().expect("requests").clone();
    let finishes: Vec<&Received> = received
        .iter()
        .filter(|r| r.headers.get("x-cairn-event").map(String::as_str) == Some("finish"))
        .collect();
    assert!(!finishes.is_empty(), "no finish event: {received:?}");
    for request in &received {
        let signature = request.headers.get("x-cairn-signature").expect("signed");
        assert_eq!(
            signature,
            &format!("sha256={}", hmac_hex(secret, &request.body))
        );
        assert_ne!(
            signature,
            &format!("sha256={}", hmac_hex("another secret", &request.body))
        );
        let event: Value = serde_json::from_slice(&request.body).expect("JSON body");
        assert!(
            event["job"] == "good" || event["job"] == "broken",
            "{event}"
        );
    }
}

#[test]
fn failing_job_alerts_and_audit_trail() {
    let cluster = Cluster::start();
    cluster.run_script("postgres", "CREATE DATABASE app; CREATE DATABASE doomed;");
    cluster.run_script(
        "doomed",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1);",
    );
    let repo = Repo::init();
    let (url, received) = start_receiver();
    let secret = "another-webhook-secret";
    write_private(&repo.work_path("webhook-secret"), secret);
    let config = format!(
        r#"
{repository}
[job.doomed]
every = "1s"

[job.doomed.postgres]
connection = "host={socket} user=postgres"
databases = ["doomed"]

[notify.oncall]
webhook = "{url}"
secret = {{ file = "{work}/webhook-secret" }}
events = ["failure"]
timeout = "5s"
"#,
        work = repo.work.display(),
        repository = repository_section(&repo),
        socket = cluster.socket_dir(),
    );
    let config_path = repo.work_path("cairn.toml");
    write_private(&config_path, &config);

    // A good run, then the database is removed and the next run fails.
    let run = |args: &[&str]| {
        repo.bare_command()
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .output()
            .expect("cairn run")
    };
    let first = run(&["run", "doomed"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    cluster.run_script("postgres", "DROP DATABASE doomed;");
    let second = run(&["run", "doomed"]);
    assert_eq!(
        second.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // Exactly one failure event, signed, naming the job and the error.
    let received = received.lock().expect("requests").clone();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(
        request.headers.get("x-cairn-signature"),
        Some(&format!("sha256={}", hmac_hex(secret, &request.body)))
    );
    let event: Value = serde_json::from_slice(&request.body).expect("JSON");
    assert_eq!(event["job"], "doomed");
    assert_eq!(event["outcome"], "failure");
    assert!(string_field(&event, "error").contains("doomed"), "{event}");

    // The audit trail has both runs.
    let audit = repo
        .run(&["--json", "audit", "--job", "doomed"])
        .expect_success("audit")
        .json();
    let records = audit.as_array().expect("array");
    assert_eq!(records.len(), 2, "{audit}");
    assert_eq!(records[0]["command"], "pg backup");
    assert_eq!(records[0]["outcome"], "success");
    assert_eq!(array_field(&records[0], "snapshots").len(), 1);
    assert_eq!(records[1]["outcome"], "failure");
    assert_eq!(
        records[1]["exit_code"].as_u64(),
        Some(2),
        "the failed step's record should have the run's exit code: {audit}"
    );

    // Listing mistakes are invalid input and change nothing.
    let before = crate::harness::files_under(&repo.path);
    for (args, needle) in [
        (
            vec!["audit", "--command", "bakcup"],
            "not a recorded command",
        ),
        (
            vec!["audit", "--since", "last week"],
            "neither an RFC 3339 time",
        ),
    ] {
        let output = repo.run(&args);
        assert_eq!(output.code(), Some(2), "{}", output.describe());
        assert!(output.stderr.contains(needle), "{}", output.describe());
    }
    assert_eq!(
        crate::harness::files_under(&repo.path),
        before,
        "a rejected listing changed the repository"
    );
    let output = repo.run(&[
        "run",
        "doomed",
        "--config",
        config_path.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(output.code(), Some(2), "{}", output.describe());
    assert!(
        output
            .stderr
            .contains("--repo does not apply to `cairn run`"),
        "{}",
        output.describe()
    );
    assert_eq!(
        crate::harness::files_under(&repo.path),
        before,
        "a rejected run changed the repository"
    );

    // check notices a removed record.
    repo.run(&["check"])
        .expect_success("check of an intact trail");
    let trail: Vec<PathBuf> = crate::harness::files_under(&repo.path.join("audit"));
    assert!(trail.len() >= 3, "{trail:?}");
    let first_record = records[0]["id"].as_str().expect("id").to_string();
    std::fs::remove_file(repo.path.join("audit").join(&first_record)).expect("remove a record");
    let check = repo.run(&["check"]);
    assert_eq!(check.code(), Some(3), "{}", check.describe());
    let report = format!("{}{}", String::from_utf8_lossy(&check.stdout), check.stderr);
    assert!(
        report.contains(&format!("audit/{first_record}")),
        "{report}"
    );
    assert!(report.contains("deleted"), "{report}");
}

/// Writes the passphrase file and returns the `[repository.main]` section
/// of a configuration for `repo`.
fn repository_section(repo: &Repo) -> String {
    write_private(&repo.work_path("passphrase"), PASSWORD);
    format!(
        "[repository.main]\npath = \"{}\"\npassword = {{ file = \"{}/passphrase\" }}\ncache_dir = \"{}\"\n",
        repo.path.display(),
        repo.work.display(),
        repo.cache.display()
    )
}

/// Process ids whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

#[test]
fn sigterm_during_backup_leaves_no_snapshot() {
    let repo = Repo::init();
    // The producer writes some data and then waits; a unique sleep length
    // finds its process.
    let marker = format!(
        "{}.{}",
        600 + std::process::id() % 100,
        std::process::id() % 97
    );
    let config = format!(
        r#"
{repository}
[job.slow]
every = "1h"

[job.slow.command]
name = "slow.bin"
argv = ["sh", "-c", "head -c 3000000 /dev/urandom; sleep {marker}; echo done"]

[metrics]
textfile = "{work}/cairn.prom"
"#,
        work = repo.work.display(),
        repository = repository_section(&repo),
    );
    let config_path = repo.work_path("cairn.toml");
    write_private(&config_path, &config);
    let scheduler = Scheduler::start(&repo, &config_path);
    let needle = format!("sleep {marker}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_with(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the producer never started:\n{}",
            scheduler.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, log) = scheduler.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stopping the running job"), "{log}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the producer outlived the stopped job"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        repo.snapshots().is_empty(),
        "a cut-off backup left a snapshot"
    );
    let state: Value = serde_json::from_slice(
        &std::fs::read(repo.cache.join("jobs/slow.json")).expect("state file"),
    )
    .expect("state JSON");
    assert_eq!(state["last_outcome"], "failure", "{state}");
    assert!(
        string_field(&state, "last_error").contains("stopped by signal 15"),
        "{state}"
    );
    // cron and systemd timers read the outcome from the textfile only.
    let textfile = std::fs::read_to_string(repo.work_path("cairn.prom"))
        .expect("the stopped job should write the metrics textfile");
    assert!(
        textfile.contains("cairn_job_last_run_success{cairn_job=\"slow\",repository=\"main\"} 0"),
        "the textfile should show the stopped run as failed:\n{textfile}"
    );
    assert!(
        textfile.contains("cairn_job_failures_total{cairn_job=\"slow\",repository=\"main\"} 1"),
        "the textfile should count the stopped run as a failure:\n{textfile}"
    );
    repo.run(&["check"])
        .expect_success("check after a cut-off backup");
}

/// A database named in a job's `exclude` and later dropped must not stop
/// the job's backups, and neither must an exported CAIRN_REPOSITORY.
#[test]
fn job_exclude_of_dropped_database() {
    let cluster = Cluster::start();
    cluster.run_script("postgres", "CREATE DATABASE app;");
    let repo = Repo::init();
    let config = format!(
        r#"
{repository}
[job.nightly]
every = "1d"

[job.nightly.postgres]
connection = "host={socket} user=postgres"
all = true
exclude = ["scratch"]
"#,
        repository = repository_section(&repo),
        socket = cluster.socket_dir(),
    );
    let config_path = repo.work_path("cairn.toml");
    write_private(&config_path, &config);

    // CAIRN_REPOSITORY, exported for interactive use, is ignored with a
    // warning rather than failing the scheduled run.
    let output = repo
        .bare_command()
        .env("CAIRN_REPOSITORY", &repo.path)
        .args(["run", "nightly", "--config"])
        .arg(&config_path)
        .output()
        .expect("cairn run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "a job whose excluded database is gone should still back up\n{stderr}"
    );
    assert!(
        stderr.contains("CAIRN_REPOSITORY is ignored by `cairn run`"),
        "the job should say that it ignores CAIRN_REPOSITORY\n{stderr}"
    );
    assert!(
        stderr.contains("an excluded database is not on the server") && stderr.contains("scratch"),
        "the job should warn about the excluded database that is gone\n{stderr}"
    );
    assert_eq!(repo.snapshot_ids().len(), 1, "the job stored no snapshot");
}
