//! Objects replaced, swapped, emptied or copied in from another repository, as
//! someone with write access to the storage could do it. Each case must end in an
//! error that names the object, a non-zero exit code, and no restored file.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::{
    MIB, Output, Repo, assert_same_bytes, dir_names, files_under, path_arg, random_bytes, short_id,
    snapshot_id,
};

/// A repository with 1 MiB packs and two snapshots of unrelated random data, with
/// the packs each backup wrote.
struct Tampered {
    repo: Repo,
    first_id: String,
    second_id: String,
    first_data: Vec<u8>,
    second_data: Vec<u8>,
    first_packs: Vec<PathBuf>,
    second_packs: Vec<PathBuf>,
    first_index_objects: Vec<PathBuf>,
}

fn two_backups() -> Tampered {
    let repo = Repo::init_with(&["--pack-size", "1048576"]);
    let first_data = random_bytes(3 * MIB, 70);
    let first_id = snapshot_id(&repo.backup_stdin("first.dump", &first_data));
    let first_packs = repo.pack_files();
    let first_index_objects = files_under(&repo.path.join("index"));
    let second_data = random_bytes(2 * MIB, 71);
    let second_id = snapshot_id(&repo.backup_stdin("second.dump", &second_data));
    let second_packs: Vec<PathBuf> = repo
        .pack_files()
        .into_iter()
        .filter(|pack| !first_packs.contains(pack))
        .collect();
    assert!(
        first_packs.len() >= 2 && !second_packs.is_empty(),
        "expected several packs per backup with --pack-size 1048576, got {first_packs:?} and {second_packs:?}"
    );
    Tampered {
        repo,
        first_id,
        second_id,
        first_data,
        second_data,
        first_packs,
        second_packs,
        first_index_objects,
    }
}

/// Returns a file's object name relative to the repository, such as `data/ab/ab12...`.
fn object_name(repo: &Repo, file: &Path) -> String {
    file.strip_prefix(&repo.path)
        .expect("file is not inside the repository")
        .to_str()
        .expect("object name is not UTF-8")
        .to_string()
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("failed to read {path:?}: {e}"))
}

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("failed to write {path:?}: {e}"));
}

fn assert_exit(output: &Output, code: i32, action: &str) {
    assert_eq!(
        output.code(),
        Some(code),
        "{action} should exit {code}\n{}",
        output.describe()
    );
    assert!(
        !output.stderr.contains("panicked"),
        "{action} panicked, stderr:\n{}",
        output.stderr
    );
}

fn assert_names(output: &Output, object: &str, action: &str) {
    assert!(
        output.stderr.contains(object),
        "{action} should name {object}, stderr:\n{}",
        output.stderr
    );
}

/// Runs `cairn check ARGS`, asserts exit code 3 and returns the output.
fn check_fails(repo: &Repo, args: &[&str]) -> Output {
    let output = repo.run(args);
    assert_exit(&output, 3, &format!("cairn {}", args.join(" ")));
    output
}

/// Returns the line of stderr that reports the error cairn exited with.
fn error_line(output: &Output) -> &str {
    output
        .stderr
        .lines()
        .find(|line| line.starts_with("cairn: error"))
        .unwrap_or_else(|| panic!("no error line on stderr\n{}", output.describe()))
}

/// Restores `snapshot` with `--target` and with `--stdout`. Both must exit 3, and
/// the target must not exist afterwards. Returns both outputs.
fn restore_fails(repo: &Repo, snapshot: &str) -> [Output; 2] {
    let target_dir = repo.work_path("restore-target");
    fs::create_dir_all(&target_dir).expect("failed to create the target directory");
    let target = target_dir.join("restored.dump");
    let to_file = repo.run(&["restore", snapshot, "--target", path_arg(&target)]);
    let action = format!("restore {} --target", short_id(snapshot));
    assert_exit(&to_file, 3, &action);
    assert!(!target.exists(), "{action} left a file at the target path");
    assert!(
        dir_names(&target_dir).is_empty(),
        "{action} left files in the target directory: {:?}",
        dir_names(&target_dir)
    );

    let to_stdout = repo.run(&["restore", snapshot, "--stdout"]);
    assert_exit(
        &to_stdout,
        3,
        &format!("restore {} --stdout", short_id(snapshot)),
    );
    [to_file, to_stdout]
}

