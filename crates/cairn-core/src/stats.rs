//! Repository statistics.

use serde::Serialize;

use crate::error::Result;
use crate::repo::Repository;

/// Sizes and counts of a repository, from the synced local index.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Snapshots.
    pub snapshots: usize,
    /// Packs.
    pub packs: usize,
    /// Distinct data chunks.
    pub chunks: u64,
    /// Bytes of all packs (what the repository occupies).
    pub stored_bytes: u64,
    /// Plaintext bytes of all distinct chunks.
    pub raw_bytes: u64,
    /// Bytes of all entries of all snapshots (what restoring all would write).
    pub logical_bytes: u64,
    /// Deduplication alone: `logical_bytes / raw_bytes`; 0 when empty.
    pub dedup_ratio: f64,
    /// Compression net of format overhead: `raw_bytes / stored_bytes`.
    pub compression_ratio: f64,
    /// Both together: `logical_bytes / stored_bytes`.
    pub total_ratio: f64,
}

impl Repository {
    /// Computes statistics.
    pub fn stats(&self) -> Result<Stats> {
        let snapshots = self.index.snapshots()?;
        let packs = self.index.packs()?;
        let (chunks, raw_bytes) = self.index.chunk_totals()?;
        let stored_bytes: u64 = packs.iter().filter(|p| !p.missing).map(|p| p.size).sum();
        let logical_bytes: u64 = snapshots
            .iter()
            .flat_map(|(_, s)| s.entries.iter())
            .map(|e| e.size)
            .sum();
        Ok(Stats {
            snapshots: snapshots.len(),
            packs: packs.len(),
            chunks,
            stored_bytes,
            raw_bytes,
            logical_bytes,
            dedup_ratio: ratio(logical_bytes, raw_bytes),
            compression_ratio: ratio(raw_bytes, stored_bytes),
            total_ratio: ratio(logical_bytes, stored_bytes),
        })
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}
