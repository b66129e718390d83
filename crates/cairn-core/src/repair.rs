//! Rebuilding the index from the packs themselves.
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

/// Packs named by one index object written by repair.
const PACKS_PER_INDEX_OBJECT: usize = 1024;

/// What `repair index` did.
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
                    warn!(pack = %object.path, error = %e, "pack header unreadable; its blobs are left out of the index");
                    report
                        .unreadable_packs
                        .push((object.path.clone(), e.to_string()));
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
