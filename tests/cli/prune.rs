//! `cairn prune`: reclaims what no snapshot needs, survives being killed at
//! any step, and never deletes what a running backup needs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::harness::{
    Output, Repo, files_under, random_bytes, run_command, snapshot_id, string_field, u64_field,
};

/// Small chunks and packs, so a few hundred KiB make many packs.
const SMALL: [&str; 8] = [
    "--chunk-min",
    "1024",
    "--chunk-avg",
    "4096",
    "--chunk-max",
    "16384",
    "--pack-size",
    "65536",
];

/// Removes a snapshot object directly, as `forget` does.
fn drop_snapshot(repo: &Repo, id: &str) {
    fs::remove_file(repo.path.join("snapshots").join(id)).expect("remove snapshot object");
}

/// A repository with three snapshots. The first has four entries in this
/// order: live, dead, live, dead. The small dead entry lies between live
/// data, so some packs mix live and dead blobs and must be repacked; the
/// large one fills packs that only hold dead blobs.
struct Scenario {
    repo: Repo,
    kept: Vec<(String, String, Vec<u8>)>,
}

fn scenario() -> Scenario {
    scenario_of(300_000)
}

fn scenario_of(dead_size: usize) -> Scenario {
    let repo = Repo::init_with(&SMALL);
    let inputs = [
        ("stay.bin", random_bytes(200_000, 1)),
        ("small-dead.bin", random_bytes(30_000, 2)),
        ("stay2.bin", random_bytes(200_000, 3)),
        ("dead.bin", random_bytes(dead_size, 4)),
    ];
    let mut paths = Vec::new();
    for (name, data) in &inputs {
        let path = repo.work_path(name);
        fs::write(&path, data).expect("write input");
        paths.push(path);
    }
    let mut args = vec!["--json", "backup"];
    args.extend(paths.iter().map(|p| path_str(p)));
    let first = repo.run(&args).expect_success("first backup").json();
    let second = repo
        .run(&["--json", "backup", path_str(&paths[0]), path_str(&paths[2])])
        .expect_success("second backup")
        .json();
    let later = random_bytes(200_000, 5);
    let third = snapshot_id(&repo.backup_stdin("later.bin", &later));
    drop_snapshot(&repo, &snapshot_id(&first));
    let second = snapshot_id(&second);
    Scenario {
        repo,
        kept: vec![
            (second.clone(), "stay.bin".into(), inputs[0].1.clone()),
            (second, "stay2.bin".into(), inputs[2].1.clone()),
            (third, "later.bin".into(), later),
        ],
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Runs cairn on another repository folder with its own cache.
fn run_on(repo: &Repo, root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command: Command = repo.bare_command();
    command
        .env("CAIRN_CACHE_DIR", root.join("cache"))
        .arg("--repo")
        .arg(root.join("repo"))
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    run_command(
        command,
        &format!("cairn {} (on {})", args.join(" "), root.display()),
        None,
    )
}

fn copy_tree(from: &Path, to: &Path) {
    for file in files_under(from) {
        let relative = file
            .strip_prefix(from)
            .expect("file under the copied folder");
        let target = to.join(relative);
        fs::create_dir_all(target.parent().expect("file has a parent")).expect("create folder");
        fs::copy(&file, &target).expect("copy file");
    }
    for folder in ["data", "index", "snapshots", "keys", "locks"] {
        fs::create_dir_all(to.join(folder)).expect("create folder");
    }
}

/// Asserts that the repository at `root` is intact and that every kept
/// snapshot restores byte for byte.
fn assert_intact(scenario: &Scenario, root: &Path, when: &str) {
    let check = run_on(&scenario.repo, root, &["check", "--read-data"], &[]);
    assert_eq!(
        check.code(),
        Some(0),
        "check after {when}\n{}",
        check.describe()
    );
    for (id, entry, data) in &scenario.kept {
        let spec = format!("{id}:{entry}");
        let restored = run_on(&scenario.repo, root, &["restore", &spec, "--stdout"], &[]);
        assert_eq!(
            restored.code(),
            Some(0),
            "restore {spec} after {when}\n{}",
            restored.describe()
        );
        assert!(
            restored.stdout == *data,
            "restore of {spec} after {when} differs from what was backed up"
        );
    }
}

fn prune_json(output: &Output) -> Value {
    output.json()
}

#[test]
fn prune_reclaims_dropped_snapshot() {
    let scenario = scenario();
    let repo = &scenario.repo;
    let before: u64 = files_under(&repo.path.join("data"))
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let dry = repo
        .run(&["--json", "prune", "--dry-run"])
        .expect_success("prune --dry-run");
    let after_dry: u64 = files_under(&repo.path.join("data"))
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert_eq!(before, after_dry, "prune --dry-run changed the repository");
    assert!(
        prune_json(&dry)["dry_run"].as_bool() == Some(true),
        "dry run not reported as such"
    );

    let report = prune_json(
        &repo
            .run(&["--json", "prune", "--max-unused", "0"])
            .expect_success("prune"),
    );
    let after: u64 = files_under(&repo.path.join("data"))
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        u64_field(&report, "packs_deleted") + u64_field(&report, "packs_repacked") > 0,
        "prune removed nothing: {report}"
    );
    assert!(
        after < before - 250_000,
        "prune freed only {} of about 300,000 dead bytes",
        before - after
    );
    assert_eq!(
        u64_field(&report, "bytes_after"),
        after,
        "reported size after prune differs from the folder"
    );

    let root = repo.path.parent().expect("repo has a parent").to_path_buf();
    assert_intact(&scenario, &root, "a complete prune");
    let again = prune_json(
        &repo
            .run(&["--json", "prune", "--max-unused", "0"])
            .expect_success("second prune"),
    );
    assert_eq!(
        u64_field(&again, "packs_deleted"),
        0,
        "second prune still found dead packs: {again}"
    );
    assert_eq!(
        u64_field(&again, "packs_repacked"),
        0,
        "second prune still repacked: {again}"
    );
}

#[test]
fn killed_prune_loses_nothing() {
    let scenario = scenario_of(1_200_000);
    let source = scenario
        .repo
        .path
        .parent()
        .expect("repo has a parent")
        .to_path_buf();
    // Every write and deletion of this prune is a failpoint position.
    let plan = scenario
        .repo
        .run(&["--json", "prune", "--max-unused", "0", "--dry-run"])
        .expect_success("prune --dry-run")
        .json();
    let deletions = u64_field(&plan, "packs_deleted")
        + u64_field(&plan, "packs_repacked")
        + u64_field(&plan, "unindexed_packs_deleted");
    let old_index = files_under(&source.join("repo").join("index")).len();
    assert!(
        u64_field(&plan, "packs_repacked") > 0,
        "the scenario repacks nothing: {plan}"
    );
    let mut points: Vec<String> = vec![
        "prune.pack_written:1".into(),
        "prune.index_written:1".into(),
        "prune.before_deletions".into(),
    ];
    points.extend((1..=old_index).map(|n| format!("prune.index_deleted:{n}")));
    points.extend((1..=deletions).map(|n| format!("prune.pack_deleted:{n}")));
    assert!(
        points.len() >= 20,
        "only {} failpoint positions in {plan}",
        points.len()
    );
    let mut killed = 0;
    for point in &points {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_tree(&source.join("repo"), &copy.path().join("repo"));
        let root = copy.path().to_path_buf();
        let interrupted = run_on(
            &scenario.repo,
            &root,
            &["prune", "--max-unused", "0"],
            &[("CAIRN_FAILPOINT", point)],
        );
        if interrupted.code() != Some(0) {
            killed += 1;
            assert!(
                interrupted.stderr.contains("failpoint"),
                "prune failed for another reason at {point}\n{}",
                interrupted.describe()
            );
        }
        assert_intact(&scenario, &root, &format!("prune killed at {point}"));
        let finish = run_on(
            &scenario.repo,
            &root,
            &["--json", "prune", "--max-unused", "0"],
            &[],
        );
        assert_eq!(
            finish.code(),
            Some(0),
            "prune after a kill at {point}\n{}",
            finish.describe()
        );
        let leftover = run_on(
            &scenario.repo,
            &root,
            &["--json", "prune", "--max-unused", "0", "--dry-run"],
            &[],
        )
        .json();
        assert_eq!(
            u64_field(&leftover, "unindexed_packs_deleted"),
            0,
            "after a kill at {point} and a full prune: {leftover}"
        );
        assert_eq!(
            u64_field(&leftover, "packs_deleted"),
            0,
            "after a kill at {point} and a full prune: {leftover}"
        );
        assert_intact(
            &scenario,
            &root,
            &format!("the prune that followed a kill at {point}"),
        );
    }
    assert!(
        killed >= 20,
        "only {killed} of {} failpoints were reached",
        points.len()
    );
}

/// Starts `cairn backup` of a producer that pauses halfway.
fn start_slow_backup(repo: &Repo, first: &Path, second: &Path, pause: f64) -> std::process::Child {
    let script = format!(
        "cat '{}'; sleep {pause}; cat '{}'",
        first.display(),
        second.display()
    );
    let mut command = repo.command(&[
        "--json", "backup", "--name", "slow.bin", "--", "sh", "-c", &script,
    ]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.spawn().expect("start backup")
}

#[test]
fn prune_during_backup_keeps_its_data() {
    let repo = Repo::init_with(&SMALL);
    let old = random_bytes(200_000, 10);
    let old_id = snapshot_id(&repo.backup_stdin("old.bin", &old));
    drop_snapshot(&repo, &old_id);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut backups_done = 0;
    let mut prunes_refused = 0;
    for round in 0..20u64 {
        let first = random_bytes(150_000, 100 + round);
        let second = random_bytes(150_000, 200 + round);
        let first_path = repo.work_path("first.bin");
        let second_path = repo.work_path("second.bin");
        fs::write(&first_path, &first).expect("write input");
        fs::write(&second_path, &second).expect("write input");
        let mut backup = start_slow_backup(&repo, &first_path, &second_path, 0.4);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..700)));
        let prune = repo.run(&["--json", "prune", "--max-unused", "0"]);
        let stdout = crate::harness::read_to_end_in_thread(backup.stdout.take().expect("stdout"));
        let stderr = crate::harness::read_to_end_in_thread(backup.stderr.take().expect("stderr"));
        let status =
            crate::harness::wait_with_timeout(&mut backup, Duration::from_secs(120), "slow backup");
        let stdout = stdout.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
        match prune.code() {
            Some(0) => {}
            Some(6) => {
                prunes_refused += 1;
                assert!(
                    prune.stderr.contains("locked by"),
                    "prune refused without naming the holder\n{}",
                    prune.describe()
                );
            }
            other => panic!(
                "prune ended with {other:?} in round {round}\n{}",
                prune.describe()
            ),
        }
        match status.code() {
            Some(0) => {
                backups_done += 1;
                let summary: Value = serde_json::from_slice(&stdout).expect("backup JSON");
                let id = snapshot_id(&summary);
                let mut expected = first.clone();
                expected.extend_from_slice(&second);
                assert!(
                    repo.restore_stdout(&format!("{id}:slow.bin")) == expected,
                    "round {round}: the backup that ran beside a prune does not restore byte for byte"
                );
            }
            Some(6) => assert!(
                stderr.contains("locked"),
                "round {round}: backup exit 6 without a lock message:\n{stderr}"
            ),
            other => panic!("round {round}: backup ended with {other:?}:\n{stderr}"),
        }
        let check = repo.run(&["check", "--read-data"]);
        assert_eq!(check.code(), Some(0), "round {round}\n{}", check.describe());
    }
    assert!(
        backups_done >= 10,
        "only {backups_done} of 20 backups completed"
    );
    assert!(
        prunes_refused >= 1,
        "no prune ever met a running backup; the test proves nothing"
    );
}

