//! Round trips through the library: backup then restore, on a real local
//! repository in a temporary folder.

mod allocation;
mod parsers;

use std::io::Cursor;

use cairn_core::Repository;
use cairn_core::backup::{BackupOptions, NoProgress, Source};
use cairn_core::chunker::ChunkerParams;
use cairn_core::keyfile::KdfParams;
use cairn_core::repo::InitOptions;
use cairn_core::restore::NoRestoreProgress;
use cairn_core::storage::Storage;
use proptest::prelude::*;

const PASSPHRASE: &[u8] = b"engine test passphrase";

struct Fixture {
    _dir: tempfile::TempDir,
    repo: std::path::PathBuf,
    cache: std::path::PathBuf,
}

fn small_options() -> InitOptions {
    InitOptions {
        chunker: ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
            normalization: 1,
        },
        compression_level: 3,
        pack_size: 64 * 1024,
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let cache = dir.path().join("cache");
    let storage = Storage::create_local(&repo).expect("storage");
    Repository::init(storage, PASSPHRASE, &small_options(), &cache).expect("init");
    Fixture {
        _dir: dir,
        repo,
        cache,
    }
}

fn open(fixture: &Fixture) -> Repository {
    let storage = Storage::open_local(&fixture.repo).expect("storage");
    Repository::open(storage, PASSPHRASE, &fixture.cache).expect("open")
}

fn backup(repo: &mut Repository, name: &str, data: &[u8]) -> cairn_core::backup::BackupSummary {
    let source = Source {
        name: name.to_string(),
        reader: Box::new(Cursor::new(data.to_vec())),
        producer: None,
    };
    let options = BackupOptions {
        allow_empty: true,
        ..BackupOptions::default()
    };
    repo.backup(vec![source], &options, &NoProgress)
        .expect("backup")
}

fn restore(repo: &Repository, snapshot: &str, entry: &str) -> Vec<u8> {
    let (id, snapshot) = repo.find_snapshot(snapshot).expect("find snapshot");
    let entry = repo
        .select_entry(&id, &snapshot, Some(entry))
        .expect("entry");
    let mut out = Vec::new();
    repo.restore_entry(entry, &mut out, &NoRestoreProgress)
        .expect("restore");
    out
}

fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn edge_sizes_round_trip() {
    let fixture = fixture();
    let mut repo = open(&fixture);
    let sizes = [
        0usize,
        1,
        255,
        256,
        1024,
        4095,
        4096,
        4097,
        8192,
        3 * 4096,
        64 * 1024,
        200_003,
    ];
    for (i, size) in sizes.iter().enumerate() {
        let data = pseudo_random(*size, i as u64 + 1);
        let summary = backup(&mut repo, "edge", &data);
        let restored = restore(&repo, &summary.snapshot, "edge");
        assert_eq!(restored.len(), data.len(), "length of {size}-byte stream");
        assert!(restored == data, "content of {size}-byte stream differs");
    }
}

#[test]
fn repeated_backup_stores_nothing_new() {
    let fixture = fixture();
    let mut repo = open(&fixture);
    let data = pseudo_random(500_000, 99);
    let first = backup(&mut repo, "a", &data);
    let second = backup(&mut repo, "a", &data);
    assert!(
        first.stored_bytes > 400_000,
        "first backup stored {}",
        first.stored_bytes
    );
    assert_eq!(second.new_bytes, 0, "an unchanged stream added new chunks");
    assert_eq!(second.stored_bytes, 0, "an unchanged stream added bytes");
    assert!(restore(&repo, &second.snapshot, "a") == data);
}

#[test]
fn small_edit_stores_little() {
    let fixture = fixture();
    let mut repo = open(&fixture);
    let data = pseudo_random(1_000_000, 5);
    backup(&mut repo, "a", &data);
    let mut edited = data.clone();
    edited.splice(400_000..400_000, b"one new row\n".iter().copied());
    edited[800_000] ^= 0xff;
    let second = backup(&mut repo, "a", &edited);
    assert!(
        second.new_bytes < 30_000,
        "two small edits stored {} new bytes",
        second.new_bytes
    );
    assert!(restore(&repo, "latest", "a") == edited);
}

