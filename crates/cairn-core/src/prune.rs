//! Garbage collection: delete and repack packs that no snapshot needs.
//!
//! docs/gc.md gives the protocol and the argument for its safety. The steps
//! below follow it and carry its numbers; every write that must be durable
//! before a later deletion is marked `IMPORTANT:`.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::failpoint;
use crate::id::Id;
use crate::index_object::{self, PackRecord};
use crate::lock::Lock;
use crate::pack::{self, BlobEntry, PackBuilder};
use crate::repo::Repository;
use crate::snapshot::Snapshot;

/// Packs named by one index object written by prune or repair.
pub(crate) const PACKS_PER_INDEX_OBJECT: usize = 1024;

/// Settings of one prune.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Largest share of unused bytes a pack may keep before it is repacked,
    /// from 0.0 to 1.0.
    pub max_unused: f64,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.10,
            dry_run: false,
        }
    }
}

/// Outcome of a prune, or the plan of one with `dry_run`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Snapshots whose data was kept.
    pub snapshots: usize,
    /// Packs in the repository before.
    pub packs_before: usize,
    /// Bytes of packs before.
    pub bytes_before: u64,
    /// Packs deleted because no live blob was in them.
    pub packs_deleted: usize,
    /// Packs whose live blobs were copied into new packs, then deleted.
    pub packs_repacked: usize,
    /// Packs that no index object named (left by interrupted runs), deleted.
    pub unindexed_packs_deleted: usize,
    /// New packs written by repacking.
    pub packs_written: usize,
    /// Bytes copied into new packs.
    pub bytes_repacked: u64,
    /// Bytes of packs after; an estimate that leaves out new pack headers
    /// with `dry_run`.
    pub bytes_after: u64,
    /// Index objects replaced by the new index.
    pub index_objects_replaced: usize,
    /// Drill records of snapshots that no longer exist, deleted.
    pub drill_records_deleted: usize,
    /// Wall-clock seconds.
    pub duration_secs: f64,
}

