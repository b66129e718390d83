//! Blobs and packs.
//!
//! A blob is one chunk (or one chunk list), compressed with zstd when that
//! makes it smaller, then sealed in an envelope whose associated data is the
//! blob's id. A pack is many sealed blobs followed by an encrypted header
//! that lists them, so the index can be rebuilt from packs alone:
//!
//! ```text
//! blob 0 | blob 1 | ... | header envelope | header length u32 | "CAIRNPK1"
//! ```
//!
//! The header plaintext is `count u32` followed by one 45-byte record per
//! blob: `kind u8 | key id u32 | id [32] | stored length u32 | raw length u32`.
//! Blob offsets are implied by the order. A pack is stored as
//! `data/<first two hex digits>/<BLAKE3 of the pack bytes>`, so bit rot is
//! detectable by hashing, without the key.

use std::cell::RefCell;

use crate::crypto::{self, Domain, Keys};
use crate::error::{Error, Result};
use crate::id::Id;

const PACK_MAGIC: &[u8; 8] = b"CAIRNPK1";
const TRAILER_LEN: usize = 4 + 8;
/// Bytes of one blob record in a pack header or index object.
pub const RECORD_LEN: usize = 1 + 4 + 32 + 4 + 4;
/// Largest plaintext of any blob; larger values in a header are damage.
pub const MAX_BLOB_RAW: u32 = 32 * 1024 * 1024;

const STORED: u8 = 0;
const ZSTD: u8 = 1;

/// Kind of content in a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// A chunk of a stream.
    Data,
    /// A chunk list of a snapshot entry.
    List,
}

impl BlobKind {
    /// Code stored in headers and the index.
    pub fn code(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::List => 1,
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::List),
            _ => None,
        }
    }

    fn domain(self) -> Domain {
        match self {
            BlobKind::Data => Domain::DataBlob,
            BlobKind::List => Domain::ListBlob,
        }
    }
}

/// Position and sizes of a blob inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    /// Kind of content.
    pub kind: BlobKind,
    /// Data key that sealed the blob (0 = repository data key).
    pub key_id: u32,
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Stored (sealed) length in bytes.
    pub length: u32,
    /// Plaintext length in bytes.
    pub raw_length: u32,
}

/// Object path of a pack.
pub fn pack_path(name: &Id) -> String {
    let hex = name.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

/// Parses a pack name from its object path.
pub fn pack_name_from_path(path: &str) -> Option<Id> {
    let rest = path.strip_prefix("data/")?;
    let (dir, name) = rest.split_once('/')?;
    let id = Id::from_hex(name).ok()?;
    (dir.len() == 2 && name.starts_with(dir)).then_some(id)
}

thread_local! {
    /// One zstd compression context per thread and level. Creating a context
    /// per chunk cost about 10% of a first backup in a profile.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    /// One zstd decompression context per thread.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn compress(plaintext: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(current, _)| *current != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = slot.as_mut()?;
        compressor.compress(plaintext).ok()
    })
}

fn decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(decompressor) => decompressor.decompress(payload, capacity),
            None => zstd::bulk::decompress(payload, capacity),
        }
    })
}

/// Compresses and seals one blob. Returns the sealed bytes.
pub fn seal_blob(
    keys: &Keys,
    kind: BlobKind,
    id: &Id,
    plaintext: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let compressed = compress(plaintext, level);
    let mut body = Vec::with_capacity(plaintext.len() + 1);
    match compressed {
        Some(c) if c.len() < plaintext.len() => {
            body.push(ZSTD);
            body.extend_from_slice(&c);
        }
        _ => {
            body.push(STORED);
            body.extend_from_slice(plaintext);
        }
    }
    keys.seal_into(
        kind.domain(),
        &id.0,
        crypto::REPOSITORY_DATA_KEY,
        &body,
        out,
    )
}

/// Opens a sealed blob, decompresses it and checks that its content hashes
/// to its id. `object` names the pack in errors.
pub fn open_blob(keys: &Keys, entry: &BlobEntry, sealed: &[u8], object: &str) -> Result<Vec<u8>> {
    let label = || format!("{object} (blob {})", entry.id);
    if sealed.len() != entry.length as usize {
        return Err(Error::corrupt(label(), "stored blob has the wrong length"));
    }
    let body = keys.open(entry.kind.domain(), &entry.id.0, sealed, &label())?;
    let Some((&marker, payload)) = body.split_first() else {
        return Err(Error::corrupt(label(), "blob has no compression marker"));
    };
    let plaintext = match marker {
        STORED => payload.to_vec(),
        ZSTD => decompress(payload, entry.raw_length as usize)
            .map_err(|e| Error::corrupt(label(), format!("zstd decompression failed: {e}")))?,
        other => {
            return Err(Error::corrupt(
                label(),
                format!("unknown compression marker {other}"),
            ));
        }
    };
    if plaintext.len() != entry.raw_length as usize {
        return Err(Error::corrupt(
            label(),
            format!(
                "blob holds {} bytes, the index says {}",
                plaintext.len(),
                entry.raw_length
            ),
        ));
    }
    if keys.chunk_id(&plaintext) != entry.id {
        return Err(Error::corrupt(label(), "content does not match its id"));
    }
    Ok(plaintext)
}