#[test]
fn reopened_repository_restores() {
    let fixture = fixture();
    let data = pseudo_random(300_000, 11);
    let id = {
        let mut repo = open(&fixture);
        backup(&mut repo, "a", &data).snapshot
    };
    std::fs::remove_dir_all(&fixture.cache).expect("delete cache");
    let repo = open(&fixture);
    assert!(
        restore(&repo, &id[..10], "a") == data,
        "restore after cache loss differs"
    );
    let report = repo
        .check(
            cairn_core::check::ReadData::All,
            &cairn_core::check::NoCheckProgress,
        )
        .expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn wrong_passphrase_is_reported() {
    let fixture = fixture();
    let storage = Storage::open_local(&fixture.repo).expect("storage");
    let result = Repository::open(storage, b"not the passphrase", &fixture.cache);
    assert!(
        matches!(result, Err(cairn_core::Error::WrongPassphrase { tried: 1 })),
        "unexpected result: {:?}",
        result.err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_streams_round_trip(
        len in prop_oneof![Just(0usize), Just(1usize), 0usize..300_000],
        seed in 1u64..u64::MAX,
    ) {
        let fixture = fixture();
        let mut repo = open(&fixture);
        let data = pseudo_random(len, seed);
        let summary = backup(&mut repo, "p", &data);
        prop_assert_eq!(summary.bytes_read, len as u64);
        let restored = restore(&repo, &summary.snapshot, "p");
        prop_assert!(restored == data);
    }
}

fn backup_at(
    repo: &mut Repository,
    name: &str,
    data: &[u8],
    time: &str,
) -> cairn_core::Result<cairn_core::backup::BackupSummary> {
    let source = Source {
        name: name.to_string(),
        reader: Box::new(Cursor::new(data.to_vec())),
        producer: None,
    };
    let options = BackupOptions {
        time: Some(time.to_string()),
        ..BackupOptions::default()
    };
    repo.backup(vec![source], &options, &NoProgress)
}

fn object_count(fixture: &Fixture, prefix: &str) -> usize {
    let storage = Storage::open_local(&fixture.repo).expect("storage");
    storage.list(prefix).expect("list").len()
}

#[test]
fn backup_records_given_time_in_utc() {
    let fixture = fixture();
    let mut repo = open(&fixture);
    let summary =
        backup_at(&mut repo, "a", b"some data", "2026-12-03T03:00:00+01:00").expect("backup");
    let (_, snapshot) = repo.find_snapshot(&summary.snapshot).expect("find");
    assert_eq!(snapshot.time, "2026-12-03T02:00:00.000000000Z");
    assert!(
        snapshot.finished >= snapshot.time && snapshot.finished.starts_with("2026-12-03T02:00:"),
        "finished {} should follow the given start time",
        snapshot.finished
    );

    let rejected = backup_at(&mut repo, "a", b"more data", "3 December 2026");
    assert!(
        matches!(rejected, Err(cairn_core::Error::Invalid(_))),
        "unexpected result: {:?}",
        rejected.err()
    );
    assert_eq!(
        object_count(&fixture, "snapshots/"),
        1,
        "a rejected backup wrote a snapshot"
    );
}

#[test]
fn forget_deletes_only_snapshot_objects() {
    let fixture = fixture();
    let mut repo = open(&fixture);
    let old_data = pseudo_random(100_000, 5);
    let new_data = pseudo_random(100_000, 6);
    let old = backup_at(&mut repo, "a", &old_data, "2026-12-01T02:00:00Z").expect("backup");
    let new = backup_at(&mut repo, "a", &new_data, "2026-12-02T02:00:00Z").expect("backup");
    let packs_before = object_count(&fixture, "data/");
    let index_before = object_count(&fixture, "index/");

    let old_id = cairn_core::Id::from_hex(&old.snapshot).expect("id");
    repo.forget(&[old_id]).expect("forget");

    assert_eq!(object_count(&fixture, "snapshots/"), 1);
    assert_eq!(
        object_count(&fixture, "data/"),
        packs_before,
        "forget touched packs"
    );
    assert_eq!(
        object_count(&fixture, "index/"),
        index_before,
        "forget touched index objects"
    );
    assert_eq!(
        object_count(&fixture, "locks/"),
        0,
        "forget left its lock behind"
    );
    let listed: Vec<String> = repo
        .index
        .snapshots()
        .expect("snapshots")
        .iter()
        .map(|(id, _)| id.to_hex())
        .collect();
    assert_eq!(listed, vec![new.snapshot.clone()]);

    // A fresh cache rebuilt from the backend agrees.
    let storage = Storage::open_local(&fixture.repo).expect("storage");
    let fresh_cache = fixture._dir.path().join("fresh-cache");
    let reopened = Repository::open(storage, PASSPHRASE, &fresh_cache).expect("open");
    assert_eq!(reopened.index.snapshots().expect("snapshots").len(), 1);
    assert!(restore(&reopened, &new.snapshot, "a") == new_data);
}

#[test]
fn forget_unknown_id_deletes_nothing() {
    let fixture = fixture();
    let mut repo = open(&fixture);
    let kept = backup_at(&mut repo, "a", b"data", "2026-12-01T02:00:00Z").expect("backup");
    let kept_id = cairn_core::Id::from_hex(&kept.snapshot).expect("id");
    let unknown = cairn_core::Id([7; 32]);
    let result = repo.forget(&[kept_id, unknown]);
    assert!(
        matches!(result, Err(cairn_core::Error::SnapshotNotFound { .. })),
        "unexpected result: {result:?}"
    );
    assert_eq!(object_count(&fixture, "snapshots/"), 1);
    assert_eq!(repo.index.snapshots().expect("snapshots").len(), 1);
}

/// Restores `entry` and returns the error text, or `None` when it restored.
fn restore_error(repo: &Repository, entry: &cairn_core::snapshot::Entry) -> Option<String> {
    let mut out = Vec::new();
    repo.restore_entry(entry, &mut out, &NoRestoreProgress)
        .err()
        .map(|e| e.to_string())
}

/// Backs up a stream long enough for several chunk lists and returns it
/// with its snapshot.
fn backup_several_lists(repo: &mut Repository) -> (Vec<u8>, cairn_core::snapshot::Snapshot) {
    // Over 8,192 chunks of about 1 KiB, so the list length cap ends a list
    // even when no chunk id happens to match the content-defined boundary
    // (about 2% of repository keys at 4,000 chunks).
    let data = pseudo_random(16 << 20, 7);
    let summary = backup(repo, "db.dump", &data);
    let (_, snapshot) = repo.find_snapshot(&summary.snapshot).expect("find");
    assert!(
        snapshot.entries[0].chunks > 8192,
        "expected more chunks than one list holds, got {}",
        snapshot.entries[0].chunks
    );
    assert!(
        snapshot.entries[0].lists.len() >= 2,
        "expected several chunk lists"
    );
    (data, snapshot)
}

#[test]
fn entry_hash_detects_reordered_lists() {
    let fixture = fixture();
    let mut repo = open(&fixture);
    let (_, snapshot) = backup_several_lists(&mut repo);
    assert_eq!(
        snapshot.format_version,
        cairn_core::snapshot::SNAPSHOT_VERSION
    );
    let entry = &snapshot.entries[0];
    assert!(entry.hash.is_none(), "format 2 wrote a whole-stream hash");

    // The same chunk lists in another order add up to the same size and
    // chunk count, so only the sequence hash distinguishes the streams.
    let mut swapped = entry.clone();
    swapped.lists.swap(0, 1);
    let error = restore_error(&repo, &swapped).expect("reordered lists restored");
    assert!(error.contains("chunk sequence"), "{error}");

    let mut wrong = entry.clone();
    wrong.sequence_hash = Some("0".repeat(64));
    let error = restore_error(&repo, &wrong).expect("wrong sequence hash accepted");
    assert!(error.contains("chunk sequence"), "{error}");

    // An entry with no hash at all is refused, not restored unchecked.
    let mut unchecked = entry.clone();
    unchecked.sequence_hash = None;
    let error = restore_error(&repo, &unchecked).expect("entry without hash restored");
    assert!(error.contains("records no hash"), "{error}");
    let mut manifest = snapshot.clone();
    manifest.entries[0].sequence_hash = None;
    let (id, bytes) = manifest.encode(&repo.keys).expect("encode");
    let error = cairn_core::snapshot::Snapshot::decode(&repo.keys, &id, &bytes)
        .expect_err("format 2 without sequence hash");
    assert!(
        error.to_string().contains("no valid sequence_hash"),
        "{error}"
    );
}

#[test]
fn format_1_snapshots_still_restore() {
    use cairn_core::snapshot::{self, Snapshot};

    let fixture = fixture();
    let mut repo = open(&fixture);
    let (data, current) = backup_several_lists(&mut repo);

    // A format 1 manifest, as cairn wrote before the sequence hash: its
    // entry carries a keyed hash of the whole stream.
    let mut old = current.clone();
    old.format_version = 1;
    let mut stream = repo.keys.stream_hasher();
    stream.update(&data);
    old.entries[0].hash = Some(stream.finalize().to_hex().to_string());
    old.entries[0].sequence_hash = None;
    let (old_id, bytes) = old.encode(&repo.keys).expect("encode");
    repo.storage
        .write(&snapshot::snapshot_path(&old_id), bytes)
        .expect("write format 1 manifest");
    drop(repo);
    let repo = open(&fixture);
    assert!(
        restore(&repo, &old_id.to_hex(), "db.dump") == data,
        "format 1 snapshot restored different bytes"
    );

    let mut tampered = old.entries[0].clone();
    tampered.hash = Some("0".repeat(64));
    let error = restore_error(&repo, &tampered).expect("wrong stream hash accepted");
    assert!(error.contains("stream hash"), "{error}");

    // A format 1 entry without its hash is damaged, not silently unchecked.
    old.entries[0].hash = None;
    let (id, bytes) = old.encode(&repo.keys).expect("encode");
    let error = Snapshot::decode(&repo.keys, &id, &bytes).expect_err("format 1 without hash");
    assert!(error.to_string().contains("no valid hash"), "{error}");
}
