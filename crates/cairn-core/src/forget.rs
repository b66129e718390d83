//! Removing snapshots: [`Repository::forget`].
//!
//! Forgetting deletes only snapshot objects. The packs and index objects
//! that the removed snapshots referenced stay in place until garbage
//! collection (`cairn prune`) finds that no snapshot needs them.

use std::collections::HashSet;

use tracing::{debug, info};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::lock::Lock;
use crate::repo::Repository;
use crate::snapshot;

impl Repository {
    /// Deletes the snapshot objects `ids` from the backend and from the local
    /// index, under a shared lock.
    ///
    /// Every id must name a snapshot in the index, or nothing is deleted and
    /// [`Error::SnapshotNotFound`] is returned. A failure part way leaves the
    /// snapshots before it deleted and the rest in place; running the same
    /// forget again finishes the job. When this returns, the deletions are
    /// durable on the local filesystem backend.
    pub fn forget(&mut self, ids: &[Id]) -> Result<()> {
        let known: HashSet<Id> = self
            .index
            .snapshots()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if let Some(unknown) = ids.iter().find(|id| !known.contains(id)) {
            return Err(Error::SnapshotNotFound {
                query: unknown.to_hex(),
            });
        }
        let _lock = Lock::shared(&self.storage, &self.keys, "forget")?;
        info!(snapshots = ids.len(), "forget started");
        let mut paths = Vec::with_capacity(ids.len());
        for id in ids {
            let path = snapshot::snapshot_path(id);
            self.storage.delete(&path)?;
            self.index.remove_snapshot(id)?;
            debug!(snapshot = %path, "snapshot deleted");
            paths.push(path);
        }
        // IMPORTANT: the deletions must be durable before garbage collection
        // deletes the data of these snapshots. Otherwise a power loss could
        // bring back a snapshot whose packs are gone.
        self.storage.sync_dirs(paths.iter().map(String::as_str))?;
        info!(snapshots = ids.len(), "forget finished");
        Ok(())
    }
}
