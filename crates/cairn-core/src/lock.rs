//! Lock objects (`locks/<random>`): who is using the repository.
//!
//! docs/gc.md describes the protocol and why it keeps a prune from deleting
//! data that a running backup references. In short: a lock is written, then
//! all locks are listed, and the new lock is withdrawn on conflict. Shared
//! locks conflict with live exclusive locks, and exclusive locks with every
//! other live lock. A thread refreshes the lock while the command runs. A
//! lock not refreshed for [`STALE_AFTER`], or left on this host by a process
//! that no longer exists, is stale and ignored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::crypto::{Domain, Keys};
use crate::error::{Error, Result};
use crate::object;
use crate::storage::Storage;

const MAGIC: &[u8; 8] = b"CAIRNLCK";

/// Interval between refreshes of a held lock.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Age of the last refresh after which other processes treat a lock as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Oldest last refresh with which a holder may still commit; the gap to
/// [`STALE_AFTER`] covers the commit and clock differences between hosts.
pub const COMMIT_WITHIN: Duration = Duration::from_secs(20 * 60);

/// Contents of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Command, such as `backup`.
    pub command: String,
    /// Creation time, RFC 3339.
    pub time: String,
    /// Last refresh time, RFC 3339.
    #[serde(default)]
    pub refreshed: Option<String>,
    /// Whether the lock excludes all other users.
    pub exclusive: bool,
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

impl LockInfo {
    /// Time since the last refresh (or creation), by this machine's clock.
    /// A time in the future counts as zero.
    pub fn age(&self, now: SystemTime) -> Duration {
        let stamp = self.refreshed.as_deref().unwrap_or(&self.time);
        parse_time(stamp)
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// Returns true when this host wrote the lock and its process is gone.
    pub fn is_dead_local_process(&self) -> bool {
        self.host == crate::host_name()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Returns true when the lock no longer protects anything.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        self.age(now) > STALE_AFTER || self.is_dead_local_process()
    }

    /// One-line description for messages.
    pub fn describe(&self, now: SystemTime) -> String {
        let state = if self.is_dead_local_process() {
            ", stale: that process no longer exists"
        } else if self.age(now) > STALE_AFTER {
            ", stale: not refreshed for over 30 minutes"
        } else {
            ""
        };
        format!(
            "{} lock of `cairn {}` (process {} on host {}, created {}, last refreshed {} ago{state})",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.command,
            self.pid,
            self.host,
            self.time,
            humantime::format_duration(Duration::from_secs(self.age(now).as_secs()))
        )
    }
}

/// A lock object as listed in the backend.
pub struct ListedLock {
    /// Object path.
    pub path: String,
    /// Decoded contents, or why they could not be read.
    pub info: Result<LockInfo>,
}

fn encode(keys: &Keys, info: &LockInfo) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(info).map_err(|e| Error::Invalid(e.to_string()))?;
    object::seal(keys, MAGIC, Domain::Lock, &body)
}

/// Reads every lock object.
pub fn list_locks(storage: &Storage, keys: &Keys) -> Result<Vec<ListedLock>> {
    let mut locks = Vec::new();
    for object in storage.list("locks/")? {
        let info = read(storage, keys, &object.path);
        if let Err(Error::Storage { source, .. }) = &info
            && source.kind() == opendal::ErrorKind::NotFound
        {
            continue;
        }
        locks.push(ListedLock {
            path: object.path,
            info,
        });
    }
    Ok(locks)
}

/// Reads one lock object.
pub fn read(storage: &Storage, keys: &Keys, path: &str) -> Result<LockInfo> {
    let bytes = storage.read(path)?;
    let body = object::open(keys, MAGIC, Domain::Lock, &bytes, path)?;
    serde_json::from_slice(&body).map_err(|e| Error::corrupt(path, format!("invalid lock: {e}")))
}

struct Shared {
    lost: AtomicBool,
    last_refresh: Mutex<Instant>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// A lock held in the backend; removed on drop.
pub struct Lock {
    storage: Storage,
    keys: Keys,
    path: String,
    exclusive: bool,
    shared: Arc<Shared>,
    refresher: Option<JoinHandle<()>>,
}

impl Lock {
    /// Takes a shared lock for `command`: fails if a live exclusive lock exists.
    pub fn shared(storage: &Storage, keys: &Keys, command: &str) -> Result<Lock> {
        Self::acquire(storage, keys, command, false)
    }

    /// Takes an exclusive lock for `command`: fails if any other live lock exists.
    pub fn exclusive(storage: &Storage, keys: &Keys, command: &str) -> Result<Lock> {
        Self::acquire(storage, keys, command, true)
    }

