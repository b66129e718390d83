//! Round trips through `cairn backup` and `cairn restore`, deduplication, snapshot
//! selection, restore targets, stats and the global options.

use std::fs;

use serde_json::Value;

use crate::harness::{
    MIB, Repo, array_field, assert_same_bytes, dir_names, f64_field, first_entry, path_arg,
    random_bytes, short_id, snapshot_id, string_field, u64_field,
};

/// Backs up `data`, checks the summary, restores it to stdout and to a file, and
/// compares both copies with the input. Returns the backup summary.
fn assert_round_trip(repo: &Repo, label: &str, data: &[u8]) -> Value {
    let summary = repo.backup_stdin(label, data);
    let id = snapshot_id(&summary);
    let entry = first_entry(&summary);
    assert_eq!(
        u64_field(entry, "size"),
        data.len() as u64,
        "{label}: entry size in the backup summary"
    );
    assert_eq!(
        u64_field(&summary, "bytes_read"),
        data.len() as u64,
        "{label}: bytes_read in the backup summary"
    );

    let restored = repo.restore_stdout(&id);
    assert_same_bytes(&restored, data, &format!("{label} restored to stdout"));

    let target = repo.work_path(&format!("{label}.restored"));
    repo.run(&["restore", &id, "--target", path_arg(&target)])
        .expect_success(&format!("restore {label} to a file"));
    let from_file = fs::read(&target).expect("failed to read the restored file");
    assert_same_bytes(&from_file, data, &format!("{label} restored to a file"));
    summary
}

#[test]
fn empty_stream_needs_allow_empty() {
    let repo = Repo::init();

    let rejected = repo.run_input(&["backup", "--name", "empty", "--stdin"], b"");
    assert_eq!(
        rejected.code(),
        Some(2),
        "backup of empty stdin without --allow-empty should exit 2 (invalid input)\n{}",
        rejected.describe()
    );
    assert!(
        rejected
            .stderr
            .contains("the stream for entry empty is empty"),
        "the error should say which entry is empty, stderr:\n{}",
        rejected.stderr
    );
    assert!(
        rejected.stderr.contains("--allow-empty"),
        "the error should name --allow-empty as the way to store an empty entry, stderr:\n{}",
        rejected.stderr
    );
    assert!(
        repo.snapshots().is_empty(),
        "a rejected empty backup must not write a snapshot"
    );

    let summary = repo.backup_stdin_with("empty", b"", &["--allow-empty"]);
    let id = snapshot_id(&summary);
    assert_eq!(
        u64_field(first_entry(&summary), "size"),
        0,
        "entry size of an empty backup"
    );

    let target = repo.work_path("empty.out");
    repo.run(&["restore", &id, "--target", path_arg(&target)])
        .expect_success("restore of the empty entry");
    let metadata = fs::metadata(&target).expect("restore of an empty entry created no file");
    assert!(
        metadata.is_file(),
        "restored empty entry is not a regular file"
    );
    assert_eq!(metadata.len(), 0, "restored empty entry is not empty");
}

#[test]
fn round_trip_small_and_large() {
    let repo = Repo::init();
    assert_round_trip(&repo, "one-byte", b"x");
    assert_round_trip(&repo, "text", "Zürich, 東京, 🦀\n".as_bytes());
    assert_round_trip(&repo, "random-3mib", &random_bytes(3 * MIB + 12345, 1));
}

