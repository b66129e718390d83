//! Verifying a repository.
//!
//! The structural check proves that every chunk of every snapshot is named
//! by the index and lives in a pack present in the backend with the recorded
//! size. Reading data downloads packs, checks each pack's bytes against its
//! name, its header against the index, and every blob's tag and content hash.
//! Each problem names the damaged object and the snapshots that depend on it.
//! A problem on which only snapshots marked damaged depend is known damage:
//! the operator already recorded it with `cairn repair snapshots
//! --mark-damaged`, so it is reported but does not fail the check.

use std::collections::{BTreeSet, HashMap};

use rayon::prelude::*;
use serde::Serialize;
use tracing::info;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index_object;
use crate::pack;
use crate::repo::Repository;
use crate::snapshot::{self, Snapshot};

/// How much pack data to download and verify.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Every pack.
    All,
    /// A fraction of the packs (0 < f <= 1); the selection moves every day,
    /// so daily runs with fraction f cover every pack in 1/f days.
    Subset(f64),
}

/// One damaged or missing object.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Object name, such as `data/ab/ab12…` or `snapshots/…`.
    pub object: String,
    /// Description of the damage.
    pub message: String,
    /// Ids of the snapshots that depend on the object.
    pub snapshots: Vec<String>,
    /// True when at least one snapshot depends on the object and every
    /// one of them is marked damaged, so the damage is already recorded.
    pub marked: bool,
}

/// Result of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Packs downloaded and verified.
    pub packs_read: usize,
    /// Blobs decrypted and verified.
    pub blobs_verified: u64,
    /// Bytes downloaded.
    pub bytes_read: u64,
    /// Packs in the backend that no index object names (left by an
    /// interrupted backup; harmless, removed by prune).
    pub unindexed_packs: usize,
    /// Problems found; empty means the repository is intact.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Returns the problems that are not known damage, that is, all but
    /// those on which only snapshots marked damaged depend. The check
    /// fails when there is at least one.
    pub fn unmarked_problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|problem| !problem.marked)
    }
}

/// Findings of the structural check for one chunk list.
#[derive(Debug, Default)]
struct ListFindings {
    /// Packs holding the list and its chunks.
    packs: std::collections::HashSet<Id>,
    /// Chunks that no index object names.
    missing: Vec<Id>,
    /// Object and reason when the list itself cannot be read.
    unreadable: Option<(String, String)>,
}

/// Receives check progress.
pub trait CheckProgress: Send + Sync {
    /// Records that a pack of `bytes` bytes was verified.
    fn pack_done(&self, _bytes: u64) {}
}

/// Progress sink that ignores everything.
pub struct NoCheckProgress;
impl CheckProgress for NoCheckProgress {}

fn days_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

/// Returns true when a pack falls in today's share of a subset check.
pub fn in_subset(name: &Id, fraction: f64, day: u64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&name.0[..8]);
    let position = u64::from_le_bytes(word) as f64 / 2f64.powi(64);
    let start = (day as f64 * fraction).fract();
    let offset = (position - start).rem_euclid(1.0);
    offset < fraction
}

impl Repository {
    /// Checks the repository; see the module documentation.
    pub fn check(&self, read_data: ReadData, progress: &dyn CheckProgress) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        for (object, reason) in &self.sync_report.unreadable {
            report.problems.push(Problem {
                object: object.clone(),
                message: reason.clone(),
                snapshots: Vec::new(),
                marked: false,
            });
        }
        self.check_index_objects(&mut report)?;

        let snapshots = self.read_all_snapshots(&mut report)?;
        report.snapshots = snapshots.len();
        let audit = crate::audit::check(self)?;
        let drills = crate::pg::drill::check_records(self)?;
        for (object, message) in audit.into_iter().chain(drills) {
            report.problems.push(Problem {
                object,
                message,
                snapshots: Vec::new(),
                marked: false,
            });
        }
        let packs = self.index.packs()?;
        report.packs = packs.len();

        let mut dependents: HashMap<Id, BTreeSet<String>> = HashMap::new();
        let mut lists = HashMap::new();
        for (id, snapshot) in &snapshots {
            self.check_snapshot_structure(id, snapshot, &mut lists, &mut dependents, &mut report)?;
        }

        let listed: std::collections::HashSet<Id> = self
            .storage
            .list("data/")?
            .into_iter()
            .filter_map(|o| pack::pack_name_from_path(&o.path))
            .collect();
        let indexed: std::collections::HashSet<Id> = packs.iter().map(|p| p.name).collect();
        report.unindexed_packs = listed.difference(&indexed).count();