    fn acquire(storage: &Storage, keys: &Keys, command: &str, exclusive: bool) -> Result<Lock> {
        let now = crate::snapshot::now_rfc3339();
        let info = LockInfo {
            host: crate::host_name(),
            pid: std::process::id(),
            command: command.to_string(),
            time: now.clone(),
            refreshed: Some(now),
            exclusive,
        };
        let mut name = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut name);
        let path = format!("locks/{}", hex::encode(name));
        // IMPORTANT: the lock is written before the other locks are listed;
        // docs/gc.md explains why this order excludes overlapping holders.
        storage.write(&path, encode(keys, &info)?)?;
        let lock = Lock {
            storage: storage.clone(),
            keys: keys.clone(),
            path,
            exclusive,
            shared: Arc::new(Shared {
                lost: AtomicBool::new(false),
                last_refresh: Mutex::new(Instant::now()),
                stop: Mutex::new(false),
                wake: Condvar::new(),
            }),
            refresher: None,
        };
        // On conflict `lock` is dropped here, which deletes its object.
        lock.check_conflicts()?;
        let mut lock = lock;
        lock.start_refresher();
        debug!(lock = %lock.path, exclusive, command, "lock acquired");
        Ok(lock)
    }

    /// Lists the other locks and fails if one of them conflicts with this
    /// lock. Deletes stale locks of dead processes on this host.
    fn check_conflicts(&self) -> Result<()> {
        let now = SystemTime::now();
        for listed in list_locks(&self.storage, &self.keys)? {
            if listed.path == self.path {
                continue;
            }
            match listed.info {
                Ok(other) if other.is_dead_local_process() => {
                    info!(lock = %listed.path, holder = %other.describe(now), "removing the lock of a process that no longer exists");
                    if let Err(e) = self.storage.delete(&listed.path) {
                        warn!(lock = %listed.path, error = %e, "cannot remove stale lock");
                    }
                }
                Ok(other) if other.is_stale(now) => {
                    warn!(lock = %listed.path, holder = %other.describe(now), "ignoring stale lock; `cairn unlock` removes it");
                }
                Ok(other) if self.exclusive || other.exclusive => {
                    return Err(Error::Locked(format!(
                        "the repository is locked by {} ({}); wait for it to finish, or if that process is gone, run `cairn unlock`",
                        other.describe(now),
                        listed.path
                    )));
                }
                Ok(_) => {}
                Err(e) if self.exclusive => {
                    return Err(Error::Locked(format!(
                        "lock object {} cannot be read ({e}); if no cairn process is running, remove it with `cairn unlock --all`",
                        listed.path
                    )));
                }
                Err(e) => {
                    warn!(lock = %listed.path, error = %e, "ignoring unreadable lock object");
                }
            }
        }
        Ok(())
    }

    fn start_refresher(&mut self) {
        let storage = self.storage.clone();
        let keys = self.keys.clone();
        let path = self.path.clone();
        let shared = Arc::clone(&self.shared);
        let thread = std::thread::spawn(move || {
            loop {
                let stop = match shared.stop.lock() {
                    Ok(guard) => guard,
                    Err(_) => return,
                };
                // Waiting "while not stopped" also covers a stop requested
                // before this thread first waits, whose notification is gone.
                let (stop, _) =
                    match shared
                        .wake
                        .wait_timeout_while(stop, REFRESH_INTERVAL, |stop| !*stop)
                    {
                        Ok(result) => result,
                        Err(_) => return,
                    };
                if *stop {
                    return;
                }
                drop(stop);
                if let Err(e) = refresh(&storage, &keys, &path, &shared) {
                    warn!(lock = %path, error = %e, "lock refresh failed");
                }
                if shared.lost.load(Ordering::SeqCst) {
                    return;
                }
            }
        });
        self.refresher = Some(thread);
    }

    /// Object path of this lock.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Checks, right before committing, that this lock still protects the
    /// caller: not lost, refreshed recently, still present, and (for a
    /// shared lock) no live exclusive lock exists.
    pub fn ensure_held(&self) -> Result<()> {
        let lost = || {
            Error::Locked(format!(
                "lock {} was removed or expired while this command ran; nothing more is committed. Run the command again",
                self.path
            ))
        };
        if self.shared.lost.load(Ordering::SeqCst) {
            return Err(lost());
        }
        let last = self
            .shared
            .last_refresh
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX);
        if last > COMMIT_WITHIN {
            // A stale-looking lock may already have been removed by a prune;
            // refresh it, and commit only if it still exists.
            refresh(&self.storage, &self.keys, &self.path, &self.shared)?;
            if self.shared.lost.load(Ordering::SeqCst) {
                return Err(lost());
            }
        }
        if !self.storage.exists(&self.path)? {
            self.shared.lost.store(true, Ordering::SeqCst);
            return Err(lost());
        }
        self.check_conflicts()
    }
}