#[test]
fn round_trip_chunk_size_multiples() {
    let min = 1024;
    let avg = 4096;
    let max = 16384;
    let repo = Repo::init_with(&[
        "--chunk-min",
        &min.to_string(),
        "--chunk-avg",
        &avg.to_string(),
        "--chunk-max",
        &max.to_string(),
    ]);

    // All-zero input has no content-defined boundary, so the chunker cuts it every
    // max bytes. These sizes put the end of the input exactly on, just after and
    // just before a chunk boundary.
    let zeros = assert_round_trip(&repo, "zeros-8-max", &vec![0u8; 8 * max]);
    let zeros_entry = first_entry(&zeros);
    assert_eq!(
        u64_field(zeros_entry, "chunks"),
        8,
        "8 * max zero bytes should be cut into 8 chunks of max bytes"
    );
    assert_eq!(
        u64_field(zeros_entry, "new_chunks"),
        1,
        "8 identical chunks should be stored once"
    );
    assert_round_trip(&repo, "zeros-8-max-plus-1", &vec![0u8; 8 * max + 1]);
    assert_round_trip(&repo, "zeros-8-max-minus-1", &vec![0u8; 8 * max - 1]);
    assert_round_trip(&repo, "random-1-min", &random_bytes(min, 2));
    assert_round_trip(&repo, "random-1-max", &random_bytes(max, 3));
    assert_round_trip(&repo, "random-64-avg", &random_bytes(64 * avg, 4));
    assert_round_trip(&repo, "random-16-max", &random_bytes(16 * max, 5));
}

#[test]
fn second_backup_stores_almost_nothing() {
    let repo = Repo::init();
    let data = random_bytes(8 * MIB, 10);

    let first = repo.backup_stdin("data.bin", &data);
    let first_summary_entry = first_entry(&first);
    assert_eq!(
        u64_field(&first, "new_bytes"),
        data.len() as u64,
        "random input has no duplicate chunks, so the first backup should report all bytes as new"
    );
    assert!(
        u64_field(&first, "stored_bytes") > 0,
        "first backup reports stored_bytes 0"
    );

    let second = repo.backup_stdin("data.bin", &data);
    let second_entry = first_entry(&second);
    let stored = u64_field(&second, "stored_bytes");
    assert!(
        stored < data.len() as u64 / 100,
        "second backup of the same {} bytes stored {stored} bytes, expected less than 1%",
        data.len()
    );
    assert_eq!(
        u64_field(second_entry, "new_chunks"),
        0,
        "second backup of the same data reports new chunks"
    );
    assert_eq!(
        u64_field(&second, "new_bytes"),
        0,
        "second backup of the same data reports new bytes"
    );
    assert_eq!(
        u64_field(second_entry, "chunks"),
        u64_field(first_summary_entry, "chunks"),
        "the same data was cut into a different number of chunks"
    );
    assert_ne!(
        snapshot_id(&first),
        snapshot_id(&second),
        "two backups returned the same snapshot id"
    );
}

#[test]
fn file_arguments_become_entries() {
    let repo = Repo::init();
    let binary = random_bytes(300_000, 20);
    let text = "line one\nZeile zwei mit Umlauten: äöü\n"
        .repeat(1000)
        .into_bytes();
    let binary_path = repo.work_path("a.bin");
    let text_path = repo.work_path("b.txt");
    fs::write(&binary_path, &binary).expect("failed to write a.bin");
    fs::write(&text_path, &text).expect("failed to write b.txt");

    let summary = repo
        .run(&[
            "--json",
            "backup",
            path_arg(&binary_path),
            path_arg(&text_path),
        ])
        .expect_success("backup of two files")
        .json();
    let id = snapshot_id(&summary);
    let entries = array_field(&summary, "entries");
    assert_eq!(entries.len(), 2, "expected one entry per file: {summary}");
    let names: Vec<String> = entries.iter().map(|e| string_field(e, "name")).collect();
    assert!(
        names.contains(&"a.bin".to_string()),
        "entries {names:?} lack a.bin"
    );
    assert!(
        names.contains(&"b.txt".to_string()),
        "entries {names:?} lack b.txt"
    );

    let restored_binary = repo.restore_stdout(&format!("{id}:a.bin"));
    assert_same_bytes(
        &restored_binary,
        &binary,
        "a.bin restored by SNAPSHOT:ENTRY",
    );

    let target = repo.work_path("b.restored");
    repo.run(&[
        "restore",
        &format!("{}:b.txt", short_id(&id)),
        "--target",
        path_arg(&target),
    ])
    .expect_success("restore b.txt by id prefix and entry name");
    let restored_text = fs::read(&target).expect("failed to read restored b.txt");
    assert_same_bytes(&restored_text, &text, "b.txt restored by prefix:ENTRY");

    let ambiguous = repo.run(&["restore", &id, "--stdout"]);
    assert_ne!(
        ambiguous.code(),
        Some(0),
        "restore without an entry name must fail when the snapshot has two entries\n{}",
        ambiguous.describe()
    );

    let listed = repo.snapshots();
    assert_eq!(listed.len(), 1, "expected one snapshot after one backup");
    let listed_entries = array_field(&listed[0], "entries");
    assert_eq!(
        listed_entries.len(),
        2,
        "snapshots --json should list both entries"
    );
    let hashes: Vec<String> = listed_entries
        .iter()
        .map(|e| string_field(e, "sequence_hash"))
        .collect();
    assert_ne!(
        hashes[0], hashes[1],
        "entries with different contents have the same hash"
    );
}

