//! A backup killed with SIGKILL while it writes packs must leave a repository that
//! checks clean, lists no new snapshot and accepts the next backup.

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{MIB, Repo, assert_same_bytes, random_bytes, snapshot_id};

/// Maximum wait for the killed backup to write its first pack.
const FIRST_PACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process that is killed with SIGKILL, by its PID, when the guard drops,
/// so that a failing assertion does not leave it running.
struct KillOnDrop {
    child: Child,
    name: &'static str,
}

impl KillOnDrop {
    fn kill(&mut self) {
        // kill() fails only when the child was already reaped, which is fine here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn has_exited(&mut self) -> bool {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("failed to poll {}: {e}", self.name))
            .is_some()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn killed_backup_leaves_repository_usable() {
    let repo = Repo::init_with(&["--pack-size", "1048576"]);
    let earlier_data = random_bytes(100_000, 70);
    let earlier_id = snapshot_id(&repo.backup_stdin("earlier.dump", &earlier_data));
    let snapshots_before = repo.snapshots();
    let packs_before = repo.pack_files().len();

    // The producer writes 8 MiB and then keeps the pipe open, so cairn has data for
    // several packs but its input never ends. `exec` makes the PID of
    // the shell the PID of `sleep`, so killing that PID ends the whole producer.
    let mut producer = Command::new("sh");
    producer
        .args(["-c", "head -c 8388608 /dev/urandom; exec sleep 60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut producer = KillOnDrop {
        child: producer.spawn().expect("failed to start the producer"),
        name: "producer",
    };
    let pipe = producer
        .child
        .stdout
        .take()
        .expect("producer stdout was piped");

    let mut backup = repo.command(&["backup", "--name", "crash.dump", "--stdin"]);
    backup
        .stdin(Stdio::from(pipe))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut backup = KillOnDrop {
        child: backup.spawn().expect("failed to start cairn backup"),
        name: "cairn backup",
    };

    let deadline = Instant::now() + FIRST_PACK_TIMEOUT;
    while repo.pack_files().len() <= packs_before {
        assert!(
            !backup.has_exited(),
            "cairn backup exited before it wrote a pack, although its input was still open"
        );
        assert!(
            Instant::now() < deadline,
            "cairn backup wrote no file under data/ within {FIRST_PACK_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    backup.kill();
    producer.kill();

    let check = repo.run(&["check", "--read-data"]);
    assert_eq!(
        check.code(),
        Some(0),
        "check --read-data after a killed backup should find no damage\n{}",
        check.describe()
    );
    assert_eq!(
        repo.snapshots(),
        snapshots_before,
        "the killed backup changed snapshots --json"
    );

    let restored_earlier = repo.restore_stdout(&earlier_id);
    assert_same_bytes(
        &restored_earlier,
        &earlier_data,
        "snapshot from before the killed backup",
    );

    let data = random_bytes(3 * MIB, 71);
    let new_id = snapshot_id(&repo.backup_stdin("after-crash.dump", &data));
    let restored = repo.restore_stdout(&new_id);
    assert_same_bytes(&restored, &data, "backup made after the killed backup");
}
