//! Lock objects (`locks/<random>`): who is using the repository.
//!
//! A backup writes a shared lock when it starts and removes it when it ends.
//! The lock names host, process id, command and start time, sealed like every
//! other metadata object.
//! NOTE: nothing reads locks yet; garbage collection, which must not delete
//! packs a running backup may reference, will honour them.

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::crypto::{Domain, Keys};
use crate::error::{Error, Result};
use crate::object;
use crate::storage::Storage;

const MAGIC: &[u8; 8] = b"CAIRNLCK";

/// Contents of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Command, such as `backup`.
    pub command: String,
    /// Start time, RFC 3339.
    pub time: String,
    /// Whether the lock excludes all other users.
    pub exclusive: bool,
}

/// A lock held in the backend; removed on drop.
pub struct Lock {
    storage: Storage,
    path: String,
}

impl Lock {
    /// Writes a shared lock for `command`.
    pub fn shared(storage: &Storage, keys: &Keys, command: &str) -> Result<Lock> {
        let info = LockInfo {
            host: crate::host_name(),
            pid: std::process::id(),
            command: command.to_string(),
            time: crate::snapshot::now_rfc3339(),
            exclusive: false,
        };
        let body = serde_json::to_vec(&info).map_err(|e| Error::Invalid(e.to_string()))?;
        let bytes = object::seal(keys, MAGIC, Domain::Lock, &body)?;
        let mut name = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut name);
        let path = format!("locks/{}", hex::encode(name));
        storage.write(&path, bytes)?;
        Ok(Lock {
            storage: storage.clone(),
            path,
        })
    }

    /// Reads a lock object.
    pub fn read(storage: &Storage, keys: &Keys, path: &str) -> Result<LockInfo> {
        let bytes = storage.read(path)?;
        let body = object::open(keys, MAGIC, Domain::Lock, &bytes, path)?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::corrupt(path, format!("invalid lock: {e}")))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Err(e) = self.storage.delete(&self.path) {
            warn!(lock = %self.path, error = %e, "cannot remove lock object; remove it by hand");
        }
    }
}
