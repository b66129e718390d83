//! The backup pipeline: read, chunk, hash, deduplicate, seal, pack, upload.
//!
//! Stages and the threads that run them:
//!
//! 1. a reader thread reads the stream in blocks, and a cutter thread cuts
//!    them into batches of whole chunks (bounded channels of one each);
//! 2. the calling thread hashes the chunks of a batch in parallel (rayon),
//!    looks each id up, and seals only new chunks in parallel; the batch
//!    buffer then goes back to the reader;
//! 3. sealed blobs go into a pack; a full pack goes to the upload thread,
//!    which writes at most [`UPLOAD_CONCURRENCY`] packs at a time.
//!
//! Memory is bounded by the batches in flight, the pack being filled, one
//! queued pack and the packs being uploaded, whatever the size of the
//! stream.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rayon::prelude::*;
use tracing::{debug, info, warn};

use crate::chunker::{Batch, BufferPool, Chunker, StreamChunker};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::index_object::{self, PackRecord};
use crate::lock::Lock;
use crate::pack::{self, BlobKind, PackBuilder, SealedPack};
use crate::producer::Producer;
use crate::repo::Repository;
use crate::snapshot::{self, ChunkRef, Entry, ListRef, SNAPSHOT_VERSION, SequenceHasher, Snapshot};
use crate::storage::Storage;

/// Bytes of stream per read, and so per batch handed to the hashing stage.
const BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// Packs written to the backend at the same time.
pub const UPLOAD_CONCURRENCY: usize = 2;
/// An index object is written once the uploaded packs it would name hold
/// this many blobs or number [`PACKS_PER_INDEX`], so that little is left
/// to index when the stream ends.
const BLOBS_PER_INDEX: usize = 16 * 1024;
/// See [`BLOBS_PER_INDEX`].
const PACKS_PER_INDEX: usize = 64;

/// Receives progress counts; the CLI draws them.
pub trait Progress: Send + Sync {
    /// `n` more bytes of input were read.
    fn read(&self, _n: u64) {}
    /// `n` more bytes were added to packs.
    fn stored(&self, _n: u64) {}
}

/// Progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// One stream to back up.
pub struct Source {
    /// Entry name in the snapshot.
    pub name: String,
    /// The stream.
    pub reader: Box<dyn Read + Send>,
    /// The program writing the stream, checked after the stream ends.
    pub producer: Option<Producer>,
}

/// Streams of one backup, started one at a time: the next source is asked
/// for only after the previous entry is stored, so a producer (a `pg_dump`)
/// starts when its turn comes, not all at once.
pub trait Sources {
    /// Returns the next stream, or `None` after the last.
    fn next_source(&mut self) -> Result<Option<Source>>;

    /// Called after an entry was stored and its producer exited with
    /// status 0. An error here fails the backup.
    fn entry_stored(&mut self, _summary: &EntrySummary) -> Result<()> {
        Ok(())
    }

    /// Called after the last entry, before the snapshot is written; may add
    /// metadata to it. An error here fails the backup.
    fn complete(&mut self, _snapshot: &mut Snapshot) -> Result<()> {
        Ok(())
    }
}

impl Sources for std::vec::IntoIter<Source> {
    fn next_source(&mut self) -> Result<Option<Source>> {
        Ok(self.next())
    }
}

/// Options of one backup.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Tags stored with the snapshot.
    pub tags: Vec<String>,
    /// Producer command line recorded in the snapshot.
    pub command: Option<Vec<String>>,
    /// Accept empty streams.
    pub allow_empty: bool,
    /// Start time to record instead of the current time, RFC 3339 with any
    /// offset; for tests and for importing old dumps. The finish time is
    /// this plus the duration of the backup.
    pub time: Option<String>,
}

/// Counts for one entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntrySummary {
    /// Entry name.
    pub name: String,
    /// Stream length in bytes.
    pub size: u64,
    /// Chunks in the stream.
    pub chunks: u64,
    /// Chunks that were not in the repository yet.
    pub new_chunks: u64,
    /// Plaintext bytes of the new chunks.
    pub new_bytes: u64,
}