impl PruneReport {
    /// Bytes the repository shrank by.
    pub fn bytes_freed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// Fate of one indexed pack.
enum Fate {
    Keep,
    Repack(Vec<BlobEntry>),
    Delete,
}

impl Repository {
    /// Deletes data that no snapshot needs; see docs/gc.md.
    pub fn prune(&mut self, options: PruneOptions) -> Result<PruneReport> {
        let started = Instant::now();
        let lock = Lock::exclusive(&self.storage, &self.keys, "prune")?;

        // Step 1: a fresh view of the backend.
        let sync = self.index.sync(&self.storage, &self.keys)?;
        if let Some((object, reason)) = sync.unreadable.first() {
            return Err(Error::corrupt(
                object.clone(),
                format!(
                    "{reason}; prune stopped before deleting anything, because the packs this index object names would look unused. Run `cairn check`"
                ),
            ));
        }
        if let Some(pack) = sync.missing_packs.first() {
            return Err(Error::corrupt(
                pack::pack_path(pack),
                "pack is missing or has the wrong size; prune stopped before deleting anything. Run `cairn check`",
            ));
        }
        let old_index_objects = self.storage.list("index/")?;
        let listed_packs = self.storage.list("data/")?;

        // Step 2: every blob a snapshot needs.
        let (snapshots, live) = self.live_blobs()?;

        // Step 3: classify packs.
        let packs = self.index.packs()?;
        let mut report = PruneReport {
            dry_run: options.dry_run,
            snapshots,
            packs_before: listed_packs.len(),
            bytes_before: listed_packs.iter().map(|o| o.size).sum(),
            ..PruneReport::default()
        };
        // Each live blob gets one owner pack, preferring packs with more live
        // blobs. Other copies count as unused, so duplicates left by
        // concurrent or interrupted backups are reclaimed too.
        let mut loaded = Vec::with_capacity(packs.len());
        for info in &packs {
            let entries = self.index.pack_entries(&info.name)?;
            let live_count = entries.iter().filter(|e| live.contains(&e.id)).count();
            loaded.push((info.name, info.size, entries, live_count));
        }
        let mut order: Vec<usize> = (0..loaded.len()).collect();
        order.sort_by(|&a, &b| {
            loaded[b]
                .3
                .cmp(&loaded[a].3)
                .then(loaded[a].0.cmp(&loaded[b].0))
        });
        let mut owner: std::collections::HashMap<Id, Id> = std::collections::HashMap::new();
        for &i in &order {
            let (name, _, entries, _) = &loaded[i];
            for entry in entries {
                if live.contains(&entry.id) {
                    owner.entry(entry.id).or_insert(*name);
                }
            }
        }
        let mut fates: Vec<(Id, u64, Vec<BlobEntry>, Fate)> = Vec::new();
        for (name, size, entries, _) in loaded {
            let mut seen = HashSet::new();
            let owned: Vec<BlobEntry> = entries
                .iter()
                .filter(|e| owner.get(&e.id) == Some(&name) && seen.insert(e.id))
                .copied()
                .collect();
            let owned_bytes: u64 = owned.iter().map(|e| u64::from(e.length)).sum();
            // The share is of blob bytes, so that a pack's own header does
            // not count as unused and `--max-unused 0` can settle.
            let blob_bytes: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
            let unused = 1.0 - owned_bytes as f64 / blob_bytes.max(1) as f64;
            let fate = if owned.is_empty() {
                Fate::Delete
            } else if unused <= options.max_unused {
                Fate::Keep
            } else {
                Fate::Repack(owned)
            };
            fates.push((name, size, entries, fate));
        }
        let indexed: HashSet<Id> = packs.iter().map(|p| p.name).collect();
        let unindexed: Vec<Id> = listed_packs
            .iter()
            .filter_map(|o| pack::pack_name_from_path(&o.path))
            .filter(|name| !indexed.contains(name))
            .collect();
        let to_copy: u64 = fates
            .iter()
            .map(|(_, _, _, fate)| match fate {
                Fate::Repack(moving) => moving.iter().map(|e| u64::from(e.length)).sum(),
                _ => 0,
            })
            .sum();
        report.packs_repacked = fates
            .iter()
            .filter(|f| matches!(f.3, Fate::Repack(_)))
            .count();
        report.packs_deleted = fates.iter().filter(|f| matches!(f.3, Fate::Delete)).count();
        report.unindexed_packs_deleted = unindexed.len();
        report.bytes_repacked = to_copy;
        let removed_bytes: u64 = fates
            .iter()
            .filter(|f| !matches!(f.3, Fate::Keep))
            .map(|f| f.1)
            .sum::<u64>()
            + listed_packs
                .iter()
                .filter(|o| {
                    pack::pack_name_from_path(&o.path).is_some_and(|n| !indexed.contains(&n))
                })
                .map(|o| o.size)
                .sum::<u64>();
        report.bytes_after = report.bytes_before.saturating_sub(removed_bytes) + to_copy;
        let nothing_to_do =
            report.packs_repacked == 0 && report.packs_deleted == 0 && unindexed.is_empty();
        if options.dry_run || nothing_to_do {
            report.duration_secs = started.elapsed().as_secs_f64();
            return Ok(report);
        }

        // Step 4: room for the copies.
        self.ensure_free_space(to_copy)?;

        // Step 5: repack.
        let new_packs = self.repack(&fates, &mut report)?;
        let written: u64 = new_packs.iter().map(|p| p.size).sum();
        report.bytes_after = report.bytes_before.saturating_sub(removed_bytes) + written;

        // Step 6: a complete new index.
        let mut surviving: Vec<PackRecord> = fates
            .iter()
            .filter(|f| matches!(f.3, Fate::Keep))
            .map(|(name, size, entries, _)| PackRecord {
                name: *name,
                size: *size,
                entries: entries.clone(),
            })
            .collect();
        surviving.extend(new_packs);
        let mut new_index_names = HashSet::new();
        for group in surviving.chunks(PACKS_PER_INDEX_OBJECT) {
            let (name, bytes) = index_object::encode(&self.keys, group)?;
            let path = index_object::index_path(&name);
            // IMPORTANT: the new index is durable before any old index
            // object or pack is deleted.
            self.storage.write(&path, bytes)?;
            self.storage.sync_dirs([path.as_str()])?;
            new_index_names.insert(path);
            failpoint::hit("prune.index_written");
        }

        // Step 7: last lock check, then retire the old index objects.
        lock.ensure_held()?;
        failpoint::hit("prune.before_deletions");
        for object in &old_index_objects {
            if new_index_names.contains(&object.path) {
                continue;
            }
            self.storage.delete(&object.path)?;
            report.index_objects_replaced += 1;
            failpoint::hit("prune.index_deleted");
        }

        // Step 8: delete packs no index object names any more.
        let doomed = fates
            .iter()
            .filter(|f| !matches!(f.3, Fate::Keep))
            .map(|f| f.0)
            .chain(unindexed.iter().copied());
        for name in doomed {
            self.storage.delete(&pack::pack_path(&name))?;
            failpoint::hit("prune.pack_deleted");
        }

        // Step 9: drill records of forgotten snapshots.
        for path in crate::pg::drill::orphan_records(self)? {
            self.storage.delete(&path)?;
            report.drill_records_deleted += 1;
        }
        drop(lock);

        self.sync_report = self.index.sync(&self.storage, &self.keys)?;
        report.duration_secs = started.elapsed().as_secs_f64();
        info!(
            packs_deleted = report.packs_deleted,
            packs_repacked = report.packs_repacked,
            unindexed = report.unindexed_packs_deleted,
            freed = report.bytes_freed(),
            "prune finished"
        );
        Ok(report)
    }