/// Appends one blob record.
pub fn encode_record(entry: &BlobEntry, out: &mut Vec<u8>) {
    out.push(entry.kind.code());
    out.extend_from_slice(&entry.key_id.to_le_bytes());
    out.extend_from_slice(&entry.id.0);
    out.extend_from_slice(&entry.length.to_le_bytes());
    out.extend_from_slice(&entry.raw_length.to_le_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Decodes `count` records starting at the beginning of `bytes`; offsets
/// start at 0 and follow the stored lengths.
pub fn decode_records(bytes: &[u8], count: usize, object: &str) -> Result<Vec<BlobEntry>> {
    if bytes.len() < count.saturating_mul(RECORD_LEN) {
        return Err(Error::corrupt(
            object,
            format!("blob list of {count} records is truncated"),
        ));
    }
    let mut entries = Vec::with_capacity(count);
    let mut offset = 0u64;
    for i in 0..count {
        let r = &bytes[i * RECORD_LEN..(i + 1) * RECORD_LEN];
        let kind = BlobKind::from_code(r[0]).ok_or_else(|| {
            Error::corrupt(object, format!("record {i} has unknown blob kind {}", r[0]))
        })?;
        let length = u32_at(r, 37);
        let raw_length = u32_at(r, 41);
        if raw_length > MAX_BLOB_RAW || (length as usize) < crypto::ENVELOPE_OVERHEAD + 1 {
            return Err(Error::corrupt(
                object,
                format!("record {i} has impossible sizes (stored {length}, raw {raw_length})"),
            ));
        }
        entries.push(BlobEntry {
            kind,
            key_id: u32_at(r, 1),
            id: Id::from_slice(&r[5..37]).unwrap_or_default(),
            offset,
            length,
            raw_length,
        });
        offset += u64::from(length);
    }
    Ok(entries)
}

/// Accumulates sealed blobs into one pack.
#[derive(Default)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<BlobEntry>,
}

/// A finished pack, ready to upload.
pub struct SealedPack {
    /// BLAKE3 of `bytes`.
    pub name: Id,
    /// The whole pack.
    pub bytes: Vec<u8>,
    /// Blobs in the pack.
    pub entries: Vec<BlobEntry>,
}

impl PackBuilder {
    /// Starts an empty pack with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        PackBuilder {
            bytes: Vec::with_capacity(capacity),
            entries: Vec::new(),
        }
    }

    /// Appends a sealed blob.
    pub fn push(&mut self, kind: BlobKind, id: Id, raw_length: u32, sealed: &[u8]) {
        self.entries.push(BlobEntry {
            kind,
            key_id: crypto::REPOSITORY_DATA_KEY,
            id,
            offset: self.bytes.len() as u64,
            length: sealed.len() as u32,
            raw_length,
        });
        self.bytes.extend_from_slice(sealed);
    }

    /// Appends a sealed blob copied from another pack, keeping its record.
    pub fn push_entry(&mut self, entry: &BlobEntry, sealed: &[u8]) {
        self.entries.push(BlobEntry {
            offset: self.bytes.len() as u64,
            length: sealed.len() as u32,
            ..*entry
        });
        self.bytes.extend_from_slice(sealed);
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Returns true when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the header and trailer and names the pack.
    pub fn finish(mut self, keys: &Keys) -> Result<SealedPack> {
        let mut header = Vec::with_capacity(4 + self.entries.len() * RECORD_LEN);
        header.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            encode_record(entry, &mut header);
        }
        let before = self.bytes.len();
        keys.seal_into(
            Domain::PackHeader,
            b"",
            crypto::REPOSITORY_DATA_KEY,
            &header,
            &mut self.bytes,
        )?;
        let header_len = (self.bytes.len() - before) as u32;
        self.bytes.extend_from_slice(&header_len.to_le_bytes());
        self.bytes.extend_from_slice(PACK_MAGIC);
        Ok(SealedPack {
            name: Id::of_bytes(&self.bytes),
            bytes: self.bytes,
            entries: self.entries,
        })
    }
}

/// Bytes of the trailer at the end of every pack.
pub const PACK_TRAILER_LEN: usize = TRAILER_LEN;

/// Locates the header from a pack's length and its last
/// [`PACK_TRAILER_LEN`] bytes. Returns the header's byte range.
pub fn header_range(pack_len: u64, trailer: &[u8], object: &str) -> Result<std::ops::Range<u64>> {
    if pack_len < (TRAILER_LEN + crypto::ENVELOPE_OVERHEAD) as u64 || trailer.len() != TRAILER_LEN {
        return Err(Error::corrupt(
            object,
            format!("pack of {pack_len} bytes is too short"),
        ));
    }
    if &trailer[4..] != PACK_MAGIC {
        return Err(Error::corrupt(
            object,
            "pack trailer magic is missing (truncated or not a pack)",
        ));
    }
    let header_len = u64::from(u32_at(trailer, 0));
    let header_end = pack_len - TRAILER_LEN as u64;
    if header_len > header_end || header_len < crypto::ENVELOPE_OVERHEAD as u64 {
        return Err(Error::corrupt(
            object,
            format!("pack header length {header_len} is impossible"),
        ));
    }
    Ok(header_end - header_len..header_end)
}

