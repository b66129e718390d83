//! `cairn key`: adding, listing, changing and removing the passphrases that open a
//! repository.

use std::fs;

use serde_json::Value;

use crate::harness::{
    FAST_KDF, Output, PASSWORD, Repo, assert_same_bytes, files_under, path_arg, run_command,
    snapshot_id, string_field,
};

const SECOND_PASSWORD: &str = "a second, different passphrase";

/// Runs `cairn --repo PATH ARGS...` with `password` as the current passphrase and,
/// when given, `new_password` in CAIRN_NEW_PASSWORD.
fn run_as(repo: &Repo, password: &str, new_password: Option<&str>, args: &[&str]) -> Output {
    let mut command = repo.command(args);
    command.env("CAIRN_PASSWORD", password);
    if let Some(new_password) = new_password {
        command.env("CAIRN_NEW_PASSWORD", new_password);
    }
    run_command(command, &format!("cairn {}", args.join(" ")), None)
}

/// Runs `cairn key add` with fast KDF settings and returns the new key's id.
fn add_key(repo: &Repo, password: &str, new_password: &str) -> String {
    let mut args = vec!["--json", "key", "add"];
    args.extend(FAST_KDF);
    let output = run_as(repo, password, Some(new_password), &args).expect_success("key add");
    let added = string_field(&output.json(), "added");
    added
        .strip_prefix("keys/")
        .unwrap_or_else(|| panic!("key add printed {added:?}, expected keys/<id>"))
        .to_string()
}

/// Returns the parsed `cairn key list --json` array.
fn list_keys(repo: &Repo, password: &str) -> Vec<Value> {
    let output =
        run_as(repo, password, None, &["--json", "key", "list"]).expect_success("key list");
    match output.json() {
        Value::Array(keys) => keys,
        other => panic!("key list --json printed {other}, expected a JSON array"),
    }
}

/// Returns the id of the key that `key list` marks as current for `password`.
fn current_key(repo: &Repo, password: &str) -> String {
    let keys = list_keys(repo, password);
    let current: Vec<&Value> = keys
        .iter()
        .filter(|key| key.get("current") == Some(&Value::Bool(true)))
        .collect();
    assert_eq!(
        current.len(),
        1,
        "key list should mark exactly one key as current: {keys:?}"
    );
    string_field(current[0], "id")
}

fn assert_opens(repo: &Repo, password: &str, label: &str) {
    let output = run_as(repo, password, None, &["snapshots"]);
    assert_eq!(
        output.code(),
        Some(0),
        "{label} should open the repository\n{}",
        output.describe()
    );
}

fn assert_does_not_open(repo: &Repo, password: &str, label: &str) {
    let output = run_as(repo, password, None, &["snapshots"]);
    assert_eq!(
        output.code(),
        Some(4),
        "{label} should no longer open the repository (exit 4)\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains("wrong passphrase"),
        "{label}: the error should say the passphrase is wrong, stderr:\n{}",
        output.stderr
    );
}

fn assert_rejected(output: &Output, expected: &str, action: &str) {
    assert_eq!(
        output.code(),
        Some(2),
        "{action} should be rejected with exit code 2\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains(expected),
        "{action} should explain the rejection with {expected:?}, stderr:\n{}",
        output.stderr
    );
}

#[test]
fn second_key_opens_same_data() {
    let repo = Repo::init();
    let data = b"rows of a small table".repeat(1000);
    let id = snapshot_id(&repo.backup_stdin("db.dump", &data));

    let added = add_key(&repo, PASSWORD, SECOND_PASSWORD);

    assert_eq!(
        list_keys(&repo, PASSWORD).len(),
        2,
        "key add should leave two key objects"
    );
    assert_opens(&repo, PASSWORD, "the first passphrase");
    assert_opens(&repo, SECOND_PASSWORD, "the second passphrase");
    assert_eq!(current_key(&repo, SECOND_PASSWORD), added);

    let restored = run_as(&repo, SECOND_PASSWORD, None, &["restore", &id, "--stdout"])
        .expect_success("restore with the second passphrase");
    assert_same_bytes(
        &restored.stdout,
        &data,
        "restore with the second passphrase",
    );
}