/// Result of a backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupSummary {
    /// Id of the new snapshot, hex.
    pub snapshot: String,
    /// Per-entry counts.
    pub entries: Vec<EntrySummary>,
    /// Bytes read from all streams.
    pub bytes_read: u64,
    /// Plaintext bytes of new chunks.
    pub new_bytes: u64,
    /// Bytes added to the repository: sealed blobs plus pack headers.
    pub stored_bytes: u64,
    /// Packs written.
    pub packs: u64,
    /// Wall-clock seconds.
    pub duration_secs: f64,
}

/// Writes packs on a background thread.
struct Uploader {
    sender: Option<tokio::sync::mpsc::Sender<SealedPack>>,
    thread: Option<JoinHandle<Result<()>>>,
    done: Arc<Mutex<Vec<PackRecord>>>,
}

impl Uploader {
    fn start(storage: Storage) -> Uploader {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<SealedPack>(1);
        let done = Arc::new(Mutex::new(Vec::new()));
        let finished = Arc::clone(&done);
        let thread = std::thread::spawn(move || -> Result<()> {
            let runtime = Arc::clone(storage.runtime());
            runtime.block_on(async move {
                let mut writes = tokio::task::JoinSet::new();
                let mut first_error = None;
                let record = |result: std::result::Result<Result<()>, tokio::task::JoinError>,
                              first_error: &mut Option<Error>| {
                    match result {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            first_error.get_or_insert(e);
                        }
                        Err(e) => {
                            first_error.get_or_insert(Error::Invalid(format!(
                                "pack upload task failed: {e}"
                            )));
                        }
                    }
                };
                loop {
                    // Take a pack from the queue only when a write can start,
                    // so that no pack waits here while the queue fills.
                    while writes.len() >= UPLOAD_CONCURRENCY {
                        if let Some(result) = writes.join_next().await {
                            record(result, &mut first_error);
                        }
                    }
                    if first_error.is_some() {
                        break;
                    }
                    let Some(pack) = receiver.recv().await else {
                        break;
                    };
                    let storage = storage.clone();
                    let finished = Arc::clone(&finished);
                    writes.spawn(async move {
                        let path = pack::pack_path(&pack.name);
                        let size = pack.bytes.len() as u64;
                        // IMPORTANT: a pack is durable before any index
                        // object names it (see `Session::write_index`).
                        storage.write_async(&path, pack.bytes).await?;
                        debug!(pack = %path, size, "pack written");
                        // Recorded at once, so that the next flush can index
                        // it while other writes are still running.
                        let record = PackRecord {
                            name: pack.name,
                            size,
                            entries: pack.entries,
                        };
                        if let Ok(mut done) = finished.lock() {
                            done.push(record);
                        }
                        Ok(())
                    });
                }
                receiver.close();
                while let Some(result) = writes.join_next().await {
                    record(result, &mut first_error);
                }
                match first_error {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            })
        });
        Uploader {
            sender: Some(sender),
            thread: Some(thread),
            done,
        }
    }

