//! Damaged packs: `cairn check` must report them with exit code 3 and name the pack
//! and the snapshots that depend on it, and `cairn restore` must fail cleanly.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::{MIB, Repo, dir_names, path_arg, random_bytes, short_id, snapshot_id};

/// Two snapshots of unrelated random data in a repository with 1 MiB packs, and the
/// packs that only the first snapshot uses.
struct TwoSnapshots {
    repo: Repo,
    first_id: String,
    second_id: String,
    first_packs: Vec<PathBuf>,
}

fn two_snapshots() -> TwoSnapshots {
    let repo = Repo::init_with(&["--pack-size", "1048576"]);
    let first_id = snapshot_id(&repo.backup_stdin("first.dump", &random_bytes(3 * MIB, 50)));
    let first_packs = repo.pack_files();
    assert!(
        first_packs.len() >= 2,
        "3 MiB of random data with --pack-size 1048576 should give several packs, got {first_packs:?}"
    );
    let second_id = snapshot_id(&repo.backup_stdin("second.dump", &random_bytes(2 * MIB, 51)));

    let clean = repo.run(&["check", "--read-data"]);
    assert_eq!(
        clean.code(),
        Some(0),
        "check --read-data on an undamaged repository should exit 0\n{}",
        clean.describe()
    );
    TwoSnapshots {
        repo,
        first_id,
        second_id,
        first_packs,
    }
}

/// Returns the pack's object name relative to the repository, `data/ab/ab12...`.
fn object_name(repo: &Repo, pack: &Path) -> String {
    pack.strip_prefix(&repo.path)
        .expect("pack is not inside the repository")
        .to_str()
        .expect("pack name is not UTF-8")
        .to_string()
}

/// Inverts every bit of the byte in the middle of the file.
fn flip_middle_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap_or_else(|e| panic!("failed to read {path:?}: {e}"));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(path, bytes).unwrap_or_else(|e| panic!("failed to write {path:?}: {e}"));
}

/// Runs `cairn check ARGS` and asserts exit code 3 and a report that names the pack
/// and the first snapshot, but not the second snapshot, which does not use the pack.
fn assert_check_reports(setup: &TwoSnapshots, args: &[&str], pack: &Path) {
    let name = object_name(&setup.repo, pack);
    let output = setup.repo.run(args);
    let action = format!("cairn {}", args.join(" "));
    assert_eq!(
        output.code(),
        Some(3),
        "{action} should exit 3 on a damaged pack\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains(&name),
        "{action} should name the damaged pack {name}, stderr:\n{}",
        output.stderr
    );
    assert!(
        output.stderr.contains(short_id(&setup.first_id)),
        "{action} should name snapshot {} that uses the damaged pack, stderr:\n{}",
        setup.first_id,
        output.stderr
    );
    assert!(
        !output.stderr.contains(short_id(&setup.second_id)),
        "{action} names snapshot {}, which does not use the damaged pack, stderr:\n{}",
        setup.second_id,
        output.stderr
    );
}

#[test]
fn flipped_byte_fails_read_data() {
    let setup = two_snapshots();
    let pack = &setup.first_packs[0];
    flip_middle_byte(pack);

    assert_check_reports(&setup, &["check", "--read-data"], pack);
    assert_check_reports(&setup, &["check", "--read-data-subset", "100%"], pack);
}

#[test]
fn flipped_byte_fails_restore() {
    let setup = two_snapshots();
    let repo = &setup.repo;
    flip_middle_byte(&setup.first_packs[0]);

    let target_dir = repo.work_path("restore-here");
    fs::create_dir(&target_dir).expect("failed to create the target directory");
    let target = target_dir.join("first.dump");
    let output = repo.run(&["restore", &setup.first_id, "--target", path_arg(&target)]);
    assert_eq!(
        output.code(),
        Some(3),
        "restore of a snapshot with a damaged pack should exit 3 (data failed verification)\n{}",
        output.describe()
    );
    assert!(
        !output.stderr.trim().is_empty(),
        "failed restore printed no error message"
    );
    assert!(
        !output.stderr.contains("panicked"),
        "restore of damaged data panicked instead of reporting an error, stderr:\n{}",
        output.stderr
    );
    assert!(
        !target.exists(),
        "failed restore left a file at the target path"
    );
    assert!(
        dir_names(&target_dir).is_empty(),
        "failed restore left files in the target directory: {:?}",
        dir_names(&target_dir)
    );

    let to_stdout = repo.run(&["restore", &setup.first_id, "--stdout"]);
    assert_eq!(
        to_stdout.code(),
        Some(3),
        "restore --stdout of damaged data should exit 3\n{}",
        to_stdout.describe()
    );

    let second = repo.restore_stdout(&setup.second_id);
    assert_eq!(
        second.len(),
        2 * MIB,
        "the undamaged second snapshot should still restore in full"
    );
}

#[test]
fn missing_pack_fails_check() {
    let setup = two_snapshots();
    let pack = &setup.first_packs[setup.first_packs.len() - 1];
    fs::remove_file(pack).expect("failed to delete a pack");

    assert_check_reports(&setup, &["check"], pack);
}

#[test]
fn read_data_subset_clean_repository() {
    let repo = Repo::init_with(&["--pack-size", "1048576"]);
    repo.backup_stdin("data.bin", &random_bytes(3 * MIB, 52));

    for subset in ["10%", "0.1"] {
        let output = repo.run(&["check", "--read-data-subset", subset]);
        assert_eq!(
            output.code(),
            Some(0),
            "check --read-data-subset {subset} on an undamaged repository should exit 0\n{}",
            output.describe()
        );
    }
}
