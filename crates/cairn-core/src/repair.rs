//! Repairs: rebuilding the index from the packs themselves, and recording
//! which snapshots are damaged.
//!
//! Every pack ends with an encrypted header listing its blobs, so the index
//! objects can be rebuilt from `data/` alone after they were lost or damaged.

use std::collections::HashSet;

use serde::Serialize;
use tracing::{info, warn};

use crate::error::Result;
use crate::failpoint;
use crate::index_object::{self, PackRecord};
use crate::lock::Lock;
use crate::pack;
use crate::repo::Repository;
use crate::snapshot::Damage;

use crate::prune::PACKS_PER_INDEX_OBJECT;

/// Outcome of `repair index`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Packs whose headers were read and indexed.
    pub packs_indexed: usize,
    /// Packs whose header could not be read, with the reason; their data is
    /// not in the new index.
    pub unreadable_packs: Vec<(String, String)>,
    /// Index objects written.
    pub index_objects_written: usize,
    /// Old index objects deleted.
    pub index_objects_deleted: usize,
}

impl Repository {
    /// Rebuilds every index object from the pack headers in `data/`.
    ///
    /// The new index objects are durable before the old ones are deleted,
    /// so an interrupted repair leaves both, which is harmless.
    pub fn repair_index(&mut self) -> Result<RepairReport> {
        let lock = Lock::exclusive(&self.storage, &self.keys, "repair index")?;
        let mut report = RepairReport::default();
        let old_index_objects = self.storage.list("index/")?;
        let mut records = Vec::new();
        for object in self.storage.list("data/")? {
            if pack::pack_name_from_path(&object.path).is_none() {
                continue;
            }
            match self.read_pack_header(&object.path, object.size) {
                Ok(record) => records.push(record),
                Err(e) => {
                    let reason = e.message_without(&object.path);
                    warn!(pack = %object.path, error = %reason, "pack header unreadable; its blobs are left out of the index");
                    report.unreadable_packs.push((object.path.clone(), reason));
                }
            }
        }
        report.packs_indexed = records.len();
        let mut written = HashSet::new();
        for group in records.chunks(PACKS_PER_INDEX_OBJECT) {
            let (name, bytes) = index_object::encode(&self.keys, group)?;
            let path = index_object::index_path(&name);
            // IMPORTANT: the rebuilt index is durable before the old index
            // objects are deleted.
            self.storage.write(&path, bytes)?;
            self.storage.sync_dirs([path.as_str()])?;
            written.insert(path);
            report.index_objects_written += 1;
            failpoint::hit("repair.index_written");
        }
        lock.ensure_held()?;
        for object in old_index_objects {
            if !written.contains(&object.path) {
                self.storage.delete(&object.path)?;
                report.index_objects_deleted += 1;
            }
        }
        drop(lock);
        self.sync_report = self.index.sync(&self.storage, &self.keys)?;
        info!(
            packs = report.packs_indexed,
            unreadable = report.unreadable_packs.len(),
            "index rebuilt from pack headers"
        );
        Ok(report)
    }

    /// Reads a pack's header with two ranged reads from its end.
    fn read_pack_header(&self, path: &str, size: u64) -> Result<PackRecord> {
        let name = pack::pack_name_from_path(path)
            .ok_or_else(|| crate::Error::corrupt(path, "object name is not a pack name"))?;
        let trailer_len = pack::PACK_TRAILER_LEN as u64;
        if size < trailer_len {
            return Err(crate::Error::corrupt(
                path,
                format!("pack of {size} bytes is too short"),
            ));
        }
        let trailer = self.storage.read_range(path, size - trailer_len..size)?;
        let range = pack::header_range(size, &trailer, path)?;
        let sealed = self.storage.read_range(path, range.clone())?;
        let entries = pack::parse_header(&self.keys, &sealed, range.start, path)?;
        Ok(PackRecord {
            name,
            size,
            entries,
        })
    }
}

/// A snapshot that cannot be restored in full.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedSnapshot {
    /// Snapshot id, hex.
    pub id: String,
    /// Missing or damaged objects, one line per problem.
    pub reasons: Vec<String>,
    /// Id of the snapshot object that now records the damage, when this
    /// run marked it.
    pub marked_as: Option<String>,
    /// True when the snapshot was marked damaged before this run.
    pub already_marked: bool,
}

/// A snapshot marked damaged that a full read found intact again, after a
/// backup stored its lost data anew.
#[derive(Debug, Clone, Serialize)]
pub struct HealedSnapshot {
    /// Id of the marked snapshot object, hex.
    pub id: String,
    /// Id the snapshot had before it was marked, hex.
    pub original: String,
    /// Id of the snapshot object written without the mark, when this run
    /// removed it.
    pub unmarked_as: Option<String>,
}