/// Opens a pack header that starts at `header_start` and checks that its
/// records account for every byte before it.
pub fn parse_header(
    keys: &Keys,
    sealed_header: &[u8],
    header_start: u64,
    object: &str,
) -> Result<Vec<BlobEntry>> {
    let header = keys.open(Domain::PackHeader, b"", sealed_header, object)?;
    if header.len() < 4 {
        return Err(Error::corrupt(object, "pack header is empty"));
    }
    let count = u32_at(&header, 0) as usize;
    if header.len() != 4 + count.saturating_mul(RECORD_LEN) {
        return Err(Error::corrupt(
            object,
            "pack header length does not match its blob count",
        ));
    }
    let entries = decode_records(&header[4..], count, object)?;
    let covered: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
    if covered != header_start {
        return Err(Error::corrupt(
            object,
            format!("pack header lists {covered} bytes of blobs, the pack holds {header_start}"),
        ));
    }
    Ok(entries)
}

/// Reads the list of blobs from a whole pack and checks that it accounts for
/// every byte before the header.
pub fn read_header(keys: &Keys, pack: &[u8], object: &str) -> Result<Vec<BlobEntry>> {
    let len = pack.len() as u64;
    let trailer = pack
        .get(pack.len().saturating_sub(TRAILER_LEN)..)
        .unwrap_or_default();
    let range = header_range(len, trailer, object)?;
    parse_header(
        keys,
        &pack[range.start as usize..range.end as usize],
        range.start,
        object,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn keys() -> Keys {
        Keys::derive(SecretKey::from_bytes([5; 32]))
    }

    fn sample_pack(keys: &Keys) -> (SealedPack, Vec<Vec<u8>>) {
        let plaintexts: Vec<Vec<u8>> = vec![
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
            b"xyz".to_vec(),
            vec![0; 5000],
        ];
        let mut builder = PackBuilder::default();
        for p in &plaintexts {
            let id = keys.chunk_id(p);
            let mut sealed = Vec::new();
            seal_blob(keys, BlobKind::Data, &id, p, 3, &mut sealed).expect("seal");
            builder.push(BlobKind::Data, id, p.len() as u32, &sealed);
        }
        (builder.finish(keys).expect("finish"), plaintexts)
    }

    #[test]
    fn pack_round_trip() {
        let keys = keys();
        let (pack, plaintexts) = sample_pack(&keys);
        assert_eq!(pack.name, Id::of_bytes(&pack.bytes));
        let entries = read_header(&keys, &pack.bytes, "p").expect("header");
        assert_eq!(entries, pack.entries);
        for (entry, plaintext) in entries.iter().zip(&plaintexts) {
            let sealed = &pack.bytes
                [entry.offset as usize..(entry.offset + u64::from(entry.length)) as usize];
            assert_eq!(
                &open_blob(&keys, entry, sealed, "p").expect("open"),
                plaintext
            );
        }
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let keys = keys();
        let (pack, _) = sample_pack(&keys);
        for at in 0..pack.bytes.len() {
            let mut damaged = pack.bytes.clone();
            damaged[at] ^= 0x01;
            assert_ne!(
                Id::of_bytes(&damaged),
                pack.name,
                "byte {at}: name still matches"
            );
            let verdict = read_header(&keys, &damaged, "p").and_then(|entries| {
                for entry in &entries {
                    let end = (entry.offset + u64::from(entry.length)) as usize;
                    open_blob(&keys, entry, &damaged[entry.offset as usize..end], "p")?;
                }
                Ok(())
            });
            assert!(
                verdict.is_err(),
                "flip at byte {at} was not detected by the key holder"
            );
        }
    }

    #[test]
    fn swapped_blobs_are_detected() {
        let keys = keys();
        let (pack, _) = sample_pack(&keys);
        let entries = read_header(&keys, &pack.bytes, "p").expect("header");
        let second = &entries[1];
        let sealed = &pack.bytes
            [second.offset as usize..(second.offset + u64::from(second.length)) as usize];
        let mut wrong = entries[0];
        wrong.length = second.length;
        let result = open_blob(&keys, &wrong, sealed, "p");
        assert!(matches!(result, Err(Error::Corrupt { .. })), "{result:?}");
    }

    #[test]
    fn truncated_pack_is_rejected() {
        let keys = keys();
        let (pack, _) = sample_pack(&keys);
        for len in [0, 5, pack.bytes.len() / 2, pack.bytes.len() - 1] {
            assert!(
                read_header(&keys, &pack.bytes[..len], "p").is_err(),
                "length {len}"
            );
        }
    }

    #[test]
    fn pack_path_round_trip() {
        let name = Id::of_bytes(b"x");
        assert_eq!(pack_name_from_path(&pack_path(&name)), Some(name));
        assert_eq!(pack_name_from_path("data/zz/abc"), None);
    }
}