        for info in &packs {
            if info.missing {
                report.problems.push(Problem {
                    object: pack::pack_path(&info.name),
                    message: format!("pack is missing or is not {} bytes long", info.size),
                    snapshots: sorted(dependents.get(&info.name)),
                    marked: false,
                });
            }
        }

        let day = days_since_epoch();
        let selected: Vec<_> = packs
            .iter()
            .filter(|p| !p.missing)
            .filter(|p| match read_data {
                ReadData::None => false,
                ReadData::All => true,
                ReadData::Subset(fraction) => in_subset(&p.name, fraction, day),
            })
            .collect();
        for info in selected {
            let path = pack::pack_path(&info.name);
            match self.verify_pack(&info.name) {
                Ok(blobs) => {
                    report.blobs_verified += blobs;
                }
                Err(e) => report.problems.push(Problem {
                    message: e.message_without(&path),
                    object: path,
                    snapshots: sorted(dependents.get(&info.name)),
                    marked: false,
                }),
            }
            report.packs_read += 1;
            report.bytes_read += info.size;
            progress.pack_done(info.size);
        }
        mark_known_damage(&mut report.problems, &snapshots);
        info!(
            snapshots = report.snapshots,
            packs_read = report.packs_read,
            problems = report.problems.len(),
            known = report.problems.iter().filter(|p| p.marked).count(),
            "check finished"
        );
        Ok(report)
    }

    /// Reads and verifies every index object in the backend. The sync reads
    /// only index objects new to the local index, and the local index keeps
    /// the records of an object even after the object was damaged.
    // NOTE: this downloads every index object on every check, about 45 bytes
    // per stored blob.
    fn check_index_objects(&self, report: &mut CheckReport) -> Result<()> {
        for object in self.storage.list("index/")? {
            let reported = self
                .sync_report
                .unreadable
                .iter()
                .any(|(path, _)| *path == object.path);
            if reported {
                continue;
            }
            let Some(name) = object
                .path
                .strip_prefix("index/")
                .and_then(|n| Id::from_hex(n).ok())
            else {
                continue;
            };
            let decoded = self
                .storage
                .read(&object.path)
                .and_then(|bytes| index_object::decode(&self.keys, &name, &bytes));
            if let Err(e) = decoded {
                report.problems.push(Problem {
                    message: format!(
                        "{}; `cairn repair index` rewrites the index from the packs",
                        e.message_without(&object.path)
                    ),
                    object: object.path,
                    snapshots: Vec::new(),
                    marked: false,
                });
            }
        }
        Ok(())
    }

    fn read_all_snapshots(&self, report: &mut CheckReport) -> Result<Vec<(Id, Snapshot)>> {
        let mut snapshots = Vec::new();
        for object in self.storage.list("snapshots/")? {
            let Some(id) = object
                .path
                .strip_prefix("snapshots/")
                .and_then(|n| Id::from_hex(n).ok())
            else {
                report.problems.push(Problem {
                    object: object.path.clone(),
                    message: "object name is not a snapshot id".into(),
                    snapshots: Vec::new(),
                    marked: false,
                });
                continue;
            };
            let decoded = self
                .storage
                .read(&object.path)
                .and_then(|bytes| Snapshot::decode(&self.keys, &id, &bytes));
            match decoded {
                Ok(snapshot) => snapshots.push((id, snapshot)),
                Err(e) => report.problems.push(Problem {
                    message: e.message_without(&object.path),
                    object: snapshot::snapshot_path(&id),
                    snapshots: vec![id.to_hex()],
                    marked: false,
                }),
            }
        }
        Ok(snapshots)
    }

    /// Resolves every chunk of one chunk list: the packs it needs and the
    /// chunks no index object names.
    fn resolve_list(&self, list: &crate::snapshot::ListRef) -> Result<ListFindings> {
        let list_id = Id::from_hex(&list.id)?;
        let mut findings = ListFindings::default();
        if let Some(location) = self.index.lookup_any(&list_id)? {
            findings.packs.insert(location.pack);
        }
        let chunks = match self.load_list(list) {
            Ok(chunks) => chunks,
            Err(e) => {
                findings.unreadable = Some(match self.index.lookup_any(&list_id)? {
                    Some(location) => {
                        let object = pack::pack_path(&location.pack);
                        let message = e.message_without(&object);
                        (object, message)
                    }
                    // The error is MissingChunk, whose text names the list
                    // again and suggests the check that is running.
                    None => (
                        format!("chunk list {}", list.id),
                        "no index object names it".to_string(),
                    ),
                });
                return Ok(findings);
            }
        };
        let transaction = self.index.read_transaction()?;
        for chunk in chunks {
            match self.index.lookup_any(&chunk.id)? {
                Some(location) => {
                    findings.packs.insert(location.pack);
                }
                None => findings.missing.push(chunk.id),
            }
        }
        drop(transaction);
        Ok(findings)
    }

    fn check_snapshot_structure(
        &self,
        id: &Id,
        snapshot: &Snapshot,
        lists: &mut HashMap<String, ListFindings>,
        dependents: &mut HashMap<Id, BTreeSet<String>>,
        report: &mut CheckReport,
    ) -> Result<()> {
        let snapshot_id = id.to_hex();
        for entry in &snapshot.entries {
            let mut missing = Vec::new();
            for list in &entry.lists {
                // Daily snapshots share most chunk lists, so each distinct
                // list is resolved once and its findings reused.
                if !lists.contains_key(&list.id) {
                    let findings = self.resolve_list(list)?;
                    lists.insert(list.id.clone(), findings);
                }
                let Some(findings) = lists.get(&list.id) else {
                    continue;
                };
                for pack in &findings.packs {
                    dependents
                        .entry(*pack)
                        .or_default()
                        .insert(snapshot_id.clone());
                }
                missing.extend_from_slice(&findings.missing);
                if let Some((object, message)) = &findings.unreadable {
                    report.problems.push(Problem {
                        object: object.clone(),
                        message: format!(
                            "chunk list of entry {} is unreadable: {message}",
                            entry.name
                        ),
                        snapshots: vec![snapshot_id.clone()],
                        marked: false,
                    });
                }
            }
            if !missing.is_empty() {
                report.problems.push(Problem {
                    object: format!("snapshots/{snapshot_id}"),
                    message: format!(
                        "entry {} needs {} chunk(s) that no index object names, first {}",
                        entry.name,
                        missing.len(),
                        missing[0]
                    ),
                    snapshots: vec![snapshot_id.clone()],
                    marked: false,
                });
            }
        }
        Ok(())
    }

    /// Downloads one pack and verifies it completely. Returns the number of
    /// blobs verified.
    pub fn verify_pack(&self, name: &Id) -> Result<u64> {
        let path = pack::pack_path(name);
        let bytes = self.storage.read(&path)?;
        if Id::of_bytes(&bytes) != *name {
            return Err(Error::corrupt(
                &path,
                "pack content does not match its name (bit rot or tampering)",
            ));
        }
        let header = pack::read_header(&self.keys, &bytes, &path)?;
        let indexed = self.index.pack_entries(name)?;
        let mut header_ids: Vec<Id> = header.iter().map(|e| e.id).collect();
        let mut index_ids: Vec<Id> = indexed.iter().map(|e| e.id).collect();
        header_ids.sort();
        index_ids.sort();
        if header_ids != index_ids {
            return Err(Error::corrupt(
                &path,
                "the pack header and the index list different blobs",
            ));
        }
        let keys = &self.keys;
        header.par_iter().try_for_each(|entry| {
            let start = entry.offset as usize;
            let end = start + entry.length as usize;
            pack::open_blob(keys, entry, &bytes[start..end], &path).map(|_| ())
        })?;
        Ok(header.len() as u64)
    }
}

