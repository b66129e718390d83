//! A failing backend: injected read and write faults (CAIRN_STORAGE_FAULTS)
//! end in a clear error that names the object, with no snapshot written and
//! no wrong bytes restored.

use crate::harness::{Output, Repo, dir_names, path_arg, random_bytes, run_command, snapshot_id};

const SMALL_PACKS: [&str; 2] = ["--pack-size", "65536"];

fn run_with_faults(repo: &Repo, faults: &str, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut command = repo.command(args);
    command.env("CAIRN_STORAGE_FAULTS", faults);
    run_command(
        command,
        &format!("CAIRN_STORAGE_FAULTS={faults} cairn {}", args.join(" ")),
        input,
    )
}

fn assert_clean(repo: &Repo, when: &str) {
    let check = repo.run(&["check", "--read-data"]);
    assert_eq!(
        check.code(),
        Some(0),
        "check after {when}\n{}",
        check.describe()
    );
}

#[test]
fn failed_pack_write_leaves_no_snapshot() {
    let repo = Repo::init_with(&SMALL_PACKS);
    let data = random_bytes(400_000, 1);
    for faults in [
        "write:data/:2:fail",
        "write:index/:1:fail",
        "write:snapshots/:1:fail",
    ] {
        let output = run_with_faults(
            &repo,
            faults,
            &["backup", "--name", "a.bin", "--stdin"],
            Some(&data),
        );
        assert_eq!(output.code(), Some(1), "{}", output.describe());
        assert!(
            output.stderr.contains("storage write of"),
            "the error does not name the write\n{}",
            output.describe()
        );
        assert!(
            repo.snapshot_ids().is_empty(),
            "a snapshot was written despite {faults}"
        );
        assert_clean(&repo, faults);
    }
    let id = snapshot_id(&repo.backup_stdin("a.bin", &data));
    assert!(
        repo.restore_stdout(&format!("{id}:a.bin")) == data,
        "backup after the failures does not restore"
    );
}

#[test]
fn slow_backend_still_backs_up() {
    let repo = Repo::init_with(&SMALL_PACKS);
    let data = random_bytes(200_000, 2);
    let output = run_with_faults(
        &repo,
        "write:*:*:delay,read:*:*:delay",
        &["--json", "backup", "--name", "a.bin", "--stdin"],
        Some(&data),
    );
    assert_eq!(output.code(), Some(0), "{}", output.describe());
    let id = snapshot_id(&output.json());
    assert!(
        repo.restore_stdout(&format!("{id}:a.bin")) == data,
        "backup on a slow backend does not restore"
    );
}

#[test]
fn failed_read_during_restore_names_pack() {
    let repo = Repo::init_with(&SMALL_PACKS);
    let data = random_bytes(300_000, 3);
    let id = snapshot_id(&repo.backup_stdin("a.bin", &data));
    let target_dir = repo.work_path("out");
    std::fs::create_dir(&target_dir).expect("create target folder");
    let target = target_dir.join("a.bin");
    for faults in ["read:data/:1:fail", "read:data/:2:truncate"] {
        let output = run_with_faults(
            &repo,
            faults,
            &["restore", &id, "--target", path_arg(&target)],
            None,
        );
        assert_ne!(
            output.code(),
            Some(0),
            "restore succeeded despite {faults}\n{}",
            output.describe()
        );
        assert!(
            output.stderr.contains("data/"),
            "the error does not name the pack\n{}",
            output.describe()
        );
        assert!(
            !target.exists(),
            "a failed restore left a file behind ({faults})"
        );
        assert!(
            dir_names(&target_dir).is_empty(),
            "a failed restore left a temporary file ({faults})"
        );
    }
}

#[test]
fn failed_read_during_check_names_pack() {
    let repo = Repo::init_with(&SMALL_PACKS);
    repo.backup_stdin("a.bin", &random_bytes(300_000, 4));
    let output = run_with_faults(
        &repo,
        "read:data/:1:truncate",
        &["check", "--read-data"],
        None,
    );
    assert_eq!(output.code(), Some(3), "{}", output.describe());
    assert!(
        output.stderr.contains("damaged: data/"),
        "check does not name the pack\n{}",
        output.describe()
    );
    let output = run_with_faults(&repo, "read:data/:1:fail", &["check", "--read-data"], None);
    assert_ne!(output.code(), Some(0), "{}", output.describe());
    assert!(
        output.stderr.contains("data/"),
        "check does not name the pack\n{}",
        output.describe()
    );
}

#[test]
fn torn_pack_write_is_detected() {
    // A backend that stores half a pack and reports success: the backup
    // cannot know, but check --read-data must.
    let repo = Repo::init_with(&SMALL_PACKS);
    let output = run_with_faults(
        &repo,
        "write:data/:1:truncate",
        &["backup", "--name", "a.bin", "--stdin"],
        Some(&random_bytes(300_000, 5)),
    );
    assert_eq!(output.code(), Some(0), "{}", output.describe());
    let check = repo.run(&["check", "--read-data"]);
    assert_eq!(
        check.code(),
        Some(3),
        "a torn pack went unnoticed\n{}",
        check.describe()
    );
    assert!(
        check.stderr.contains("damaged: data/"),
        "{}",
        check.describe()
    );
}