    /// Reads every snapshot in the backend and every chunk list; returns the
    /// number of snapshots and the ids of all blobs they need. Any unreadable
    /// snapshot or list is an error, because then what is live is unknown.
    fn live_blobs(&self) -> Result<(usize, HashSet<Id>)> {
        let mut live = HashSet::new();
        let mut seen_lists = HashSet::new();
        let objects = self.storage.list("snapshots/")?;
        for object in &objects {
            let id = object
                .path
                .strip_prefix("snapshots/")
                .and_then(|n| Id::from_hex(n).ok())
                .ok_or_else(|| Error::corrupt(&object.path, "object name is not a snapshot id"))?;
            let bytes = self.storage.read(&object.path)?;
            let snapshot = Snapshot::decode(&self.keys, &id, &bytes).map_err(|e| {
                Error::corrupt(
                    &object.path,
                    format!("{e}; prune stopped before deleting anything. Run `cairn check`"),
                )
            })?;
            for entry in &snapshot.entries {
                for list in &entry.lists {
                    if !seen_lists.insert(list.id.clone()) {
                        continue;
                    }
                    live.insert(Id::from_hex(&list.id)?);
                    for chunk in self.load_list(list)? {
                        live.insert(chunk.id);
                    }
                }
            }
        }
        Ok((objects.len(), live))
    }

    fn ensure_free_space(&self, needed: u64) -> Result<()> {
        let Some(root) = self.storage.local_root() else {
            return Ok(());
        };
        let Some(available) = available_bytes(root) else {
            warn!(path = %root.display(), "cannot read the free space; continuing");
            return Ok(());
        };
        // Room for the copies plus one pack of slack for the index objects.
        let wanted = needed + u64::from(self.config.pack_size);
        if available < wanted {
            return Err(Error::Invalid(format!(
                "prune needs {wanted} bytes of free space on {} to repack, but only {available} are free; free some space, or pass a larger --max-unused to repack less",
                root.display()
            )));
        }
        Ok(())
    }

    /// Step 5: copies live blobs of packs marked for repacking into new
    /// packs, verifying each. Returns the new packs' records.
    fn repack(
        &self,
        fates: &[(Id, u64, Vec<BlobEntry>, Fate)],
        report: &mut PruneReport,
    ) -> Result<Vec<PackRecord>> {
        let mut written = Vec::new();
        match self.repack_into(fates, report, &mut written) {
            Ok(()) => Ok(written),
            Err(e) => {
                // No index names the new packs yet, so they can go; a
                // repeated failure must not grow the repository each run.
                for record in &written {
                    if let Err(delete) = self.storage.delete(&pack::pack_path(&record.name)) {
                        warn!(pack = %pack::pack_path(&record.name), error = %delete, "cannot remove a pack written by the failed prune");
                    }
                }
                Err(match e {
                    Error::Corrupt { object, reason } => Error::Corrupt {
                        object,
                        reason: format!(
                            "{reason}; prune stopped before deleting anything. `cairn repair packs` salvages the intact blobs of damaged packs"
                        ),
                    },
                    other => other,
                })
            }
        }
    }

    fn repack_into(
        &self,
        fates: &[(Id, u64, Vec<BlobEntry>, Fate)],
        report: &mut PruneReport,
        written: &mut Vec<PackRecord>,
    ) -> Result<()> {
        let pack_size = self.config.pack_size as usize;
        let mut builder = PackBuilder::with_capacity(pack_size);
        for (name, _, _, fate) in fates {
            let Fate::Repack(moving) = fate else {
                continue;
            };
            let path = pack::pack_path(name);
            let bytes = self.storage.read(&path)?;
            if Id::of_bytes(&bytes) != *name {
                return Err(Error::corrupt(
                    &path,
                    "pack content does not match its name",
                ));
            }
            for entry in moving {
                let start = entry.offset as usize;
                let end = start + entry.length as usize;
                let sealed = bytes
                    .get(start..end)
                    .ok_or_else(|| Error::corrupt(&path, "blob lies outside the pack"))?;
                pack::open_blob(&self.keys, entry, sealed, &path)?;
                builder.push_entry(entry, sealed);
                if builder.len() >= pack_size {
                    let full =
                        std::mem::replace(&mut builder, PackBuilder::with_capacity(pack_size));
                    written.push(self.write_repacked(full)?);
                    report.packs_written += 1;
                }
            }
        }
        if !builder.is_empty() {
            written.push(self.write_repacked(builder)?);
            report.packs_written += 1;
        }
        Ok(())
    }

    /// Seals, writes and syncs a pack of copied blobs.
    pub(crate) fn write_repacked(&self, builder: PackBuilder) -> Result<PackRecord> {
        let sealed = builder.finish(&self.keys)?;
        let path = pack::pack_path(&sealed.name);
        let size = sealed.bytes.len() as u64;
        // IMPORTANT: repacked data is durable before the new index names it.
        self.storage.write(&path, sealed.bytes)?;
        self.storage.sync_dirs([path.as_str()])?;
        failpoint::hit("prune.pack_written");
        Ok(PackRecord {
            name: sealed.name,
            size,
            entries: sealed.entries,
        })
    }
}

/// Free bytes for unprivileged users on the filesystem holding `path`.
#[expect(unsafe_code, reason = "statvfs(3) has no safe wrapper in std")]
pub(crate) fn available_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to
    // writable memory of the right type; the result is read only on success.
    let status = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if status != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the structure.
    let stat = unsafe { stat.assume_init() };
    #[allow(
        clippy::useless_conversion,
        reason = "the field types of statvfs differ between platforms"
    )]
    let (blocks, block_size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Some(blocks.saturating_mul(block_size))
}