#[test]
fn latest_and_prefix_select_snapshots() {
    let repo = Repo::init();
    let monday = b"monday dump".to_vec();
    let tuesday = b"tuesday dump".to_vec();
    let monday_id = snapshot_id(&repo.backup_stdin_with("db.dump", &monday, &["--tag", "daily"]));
    let tuesday_id = snapshot_id(&repo.backup_stdin("db.dump", &tuesday));

    assert_eq!(
        repo.restore_stdout("latest"),
        tuesday,
        "latest should restore the newest snapshot"
    );
    assert_eq!(
        repo.restore_stdout("latest:db.dump"),
        tuesday,
        "latest:ENTRY should restore the newest snapshot"
    );
    assert_eq!(
        repo.restore_stdout(short_id(&monday_id)),
        monday,
        "an 8-digit id prefix should select the older snapshot"
    );
    assert_eq!(
        repo.restore_stdout(&monday_id),
        monday,
        "the full id should select the older snapshot"
    );

    let unknown_prefix = (0..16u32)
        .map(|digit| format!("{digit:x}"))
        .find(|digit| {
            !monday_id.starts_with(digit.as_str()) && !tuesday_id.starts_with(digit.as_str())
        })
        .expect("two ids cannot start with all 16 hex digits");
    let missing = repo.run(&["restore", &unknown_prefix, "--stdout"]);
    assert_ne!(
        missing.code(),
        Some(0),
        "restore of a prefix that matches no snapshot must fail\n{}",
        missing.describe()
    );

    let snapshots = repo.snapshots();
    let ids: Vec<String> = snapshots.iter().map(|s| string_field(s, "id")).collect();
    assert_eq!(
        ids,
        vec![monday_id, tuesday_id],
        "snapshots --json should list the oldest first"
    );
    let tags = array_field(&snapshots[0], "tags");
    assert!(
        tags.iter().any(|tag| tag == "daily"),
        "tag daily is missing from the first snapshot: {tags:?}"
    );
    let time = string_field(&snapshots[0], "time");
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T',
        "snapshot time {time:?} is not an RFC 3339 timestamp"
    );
    assert!(
        !string_field(&snapshots[0], "host").is_empty(),
        "snapshot host is empty"
    );
}

#[test]
fn restore_keeps_existing_file() {
    let repo = Repo::init();
    let data = random_bytes(50_000, 30);
    let id = snapshot_id(&repo.backup_stdin("db.dump", &data));
    let target = repo.work_path("existing.dump");
    fs::write(&target, b"keep me").expect("failed to write the existing file");

    let rejected_restore = repo.run(&["restore", &id, "--target", path_arg(&target)]);
    assert_ne!(
        rejected_restore.code(),
        Some(0),
        "restore over an existing file without --overwrite must fail\n{}",
        rejected_restore.describe()
    );
    assert_eq!(
        fs::read(&target).expect("the existing file disappeared"),
        b"keep me",
        "a rejected restore changed the existing file"
    );
    assert_eq!(
        dir_names(&repo.work),
        vec!["existing.dump".to_string()],
        "a rejected restore left other files in the target directory"
    );

    repo.run(&["restore", &id, "--target", path_arg(&target), "--overwrite"])
        .expect_success("restore with --overwrite");
    let restored = fs::read(&target).expect("failed to read the overwritten file");
    assert_same_bytes(&restored, &data, "restore with --overwrite");
    assert_eq!(
        dir_names(&repo.work),
        vec!["existing.dump".to_string()],
        "restore with --overwrite left a temporary file in the target directory"
    );
}