/// Rewrites the lock with a new refresh time, unless it was deleted.
fn refresh(storage: &Storage, keys: &Keys, path: &str, shared: &Shared) -> Result<()> {
    let mut info = match read(storage, keys, path) {
        Ok(info) => info,
        Err(Error::Storage { source, .. }) if source.kind() == opendal::ErrorKind::NotFound => {
            // Never re-create a lock that someone removed: the holder must stop.
            shared.lost.store(true, Ordering::SeqCst);
            warn!(lock = %path, "lock was removed by another process");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    info.refreshed = Some(crate::snapshot::now_rfc3339());
    storage.write(path, encode(keys, &info)?)?;
    if let Ok(mut last) = shared.last_refresh.lock() {
        *last = Instant::now();
    }
    Ok(())
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.shared.stop.lock() {
            *stop = true;
        }
        self.shared.wake.notify_all();
        if let Some(thread) = self.refresher.take() {
            let _ = thread.join();
        }
        if let Err(e) = self.storage.delete(&self.path) {
            warn!(lock = %self.path, error = %e, "cannot remove lock object; remove it with `cairn unlock`");
        }
    }
}

/// Deletes stale locks, or every lock with `all`. A lock counts as stale
/// when its holder on this host is gone, or when its last refresh is older
/// than `stale_after` (default [`STALE_AFTER`]). Returns what was removed.
pub fn unlock(
    storage: &Storage,
    keys: &Keys,
    all: bool,
    stale_after: Option<Duration>,
) -> Result<Vec<(String, String)>> {
    let now = SystemTime::now();
    let limit = stale_after.unwrap_or(STALE_AFTER);
    let mut removed = Vec::new();
    for listed in list_locks(storage, keys)? {
        let description = match &listed.info {
            Ok(info) if all || info.age(now) > limit || info.is_dead_local_process() => {
                info.describe(now)
            }
            Ok(_) => continue,
            Err(e) if all => format!("unreadable lock ({e})"),
            Err(_) => continue,
        };
        storage.delete(&listed.path)?;
        removed.push((listed.path, description));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn setup() -> (tempfile::TempDir, Storage, Keys) {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::create_local(&dir.path().join("repo")).expect("storage");
        (dir, storage, Keys::derive(SecretKey::from_bytes([8; 32])))
    }

    #[test]
    fn shared_locks_coexist() {
        let (_dir, storage, keys) = setup();
        let first = Lock::shared(&storage, &keys, "backup").expect("first");
        let second = Lock::shared(&storage, &keys, "backup").expect("second");
        first.ensure_held().expect("first still held");
        second.ensure_held().expect("second still held");
    }

    #[test]
    fn exclusive_conflicts_both_ways() {
        let (_dir, storage, keys) = setup();
        let shared = Lock::shared(&storage, &keys, "backup").expect("shared");
        let result = Lock::exclusive(&storage, &keys, "prune");
        assert!(
            matches!(result, Err(Error::Locked(_))),
            "exclusive taken beside a shared lock"
        );
        drop(shared);
        let exclusive = Lock::exclusive(&storage, &keys, "prune").expect("exclusive once alone");
        let result = Lock::shared(&storage, &keys, "backup");
        assert!(
            matches!(result, Err(Error::Locked(_))),
            "shared taken beside an exclusive lock"
        );
        drop(exclusive);
        assert!(
            storage.list("locks/").expect("list").is_empty(),
            "locks left behind"
        );
    }

    #[test]
    fn dead_local_process_lock_is_cleared() {
        let (_dir, storage, keys) = setup();
        let info = LockInfo {
            host: crate::host_name(),
            pid: u32::MAX - 7,
            command: "backup".into(),
            time: crate::snapshot::now_rfc3339(),
            refreshed: None,
            exclusive: true,
        };
        storage
            .write("locks/dead", encode(&keys, &info).expect("encode"))
            .expect("write");
        let lock = Lock::exclusive(&storage, &keys, "prune").expect("dead holder is ignored");
        assert!(
            !storage.exists("locks/dead").expect("stat"),
            "dead process lock not removed"
        );
        drop(lock);
    }

    #[test]
    fn removed_lock_is_lost() {
        let (_dir, storage, keys) = setup();
        let lock = Lock::shared(&storage, &keys, "backup").expect("lock");
        storage.delete(lock.path()).expect("delete under it");
        assert!(matches!(lock.ensure_held(), Err(Error::Locked(_))));
    }

    #[test]
    fn old_lock_is_stale() {
        let info = LockInfo {
            host: "elsewhere".into(),
            pid: 1,
            command: "backup".into(),
            time: "2020-01-01T00:00:00Z".into(),
            refreshed: Some("2020-01-01T00:00:00Z".into()),
            exclusive: false,
        };
        assert!(info.is_stale(SystemTime::now()));
        let fresh = LockInfo {
            refreshed: Some(crate::snapshot::now_rfc3339()),
            ..info
        };
        assert!(!fresh.is_stale(SystemTime::now()));
    }
}