/// Outcome of `repair snapshots`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotRepairReport {
    /// Snapshots that cannot be restored in full.
    pub damaged: Vec<DamagedSnapshot>,
    /// Marked snapshots that restore in full again. Found only when every
    /// pack was read.
    pub healed: Vec<HealedSnapshot>,
}

impl Repository {
    /// Finds snapshots that reference missing or damaged blobs, by the
    /// structural check or, with `read_data`, by reading every pack. With
    /// `mark`, each one not marked yet is rewritten with a [`Damage`]
    /// record, so `snapshots` shows it and retention stops counting it.
    /// With `read_data` and `mark`, each marked snapshot that the full read
    /// found intact is rewritten without its record. Each rewrite writes
    /// the new object before it deletes the old one.
    pub fn repair_snapshots(
        &mut self,
        read_data: bool,
        mark: bool,
    ) -> Result<SnapshotRepairReport> {
        let mode = if read_data {
            crate::check::ReadData::All
        } else {
            crate::check::ReadData::None
        };
        let report = self.check(mode, &crate::check::NoCheckProgress)?;
        let mut by_snapshot: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for problem in &report.problems {
            for id in &problem.snapshots {
                by_snapshot
                    .entry(id.clone())
                    .or_default()
                    .push(format!("{}: {}", problem.object, problem.message));
            }
        }
        let snapshots = self.index.snapshots()?;
        // Only a full read proves that a marked snapshot's data is intact:
        // the structural check does not see damage inside packs.
        let mut healed: Vec<HealedSnapshot> = if read_data {
            snapshots
                .iter()
                .filter(|(id, _)| !by_snapshot.contains_key(&id.to_hex()))
                .filter_map(|(id, snapshot)| {
                    snapshot.damaged.as_ref().map(|damage| HealedSnapshot {
                        id: id.to_hex(),
                        original: damage.original.clone(),
                        unmarked_as: None,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let is_marked = |id: &str| {
            snapshots
                .iter()
                .any(|(known, snapshot)| known.to_hex() == id && snapshot.damaged.is_some())
        };
        let mut damaged: Vec<DamagedSnapshot> = by_snapshot
            .into_iter()
            .map(|(id, reasons)| DamagedSnapshot {
                already_marked: is_marked(&id),
                id,
                reasons,
                marked_as: None,
            })
            .collect();
        if !mark || (damaged.iter().all(|found| found.already_marked) && healed.is_empty()) {
            return Ok(SnapshotRepairReport { damaged, healed });
        }
        let _lock = Lock::shared(&self.storage, &self.keys, "repair snapshots")?;
        for found in &mut healed {
            let Some((id, snapshot)) = snapshots.iter().find(|(id, _)| id.to_hex() == found.id)
            else {
                continue;
            };
            let mut unmarked = snapshot.clone();
            unmarked.damaged = None;
            let new_id = self.replace_snapshot(id, &unmarked)?;
            info!(snapshot = %id.short(), unmarked_as = %new_id.short(), "damage mark removed from a healed snapshot");
            found.unmarked_as = Some(new_id.to_hex());
        }
        for found in &mut damaged {
            if found.already_marked {
                continue;
            }
            let Some((id, snapshot)) = snapshots.iter().find(|(id, _)| id.to_hex() == found.id)
            else {
                continue;
            };
            let mut marked = snapshot.clone();
            marked.damaged = Some(Damage {
                reason: found.reasons.join("; "),
                marked: crate::snapshot::now_rfc3339(),
                original: id.to_hex(),
            });
            let new_id = self.replace_snapshot(id, &marked)?;
            warn!(snapshot = %id.short(), marked_as = %new_id.short(), "snapshot marked damaged");
            found.marked_as = Some(new_id.to_hex());
        }
        self.sync_report = self.index.sync(&self.storage, &self.keys)?;
        Ok(SnapshotRepairReport { damaged, healed })
    }

    /// Writes `snapshot` as a new object and deletes the object `old`.
    /// Returns the new id.
    fn replace_snapshot(
        &self,
        old: &crate::id::Id,
        snapshot: &crate::snapshot::Snapshot,
    ) -> Result<crate::id::Id> {
        let (new_id, bytes) = snapshot.encode(&self.keys)?;
        let new_path = crate::snapshot::snapshot_path(&new_id);
        // IMPORTANT: the new object is durable before the old one is
        // deleted, so the snapshot never disappears.
        self.storage.write(&new_path, bytes)?;
        self.storage.sync_dirs([new_path.as_str()])?;
        self.storage.delete(&crate::snapshot::snapshot_path(old))?;
        Ok(new_id)
    }
}

/// Outcome of `repair packs`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackRepairReport {
    /// Damaged or missing packs, with what was wrong.
    pub damaged_packs: Vec<(String, String)>,
    /// Intact blobs copied out of damaged packs into new packs.
    pub blobs_salvaged: u64,
    /// Ids of blobs that could not be salvaged; a backup of the same data
    /// stores them again and heals the snapshots that need them.
    pub blobs_lost: Vec<String>,
    /// New packs written.
    pub packs_written: usize,
    /// New paths of the damaged packs, kept for inspection.
    pub moved: Vec<String>,
}

impl Repository {
    /// Reads every pack, salvages the intact blobs of damaged ones into new
    /// packs, rewrites the index without the damaged packs, and moves them
    /// to `damaged/`. Afterwards no backup deduplicates against a damaged
    /// blob, so the next backup of the same data stores it again.
    pub fn repair_packs(&mut self) -> Result<PackRepairReport> {
        let lock = Lock::exclusive(&self.storage, &self.keys, "repair packs")?;
        let mut report = PackRepairReport::default();
        self.sync_report = self.index.sync(&self.storage, &self.keys)?;
        let packs = self.index.packs()?;
        let mut damaged = Vec::new();
        for info in &packs {
            let path = pack::pack_path(&info.name);
            let verdict = if info.missing {
                Err(crate::Error::corrupt(
                    &path,
                    "pack is missing or has the wrong size",
                ))
            } else {
                self.verify_pack(&info.name).map(|_| ())
            };
            if let Err(e) = verdict {
                let reason = e.message_without(&path);
                warn!(pack = %path, error = %reason, "damaged pack");
                report.damaged_packs.push((path, reason));
                damaged.push(info.name);
            }
        }
        if damaged.is_empty() {
            return Ok(report);
        }

        // Salvage: every blob whose bytes still open and verify.
        let pack_size = self.config.pack_size as usize;
        let mut builder = pack::PackBuilder::with_capacity(pack_size);
        let mut written = Vec::new();
        for name in &damaged {
            let path = pack::pack_path(name);
            let entries = self.index.pack_entries(name)?;
            let bytes = self.storage.read(&path).unwrap_or_default();
            for entry in entries {
                let start = entry.offset as usize;
                let end = start + entry.length as usize;
                let intact = bytes
                    .get(start..end)
                    .filter(|sealed| pack::open_blob(&self.keys, &entry, sealed, &path).is_ok());
                match intact {
                    Some(sealed) => {
                        builder.push_entry(&entry, sealed);
                        report.blobs_salvaged += 1;
                        if builder.len() >= pack_size {
                            let full = std::mem::replace(
                                &mut builder,
                                pack::PackBuilder::with_capacity(pack_size),
                            );
                            written.push(self.write_repacked(full)?);
                        }
                    }
                    None => report.blobs_lost.push(entry.id.to_hex()),
                }
            }
        }
        if !builder.is_empty() {
            written.push(self.write_repacked(builder)?);
        }
        report.packs_written = written.len();

        // A complete index without the damaged packs.
        let damaged_set: HashSet<_> = damaged.iter().copied().collect();
        let mut records = Vec::new();
        for info in &packs {
            if damaged_set.contains(&info.name) {
                continue;
            }
            records.push(PackRecord {
                name: info.name,
                size: info.size,
                entries: self.index.pack_entries(&info.name)?,
            });
        }
        records.extend(written);
        let old_index_objects = self.storage.list("index/")?;
        let mut new_names = HashSet::new();
        for group in records.chunks(PACKS_PER_INDEX_OBJECT) {
            let (name, bytes) = index_object::encode(&self.keys, group)?;
            let path = index_object::index_path(&name);
            // IMPORTANT: the new index is durable before the old one goes.
            self.storage.write(&path, bytes)?;
            self.storage.sync_dirs([path.as_str()])?;
            new_names.insert(path);
        }
        lock.ensure_held()?;
        for object in old_index_objects {
            if !new_names.contains(&object.path) {
                self.storage.delete(&object.path)?;
            }
        }
        // Keep the damaged bytes for inspection, outside data/.
        for name in &damaged {
            let path = pack::pack_path(name);
            let target = format!("damaged/{}", name.to_hex());
            if let Ok(bytes) = self.storage.read(&path) {
                self.storage.write(&target, bytes)?;
                report.moved.push(target);
            }
            self.storage.delete(&path)?;
        }
        drop(lock);
        self.sync_report = self.index.sync(&self.storage, &self.keys)?;
        info!(
            damaged = report.damaged_packs.len(),
            salvaged = report.blobs_salvaged,
            lost = report.blobs_lost.len(),
            "damaged packs repaired"
        );
        Ok(report)
    }
}