#[test]
fn restore_target_folder_missing() {
    let repo = Repo::init();
    let id = snapshot_id(&repo.backup_stdin("db.dump", b"payload"));

    let folder = repo.work_path("missing").join("folder");
    let target = folder.join("db.dump");
    let missing = repo.run(&["restore", &id, "--target", path_arg(&target)]);
    assert_eq!(
        missing.code(),
        Some(2),
        "restore into a folder that does not exist should exit 2 (invalid input)\n{}",
        missing.describe()
    );
    assert!(
        missing.stderr.contains(path_arg(&target)),
        "the error should name the target path as given, stderr:\n{}",
        missing.stderr
    );
    assert!(
        missing
            .stderr
            .contains(&format!("the folder {} does not exist", path_arg(&folder))),
        "the error should name the missing folder, stderr:\n{}",
        missing.stderr
    );
    assert!(
        !missing.stderr.contains("cairn-partial"),
        "the error should not name the temporary file, stderr:\n{}",
        missing.stderr
    );
    assert!(
        !repo.work_path("missing").exists(),
        "a rejected restore created the missing folder"
    );

    let file = repo.work_path("plain-file");
    fs::write(&file, b"not a folder").expect("failed to write a file");
    let below_file = file.join("db.dump");
    let not_folder = repo.run(&["restore", &id, "--target", path_arg(&below_file)]);
    assert_eq!(
        not_folder.code(),
        Some(2),
        "restore below a regular file should exit 2 (invalid input)\n{}",
        not_folder.describe()
    );
    assert!(
        not_folder
            .stderr
            .contains(&format!("{} is not a folder", path_arg(&file))),
        "the error should say that the parent is not a folder, stderr:\n{}",
        not_folder.stderr
    );
    assert_eq!(
        fs::read(&file).expect("failed to read the file"),
        b"not a folder",
        "a rejected restore changed the file in the way"
    );
}

#[test]
fn stats_count_deduplicated_data() {
    let repo = Repo::init_with(&["--pack-size", "1048576"]);
    let data = random_bytes(3 * MIB, 40);
    let first = repo.backup_stdin("data.bin", &data);
    repo.backup_stdin("data.bin", &data);

    let stats = repo.stats();
    assert_eq!(
        u64_field(&stats, "snapshots"),
        2,
        "stats snapshots: {stats}"
    );
    assert_eq!(
        u64_field(&stats, "packs"),
        repo.pack_files().len() as u64,
        "stats packs should equal the number of files under data/: {stats}"
    );
    assert_eq!(
        u64_field(&stats, "chunks"),
        u64_field(first_entry(&first), "new_chunks"),
        "stats chunks should equal the unique chunks of the first backup: {stats}"
    );
    assert_eq!(
        u64_field(&stats, "raw_bytes"),
        data.len() as u64,
        "stats raw_bytes should count the unique data once: {stats}"
    );
    assert_eq!(
        u64_field(&stats, "logical_bytes"),
        2 * data.len() as u64,
        "stats logical_bytes should count both snapshots: {stats}"
    );
    let stored = u64_field(&stats, "stored_bytes");
    assert!(stored > 0, "stats stored_bytes is 0: {stats}");

    // dedup_ratio is logical_bytes / raw_bytes: two copies of the same data
    // deduplicate to exactly 2.
    let dedup = f64_field(&stats, "dedup_ratio");
    assert!(
        (dedup - 2.0).abs() < 1e-9,
        "dedup_ratio {dedup} of two copies of the same data should be 2"
    );

    // total_ratio is logical_bytes / stored_bytes, so it also includes
    // compression and the encryption overhead. Random data does not compress,
    // which puts the ratio of two copies just below 2.
    let total = f64_field(&stats, "total_ratio");
    let expected_total = (2 * data.len()) as f64 / stored as f64;
    assert!(
        (total - expected_total).abs() < 1e-6,
        "total_ratio {total} should be logical_bytes / stored_bytes = {expected_total}"
    );
    assert!(
        (1.9..=2.0).contains(&total),
        "total_ratio {total} of two copies of incompressible data should be just below 2"
    );
}

