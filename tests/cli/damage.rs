//! Damaged packs: `cairn check` must report them with exit code 3 and name the pack
//! and the snapshots that depend on it, and `cairn restore` must fail cleanly.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::{
    MIB, Output, Repo, dir_names, path_arg, random_bytes, short_id, snapshot_id, string_field,
};

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
        // With a few packs, today's share may contain none of them, and
        // then the output must explain why nothing was read.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let read_none = stdout.contains("read and verified 0 pack(s)");
        assert_eq!(
            stdout.contains("the share moves every day and covers every pack within 10 days"),
            read_none,
            "check --read-data-subset {subset} should explain a day that reads no pack, and only then\n{}",
            output.describe()
        );
    }
    // A share of 1% over a few packs reads none on most days; whichever day
    // this runs, the same rule holds.
    let output = repo.run(&["check", "--read-data-subset", "1%"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.contains(
            "share of 1%; the share moves every day and covers every pack within 100 days"
        ),
        stdout.contains("read and verified 0 pack(s)"),
        "check --read-data-subset 1% should explain a day that reads no pack\n{}",
        output.describe()
    );
}

/// Returns stdout and stderr of a finished command as one text.
fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        output.stderr
    )
}

#[test]
fn marked_damage_passes_later_checks() {
    let setup = two_snapshots();
    let repo = &setup.repo;
    let second_packs: Vec<PathBuf> = repo
        .pack_files()
        .into_iter()
        .filter(|pack| !setup.first_packs.contains(pack))
        .collect();
    let first_pack = object_name(repo, &setup.first_packs[0]);
    flip_middle_byte(&setup.first_packs[0]);

    let unmarked = repo.run(&["check", "--read-data"]);
    assert_eq!(
        unmarked.code(),
        Some(3),
        "check of damage no snapshot marks should exit 3\n{}",
        unmarked.describe()
    );
    assert!(
        unmarked
            .stderr
            .contains("cairn repair snapshots --mark-damaged"),
        "check of unmarked damage should suggest marking the snapshots, stderr:\n{}",
        unmarked.stderr
    );

    let marking = repo.run(&["repair", "snapshots", "--read-data", "--mark-damaged"]);
    assert_eq!(
        marking.code(),
        Some(3),
        "repair snapshots that marks new damage should exit 3\n{}",
        marking.describe()
    );
    let marked_id = repo
        .snapshots()
        .iter()
        .find(|snapshot| !snapshot["damaged"].is_null())
        .map(|snapshot| string_field(snapshot, "id"))
        .expect("repair snapshots --mark-damaged marked no snapshot");

    // The id that check printed before the marking still finds the snapshot.
    let old_id = &setup.first_id[..8];
    let by_old_id = repo.run(&["restore", &format!("{old_id}:first.dump"), "--stdout"]);
    assert!(
        !by_old_id.stderr.contains("no snapshot matches"),
        "restore by the id from before the marking should find the marked snapshot\n{}",
        by_old_id.describe()
    );
    assert!(
        by_old_id.stderr.contains(&marked_id[..8]),
        "restore by the old id should name the new id {marked_id}\n{}",
        by_old_id.describe()
    );
    assert_eq!(
        by_old_id.code(),
        Some(3),
        "restore of the damaged snapshot should fail on its damage\n{}",
        by_old_id.describe()
    );
    assert!(
        by_old_id.stderr.contains(
            "the snapshot is marked damaged; the restore fails if the entry needs lost data"
        ),
        "restore of a marked snapshot should say that it is marked\n{}",
        by_old_id.describe()
    );

    let known = repo.run(&["check", "--read-data"]);
    assert_eq!(
        known.code(),
        Some(0),
        "check whose only damage is in marked snapshots should exit 0\n{}",
        known.describe()
    );
    assert!(
        known
            .stderr
            .contains(&format!("damaged, already marked: {first_pack}")),
        "check should still list the known damage of {first_pack}, stderr:\n{}",
        known.stderr
    );
    assert!(
        known.stderr.contains(&marked_id),
        "check should name the marked snapshot {marked_id}, stderr:\n{}",
        known.stderr
    );
    assert!(
        String::from_utf8_lossy(&known.stdout).contains("no new damage was found"),
        "check of known damage should say that no new damage was found\n{}",
        all_output(&known)
    );
    assert!(
        !all_output(&known).contains("--mark-damaged"),
        "check should not suggest marking snapshots that are marked already\n{}",
        all_output(&known)
    );

    let listed = repo.run(&["repair", "snapshots", "--read-data"]);
    assert_eq!(
        listed.code(),
        Some(0),
        "repair snapshots whose damaged snapshots are all marked should exit 0\n{}",
        listed.describe()
    );
    assert!(
        String::from_utf8_lossy(&listed.stdout)
            .contains(&format!("damaged snapshot {marked_id}, already marked")),
        "repair snapshots should say that {marked_id} is marked already\n{}",
        all_output(&listed)
    );
    assert!(
        !all_output(&listed).contains("--mark-damaged"),
        "repair snapshots should not suggest marking snapshots that are marked already\n{}",
        all_output(&listed)
    );

    // New damage in a snapshot that is not marked fails the check again.
    let second_pack = object_name(repo, &second_packs[0]);
    flip_middle_byte(&second_packs[0]);
    let new_damage = repo.run(&["check", "--read-data"]);
    assert_eq!(
        new_damage.code(),
        Some(3),
        "check of new damage beside known damage should exit 3\n{}",
        new_damage.describe()
    );
    assert!(
        new_damage
            .stderr
            .contains(&format!("damaged: {second_pack}")),
        "check should name the newly damaged pack {second_pack}, stderr:\n{}",
        new_damage.stderr
    );
    assert!(
        new_damage.stderr.contains(&setup.second_id),
        "check should name snapshot {} that uses the newly damaged pack, stderr:\n{}",
        setup.second_id,
        new_damage.stderr
    );
    // A flipped byte can also make the second snapshot's chunk list
    // unreadable, which is a problem of its own.
    let new_problems = new_damage
        .stderr
        .lines()
        .filter(|line| line.starts_with("damaged: "))
        .count();
    assert!(
        new_damage
            .stderr
            .contains(&format!("\n{new_problems} problem(s) found")),
        "check should count only the {new_problems} new problem(s), stderr:\n{}",
        new_damage.stderr
    );
    assert!(
        new_damage
            .stderr
            .contains("cairn repair snapshots --mark-damaged"),
        "check of new damage should suggest marking the snapshot, stderr:\n{}",
        new_damage.stderr
    );
}
