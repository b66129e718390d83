//! `cairn backup --name NAME -- COMMAND`: the producer's output becomes the entry,
//! and a failed producer leaves no snapshot.

use crate::harness::{Output, Repo, first_entry, snapshot_id, u64_field};

/// Runs `cairn --json backup --name NAME -- sh -c SCRIPT`.
fn backup_from_shell(repo: &Repo, name: &str, script: &str) -> Output {
    repo.run(&["--json", "backup", "--name", name, "--", "sh", "-c", script])
}

/// Returns whether stderr reports the exit code the way a person would read it,
/// for example "exit status: 1", "exit code 1" or "exited with status 1".
fn mentions_exit_code(stderr: &str, code: i32) -> bool {
    let lower = stderr.to_lowercase();
    [
        format!("exit status: {code}"),
        format!("exit status {code}"),
        format!("exit code: {code}"),
        format!("exit code {code}"),
        format!("exited with {code}"),
        format!("exited with status {code}"),
        format!("exited with code {code}"),
        format!("status {code}"),
        format!("code {code}"),
    ]
    .iter()
    .any(|phrase| lower.contains(phrase.as_str()))
}

/// Returns whether stderr reports that the producer was killed by SIGKILL.
fn mentions_sigkill(stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    ["signal: 9", "signal 9", "sigkill"]
        .iter()
        .any(|phrase| lower.contains(phrase))
}

#[test]
fn producer_output_becomes_entry() {
    let repo = Repo::init();
    let output = backup_from_shell(&repo, "hello.txt", "printf 'hello from the producer'")
        .expect_success("backup from a producer command");
    let summary = output.json();
    let id = snapshot_id(&summary);
    assert_eq!(
        u64_field(first_entry(&summary), "size"),
        23,
        "entry size should be the producer's output size"
    );
    assert_eq!(
        repo.restore_stdout(&format!("{id}:hello.txt")),
        b"hello from the producer",
        "restored entry differs from the producer's output"
    );
    let command = repo.snapshots()[0]["command"].to_string();
    assert!(
        command.contains("printf"),
        "snapshot command field {command} does not show the producer command"
    );
}

#[test]
fn failing_producer_exits_5() {
    let repo = Repo::init();
    repo.backup_stdin("earlier.dump", b"an earlier backup");
    let before = repo.snapshots();

    let output = backup_from_shell(
        &repo,
        "db.dump",
        "head -c 10485760 /dev/urandom; echo boom >&2; exit 1",
    );
    assert_eq!(
        output.code(),
        Some(5),
        "backup whose producer exits 1 should exit 5\n{}",
        output.describe()
    );
    assert!(
        mentions_exit_code(&output.stderr, 1),
        "stderr should show the producer's exit status 1, stderr:\n{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("boom"),
        "stderr should show the producer's last stderr line \"boom\", stderr:\n{}",
        output.stderr
    );
    assert_eq!(
        repo.snapshots(),
        before,
        "a failed producer changed snapshots --json"
    );

    let check = repo.run(&["check"]);
    assert_eq!(
        check.code(),
        Some(0),
        "check after a failed producer should find no damage\n{}",
        check.describe()
    );
}

#[test]
fn killed_producer_exits_5() {
    let repo = Repo::init();
    let output = backup_from_shell(&repo, "db.dump", "head -c 1000000 /dev/urandom; kill -9 $$");
    assert_eq!(
        output.code(),
        Some(5),
        "backup whose producer is killed by SIGKILL should exit 5\n{}",
        output.describe()
    );
    assert!(
        mentions_sigkill(&output.stderr),
        "stderr should say that the producer was killed by signal 9, stderr:\n{}",
        output.stderr
    );
    assert!(
        repo.snapshots().is_empty(),
        "a producer killed by a signal left a snapshot"
    );
}

#[test]
fn silent_producer_needs_allow_empty() {
    let repo = Repo::init();
    let output = backup_from_shell(&repo, "db.dump", "true");
    assert_eq!(
        output.code(),
        Some(2),
        "backup of a producer that writes nothing should exit 2 without --allow-empty\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains("--allow-empty"),
        "the error should name --allow-empty, stderr:\n{}",
        output.stderr
    );
    assert!(
        repo.snapshots().is_empty(),
        "a rejected empty producer backup left a snapshot"
    );

    let allowed = repo
        .run(&[
            "--json",
            "backup",
            "--allow-empty",
            "--name",
            "db.dump",
            "--",
            "true",
        ])
        .expect_success("empty producer backup with --allow-empty");
    assert_eq!(
        u64_field(first_entry(&allowed.json()), "size"),
        0,
        "entry of an empty producer should have size 0"
    );
}

#[test]
fn producer_environment_lacks_passphrase() {
    let repo = Repo::init();
    let output = backup_from_shell(&repo, "env.txt", "printf %s \"${CAIRN_PASSWORD-unset}\"")
        .expect_success("backup of a producer that prints CAIRN_PASSWORD");
    let id = snapshot_id(&output.json());
    assert_eq!(
        repo.restore_stdout(&format!("{id}:env.txt")),
        b"unset",
        "the producer could read CAIRN_PASSWORD from its environment"
    );
}

#[test]
fn repository_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::init();
    repo.backup_stdin("private.bin", b"some secret rows");
    let files = crate::harness::files_under(&repo.path);
    assert!(
        files.len() >= 4,
        "expected config, a key, a pack, an index object and a snapshot"
    );
    for path in files {
        let mode = std::fs::metadata(&path)
            .expect("stat repository file")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} has mode {:o}, readable by group or others",
            path.display(),
            mode & 0o777
        );
    }
}

#[test]
fn killed_cairn_stops_its_producer() {
    let repo = Repo::init();
    let pid_file = repo.work_path("producer.pid");
    let script = format!("echo $$ > '{}'; exec sleep 60", pid_file.display());
    let mut command = repo.command(&["backup", "--name", "slow.bin", "--", "sh", "-c", &script]);
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut cairn = command.spawn().expect("start cairn backup");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the producer never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    cairn.kill().expect("kill cairn");
    cairn.wait().expect("reap cairn");
    let proc_path = format!("/proc/{pid}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&proc_path).exists() {
        let state = std::fs::read_to_string(format!("{proc_path}/stat")).unwrap_or_default();
        // A zombie waits only for its (gone) parent's reaping by init.
        if state.contains(") Z") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "producer {pid} still runs 10 s after cairn was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