#[test]
fn global_options_after_subcommand() {
    let repo = Repo::init();
    let id = snapshot_id(&repo.backup_stdin("db.dump", b"payload"));

    let mut command = repo.bare_command();
    command.args(["snapshots", "--json", "--repo", path_arg(&repo.path)]);
    let output = crate::harness::run_command(command, "cairn snapshots --json --repo PATH", None)
        .expect_success("global options after the subcommand");
    let listed = output.json();
    assert_eq!(
        listed[0]["id"], id,
        "snapshots --json --repo PATH did not list the snapshot"
    );

    let mut command = repo.bare_command();
    command
        .env("CAIRN_REPOSITORY", &repo.path)
        .args(["restore", "latest", "--stdout"]);
    let output = crate::harness::run_command(command, "CAIRN_REPOSITORY=PATH cairn restore", None)
        .expect_success("repository from CAIRN_REPOSITORY");
    assert_eq!(
        output.stdout, b"payload",
        "restore through CAIRN_REPOSITORY returned other bytes"
    );
}

#[test]
fn init_rejects_existing_repository() {
    let repo = Repo::init();
    let config = fs::read(repo.path.join("config")).expect("init wrote no config file");

    let mut args = vec!["init"];
    args.extend(crate::harness::FAST_KDF);
    let second = repo.run(&args);
    assert_ne!(
        second.code(),
        Some(0),
        "init over an existing repository must fail\n{}",
        second.describe()
    );
    assert_eq!(
        fs::read(repo.path.join("config")).expect("config disappeared"),
        config,
        "a failed init changed the existing config"
    );
}

#[test]
fn init_rejects_invalid_chunk_sizes() {
    let cases: [(&str, [&str; 3]); 3] = [
        ("avg not a power of two", ["1024", "3000", "16384"]),
        ("min below 64", ["32", "1024", "4096"]),
        ("min above avg", ["8192", "4096", "16384"]),
    ];
    for (case, [min, avg, max]) in cases {
        let repo = Repo::uninitialized();
        let mut args = vec!["init"];
        args.extend(crate::harness::FAST_KDF);
        args.extend(["--chunk-min", min, "--chunk-avg", avg, "--chunk-max", max]);
        let output = repo.run(&args);
        assert_ne!(
            output.code(),
            Some(0),
            "init with {case} must fail\n{}",
            output.describe()
        );
        assert!(
            !repo.path.join("config").exists(),
            "init with {case} failed but wrote a config file"
        );
    }
}

/// A backup whose summary reader stops early (`cairn backup ... | head -1`)
/// has saved its snapshot, so it must neither fail nor be audited as failed.
#[test]
fn backup_to_closed_stdout() {
    let repo = Repo::init();
    let path = repo.work_path("data.bin");
    fs::write(&path, random_bytes(MIB, 77)).expect("write input");
    let mut command = repo.command(&["backup", path_arg(&path)]);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("start cairn backup");
    // Closing the read end before cairn prints makes every write fail with
    // a broken pipe.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait for cairn backup");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "a saved backup should exit 0 when its output is closed\n{stderr}"
    );
    let ids = repo.snapshot_ids();
    assert_eq!(ids.len(), 1, "the backup should have saved one snapshot");

    let created = repo
        .run(&["--json", "audit", "--command", "init"])
        .expect_success("audit of init")
        .json();
    assert_eq!(
        created.as_array().map(Vec::len),
        Some(1),
        "the audit trail should start with the creation of the repository: {created}"
    );

    let audit = repo
        .run(&["--json", "audit", "--command", "backup"])
        .expect_success("audit")
        .json();
    let record = audit
        .as_array()
        .and_then(|records| records.last())
        .expect("an audit record of the backup");
    assert_eq!(record["outcome"], "success", "{audit}");
    assert_eq!(
        array_field(record, "snapshots")
            .first()
            .and_then(Value::as_str),
        Some(ids[0].as_str()),
        "the audit record should name the saved snapshot: {audit}"
    );
}
