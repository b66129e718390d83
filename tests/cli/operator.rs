//! Mistakes an operator makes at the terminal: each gets a clear error and
//! changes nothing.

use std::fs;
use std::process::Stdio;

use crate::harness::{Repo, path_arg, snapshot_id};

#[test]
fn mistyped_repository_creates_nothing() {
    let repo = Repo::uninitialized();
    let output = repo.run(&["snapshots"]);
    assert_eq!(output.code(), Some(2), "{}", output.describe());
    assert!(
        output.stderr.contains("cairn init"),
        "{}",
        output.describe()
    );
    assert!(
        !repo.path.exists(),
        "a command on a missing repository created {}",
        repo.path.display()
    );
}

#[test]
fn init_rejects_non_empty_folder() {
    let repo = Repo::uninitialized();
    fs::create_dir(&repo.path).expect("create folder");
    fs::write(repo.path.join("notes.txt"), b"unrelated").expect("write file");
    let output = repo.run(&["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
    assert_eq!(output.code(), Some(2), "{}", output.describe());
    assert!(output.stderr.contains("not empty"), "{}", output.describe());
    assert!(
        !repo.path.join("config").exists(),
        "init wrote a config into a non-empty folder"
    );
}

#[test]
fn restore_onto_directory_is_rejected() {
    let repo = Repo::init();
    repo.backup_stdin("a.dump", b"some rows\n");
    let dir = repo.work_path("somewhere");
    fs::create_dir(&dir).expect("create directory");
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec!["restore", "latest", "--target", path_arg(&dir)];
        args.extend(extra);
        let output = repo.run(&args);
        assert_eq!(output.code(), Some(2), "{}", output.describe());
        assert!(
            output.stderr.contains("is a directory"),
            "{}",
            output.describe()
        );
    }
}

#[test]
fn restore_needs_a_destination() {
    let repo = Repo::init();
    repo.backup_stdin("a.dump", b"some rows\n");
    let output = repo.run(&["restore", "latest"]);
    assert_eq!(output.code(), Some(2), "{}", output.describe());
    assert!(output.stderr.contains("--stdout"), "{}", output.describe());
}

#[test]
fn latest_entry_skips_other_snapshots() {
    let repo = Repo::init();
    repo.backup_stdin("app.dump", b"day one\n");
    let newest_app = snapshot_id(&repo.backup_stdin("app.dump", b"day two\n"));
    repo.backup_stdin("globals.sql", b"CREATE ROLE app;\n");
    assert_eq!(
        repo.restore_stdout("latest:app.dump"),
        b"day two\n",
        "latest:app.dump should be snapshot {newest_app}, the newest one with app.dump"
    );
}

#[test]
fn closed_stdout_is_not_an_error() {
    let repo = Repo::init();
    for i in 0..40 {
        repo.backup_stdin(&format!("entry-{i}.dump"), format!("rows {i}\n").as_bytes());
    }
    let mut command = repo.command(&["snapshots"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("start cairn snapshots");
    // Drop the read end at once, as `cairn snapshots | true` does.
    let crate::harness::ChildPipes { status, stderr } =
        crate::harness::close_stdout_and_wait(child);
    assert!(
        !stderr.contains("panicked"),
        "cairn panicked on a closed stdout:\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
}

#[test]
fn command_without_separator_gets_hint() {
    let repo = Repo::init();
    let output = repo.run(&["backup", "--name", "app.dump", "pg_dump", "app"]);
    assert_eq!(output.code(), Some(2), "{}", output.describe());
    assert!(
        output.stderr.contains("after `--`"),
        "{}",
        output.describe()
    );
    assert!(repo.snapshot_ids().is_empty(), "a snapshot was written");
}

#[test]
fn json_errors_are_json() {
    let repo = Repo::uninitialized();
    let output = repo.run(&["--json", "snapshots"]);
    assert_eq!(output.code(), Some(2), "{}", output.describe());
    let report = output.json();
    assert_eq!(report["exit_code"].as_u64(), Some(2), "{report}");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("cairn init")),
        "the JSON error does not carry the message: {report}"
    );
}