/// Like `restore_fails`, and the error line of both restores names `object`
/// while stderr points to `cairn check` for the next step.
fn assert_restore_fails(repo: &Repo, snapshot: &str, object: &str) {
    for output in restore_fails(repo, snapshot) {
        let line = error_line(&output);
        assert!(
            line.contains(object),
            "the error of {} should name {object}, stderr:\n{}",
            output.command,
            output.stderr
        );
        assert!(
            output.stderr.contains("cairn check"),
            "the error of {} should point to cairn check, stderr:\n{}",
            output.command,
            output.stderr
        );
    }
}

fn assert_restores(repo: &Repo, snapshot: &str, expected: &[u8]) {
    let restored = repo.restore_stdout(snapshot);
    assert_same_bytes(
        &restored,
        expected,
        &format!("restore of {}", short_id(snapshot)),
    );
}

#[test]
fn swapped_packs_fail_check_and_restore() {
    let setup = two_backups();
    let repo = &setup.repo;
    let first = &setup.first_packs[0];
    let second = &setup.second_packs[0];
    let first_bytes = read(first);
    let second_bytes = read(second);
    write(first, &second_bytes);
    write(second, &first_bytes);
    let first_name = object_name(repo, first);
    let second_name = object_name(repo, second);

    let checked = check_fails(repo, &["check", "--read-data"]);
    assert_names(&checked, &first_name, "check --read-data");
    assert_names(&checked, &second_name, "check --read-data");
    assert_names(&checked, short_id(&setup.first_id), "check --read-data");
    assert_names(&checked, short_id(&setup.second_id), "check --read-data");

    assert_restore_fails(repo, &setup.first_id, &first_name);
    assert_restore_fails(repo, &setup.second_id, &second_name);
}

#[test]
fn pack_overwritten_by_older_pack() {
    let setup = two_backups();
    let repo = &setup.repo;
    let overwritten = &setup.second_packs[0];
    write(overwritten, &read(&setup.first_packs[0]));
    let name = object_name(repo, overwritten);

    let checked = check_fails(repo, &["check", "--read-data"]);
    assert_names(&checked, &name, "check --read-data");
    assert_names(&checked, short_id(&setup.second_id), "check --read-data");

    assert_restore_fails(repo, &setup.second_id, &name);
    assert_restores(repo, &setup.first_id, &setup.first_data);
}

/// The pack keeps its size, so only reading it shows the damage: the structural
/// check passes, and `--read-data` and restore must fail.
#[test]
fn pack_overwritten_keeping_its_size() {
    let setup = two_backups();
    let repo = &setup.repo;
    let overwritten = &setup.second_packs[0];
    let size = read(overwritten).len();
    let mut replacement = read(&setup.first_packs[0]);
    replacement.resize(size, 0);
    write(overwritten, &replacement);
    let name = object_name(repo, overwritten);

    let checked = check_fails(repo, &["check", "--read-data"]);
    assert_names(&checked, &name, "check --read-data");
    assert_names(&checked, short_id(&setup.second_id), "check --read-data");

    assert_restore_fails(repo, &setup.second_id, &name);
    assert_restores(repo, &setup.first_id, &setup.first_data);
}

#[test]
fn snapshot_from_other_repository() {
    let setup = two_backups();
    let repo = &setup.repo;
    let other = Repo::init();
    let foreign_id = snapshot_id(&other.backup_stdin("other.dump", b"another repository"));
    let object = format!("snapshots/{foreign_id}");
    fs::copy(other.path.join(&object), repo.path.join(&object))
        .expect("failed to copy the snapshot object");

    let checked = check_fails(repo, &["check"]);
    assert_names(&checked, &object, "check");

    let listed = repo.run(&["--json", "snapshots"]);
    assert_exit(&listed, 0, "snapshots");
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&foreign_id),
        "snapshots lists the snapshot copied from another repository\n{}",
        listed.describe()
    );
    assert_names(&listed, &object, "snapshots");

    assert_restore_fails(repo, &foreign_id, &object);
    assert_restores(repo, &setup.first_id, &setup.first_data);
}