    /// Queues a pack; blocks while the queue is full. Fails if the upload
    /// thread stopped after an error.
    fn send(&mut self, pack: SealedPack) -> Result<()> {
        let sent = match &self.sender {
            Some(sender) => sender.blocking_send(pack).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self
                .join()
                .err()
                .unwrap_or_else(|| Error::Invalid("pack upload thread stopped".into())))
        }
    }

    /// Returns the number of packs written and not yet taken, and of the
    /// blobs they contain.
    fn done_counts(&self) -> (usize, usize) {
        self.done
            .lock()
            .map(|done| (done.len(), done.iter().map(|p| p.entries.len()).sum()))
            .unwrap_or_default()
    }

    /// Takes the records of packs written so far.
    fn take_done(&self) -> Vec<PackRecord> {
        self.done
            .lock()
            .map(|mut done| std::mem::take(&mut *done))
            .unwrap_or_default()
    }

    /// Waits for every queued pack; returns the first write error.
    fn join(&mut self) -> Result<()> {
        self.sender.take();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| Error::Invalid("pack upload thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

/// State shared by all entries of one backup.
struct Session<'a> {
    keys: &'a Keys,
    storage: &'a Storage,
    index: &'a mut Index,
    level: i32,
    pack_size: usize,
    builder: PackBuilder,
    /// Blobs added in this run that the local index does not know yet.
    pending: HashSet<Id>,
    uploader: Uploader,
    stored_bytes: u64,
    packs: u64,
    progress: &'a dyn Progress,
    lock: &'a Lock,
}

impl Session<'_> {
    fn is_known(&self, id: &Id) -> Result<bool> {
        Ok(self.pending.contains(id) || self.index.contains(id)?)
    }

    fn push_sealed(
        &mut self,
        kind: BlobKind,
        id: Id,
        raw_length: u32,
        sealed: &[u8],
    ) -> Result<()> {
        self.builder.push(kind, id, raw_length, sealed);
        self.stored_bytes += sealed.len() as u64;
        self.progress.stored(sealed.len() as u64);
        if self.builder.len() >= self.pack_size {
            self.flush_pack()?;
        }
        Ok(())
    }

    fn flush_pack(&mut self) -> Result<()> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let builder = std::mem::replace(
            &mut self.builder,
            PackBuilder::with_capacity(self.pack_size + (1 << 20)),
        );
        let before = builder.len() as u64;
        let pack = builder.finish(self.keys)?;
        self.stored_bytes += pack.bytes.len() as u64 - before;
        self.packs += 1;
        self.uploader.send(pack)?;
        let (packs, blobs) = self.uploader.done_counts();
        if packs >= PACKS_PER_INDEX || blobs >= BLOBS_PER_INDEX {
            self.write_index(self.uploader.take_done())?;
        }
        Ok(())
    }

    /// Stores a chunk list as a blob unless it exists; returns its reference.
    fn store_list(&mut self, chunks: &[ChunkRef]) -> Result<ListRef> {
        let bytes = snapshot::encode_list(chunks);
        let id = self.keys.chunk_id(&bytes);
        if !self.is_known(&id)? {
            let mut sealed = Vec::new();
            pack::seal_blob(
                self.keys,
                BlobKind::List,
                &id,
                &bytes,
                self.level,
                &mut sealed,
            )?;
            self.pending.insert(id);
            self.push_sealed(BlobKind::List, id, bytes.len() as u32, &sealed)?;
        }
        Ok(ListRef {
            id: id.to_hex(),
            chunks: chunks.len() as u32,
            size: chunks.iter().map(|c| u64::from(c.length)).sum(),
        })
    }

    /// Writes an index object naming packs that are already durable.
    fn write_index(&mut self, records: Vec<PackRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // A backup whose lock was lost may race a prune: commit nothing.
        self.lock.ensure_held()?;
        let paths: Vec<String> = records.iter().map(|r| pack::pack_path(&r.name)).collect();
        // IMPORTANT: make the packs' directory entries durable before the
        // index object that names them exists.
        self.storage.sync_dirs(paths.iter().map(String::as_str))?;
        let (name, bytes) = index_object::encode(self.keys, &records)?;
        let path = index_object::index_path(&name);
        // IMPORTANT: the index object is durable before any snapshot refers
        // to the blobs it lists.
        self.storage.write(&path, bytes)?;
        self.storage.sync_dirs([path.as_str()])?;
        self.index.insert_index_object(&name, &records)?;
        for record in &records {
            for entry in &record.entries {
                self.pending.remove(&entry.id);
            }
        }
        debug!(index = %path, packs = records.len(), "index object written");
        Ok(())
    }

    /// Flushes the last pack, waits for every upload and indexes them.
    fn finish(&mut self) -> Result<()> {
        self.flush_pack()?;
        // Index the packs already written while the last ones upload, when
        // they are enough to be worth an index object of their own.
        if self.uploader.done_counts().1 >= BLOBS_PER_INDEX / 4 {
            self.write_index(self.uploader.take_done())?;
        }
        self.uploader.join()?;
        let records = self.uploader.take_done();
        self.write_index(records)
    }

    /// After a failure: waits for uploads already queued and indexes them
    /// so the next run can reuse their chunks. Errors are logged only.
    fn abandon(&mut self) {
        if let Err(e) = self.uploader.join() {
            debug!(error = %e, "upload failed while abandoning the backup");
        }
        let records = self.uploader.take_done();
        if let Err(e) = self.write_index(records) {
            warn!(error = %e, "cannot index the packs of the failed backup; prune will remove them");
        }
    }
}