#[test]
fn stale_lock_of_dead_process_is_cleared() {
    let repo = Repo::init_with(&SMALL);
    let data = random_bytes(100_000, 5);
    let path: PathBuf = repo.work_path("data.bin");
    fs::write(&path, &data).expect("write input");
    // A backup killed with SIGKILL leaves its lock behind.
    let mut backup = start_slow_backup(&repo, &path, &path, 30.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_under(&repo.path.join("locks")).is_empty() {
        assert!(Instant::now() < deadline, "backup never wrote a lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    backup.kill().expect("kill backup");
    backup.wait().expect("reap backup");
    assert!(
        !files_under(&repo.path.join("locks")).is_empty(),
        "the killed backup left no lock"
    );
    let prune = repo.run(&["prune"]);
    assert_eq!(
        prune.code(),
        Some(0),
        "prune did not clear the dead process's lock\n{}",
        prune.describe()
    );
    assert!(
        files_under(&repo.path.join("locks")).is_empty(),
        "locks remain after prune"
    );
}

#[test]
fn repair_index_rebuilds_from_packs() {
    let scenario = scenario();
    let repo = &scenario.repo;
    for file in files_under(&repo.path.join("index")) {
        fs::remove_file(&file).expect("remove index object");
    }
    let broken = repo.run(&["check"]);
    assert_eq!(
        broken.code(),
        Some(3),
        "check without index objects\n{}",
        broken.describe()
    );
    let repair = repo
        .run(&["--json", "repair", "index"])
        .expect_success("repair index")
        .json();
    assert!(
        u64_field(&repair, "packs_indexed") > 0,
        "repair indexed nothing: {repair}"
    );
    let root = repo.path.parent().expect("repo has a parent").to_path_buf();
    assert_intact(&scenario, &root, "repair index");
}

#[test]
fn repair_snapshots_marks_damage() {
    let repo = Repo::init_with(&SMALL);
    let good = random_bytes(100_000, 21);
    let bad = random_bytes(100_000, 22);
    let good_id = snapshot_id(&repo.backup_stdin("good.bin", &good));
    let bad_id = snapshot_id(&repo.backup_stdin("bad.bin", &bad));
    // Packs are named by their hash. The newest pack contains the second
    // backup's data only, because the two inputs share nothing.
    let mut packs = files_under(&repo.path.join("data"));
    packs.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
    let victim = packs.last().expect("a pack").clone();
    let mut bytes = fs::read(&victim).expect("read pack");
    bytes[10] ^= 0xff;
    fs::write(&victim, bytes).expect("write pack");

    let report = repo.run(&["--json", "repair", "snapshots", "--read-data"]);
    assert_eq!(report.code(), Some(3), "{}", report.describe());
    let found = report.json();
    let ids: Vec<String> = found["damaged"]
        .as_array()
        .expect("a damaged array")
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, vec![bad_id.clone()], "damaged snapshots found");

    let marked = repo.run(&[
        "--json",
        "repair",
        "snapshots",
        "--read-data",
        "--mark-damaged",
    ]);
    assert_eq!(marked.code(), Some(3), "{}", marked.describe());
    let snapshots = repo.snapshots();
    assert_eq!(snapshots.len(), 2, "marking must not delete a snapshot");
    let damaged: Vec<&Value> = snapshots
        .iter()
        .filter(|s| !s["damaged"].is_null())
        .collect();
    assert_eq!(
        damaged.len(),
        1,
        "exactly one snapshot marked: {snapshots:?}"
    );
    assert_eq!(
        damaged[0]["damaged"]["original"].as_str(),
        Some(bad_id.as_str())
    );
    assert!(
        snapshots
            .iter()
            .any(|s| s["id"].as_str() == Some(good_id.as_str())),
        "the intact snapshot kept its id"
    );
}

/// A repository with one backup of a file whose first pack has a flipped
/// byte.
struct DamagedBackup {
    repo: Repo,
    /// Contents of the backed-up file.
    data: Vec<u8>,
    /// The backed-up file, still in place for the next backup.
    path: PathBuf,
    /// Id of the snapshot.
    first: String,
    /// The damaged pack.
    victim: PathBuf,
}

/// Backs up 300,000 random bytes made from `seed`, then flips one byte of
/// the first pack.
fn damaged_backup(seed: u64) -> DamagedBackup {
    let repo = Repo::init_with(&SMALL);
    let data = random_bytes(300_000, seed);
    let path = repo.work_path("data.bin");
    fs::write(&path, &data).expect("write input");
    let first = snapshot_id(
        &repo
            .run(&["--json", "backup", path_str(&path)])
            .expect_success("backup")
            .json(),
    );
    let victim = files_under(&repo.path.join("data"))
        .into_iter()
        .next()
        .expect("a pack");
    let mut bytes = fs::read(&victim).expect("read pack");
    bytes[20] ^= 0x55;
    fs::write(&victim, bytes).expect("write pack");
    DamagedBackup {
        repo,
        data,
        path,
        first,
        victim,
    }
}

#[test]
fn repair_packs_heals_after_damage() {
    let DamagedBackup {
        repo,
        data,
        path,
        first,
        victim,
    } = damaged_backup(31);

    let check = repo.run(&["check", "--read-data"]);
    assert_eq!(check.code(), Some(3), "{}", check.describe());
    assert!(
        check.stderr.contains("cairn repair packs"),
        "check does not point to repair packs\n{}",
        check.describe()
    );
    // A mark set before the healing backup stays until a full repair run
    // removes it, so the backup step comes before the marking step.
    let backup_hint = check.stderr.find("Then run the backups again");
    let mark_hint = check.stderr.find("--mark-damaged");
    assert!(
        backup_hint.is_some(),
        "check does not point to a new backup\n{}",
        check.describe()
    );
    assert!(
        mark_hint > backup_hint,
        "check suggests marking before the new backup\n{}",
        check.describe()
    );

    let repair = repo
        .run(&["--json", "repair", "packs"])
        .expect_success("repair packs")
        .json();
    assert_eq!(
        repair["damaged_packs"].as_array().map(Vec::len),
        Some(1),
        "{repair}"
    );
    assert!(!victim.exists(), "the damaged pack is still in data/");
    assert!(
        repo.path.join("damaged").is_dir(),
        "the damaged pack was not kept for inspection"
    );

    // The damaged pack is out of use, so check points to the backup that
    // stores the lost chunks again, not to repair packs a second time.
    let salvaged = repo.run(&["check"]);
    assert_eq!(salvaged.code(), Some(3), "{}", salvaged.describe());
    assert!(
        !salvaged.stderr.contains("cairn repair packs"),
        "check suggests repair packs after it ran\n{}",
        salvaged.describe()
    );
    assert!(
        salvaged.stderr.contains("Run the backups again"),
        "check does not point to a new backup after repair packs\n{}",
        salvaged.describe()
    );

    // The same data backed up again is stored anew, and the old snapshot
    // restores again.
    repo.run(&["backup", path_str(&path)])
        .expect_success("backup after repair");
    let healed = repo.run(&["check", "--read-data"]);
    assert_eq!(healed.code(), Some(0), "{}", healed.describe());
    assert!(
        repo.restore_stdout(&format!("{first}:data.bin")) == data,
        "the snapshot taken before the damage does not restore after healing"
    );
}

/// An operator who marks snapshots before the backup that heals them gets
/// the marks removed by the next full `repair snapshots --mark-damaged`.
#[test]
fn healed_snapshot_loses_mark() {
    let DamagedBackup {
        repo,
        data,
        path,
        first,
        ..
    } = damaged_backup(32);
    repo.run(&["repair", "packs"])
        .expect_success("repair packs");

    let marking = repo.run(&[
        "--json",
        "repair",
        "snapshots",
        "--read-data",
        "--mark-damaged",
    ]);
    assert_eq!(marking.code(), Some(3), "{}", marking.describe());
    let marked_id = marking.json()["damaged"][0]["marked_as"]
        .as_str()
        .expect("the snapshot was marked")
        .to_string();

    // The backup stores the lost chunks again, so the marked snapshot is
    // intact, but only a full read can show it.
    repo.run(&["backup", path_str(&path)])
        .expect_success("backup after repair");
    let structural = repo
        .run(&["--json", "repair", "snapshots"])
        .expect_success("repair snapshots without --read-data")
        .json();
    assert_eq!(
        structural["healed"].as_array().map(Vec::len),
        Some(0),
        "the structural check must not declare a snapshot healed: {structural}"
    );
    let listed = repo.run(&["repair", "snapshots", "--read-data"]);
    assert_eq!(listed.code(), Some(0), "{}", listed.describe());
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("restores in full again"),
        "repair snapshots should list the healed snapshot\n{}",
        listed.describe()
    );
    assert!(
        repo.snapshots()
            .iter()
            .any(|s| string_field(s, "id") == marked_id),
        "listing without --mark-damaged must not change the mark"
    );

    let unmarking = repo
        .run(&[
            "--json",
            "repair",
            "snapshots",
            "--read-data",
            "--mark-damaged",
        ])
        .expect_success("repair snapshots that removes a mark")
        .json();
    let healed = &unmarking["healed"][0];
    assert_eq!(
        healed["id"].as_str(),
        Some(marked_id.as_str()),
        "{unmarking}"
    );
    assert_eq!(
        healed["original"].as_str(),
        Some(first.as_str()),
        "{unmarking}"
    );
    let new_id = healed["unmarked_as"]
        .as_str()
        .expect("the mark was removed")
        .to_string();
    let snapshots = repo.snapshots();
    assert_eq!(snapshots.len(), 2, "unmarking must not delete a snapshot");
    assert!(
        snapshots.iter().all(|s| s["damaged"].is_null()),
        "no snapshot should stay marked: {snapshots:?}"
    );
    assert!(
        repo.restore_stdout(&format!("{new_id}:data.bin")) == data,
        "the unmarked snapshot does not restore the original data"
    );
}

#[test]
fn prune_removes_duplicate_copies() {
    let repo = Repo::init_with(&SMALL);
    let data = random_bytes(300_000, 41);
    let path = repo.work_path("data.bin");
    fs::write(&path, &data).expect("write input");
    repo.run(&["backup", path_str(&path)])
        .expect_success("first backup");
    // Without index objects the next backup cannot see the stored chunks
    // and stores them a second time; repair index then names both copies.
    for file in files_under(&repo.path.join("index")) {
        fs::remove_file(&file).expect("remove index object");
    }
    repo.run(&["backup", path_str(&path)])
        .expect_success("second backup");
    repo.run(&["repair", "index"])
        .expect_success("repair index");
    let before = u64_field(&repo.stats(), "stored_bytes");
    let report = repo
        .run(&["--json", "prune", "--max-unused", "0"])
        .expect_success("prune")
        .json();
    let after = u64_field(&repo.stats(), "stored_bytes");
    assert!(
        after * 10 < before * 6,
        "prune kept duplicates: {before} bytes before, {after} after: {report}"
    );
    let check = repo.run(&["check", "--read-data"]);
    assert_eq!(check.code(), Some(0), "{}", check.describe());
    assert!(
        repo.restore_stdout("latest:data.bin") == data,
        "restore after removing duplicates differs"
    );
}