#[test]
fn deleted_pack_is_named_with_its_snapshot() {
    let setup = two_backups();
    let repo = &setup.repo;
    let pack = &setup.first_packs[0];
    fs::remove_file(pack).expect("failed to delete a pack");
    let name = object_name(repo, pack);

    let checked = check_fails(repo, &["check"]);
    assert_names(&checked, &name, "check");
    assert_names(&checked, short_id(&setup.first_id), "check");
    assert!(
        !checked.stderr.contains(short_id(&setup.second_id)),
        "check names snapshot {}, which does not use the deleted pack, stderr:\n{}",
        setup.second_id,
        checked.stderr
    );

    assert_restore_fails(repo, &setup.first_id, &name);
    assert_restores(repo, &setup.second_id, &setup.second_data);
}

#[test]
fn empty_snapshot_object() {
    let setup = two_backups();
    let repo = &setup.repo;
    let object = format!("snapshots/{}", setup.first_id);
    write(&repo.path.join(&object), b"");

    let checked = check_fails(repo, &["check"]);
    assert_names(&checked, &object, "check");

    assert_restore_fails(repo, &setup.first_id, &object);
    assert_restores(repo, &setup.second_id, &setup.second_data);
}

/// The local cache still contains the records of the index object, so a restore with
/// that cache gives the right bytes. `check` must report the object all the same,
/// and with a new cache the restore must fail.
#[test]
fn empty_index_object() {
    let setup = two_backups();
    let repo = &setup.repo;
    assert_eq!(
        setup.first_index_objects.len(),
        1,
        "a backup of a few packs should write one index object"
    );
    let emptied = &setup.first_index_objects[0];
    write(emptied, b"");
    let object = object_name(repo, emptied);

    let checked = check_fails(repo, &["check"]);
    assert_names(&checked, &object, "check");
    assert_restores(repo, &setup.first_id, &setup.first_data);

    fs::remove_dir_all(&repo.cache).expect("failed to delete the cache");
    fs::create_dir(&repo.cache).expect("failed to recreate the cache folder");
    let checked = check_fails(repo, &["check"]);
    assert_names(&checked, &object, "check with a new cache");
    assert_names(
        &checked,
        short_id(&setup.first_id),
        "check with a new cache",
    );

    // The error names the chunk that no index object names. The index object
    // itself is named by the warning printed when the index is synced.
    for output in restore_fails(repo, &setup.first_id) {
        assert_names(&output, &object, &output.command);
    }
    assert_restores(repo, &setup.second_id, &setup.second_data);
}

#[test]
fn empty_pack() {
    let setup = two_backups();
    let repo = &setup.repo;
    let pack = &setup.first_packs[0];
    write(pack, b"");
    let name = object_name(repo, pack);

    let checked = check_fails(repo, &["check"]);
    assert_names(&checked, &name, "check");
    assert_names(&checked, short_id(&setup.first_id), "check");

    assert_restore_fails(repo, &setup.first_id, &name);
    assert_restores(repo, &setup.second_id, &setup.second_data);
}

/// A key object from another repository opens with the same passphrase, but the
/// repository id inside it differs from the config's.
#[test]
fn key_from_other_repository() {
    let repo = Repo::init();
    let other = Repo::init();
    let foreign = files_under(&other.path.join("keys"));
    let own = files_under(&repo.path.join("keys"));
    let copied = repo.path.join("keys").join(
        foreign[0]
            .file_name()
            .expect("key object path has no file name"),
    );
    fs::copy(&foreign[0], &copied).expect("failed to copy the key object");
    for key in &own {
        fs::remove_file(key).expect("failed to delete the repository's own key");
    }

    let output = repo.run(&["snapshots"]);
    assert_exit(&output, 4, "snapshots with a key from another repository");
    assert_names(
        &output,
        "belongs to another repository",
        "snapshots with a key from another repository",
    );
    assert_names(
        &output,
        &object_name(&repo, &copied),
        "snapshots with a key from another repository",
    );
}