#[test]
fn list_marks_current_key() {
    let repo = Repo::init();
    let first = current_key(&repo, PASSWORD);
    let second = add_key(&repo, PASSWORD, SECOND_PASSWORD);
    assert_ne!(first, second, "the added key should get a new id");

    assert_eq!(current_key(&repo, PASSWORD), first);
    assert_eq!(current_key(&repo, SECOND_PASSWORD), second);

    let keys = list_keys(&repo, PASSWORD);
    for key in &keys {
        let id = string_field(key, "id");
        assert_eq!(id.len(), 32, "key id {id:?} should be 32 hex digits");
        assert_eq!(string_field(key, "path"), format!("keys/{id}"));
        assert!(
            key.get("created").and_then(Value::as_str).is_some(),
            "key list should show when {id} was created: {key}"
        );
        let kdf = key
            .get("kdf")
            .unwrap_or_else(|| panic!("key list should show the KDF of {id}: {key}"));
        assert_eq!(kdf.get("memory_kib"), Some(&Value::from(1024)));
        assert_eq!(kdf.get("iterations"), Some(&Value::from(1)));
    }

    let text = run_as(&repo, SECOND_PASSWORD, None, &["key", "list"]).expect_success("key list");
    let stdout = String::from_utf8_lossy(&text.stdout);
    let marked: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with('*'))
        .collect();
    assert_eq!(
        marked.len(),
        1,
        "key list should mark one line with *, stdout:\n{stdout}"
    );
    assert!(
        marked[0].contains(&second),
        "key list should mark key {second} for the second passphrase, stdout:\n{stdout}"
    );
}

#[test]
fn passwd_replaces_passphrase() {
    let repo = Repo::init();
    let data = b"before the passphrase change".repeat(500);
    let id = snapshot_id(&repo.backup_stdin("db.dump", &data));
    let old_key = current_key(&repo, PASSWORD);

    let mut args = vec!["--json", "key", "passwd"];
    args.extend(FAST_KDF);
    let changed =
        run_as(&repo, PASSWORD, Some(SECOND_PASSWORD), &args).expect_success("key passwd");
    let summary = changed.json();
    assert_eq!(string_field(&summary, "removed"), format!("keys/{old_key}"));

    assert_does_not_open(&repo, PASSWORD, "the old passphrase");
    assert_opens(&repo, SECOND_PASSWORD, "the new passphrase");
    let keys = list_keys(&repo, SECOND_PASSWORD);
    assert_eq!(
        keys.len(),
        1,
        "key passwd should leave one key object: {keys:?}"
    );
    assert_eq!(
        format!("keys/{}", current_key(&repo, SECOND_PASSWORD)),
        string_field(&summary, "added")
    );

    let restored = run_as(&repo, SECOND_PASSWORD, None, &["restore", &id, "--stdout"])
        .expect_success("restore with the new passphrase");
    assert_same_bytes(&restored.stdout, &data, "restore after key passwd");
}

#[test]
fn new_passphrase_from_file() {
    let repo = Repo::init();
    let file = repo.work_path("new-passphrase");
    fs::write(&file, format!("{SECOND_PASSWORD}\n")).expect("failed to write the passphrase file");

    let mut args = vec!["key", "add"];
    args.extend(FAST_KDF);
    let mut command = repo.command(&args);
    command.env("CAIRN_NEW_PASSWORD_FILE", path_arg(&file));
    run_command(command, "cairn key add (CAIRN_NEW_PASSWORD_FILE)", None)
        .expect_success("key add with CAIRN_NEW_PASSWORD_FILE");

    assert_opens(&repo, SECOND_PASSWORD, "the passphrase from the file");
}

#[test]
fn two_new_passphrase_sources_rejected() {
    let repo = Repo::init();
    let file = repo.work_path("new-passphrase");
    fs::write(&file, SECOND_PASSWORD).expect("failed to write the passphrase file");

    let mut command = repo.command(&["key", "add"]);
    command
        .env("CAIRN_NEW_PASSWORD_FILE", path_arg(&file))
        .env("CAIRN_NEW_PASSWORD", SECOND_PASSWORD);
    let output = run_command(command, "cairn key add (two sources)", None);
    assert_rejected(
        &output,
        "CAIRN_NEW_PASSWORD_FILE",
        "key add with two new-passphrase sources",
    );
    assert_eq!(
        list_keys(&repo, PASSWORD).len(),
        1,
        "a rejected key add wrote a key"
    );
}

#[test]
fn missing_new_passphrase_rejected() {
    let repo = Repo::init();
    let output = repo.run(&["key", "add"]);
    assert_ne!(
        output.code(),
        Some(0),
        "key add without a new passphrase should fail\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains("CAIRN_NEW_PASSWORD"),
        "key add without a new passphrase should name CAIRN_NEW_PASSWORD, stderr:\n{}",
        output.stderr
    );
    assert_eq!(
        list_keys(&repo, PASSWORD).len(),
        1,
        "a failed key add wrote a key"
    );
}