/// Runs the reading stage and the cutting stage on two threads of their
/// own. Each hands on at most one block or batch ahead.
fn spawn_reader(
    reader: Box<dyn Read + Send>,
    chunker: Chunker,
    pool: BufferPool,
) -> (
    std::sync::mpsc::Receiver<io::Result<Batch>>,
    [JoinHandle<()>; 2],
) {
    let (mut blocks, mut cutter) = StreamChunker::new(reader, chunker, BLOCK_BYTES)
        .with_pool(pool)
        .split();
    let (block_sender, block_receiver) = std::sync::mpsc::sync_channel(1);
    let (batch_sender, batch_receiver) = std::sync::mpsc::sync_channel(1);
    let reading = std::thread::spawn(move || {
        loop {
            let next = blocks.next_block();
            let stop = !matches!(next, Ok(Some(_)));
            let message = match next {
                Ok(Some(block)) => Ok(block),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if block_sender.send(message).is_err() || stop {
                break;
            }
        }
    });
    let cutting = std::thread::spawn(move || {
        for block in block_receiver {
            let message = match block {
                Ok(block) => match cutter.cut(block) {
                    Some(batch) => Ok(batch),
                    None => continue,
                },
                Err(e) => Err(e),
            };
            let failed = message.is_err();
            if batch_sender.send(message).is_err() || failed {
                break;
            }
        }
    });
    (batch_receiver, [reading, cutting])
}

fn backup_entry(
    session: &mut Session<'_>,
    chunker: &Chunker,
    source: Source,
    allow_empty: bool,
) -> Result<(Entry, EntrySummary)> {
    let Source {
        name,
        reader,
        mut producer,
    } = source;
    let pool = BufferPool::default();
    let (batches, reader_threads) = spawn_reader(reader, chunker.clone(), pool.clone());
    let result = consume_batches(session, &name, batches, &pool);
    let (entry, summary) = match result {
        Ok(done) => done,
        Err(e) => {
            // Stop the producer first so a blocked read returns; the reader
            // thread then ends on its own.
            if let Some(producer) = producer.as_mut() {
                producer.stop();
            }
            return Err(e);
        }
    };
    for thread in reader_threads {
        let _ = thread.join();
    }
    if let Some(producer) = producer {
        producer.finish()?;
    }
    if entry.size == 0 && !allow_empty {
        return Err(Error::EmptyStream { name });
    }
    Ok((entry, summary))
}

fn consume_batches(
    session: &mut Session<'_>,
    name: &str,
    batches: std::sync::mpsc::Receiver<io::Result<Batch>>,
    pool: &BufferPool,
) -> Result<(Entry, EntrySummary)> {
    let keys = session.keys;
    let mut sequence = SequenceHasher::new(keys);
    let mut summary = EntrySummary {
        name: name.to_string(),
        size: 0,
        chunks: 0,
        new_chunks: 0,
        new_bytes: 0,
    };
    let mut lists = Vec::new();
    let mut current: Vec<ChunkRef> = Vec::new();
    for batch in batches {
        let batch = batch
            .map_err(|e| Error::io(format!("reading the stream for entry {name} failed"), e))?;
        let data = batch.data();
        check_coverage(&batch)?;
        let ids: Vec<Id> = batch
            .chunks
            .par_iter()
            .map(|range| keys.chunk_id(&data[range.clone()]))
            .collect();
        // `pending` contains the chunks of this run that the index does not
        // know yet, which also catches repeats within the batch.
        let indexed = session.index.contains_many(&ids)?;
        let mut fresh = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if !indexed[i] && session.pending.insert(*id) {
                fresh.push(i);
            }
        }
        let level = session.level;
        // NOTE: each new chunk is sealed into its own Vec and then copied
        // into the pack, one extra copy of new data only.
        let sealed: Vec<Vec<u8>> = fresh
            .par_iter()
            .map(|&i| {
                let mut out = Vec::new();
                pack::seal_blob(
                    keys,
                    BlobKind::Data,
                    &ids[i],
                    &data[batch.chunks[i].clone()],
                    level,
                    &mut out,
                )
                .map(|()| out)
            })
            .collect::<Result<_>>()?;
        for (&i, blob) in fresh.iter().zip(&sealed) {
            let len = batch.chunks[i].len() as u32;
            session.push_sealed(BlobKind::Data, ids[i], len, blob)?;
            summary.new_chunks += 1;
            summary.new_bytes += u64::from(len);
        }
        for (range, id) in batch.chunks.iter().zip(&ids) {
            sequence.push(id, range.len() as u32);
            current.push(ChunkRef {
                id: *id,
                length: range.len() as u32,
            });
            if snapshot::ends_list(id, current.len()) {
                lists.push(session.store_list(&current)?);
                current.clear();
            }
        }
        summary.chunks += ids.len() as u64;
        summary.size += data.len() as u64;
        session.progress.read(data.len() as u64);
        pool.put(batch.into_buffer());
    }
    if !current.is_empty() {
        lists.push(session.store_list(&current)?);
    }
    let entry = Entry {
        name: name.to_string(),
        size: summary.size,
        hash: None,
        sequence_hash: Some(sequence.finish()),
        chunks: summary.chunks,
        lists,
    };
    Ok((entry, summary))
}

