//! Content-defined chunking of a stream with FastCDC and a keyed gear table.
//!
//! The cut-point search is `fastcdc::v2020::cut_gear`. cairn supplies the gear
//! table, derived from the repository key, so chunk sizes do not reveal known
//! content to someone without the key. Boundaries depend only on the bytes,
//! the parameters and the key: a golden test pins them, because any change
//! would break dedup against every existing repository.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use fastcdc::v2020::{self, Normalization};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// FastCDC parameters, fixed per repository at `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk in bytes, except for the last chunk of a stream.
    pub min_size: u32,
    /// Target average chunk size in bytes, a power of two.
    pub avg_size: u32,
    /// Largest chunk in bytes.
    pub max_size: u32,
    /// FastCDC normalization level, 0 to 3.
    pub normalization: u8,
}

impl Default for ChunkerParams {
    /// 4 KiB / 16 KiB / 64 KiB, normalization level 1. Chosen by measuring
    /// daily growth on a pg_dump series (docs/benchmarks.md): on pg_dump
    /// output the mean chunk is about 28 KiB, and daily growth was less than
    /// half of what 64 KiB and a quarter of what 1 MiB averages gave.
    fn default() -> Self {
        ChunkerParams {
            min_size: 4 * 1024,
            avg_size: 16 * 1024,
            max_size: 64 * 1024,
            normalization: 1,
        }
    }
}

impl ChunkerParams {
    /// Checks the parameters against what FastCDC supports.
    pub fn validate(&self) -> Result<()> {
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let problem = if !(v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min) {
            Some(format!(
                "minimum chunk size {min} is outside {}..={}",
                v2020::MINIMUM_MIN,
                v2020::MINIMUM_MAX
            ))
        } else if !(v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            || !avg.is_power_of_two()
        {
            Some(format!(
                "average chunk size {avg} must be a power of two in {}..={}",
                v2020::AVERAGE_MIN,
                v2020::AVERAGE_MAX
            ))
        } else if !(v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max) {
            Some(format!(
                "maximum chunk size {max} is outside {}..={}",
                v2020::MAXIMUM_MIN,
                v2020::MAXIMUM_MAX
            ))
        } else if !(min <= avg && avg <= max) {
            Some(format!(
                "chunk sizes must satisfy min <= avg <= max, got {min} / {avg} / {max}"
            ))
        } else if min % 2 != 0 || max % 2 != 0 {
            Some(format!(
                "chunk sizes must be even, got min {min} and max {max}"
            ))
        } else if self.normalization > 3 {
            Some(format!(
                "normalization level {} is outside 0..=3",
                self.normalization
            ))
        } else {
            let bits = avg.trailing_zeros() + u32::from(self.normalization);
            (bits as usize >= v2020::MASKS.len()
                || avg.trailing_zeros() < u32::from(self.normalization))
            .then(|| "normalization level is too high for this average chunk size".to_string())
        };
        match problem {
            Some(problem) => Err(Error::Invalid(format!(
                "invalid chunker parameters: {problem}"
            ))),
            None => Ok(()),
        }
    }

    fn level(&self) -> Normalization {
        match self.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }
}

/// Finds cut points with a keyed gear table.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Chunker {
    /// Builds a chunker; `params` must have passed [`ChunkerParams::validate`].
    pub fn new(params: ChunkerParams, gear: &[u64; 256]) -> Result<Self> {
        params.validate()?;
        let (mask_s, mask_l) = v2020::select_masks(params.avg_size as usize, params.level());
        let gear = Box::new(*gear);
        let mut gear_ls = Box::new([0u64; 256]);
        for (shifted, value) in gear_ls.iter_mut().zip(gear.iter()) {
            *shifted = value << 1;
        }
        Ok(Chunker {
            params,
            mask_s,
            mask_l,
            gear,
            gear_ls,
        })
    }

    /// Returns the length of the first chunk of `data`, treating `data` as the
    /// rest of the stream. Shorter than `min_size` only at the end.
    pub fn cut(&self, data: &[u8]) -> usize {
        let (_, len) = v2020::cut_gear(
            data,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            self.gear.as_slice(),
            self.gear_ls.as_slice(),
        );
        len.max(1).min(data.len())
    }

    /// Splits a whole in-memory buffer into chunk ranges.
    pub fn split(&self, data: &[u8]) -> Vec<Range<usize>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let len = self.cut(&data[start..]);
            ranges.push(start..start + len);
            start += len;
        }
        ranges
    }

    /// Largest chunk this chunker produces.
    pub fn max_size(&self) -> usize {
        self.params.max_size as usize
    }
}

/// A run of whole chunks read from a stream, sharing one buffer.
pub struct Batch {
    buffer: Vec<u8>,
    /// Offset of the first chunk in `buffer`.
    start: usize,
    /// Chunk boundaries within [`Batch::data`], in stream order.
    pub chunks: Vec<Range<usize>>,
}