#[test]
fn remove_last_key_rejected() {
    let repo = Repo::init();
    let only = current_key(&repo, PASSWORD);

    for args in [
        vec!["key", "remove", only.as_str()],
        vec!["key", "remove", "--allow-current", only.as_str()],
    ] {
        let output = repo.run(&args);
        assert_rejected(
            &output,
            "only intact key object",
            &format!("cairn {}", args.join(" ")),
        );
    }
    assert_eq!(list_keys(&repo, PASSWORD).len(), 1);
    assert_opens(&repo, PASSWORD, "the only passphrase");
}

#[test]
fn remove_other_key() {
    let repo = Repo::init();
    let second = add_key(&repo, PASSWORD, SECOND_PASSWORD);

    let output = repo
        .run(&["--json", "key", "remove", &second[..8]])
        .expect_success("remove the second key by an 8-digit prefix");
    assert_eq!(
        string_field(&output.json(), "removed"),
        format!("keys/{second}")
    );

    assert_eq!(list_keys(&repo, PASSWORD).len(), 1);
    assert_opens(&repo, PASSWORD, "the first passphrase");
    assert_does_not_open(&repo, SECOND_PASSWORD, "the removed second passphrase");
}

#[test]
fn remove_current_key_needs_flag() {
    let repo = Repo::init();
    let first = current_key(&repo, PASSWORD);
    add_key(&repo, PASSWORD, SECOND_PASSWORD);

    let output = repo.run(&["key", "remove", &first]);
    assert_rejected(&output, "--allow-current", "key remove of the current key");
    assert_eq!(
        list_keys(&repo, PASSWORD).len(),
        2,
        "a rejected remove deleted a key"
    );
    assert_opens(
        &repo,
        PASSWORD,
        "the first passphrase after a rejected remove",
    );

    repo.run(&["key", "remove", "--allow-current", &first])
        .expect_success("key remove --allow-current");
    assert_does_not_open(&repo, PASSWORD, "the removed first passphrase");
    assert_opens(&repo, SECOND_PASSWORD, "the second passphrase");
}

#[test]
fn remove_unknown_key_rejected() {
    let repo = Repo::init();
    add_key(&repo, PASSWORD, SECOND_PASSWORD);

    for (key_id, expected) in [
        ("ffffffffffffffffffffffffffffffff0", "no key object matches"),
        ("", "the key id is empty"),
    ] {
        let output = repo.run(&["key", "remove", key_id]);
        assert_rejected(&output, expected, &format!("key remove {key_id:?}"));
    }
    assert_eq!(list_keys(&repo, PASSWORD).len(), 2);
}

/// A damaged key object is listed as damaged, and the error for a damaged key
/// differs from the one for a wrong passphrase.
#[test]
fn damaged_key_differs_from_wrong_passphrase() {
    let repo = Repo::init();
    let first = current_key(&repo, PASSWORD);
    let second = add_key(&repo, PASSWORD, SECOND_PASSWORD);
    let damaged = repo.path.join("keys").join(&second);
    let mut bytes = fs::read(&damaged).expect("failed to read the key object");
    bytes[100] ^= 0x01;
    fs::write(&damaged, bytes).expect("failed to write the key object");

    let keys = list_keys(&repo, PASSWORD);
    let listed = keys
        .iter()
        .find(|key| string_field(key, "id") == second)
        .unwrap_or_else(|| panic!("key list lost the damaged key {second}: {keys:?}"));
    assert!(
        string_field(listed, "damaged").contains("checksum mismatch"),
        "key list should say why {second} is damaged: {listed}"
    );

    assert_does_not_open(&repo, "not the passphrase", "a wrong passphrase");

    fs::remove_file(repo.path.join("keys").join(&first)).expect("failed to delete the first key");
    assert_eq!(files_under(&repo.path.join("keys")).len(), 1);
    let output = run_as(&repo, SECOND_PASSWORD, None, &["snapshots"]);
    assert_eq!(
        output.code(),
        Some(3),
        "opening with a damaged only key object should exit 3 (damaged data)\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains("is damaged") && !output.stderr.contains("wrong passphrase"),
        "a damaged key object should be reported as damaged, not as a wrong passphrase, stderr:\n{}",
        output.stderr
    );
}
