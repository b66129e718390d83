//! The SQLite index cache under CAIRN_CACHE_DIR is only a cache: losing it or
//! finding it corrupted must not break backups, restores or checks.

use std::fs;
use std::path::PathBuf;

use crate::harness::{
    MIB, Repo, assert_same_bytes, files_under, random_bytes, snapshot_id, u64_field,
};

/// Returns the SQLite database files under the cache directory.
fn sqlite_files(repo: &Repo) -> Vec<PathBuf> {
    files_under(&repo.cache)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "sqlite"))
        .collect()
}

/// After the cache was removed or damaged: backs up the same data again, restores
/// both snapshots and runs `check --read-data`.
fn assert_works_without_cache(repo: &Repo, data: &[u8], first_id: &str, case: &str) {
    let second = repo.backup_stdin("db.dump", data);
    let second_id = snapshot_id(&second);
    let stored = u64_field(&second, "stored_bytes");
    assert!(
        stored < data.len() as u64 / 100,
        "{case}: backup of known data stored {stored} bytes, expected less than 1% of {}, \
         so the index was not rebuilt from the repository",
        data.len()
    );

    let restored_first = repo.restore_stdout(first_id);
    assert_same_bytes(&restored_first, data, &format!("{case}: first snapshot"));
    let restored_second = repo.restore_stdout(&second_id);
    assert_same_bytes(&restored_second, data, &format!("{case}: second snapshot"));

    let check = repo.run(&["check", "--read-data"]);
    assert_eq!(
        check.code(),
        Some(0),
        "{case}: check --read-data should find no damage\n{}",
        check.describe()
    );
}

#[test]
fn cache_deleted_still_works() {
    let repo = Repo::init();
    let data = random_bytes(4 * MIB, 60);
    let first_id = snapshot_id(&repo.backup_stdin("db.dump", &data));
    assert!(
        !sqlite_files(&repo).is_empty(),
        "backup created no .sqlite file under CAIRN_CACHE_DIR {:?}",
        repo.cache
    );

    fs::remove_dir_all(&repo.cache).expect("failed to delete the cache directory");
    assert_works_without_cache(&repo, &data, &first_id, "deleted cache");
}

#[test]
fn cache_corrupted_still_works() {
    let repo = Repo::init();
    let data = random_bytes(4 * MIB, 61);
    let first_id = snapshot_id(&repo.backup_stdin("db.dump", &data));
    let databases = sqlite_files(&repo);
    assert!(
        !databases.is_empty(),
        "backup created no .sqlite file under CAIRN_CACHE_DIR {:?}",
        repo.cache
    );

    let mut garbage = b"this is not an SQLite database\n".repeat(64);
    garbage.extend(random_bytes(8192, 62));
    for database in &databases {
        fs::write(database, &garbage)
            .unwrap_or_else(|e| panic!("failed to overwrite {database:?}: {e}"));
    }
    assert_works_without_cache(&repo, &data, &first_id, "corrupted cache");
}