impl Batch {
    /// Makes a batch of `data` cut at `chunks`.
    pub fn new(data: Vec<u8>, chunks: Vec<Range<usize>>) -> Batch {
        Batch {
            buffer: data,
            start: 0,
            chunks,
        }
    }

    /// Returns the bytes of all chunks in the batch.
    pub fn data(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Gives the buffer back, for a [`BufferPool`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buffer
    }
}

/// Batch buffers handed back by the consumer for the reader to fill again.
///
/// Reusing them keeps the reader from faulting in fresh zeroed pages for
/// every batch, which cost about a tenth of a backup's CPU time.
#[derive(Clone, Default)]
pub struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers a pool keeps; more are dropped. The backup pipeline has five in
/// flight: one being read, one being cut, one hashed, and one in each
/// channel between them.
const POOL_BUFFERS: usize = 8;

impl BufferPool {
    /// Returns a buffer for reuse.
    pub fn put(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        if let Ok(mut buffers) = self.0.lock()
            && buffers.len() < POOL_BUFFERS
        {
            buffers.push(buffer);
        }
    }

    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut buffers| buffers.pop())
            .unwrap_or_default()
    }
}

/// Bytes read from a stream, after `headroom` unused bytes at the front of
/// the buffer where [`BatchCutter`] puts the tail of the previous block.
pub struct Block {
    buffer: Vec<u8>,
    /// True for the last block of the stream.
    eof: bool,
}

/// Reads a stream in blocks of a fixed size, the first stage of a
/// [`StreamChunker`]; it may run on its own thread.
pub struct BlockReader<R> {
    reader: R,
    headroom: usize,
    block_bytes: usize,
    eof: bool,
    pool: BufferPool,
}

impl<R: Read> BlockReader<R> {
    /// Returns the next block, or `None` after the block marked `eof`.
    pub fn next_block(&mut self) -> io::Result<Option<Block>> {
        if self.eof {
            return Ok(None);
        }
        let mut buffer = self.pool.take();
        buffer.resize(self.headroom, 0);
        buffer.reserve_exact(self.block_bytes);
        // `read_to_end` on a `Take` reads into the spare capacity without
        // zero-filling it first (for files, pipes and stdin), and stops at
        // the limit or at the end of the stream.
        let limit = self.block_bytes as u64;
        let read = (&mut self.reader).take(limit).read_to_end(&mut buffer)?;
        self.eof = (read as u64) < limit;
        Ok(Some(Block {
            buffer,
            eof: self.eof,
        }))
    }
}

/// Cuts blocks into batches of whole chunks, the second stage of a
/// [`StreamChunker`]; it may run on its own thread.
pub struct BatchCutter {
    chunker: Chunker,
    /// Bytes after the last cut, always fewer than a maximum chunk.
    carry: Vec<u8>,
    pool: BufferPool,
}

impl BatchCutter {
    /// Cuts `block`, after the bytes left over from the previous block.
    /// Returns `None` when no whole chunk is available yet, or at the end.
    pub fn cut(&mut self, block: Block) -> Option<Batch> {
        let Block { mut buffer, eof } = block;
        // The reader leaves one maximum chunk of headroom.
        let max = self.chunker.max_size();
        let head = max;

        // Put the carry right before the new bytes, so the batch is
        // contiguous without moving the block. It always fits, because the
        // loop below leaves fewer than a maximum chunk of bytes uncut.
        let start = head - self.carry.len();
        buffer[start..head].copy_from_slice(&self.carry);
        self.carry.clear();
        let mut data = buffer;

        let mut chunks = Vec::new();
        let mut end = start;
        // Cut while a full maximum-size window is available; at the end of
        // the stream, cut everything.
        while end < data.len() && (eof || data.len() - end >= max) {
            let len = self.chunker.cut(&data[end..]);
            chunks.push(end - start..end - start + len);
            end += len;
        }

        self.carry.extend_from_slice(&data[end..]);
        data.truncate(end);
        if chunks.is_empty() {
            self.pool.put(data);
            return None;
        }
        Some(Batch {
            buffer: data,
            start,
            chunks,
        })
    }
}

/// Reads a stream and cuts it into batches of whole chunks.
///
/// Memory is bounded by the block size plus one maximum chunk per batch,
/// whatever the length of the stream. [`StreamChunker::split`] gives the
/// two stages, to run on two threads.
pub struct StreamChunker<R> {
    reader: BlockReader<R>,
    cutter: BatchCutter,
}

impl<R: Read> StreamChunker<R> {
    /// Wraps `reader`; each read takes `block_bytes` of the stream.
    pub fn new(reader: R, chunker: Chunker, block_bytes: usize) -> Self {
        // Room in front of each block for the carry of the previous one.
        let headroom = chunker.max_size();
        let pool = BufferPool::default();
        StreamChunker {
            reader: BlockReader {
                reader,
                headroom,
                block_bytes: block_bytes.max(1),
                eof: false,
                pool: pool.clone(),
            },
            cutter: BatchCutter {
                chunker,
                carry: Vec::new(),
                pool,
            },
        }
    }