/// Checks that the chunks of a batch cover its bytes in order, without gaps
/// or overlaps. The sequence hash proves a restore wrote the recorded chunks
/// in order; this proves those chunks are the whole stream.
fn check_coverage(batch: &Batch) -> Result<()> {
    let mut end = 0;
    let contiguous = batch.chunks.iter().all(|range| {
        let next = range.start == end && range.end > range.start;
        end = range.end;
        next
    });
    if !contiguous || end != batch.data().len() {
        return Err(Error::Invalid(format!(
            "internal error: the chunker's cut points do not cover a batch of {} bytes (covered {end}); please report this bug",
            batch.data().len()
        )));
    }
    Ok(())
}

impl Repository {
    /// Backs up `sources` as the entries of one new snapshot.
    ///
    /// The snapshot is written only after every stream was read to its end,
    /// every producer exited with status 0, and every pack and index object
    /// is durable. On any failure no snapshot is written.
    pub fn backup(
        &mut self,
        sources: Vec<Source>,
        options: &BackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupSummary> {
        let mut names = HashSet::new();
        for source in &sources {
            validate_entry_name(&source.name)?;
            if !names.insert(source.name.clone()) {
                return Err(duplicate_entry(&source.name));
            }
        }
        self.backup_sources(&mut sources.into_iter(), options, progress)
    }

    /// Backs up the streams `sources` yields as the entries of one new
    /// snapshot, with the guarantees of [`Repository::backup`].
    pub fn backup_sources(
        &mut self,
        sources: &mut dyn Sources,
        options: &BackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupSummary> {
        let started = Instant::now();
        let start_time = match &options.time {
            Some(text) => snapshot::parse_rfc3339(text)?,
            None => std::time::SystemTime::now(),
        };
        let time = snapshot::format_rfc3339(start_time);
        let lock = Lock::shared(&self.storage, &self.keys, "backup")?;
        info!(location = self.storage.location(), "backup started");
        let chunker = Chunker::new(self.config.chunker, self.keys.gear())?;
        let pack_size = self.config.pack_size as usize;
        let mut session = Session {
            keys: &self.keys,
            storage: &self.storage,
            index: &mut self.index,
            level: self.config.compression_level,
            pack_size,
            builder: PackBuilder::with_capacity(pack_size + (1 << 20)),
            pending: HashSet::new(),
            uploader: Uploader::start(self.storage.clone()),
            stored_bytes: 0,
            packs: 0,
            progress,
            lock: &lock,
        };
        let mut entries = Vec::new();
        let mut summaries = Vec::new();
        let mut names = HashSet::new();
        loop {
            let next = sources.next_source().and_then(|source| {
                if let Some(source) = &source {
                    validate_entry_name(&source.name)?;
                    if !names.insert(source.name.clone()) {
                        return Err(duplicate_entry(&source.name));
                    }
                }
                Ok(source)
            });
            let source = match next {
                Ok(Some(source)) => source,
                Ok(None) => break,
                Err(e) => {
                    session.abandon();
                    return Err(e);
                }
            };
            let stored = backup_entry(&mut session, &chunker, source, options.allow_empty)
                .and_then(|(entry, summary)| {
                    sources.entry_stored(&summary)?;
                    Ok((entry, summary))
                });
            match stored {
                Ok((entry, summary)) => {
                    info!(
                        entry = %summary.name,
                        size = summary.size,
                        chunks = summary.chunks,
                        new_chunks = summary.new_chunks,
                        "entry stored"
                    );
                    entries.push(entry);
                    summaries.push(summary);
                }
                Err(e) => {
                    session.abandon();
                    return Err(e);
                }
            }
        }
        if let Err(e) = session.finish() {
            session.abandon();
            return Err(e);
        }
        let (stored_bytes, packs) = (session.stored_bytes, session.packs);
        drop(session);

        let mut snapshot = Snapshot {
            format_version: SNAPSHOT_VERSION,
            time,
            finished: snapshot::format_rfc3339(start_time + started.elapsed()),
            host: crate::host_name(),
            user: crate::user_name(),
            tags: options.tags.clone(),
            command: options.command.clone(),
            cairn_version: env!("CARGO_PKG_VERSION").to_string(),
            entries,
            damaged: None,
            postgres: None,
        };
        sources.complete(&mut snapshot)?;
        let (id, bytes) = snapshot.encode(&self.keys)?;
        let path = snapshot::snapshot_path(&id);
        lock.ensure_held()?;
        // IMPORTANT: the snapshot is written last, after the packs and the
        // index objects it depends on are durable.
        self.storage.write(&path, bytes)?;
        self.storage.sync_dirs([path.as_str()])?;
        self.index.insert_snapshot(&id, &snapshot)?;

        let summary = BackupSummary {
            snapshot: id.to_hex(),
            bytes_read: summaries.iter().map(|s| s.size).sum(),
            new_bytes: summaries.iter().map(|s| s.new_bytes).sum(),
            entries: summaries,
            stored_bytes,
            packs,
            duration_secs: started.elapsed().as_secs_f64(),
        };
        info!(
            snapshot = %id.short(),
            bytes_read = summary.bytes_read,
            new_bytes = summary.new_bytes,
            stored_bytes = summary.stored_bytes,
            "backup finished"
        );
        Ok(summary)
    }
}

fn duplicate_entry(name: &str) -> Error {
    Error::Invalid(format!(
        "entry name {name} is given twice; each entry of a snapshot needs its own name"
    ))
}

/// Checks that an entry name is usable as a file name on restore.
pub fn validate_entry_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains(':')
        || name.chars().any(char::is_control)
        || name.len() > 255;
    if bad {
        return Err(Error::Invalid(format!(
            "entry name {name:?} is invalid: use 1 to 255 characters without '/', ':' or control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: usize, chunks: &[(usize, usize)]) -> Batch {
        Batch::new(vec![0; len], chunks.iter().map(|&(a, b)| a..b).collect())
    }

    #[test]
    fn coverage_rejects_gaps_and_overlaps() {
        assert!(check_coverage(&batch(0, &[])).is_ok());
        assert!(check_coverage(&batch(10, &[(0, 4), (4, 10)])).is_ok());
        for (name, bad) in [
            ("gap", batch(10, &[(0, 4), (5, 10)])),
            ("overlap", batch(10, &[(0, 4), (3, 10)])),
            ("short", batch(10, &[(0, 4), (4, 9)])),
            ("empty chunk", batch(10, &[(0, 4), (4, 4), (4, 10)])),
            ("late start", batch(10, &[(1, 10)])),
            ("repeat after the end", batch(10, &[(0, 10), (5, 10)])),
        ] {
            let error = check_coverage(&bad).expect_err(name);
            assert!(
                error.to_string().contains("do not cover"),
                "{name}: {error}"
            );
        }
    }
}