/// A foreign key object that sorts before the repository's own key must not keep
/// the own key from opening the repository.
#[test]
fn key_from_other_repository_beside_own_key() {
    let repo = Repo::init();
    let other = Repo::init();
    let foreign = files_under(&other.path.join("keys"));
    fs::copy(
        &foreign[0],
        repo.path.join("keys/00000000000000000000000000000000"),
    )
    .expect("failed to copy the key object");

    let output = repo.run(&["snapshots"]);
    assert_exit(&output, 0, "snapshots with an extra foreign key object");
}

#[test]
fn damaged_newest_snapshot_blocks_latest() {
    let repo = Repo::init();
    let monday = random_bytes(300_000, 80);
    let tuesday = random_bytes(300_000, 81);
    let monday_id = snapshot_id(&repo.backup_stdin("db.dump", &monday));
    let tuesday_id = snapshot_id(&repo.backup_stdin("db.dump", &tuesday));
    let object = format!("snapshots/{tuesday_id}");
    let path = repo.path.join(&object);
    let mut bytes = read(&path);
    bytes[100] ^= 0x55;
    write(&path, &bytes);

    // Once with the snapshot already in the local index, once with an
    // index rebuilt from the backend, where the damaged manifest's time is
    // unknown. Neither may fall back to Monday's snapshot.
    for cache in ["kept", "rebuilt"] {
        if cache == "rebuilt" {
            fs::remove_dir_all(&repo.cache).expect("failed to remove the cache");
        }
        for spec in ["latest:db.dump", "latest"] {
            let output = repo.run(&["restore", spec, "--stdout"]);
            let action = format!("restore {spec} with the index {cache}");
            assert_exit(&output, 3, &action);
            assert!(
                output.stdout.is_empty(),
                "{action} wrote {} bytes",
                output.stdout.len()
            );
            assert!(
                error_line(&output).contains(&object),
                "{action} should name {object}\n{}",
                output.describe()
            );
        }
    }
    assert_restores(&repo, &format!("{monday_id}:db.dump"), &monday);
}

/// Asserts that some line of the output names `object` and that no line names
/// it twice.
fn assert_named_once(output: &Output, object: &str, action: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        output.stderr
    );
    let lines: Vec<&str> = text.lines().filter(|line| line.contains(object)).collect();
    assert!(
        !lines.is_empty(),
        "{action} should name {object}\n{}",
        output.describe()
    );
    for line in lines {
        assert_eq!(
            line.matches(object).count(),
            1,
            "{action} names {object} more than once in this line:\n{line}"
        );
    }
}

#[test]
fn damage_messages_name_object_once() {
    let setup = two_backups();
    let repo = &setup.repo;
    let audit_records = files_under(&repo.path.join("audit"));
    assert!(
        !audit_records.is_empty(),
        "the backups should have written audit records"
    );
    let index_object = object_name(repo, &setup.first_index_objects[0]);
    let audit_record = object_name(repo, &audit_records[0]);
    let snapshot_object = format!("snapshots/{}", setup.second_id);
    let pack = object_name(repo, &setup.second_packs[0]);
    let damaged = [&index_object, &audit_record, &snapshot_object, &pack];
    for object in damaged {
        let path = repo.path.join(object);
        let mut bytes = read(&path);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        write(&path, &bytes);
    }
    // A new cache makes cairn read every index object, snapshot and audit
    // record again, and warn about the damaged ones.
    fs::remove_dir_all(&repo.cache).expect("failed to delete the cache");
    fs::create_dir(&repo.cache).expect("failed to recreate the cache folder");

    let checked = check_fails(repo, &["check", "--read-data"]);
    for object in damaged {
        assert_named_once(&checked, object, "check --read-data");
    }

    let pruned = repo.run(&["prune"]);
    assert_exit(&pruned, 3, "prune with a damaged index object");
    assert_named_once(&pruned, &index_object, "prune");

    let repaired = repo.run(&["repair", "packs"]);
    assert_exit(&repaired, 0, "repair packs");
    assert_named_once(&repaired, &pack, "repair packs");
}
