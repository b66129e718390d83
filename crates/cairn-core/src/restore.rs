//! Restoring an entry: fetch, verify and write chunks in stream order.
//!
//! Chunks are resolved to pack locations, reads of neighbouring blobs in one
//! pack are merged, and windows of chunks are fetched and verified on a
//! second thread while the caller's thread writes the previous window. Every
//! chunk is checked against its id, and the ids and lengths of the chunks
//! written, in order, against the manifest's sequence hash before the restore
//! reports success. Format 1 snapshots carry a hash of the whole stream
//! instead, which is computed over the bytes written.

use std::io::{IoSlice, Write};
use std::ops::Range;
use std::sync::mpsc::{Receiver, sync_channel};

use rayon::prelude::*;

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Location;
use crate::pack;
use crate::repo::Repository;
use crate::snapshot::{ChunkRef, Entry, SequenceHasher, Snapshot};
use crate::storage::Storage;

/// Plaintext bytes fetched per window.
const WINDOW_BYTES: u64 = 16 * 1024 * 1024;
/// Largest gap between two blobs that is read over rather than split.
const MERGE_GAP: u64 = 256 * 1024;
/// Concurrent ranged reads per window.
const READ_CONCURRENCY: usize = 4;

/// Receives restore progress.
pub trait RestoreProgress: Send + Sync {
    /// `n` more bytes were written.
    fn written(&self, _n: u64) {}
}

/// Progress sink that ignores everything.
pub struct NoRestoreProgress;

/// Chunks fetched for one window: their locations and verified plaintexts.
type FetchedWindow = (Vec<Location>, Vec<Vec<u8>>);
impl RestoreProgress for NoRestoreProgress {}

struct ReadPlan {
    pack: Id,
    range: Range<u64>,
    /// Indexes into the window's chunk locations covered by this read.
    members: Vec<usize>,
}

fn plan_reads(window: &[Location]) -> Vec<ReadPlan> {
    let mut plans: Vec<ReadPlan> = Vec::new();
    for (i, location) in window.iter().enumerate() {
        let start = location.entry.offset;
        let end = start + u64::from(location.entry.length);
        if let Some(last) = plans.last_mut()
            && last.pack == location.pack
            && start >= last.range.end
            && start - last.range.end <= MERGE_GAP
        {
            last.range.end = end;
            last.members.push(i);
            continue;
        }
        plans.push(ReadPlan {
            pack: location.pack,
            range: start..end,
            members: vec![i],
        });
    }
    plans
}

