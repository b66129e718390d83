//! Passphrase handling: a wrong passphrase and the other password sources.

use std::fs;

use crate::harness::{Output, PASSWORD, Repo, path_arg, run_command, snapshot_id};

/// Words that belong in a developer's log, not in the message a user sees when
/// they mistype the passphrase.
const DECRYPTION_JARGON: [&str; 7] = [
    "aead",
    "decrypt",
    "cipher",
    "poly1305",
    "chacha",
    "authentication tag",
    "mac mismatch",
];

fn assert_wrong_passphrase_message(stderr: &str, action: &str) {
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("passphrase") || lower.contains("password"),
        "{action} with a wrong passphrase should say that the passphrase is wrong, stderr:\n{stderr}"
    );
    for word in DECRYPTION_JARGON {
        assert!(
            !lower.contains(word),
            "{action} with a wrong passphrase shows the term {word:?}, stderr:\n{stderr}"
        );
    }
}

#[test]
fn wrong_passphrase_exits_4() {
    let repo = Repo::init();
    let id = snapshot_id(&repo.backup_stdin("db.dump", b"secret data"));

    let mut command = repo.command(&["snapshots"]);
    command.env("CAIRN_PASSWORD", "not the passphrase");
    let listed = run_command(command, "cairn snapshots (wrong passphrase)", None);
    assert_eq!(
        listed.code(),
        Some(4),
        "snapshots with a wrong passphrase should exit 4\n{}",
        listed.describe()
    );
    assert_wrong_passphrase_message(&listed.stderr, "snapshots");
    assert!(
        listed
            .stderr
            .contains("with the passphrase from CAIRN_PASSWORD:"),
        "the error should name the passphrase source in use, stderr:\n{}",
        listed.stderr
    );

    let mut command = repo.command(&["restore", &id, "--stdout"]);
    command.env("CAIRN_PASSWORD", "not the passphrase");
    let restored = run_command(command, "cairn restore (wrong passphrase)", None);
    assert_eq!(
        restored.code(),
        Some(4),
        "restore with a wrong passphrase should exit 4\n{}",
        restored.describe()
    );
    assert!(
        restored.stdout.is_empty(),
        "restore with a wrong passphrase wrote data to stdout"
    );
    assert_wrong_passphrase_message(&restored.stderr, "restore");

    let mut command = repo.command(&["backup", "--name", "db.dump", "--stdin"]);
    command.env("CAIRN_PASSWORD", "not the passphrase");
    let backup = run_command(command, "cairn backup (wrong passphrase)", Some(b"more"));
    assert_eq!(
        backup.code(),
        Some(4),
        "backup with a wrong passphrase should exit 4\n{}",
        backup.describe()
    );
    assert_wrong_passphrase_message(&backup.stderr, "backup");
    assert_eq!(
        repo.snapshot_ids(),
        vec![id],
        "backup with a wrong passphrase changed the snapshot list"
    );
}

#[test]
fn password_file_and_command() {
    let repo = Repo::init();
    snapshot_id(&repo.backup_stdin("db.dump", b"payload"));

    // Written the way a user would, with `echo PASSWORD > FILE`, so with a newline.
    let password_file = repo.work_path("password.txt");
    fs::write(&password_file, format!("{PASSWORD}\n")).expect("failed to write the password file");
    let mut command = repo.command(&["restore", "latest", "--stdout"]);
    command
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_PASSWORD_FILE", path_arg(&password_file));
    let from_file = run_command(command, "cairn restore (CAIRN_PASSWORD_FILE)", None)
        .expect_success("restore with CAIRN_PASSWORD_FILE");
    assert_eq!(
        from_file.stdout, b"payload",
        "restore with CAIRN_PASSWORD_FILE returned other bytes"
    );

    let mut command = repo.command(&["restore", "latest", "--stdout"]);
    command
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_PASSWORD_COMMAND", format!("echo '{PASSWORD}'"));
    let from_command = run_command(command, "cairn restore (CAIRN_PASSWORD_COMMAND)", None)
        .expect_success("restore with CAIRN_PASSWORD_COMMAND");
    assert_eq!(
        from_command.stdout, b"payload",
        "restore with CAIRN_PASSWORD_COMMAND returned other bytes"
    );
}

#[test]
fn missing_password_without_terminal() {
    let repo = Repo::init();
    let mut command = repo.command(&["snapshots"]);
    command.env_remove("CAIRN_PASSWORD");
    // The harness starts cairn without a controlling terminal and with stdin on
    // /dev/null, so a prompt cannot be answered and cairn must fail, not wait.
    let output = run_command(command, "cairn snapshots (no password)", None);
    assert_eq!(
        output.code(),
        Some(2),
        "snapshots without any password source should exit 2 (invalid input)\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains("no passphrase"),
        "the error should say that a passphrase is needed, stderr:\n{}",
        output.stderr
    );
    for variable in [
        "CAIRN_PASSWORD_FILE",
        "CAIRN_PASSWORD_COMMAND",
        "CAIRN_PASSWORD",
    ] {
        assert!(
            output.stderr.contains(variable),
            "the error should name {variable} as a way to give the passphrase, stderr:\n{}",
            output.stderr
        );
    }
}

/// Runs `cairn snapshots` with the passphrase taken from `file` only.
fn snapshots_with_password_file(repo: &Repo, file: &std::path::Path) -> Output {
    let mut command = repo.command(&["snapshots"]);
    command
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_PASSWORD_FILE", path_arg(file));
    run_command(
        command,
        &format!("cairn snapshots (CAIRN_PASSWORD_FILE={})", path_arg(file)),
        None,
    )
}

#[test]
fn empty_password_file_exits_2() {
    let repo = Repo::init();
    let password_file = repo.work_path("empty-password.txt");
    fs::write(&password_file, "\n").expect("failed to write the password file");
    let output = snapshots_with_password_file(&repo, &password_file);
    assert_eq!(
        output.code(),
        Some(2),
        "snapshots with an empty password file should exit 2 (invalid input)\n{}",
        output.describe()
    );
    assert!(
        output
            .stderr
            .contains("the passphrase from CAIRN_PASSWORD_FILE is empty"),
        "the error should name the empty source, stderr:\n{}",
        output.stderr
    );
}

#[test]
fn missing_password_file_exits_2() {
    let repo = Repo::init();
    let password_file = repo.work_path("no-such-password.txt");
    let output = snapshots_with_password_file(&repo, &password_file);
    assert_eq!(
        output.code(),
        Some(2),
        "snapshots with a missing password file should exit 2 (invalid input)\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains(path_arg(&password_file)),
        "the error should name the password file, stderr:\n{}",
        output.stderr
    );
}