    /// Takes buffers from `pool`, where the consumer returns them.
    pub fn with_pool(mut self, pool: BufferPool) -> Self {
        self.reader.pool = pool.clone();
        self.cutter.pool = pool;
        self
    }

    /// Returns the next batch, or `None` at the end of the stream.
    pub fn next_batch(&mut self) -> io::Result<Option<Batch>> {
        while let Some(block) = self.reader.next_block()? {
            if let Some(batch) = self.cutter.cut(block) {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    /// Separates the reading stage from the cutting stage.
    pub fn split(self) -> (BlockReader<R>, BatchCutter) {
        (self.reader, self.cutter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Keys, SecretKey};
    use proptest::prelude::*;

    fn test_chunker(params: ChunkerParams) -> Chunker {
        let keys = Keys::derive(SecretKey::from_bytes([42; 32]));
        Chunker::new(params, keys.gear()).expect("valid parameters")
    }

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
            normalization: 1,
        }
    }

    /// Deterministic pseudo-random bytes (xorshift), so the golden test does
    /// not depend on any random-number crate's stream.
    fn seeded_bytes(len: usize, mut state: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(&state.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn stream_ranges(
        data: &[u8],
        chunker: Chunker,
        batch: usize,
        read_size: usize,
    ) -> Vec<Range<usize>> {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.1).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut stream = StreamChunker::new(Trickle(data, read_size), chunker, batch);
        let mut offset = 0;
        let mut out = Vec::new();
        while let Some(batch) = stream.next_batch().expect("read") {
            for range in &batch.chunks {
                out.push(offset + range.start..offset + range.end);
            }
            offset += batch.data().len();
        }
        out
    }

    #[test]
    fn golden_boundaries_of_seeded_input() {
        let data = seeded_bytes(64 * 1024, 0x5eed);
        let ends: Vec<usize> = test_chunker(small())
            .split(&data)
            .iter()
            .map(|r| r.end)
            .collect();
        assert_eq!(
            &ends[..12],
            &[
                2171, 3394, 3878, 5210, 6326, 7726, 9941, 10807, 12265, 14183, 15897, 17418
            ],
            "chunk boundaries changed: this breaks dedup against existing repositories"
        );
        assert_eq!(
            ends.len(),
            54,
            "number of chunks of the golden input changed"
        );
    }

    #[test]
    fn other_key_gives_other_boundaries() {
        let data = seeded_bytes(64 * 1024, 0x5eed);
        let other = Keys::derive(SecretKey::from_bytes([43; 32]));
        let a = test_chunker(small()).split(&data);
        let b = Chunker::new(small(), other.gear())
            .expect("valid")
            .split(&data);
        assert_ne!(a, b);
    }

    #[test]
    fn boundaries_resynchronise_after_insertion() {
        let data = seeded_bytes(256 * 1024, 7);
        let mut edited = data[..100_000].to_vec();
        edited.extend_from_slice(b"an inserted row\n");
        edited.extend_from_slice(&data[100_000..]);
        let chunker = test_chunker(small());
        let before: Vec<&[u8]> = chunker.split(&data).into_iter().map(|r| &data[r]).collect();
        let after: Vec<&[u8]> = chunker
            .split(&edited)
            .into_iter()
            .map(|r| &edited[r])
            .collect();
        let shared = after.iter().filter(|chunk| before.contains(chunk)).count();
        assert!(
            after.len() - shared <= 3,
            "{} of {} chunks changed after one insertion",
            after.len() - shared,
            after.len()
        );
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        let mut params = small();
        params.avg_size = 1000;
        assert!(params.validate().is_err());
        let mut params = small();
        params.min_size = 8192;
        assert!(params.validate().is_err());
        assert!(ChunkerParams::default().validate().is_ok());
    }

    proptest! {
        #[test]
        fn streaming_matches_whole_buffer(
            len in 0usize..40_000,
            seed in 1u64..u64::MAX,
            batch in 1usize..10_000,
            read_size in 1usize..9_000,
        ) {
            let data = seeded_bytes(len, seed);
            let chunker = test_chunker(small());
            let whole = chunker.split(&data);
            let streamed = stream_ranges(&data, chunker, batch, read_size);
            prop_assert_eq!(whole, streamed);
        }

        #[test]
        fn chunks_respect_size_bounds(len in 1usize..60_000, seed in 1u64..u64::MAX) {
            let data = seeded_bytes(len, seed);
            let ranges = test_chunker(small()).split(&data);
            let last = ranges.len() - 1;
            for (i, range) in ranges.iter().enumerate() {
                prop_assert!(range.len() <= 4096);
                if i != last {
                    prop_assert!(range.len() >= 256, "chunk {} of {} bytes", i, range.len());
                }
            }
        }
    }
}