/// Starts the reads of one window on the storage runtime and returns at
/// once, so the reads of the next window overlap the decoding of this one.
fn start_reads(
    storage: &Storage,
    plans: &[ReadPlan],
) -> tokio::task::JoinHandle<Result<Vec<Vec<u8>>>> {
    let reads: Vec<(String, Range<u64>)> = plans
        .iter()
        .map(|plan| (pack::pack_path(&plan.pack), plan.range.clone()))
        .collect();
    let storage = storage.clone();
    storage.runtime().clone().spawn(async move {
        let mut results: Vec<Option<Result<Vec<u8>>>> = (0..reads.len()).map(|_| None).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (path, range)) in reads.into_iter().enumerate() {
            while tasks.len() >= READ_CONCURRENCY {
                if let Some(Ok((j, result))) = tasks.join_next().await {
                    results[j] = Some(result);
                }
            }
            let storage = storage.clone();
            tasks.spawn(async move { (i, storage.read_range_async(&path, range).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok((j, result)) = joined {
                results[j] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Invalid("a pack read task failed".into()))))
            .collect()
    })
}

/// Opens and verifies every blob of a window from the bytes `start_reads`
/// returned; the plaintexts come back in window order.
fn decode_window(
    keys: &Keys,
    window: &[Location],
    plans: &[ReadPlan],
    reads: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>> {
    let paths: Vec<String> = plans
        .iter()
        .map(|plan| pack::pack_path(&plan.pack))
        .collect();
    let mut pieces: Vec<(usize, &[u8], &str)> = Vec::with_capacity(window.len());
    for ((plan, bytes), path) in plans.iter().zip(reads).zip(&paths) {
        for &member in &plan.members {
            let location = &window[member];
            let start = (location.entry.offset - plan.range.start) as usize;
            let end = start + location.entry.length as usize;
            pieces.push((member, &bytes[start..end], path));
        }
    }
    pieces.sort_by_key(|(member, _, _)| *member);
    pieces
        .par_iter()
        .map(|&(member, sealed, path)| pack::open_blob(keys, &window[member].entry, sealed, path))
        .collect()
}

impl Repository {
    /// Resolves an entry of a snapshot: by name, or the only entry.
    pub fn select_entry<'s>(
        &self,
        id: &Id,
        snapshot: &'s Snapshot,
        name: Option<&str>,
    ) -> Result<&'s Entry> {
        let available = || {
            snapshot
                .entries
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(name) => snapshot.entry(name).ok_or_else(|| Error::EntryNotFound {
                snapshot: id.short(),
                entry: name.to_string(),
                available: available(),
            }),
            None if snapshot.entries.len() == 1 => Ok(&snapshot.entries[0]),
            None => Err(Error::Invalid(format!(
                "snapshot {} has {} entries ({}); name one as {}:ENTRY",
                id.short(),
                snapshot.entries.len(),
                available(),
                id.short()
            ))),
        }
    }

    /// Writes the entry's stream to `out`, verifying every chunk and the
    /// entry's hash. Bytes already written stay written on failure; the
    /// caller decides what to do with a partial target.
    pub fn restore_entry(
        &self,
        entry: &Entry,
        out: &mut (dyn Write + Send),
        progress: &dyn RestoreProgress,
    ) -> Result<()> {
        tracing::info!(entry = %entry.name, size = entry.size, "restore started");
        let (plan_sender, plan_receiver) = sync_channel::<Vec<Location>>(1);
        let (data_sender, data_receiver) = sync_channel::<Result<FetchedWindow>>(1);
        let storage = self.storage.clone();
        let keys = &self.keys;
        std::thread::scope(|scope| -> Result<()> {
            scope.spawn(move || fetch_loop(&storage, keys, plan_receiver, data_sender));
            let writer = scope.spawn(move || write_loop(entry, out, data_receiver, keys, progress));
            let planned = self.plan_windows(entry, &plan_sender);
            drop(plan_sender);
            let written = writer
                .join()
                .map_err(|_| Error::Invalid("restore writer thread panicked".into()))?;
            planned?;
            written?;
            tracing::info!(entry = %entry.name, size = entry.size, "restore finished; every chunk and the entry hash verified");
            Ok(())
        })
    }

    /// Finds the pack location of every chunk of a list, in one read
    /// transaction of the index.
    fn locate_list(&self, chunks: &[ChunkRef]) -> Result<Vec<Location>> {
        let transaction = self.index.read_transaction()?;
        let mut locations = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let location = self.locate_blob(&chunk.id)?;
            if location.entry.raw_length != chunk.length {
                return Err(Error::corrupt(
                    pack::pack_path(&location.pack),
                    format!(
                        "chunk {} has length {} in the index but {} in the snapshot",
                        chunk.id, location.entry.raw_length, chunk.length
                    ),
                ));
            }
            locations.push(location);
        }
        drop(transaction);
        Ok(locations)
    }

    fn plan_windows(
        &self,
        entry: &Entry,
        sender: &std::sync::mpsc::SyncSender<Vec<Location>>,
    ) -> Result<()> {
        let mut window = Vec::new();
        let mut window_bytes = 0u64;
        for list in &entry.lists {
            let chunks = self.load_list(list)?;
            let locations = self.locate_list(&chunks)?;
            for (chunk, location) in chunks.iter().zip(locations) {
                window_bytes += u64::from(chunk.length);
                window.push(location);
                if window_bytes >= WINDOW_BYTES {
                    if sender.send(std::mem::take(&mut window)).is_err() {
                        return Ok(());
                    }
                    window_bytes = 0;
                }
            }
        }
        if !window.is_empty() {
            let _ = sender.send(window);
        }
        Ok(())
    }
}