/// Sets [`Problem::marked`] on each problem whose dependent snapshots are
/// all marked damaged.
// NOTE: damage found later in data that only marked snapshots use is known
// damage too. Such snapshots are already excluded from `latest` and from
// retention, so the new damage changes nothing that can still be restored.
fn mark_known_damage(problems: &mut [Problem], snapshots: &[(Id, Snapshot)]) {
    let marked: std::collections::HashSet<String> = snapshots
        .iter()
        .filter(|(_, snapshot)| snapshot.damaged.is_some())
        .map(|(id, _)| id.to_hex())
        .collect();
    for problem in problems {
        problem.marked =
            !problem.snapshots.is_empty() && problem.snapshots.iter().all(|id| marked.contains(id));
    }
}

fn sorted(set: Option<&BTreeSet<String>>) -> Vec<String> {
    set.map(|s| s.iter().cloned().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_days_cover_every_pack() {
        let names: Vec<Id> = (0u32..500)
            .map(|i| Id::of_bytes(&i.to_le_bytes()))
            .collect();
        let fraction = 0.1;
        for name in &names {
            let covered = (100..110).any(|day| in_subset(name, fraction, day));
            assert!(covered, "pack {name} is never selected in 10 days at 10%");
        }
        let one_day = names.iter().filter(|n| in_subset(n, fraction, 100)).count();
        assert!(
            (20..=80).contains(&one_day),
            "{one_day} of 500 packs selected for 10%"
        );
    }
}