fn fetch_loop(
    storage: &Storage,
    keys: &Keys,
    windows: Receiver<Vec<Location>>,
    results: std::sync::mpsc::SyncSender<Result<FetchedWindow>>,
) {
    let runtime = storage.runtime().clone();
    let start = |window: Vec<Location>| {
        let plans = plan_reads(&window);
        let reads = start_reads(storage, &plans);
        (window, plans, reads)
    };
    let mut windows = windows.into_iter();
    let mut next = windows.next().map(start);
    while let Some((window, plans, reads)) = next.take() {
        let reads = runtime
            .block_on(reads)
            .unwrap_or_else(|e| Err(Error::Invalid(format!("a pack read task failed: {e}"))));
        next = windows.next().map(start);
        let fetched = reads
            .and_then(|reads| decode_window(keys, &window, &plans, &reads))
            .map(|chunks| (window, chunks));
        let failed = fetched.is_err();
        if results.send(fetched).is_err() || failed {
            if let Some((_, _, reads)) = next {
                reads.abort();
            }
            return;
        }
    }
}

fn write_loop(
    entry: &Entry,
    out: &mut (dyn Write + Send),
    windows: Receiver<Result<FetchedWindow>>,
    keys: &Keys,
    progress: &dyn RestoreProgress,
) -> Result<()> {
    let mut check = EntryCheck::new(entry, keys)?;
    let mut written = 0u64;
    for window in windows {
        let (locations, chunks) = window?;
        for (location, chunk) in locations.iter().zip(&chunks) {
            check.add(&location.entry.id, chunk);
        }
        let bytes = write_chunks(out, &chunks)
            .map_err(|e| Error::io(format!("writing entry {} failed", entry.name), e))?;
        written += bytes;
        progress.written(bytes);
    }
    out.flush()
        .map_err(|e| Error::io(format!("writing entry {} failed", entry.name), e))?;
    if written != entry.size {
        return Err(Error::corrupt(
            format!("entry {}", entry.name),
            format!(
                "restored {written} bytes, the snapshot records {}",
                entry.size
            ),
        ));
    }
    check.finish(entry)
}

/// Writes `chunks` in order with vectored writes, a few system calls per
/// window and no copy into a buffer; returns the bytes written.
fn write_chunks(out: &mut (dyn Write + Send), chunks: &[Vec<u8>]) -> std::io::Result<u64> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    let mut written = 0u64;
    while !rest.is_empty() {
        let n = match out.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        written += n as u64;
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(written)
}

/// The entry hash recomputed over what a restore wrote.
enum EntryCheck<'e> {
    /// Format 2: chunk ids and lengths in order.
    Sequence(SequenceHasher, &'e str),
    /// Format 1: every byte of the stream.
    Stream(blake3::Hasher, &'e str),
}

impl<'e> EntryCheck<'e> {
    fn new(entry: &'e Entry, keys: &Keys) -> Result<Self> {
        match (&entry.sequence_hash, &entry.hash) {
            (Some(expected), _) => Ok(EntryCheck::Sequence(SequenceHasher::new(keys), expected)),
            (None, Some(expected)) => Ok(EntryCheck::Stream(keys.stream_hasher(), expected)),
            (None, None) => Err(Error::corrupt(
                format!("entry {}", entry.name),
                "the snapshot records no hash for this entry",
            )),
        }
    }

    /// Adds a chunk whose plaintext was verified against `id`.
    fn add(&mut self, id: &Id, chunk: &[u8]) {
        match self {
            EntryCheck::Sequence(hasher, _) => hasher.push(id, chunk.len() as u32),
            EntryCheck::Stream(hasher, _) => {
                hasher.update(chunk);
            }
        }
    }

    fn finish(self, entry: &Entry) -> Result<()> {
        let (actual, expected, what) = match self {
            EntryCheck::Sequence(hasher, expected) => (hasher.finish(), expected, "chunk sequence"),
            EntryCheck::Stream(hasher, expected) => {
                (hasher.finalize().to_hex().to_string(), expected, "stream")
            }
        };
        if actual != expected {
            return Err(Error::corrupt(
                format!("entry {}", entry.name),
                format!("the restored {what} does not match the snapshot's {what} hash"),
            ));
        }
        Ok(())
    }
}
