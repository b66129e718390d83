//! Snapshot manifests (`snapshots/<hash>`) and chunk lists.
//!
//! A manifest is JSON, compressed and sealed. Each entry (one stream, such as
//! `app.dump`) names its size, a keyed hash of its chunk sequence and its
//! chunk lists. A chunk list is a blob of 36-byte records `chunk id [32] | length
//! u32`. Lists end where a chunk id matches a fixed bit pattern, so unchanged
//! stretches of a stream produce identical lists that dedup like chunks. A
//! 1 TiB stream thus needs only a small manifest. Each list records its chunk
//! count and byte span, so a reader can seek to any offset.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::crypto::{Domain, Keys};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::object;

const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// Snapshot format version written by this build.
pub const SNAPSHOT_VERSION: u32 = 2;
/// Oldest snapshot format version this build reads. Format 1 entries carry a
/// keyed hash of the whole stream instead of the chunk sequence hash.
pub const OLDEST_SNAPSHOT_VERSION: u32 = 1;
/// Bytes of one chunk-list record.
pub const LIST_RECORD_LEN: usize = 36;
/// Hard cap on records per chunk list.
pub const MAX_LIST_RECORDS: usize = 8 * 1024;
/// A list ends after a chunk whose id's first 32 bits have these 10 low bits
/// clear: 1024 chunks (36 KiB of records) per list on average, so a changed
/// chunk costs one small new list rather than a rewrite of a long one.
const LIST_BOUNDARY_MASK: u32 = 0x03ff;

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version of the manifest.
    pub format_version: u32,
    /// Start time of the backup, RFC 3339 in UTC.
    pub time: String,
    /// End time of the backup, RFC 3339 in UTC.
    pub finished: String,
    /// Host name of the machine that made it.
    pub host: String,
    /// User name that ran cairn.
    pub user: String,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Producer command line, when cairn ran the producer.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Version of cairn that wrote it.
    pub cairn_version: String,
    /// The streams in this snapshot.
    pub entries: Vec<Entry>,
    /// Set by `cairn repair snapshots --mark-damaged`: why the snapshot
    /// cannot be restored in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<Damage>,
    /// Written by `cairn pg backup`: the server, the databases and the
    /// evidence recorded for restore drills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<crate::pg::meta::PgSnapshot>,
}

/// Record of damage found in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Damage {
    /// Description of the missing or damaged data.
    pub reason: String,
    /// When the damage was recorded, RFC 3339.
    pub marked: String,
    /// Id of the snapshot object this one replaced, hex.
    pub original: String,
}

/// One stream of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Name, e.g. `app.dump`.
    pub name: String,
    /// Length of the stream in bytes.
    pub size: u64,
    /// Format 1 only: keyed BLAKE3 of the whole stream, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Format 2: keyed BLAKE3 of the chunk records (id, length) of the
    /// stream in order, hex; see [`SequenceHasher`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_hash: Option<String>,
    /// Number of chunks.
    pub chunks: u64,
    /// Chunk lists in stream order.
    pub lists: Vec<ListRef>,
}

/// Reference to one chunk-list blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListRef {
    /// Blob id of the list, hex.
    pub id: String,
    /// Number of chunks in the list.
    pub chunks: u32,
    /// Bytes of stream the list covers.
    pub size: u64,
}

/// One chunk of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// Chunk id.
    pub id: Id,
    /// Plaintext length.
    pub length: u32,
}

/// Hashes the chunk records of a stream in stream order.
///
/// Every restored chunk is verified against its id, so a restore whose
/// verified ids and lengths hash to the entry's sequence hash wrote exactly
/// the chunks the backup recorded, in the same order. With the backup's check
/// that its chunks cover the stream without gaps or overlaps, this proves the
/// restored stream equals the backed-up one without hashing every byte a
/// second time.
pub struct SequenceHasher(blake3::Hasher);

impl SequenceHasher {
    /// Starts an empty sequence.
    pub fn new(keys: &Keys) -> Self {
        SequenceHasher(keys.sequence_hasher())
    }

    /// Adds the next chunk of the stream.
    pub fn push(&mut self, id: &Id, length: u32) {
        let mut record = [0u8; LIST_RECORD_LEN];
        record[..32].copy_from_slice(&id.0);
        record[32..].copy_from_slice(&length.to_le_bytes());
        self.0.update(&record);
    }

    /// Returns the hash, hex.
    pub fn finish(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// Object path of a snapshot.
pub fn snapshot_path(id: &Id) -> String {
    format!("snapshots/{}", id.to_hex())
}

impl Snapshot {
    /// Seals the manifest; returns its id and bytes.
    pub fn encode(&self, keys: &Keys) -> Result<(Id, Vec<u8>)> {
        let body = serde_json::to_vec(self).map_err(|e| Error::Invalid(e.to_string()))?;
        let bytes = object::seal(keys, MAGIC, Domain::Snapshot, &body)?;
        Ok((Id::of_bytes(&bytes), bytes))
    }

    /// Opens a manifest, checking that its name matches its bytes.
    pub fn decode(keys: &Keys, id: &Id, bytes: &[u8]) -> Result<Snapshot> {
        let name = snapshot_path(id);
        if Id::of_bytes(bytes) != *id {
            return Err(Error::corrupt(
                &name,
                "content does not match its name (bit rot or tampering)",
            ));
        }
        let body = object::open(keys, MAGIC, Domain::Snapshot, bytes, &name)?;
        Self::from_json(&body, &name)
    }

    /// Parses and checks the JSON body of a manifest; `name` names the
    /// object in errors.
    pub fn from_json(body: &[u8], name: &str) -> Result<Snapshot> {
        let name = name.to_string();
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Error::corrupt(&name, format!("invalid JSON: {e}")))?;
        let version = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if !(u64::from(OLDEST_SNAPSHOT_VERSION)..=u64::from(SNAPSHOT_VERSION)).contains(&version) {
            return Err(Error::UnsupportedVersion {
                object: name,
                found: version as u32,
                supported: SNAPSHOT_VERSION,
            });
        }
        let snapshot: Snapshot = serde_json::from_value(value)
            .map_err(|e| Error::corrupt(&name, format!("invalid manifest: {e}")))?;
        for entry in &snapshot.entries {
            let check = if version == 1 {
                &entry.hash
            } else {
                &entry.sequence_hash
            };
            if !check.as_deref().is_some_and(is_hex_hash) {
                return Err(Error::corrupt(
                    &name,
                    format!(
                        "entry {} has no valid {} for format {version}",
                        entry.name,
                        if version == 1 {
                            "hash"
                        } else {
                            "sequence_hash"
                        }
                    ),
                ));
            }
            let listed = entry
                .lists
                .iter()
                .fold(0u64, |total, l| total.saturating_add(u64::from(l.chunks)));
            // Saturating sums: sizes come from the object and may be absurd.
            let spanned = entry
                .lists
                .iter()
                .fold(0u64, |total, l| total.saturating_add(l.size));
            if listed != entry.chunks || spanned != entry.size {
                return Err(Error::corrupt(
                    &name,
                    format!(
                        "entry {} has chunk lists that do not add up to its size",
                        entry.name
                    ),
                ));
            }
            for list in &entry.lists {
                Id::from_hex(&list.id)
                    .map_err(|_| Error::corrupt(&name, "chunk list id is not hex"))?;
            }
        }
        Ok(snapshot)
    }

    /// Finds an entry by name.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

fn is_hex_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Returns true when a chunk list should end after this chunk.
pub fn ends_list(id: &Id, records: usize) -> bool {
    let word = u32::from_le_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
    records >= MAX_LIST_RECORDS || word & LIST_BOUNDARY_MASK == 0
}

/// Encodes chunk-list records.
pub fn encode_list(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * LIST_RECORD_LEN);
    for chunk in chunks {
        out.extend_from_slice(&chunk.id.0);
        out.extend_from_slice(&chunk.length.to_le_bytes());
    }
    out
}

/// Decodes a chunk list and checks it against its reference.
pub fn decode_list(bytes: &[u8], list: &ListRef, object: &str) -> Result<Vec<ChunkRef>> {
    if !bytes.len().is_multiple_of(LIST_RECORD_LEN)
        || bytes.len() / LIST_RECORD_LEN != list.chunks as usize
    {
        return Err(Error::corrupt(
            object,
            format!(
                "chunk list {} does not hold {} records",
                list.id, list.chunks
            ),
        ));
    }
    let chunks: Vec<ChunkRef> = bytes
        .chunks_exact(LIST_RECORD_LEN)
        .map(|r| ChunkRef {
            id: Id::from_slice(&r[..32]).unwrap_or_default(),
            length: u32::from_le_bytes([r[32], r[33], r[34], r[35]]),
        })
        .collect();
    let size: u64 = chunks.iter().map(|c| u64::from(c.length)).sum();
    if size != list.size {
        return Err(Error::corrupt(
            object,
            format!(
                "chunk list {} covers {size} bytes, the manifest says {}",
                list.id, list.size
            ),
        ));
    }
    Ok(chunks)
}

/// Current time in RFC 3339, UTC, with nanoseconds.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// Formats a time as snapshots store it: RFC 3339 in UTC with nine fraction
/// digits, so that snapshot times sort correctly as text.
pub fn format_rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Parses an RFC 3339 timestamp with any offset, such as
/// `2026-12-03T02:00:00Z` or `2026-12-03T03:00:00+01:00`. Years before 1970
/// or after 9999 are rejected, because [`format_rfc3339`] cannot write them.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime> {
    let timestamp = crate::retention::parse_timestamp(text)?;
    let year = timestamp.to_zoned(jiff::tz::TimeZone::UTC).year();
    if !(1970..=9999).contains(&year) {
        return Err(Error::Invalid(format!(
            "time {text:?} is out of range: use a year from 1970 to 9999"
        )));
    }
    Ok(SystemTime::from(timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    #[test]
    fn snapshot_round_trip_and_name_check() {
        let keys = Keys::derive(SecretKey::from_bytes([4; 32]));
        let snapshot = Snapshot {
            format_version: SNAPSHOT_VERSION,
            time: now_rfc3339(),
            finished: now_rfc3339(),
            host: "h".into(),
            user: "u".into(),
            tags: vec!["daily".into()],
            command: Some(vec!["pg_dump".into()]),
            cairn_version: "0".into(),
            entries: vec![Entry {
                name: "a".into(),
                size: 10,
                hash: None,
                sequence_hash: Some(Id([9; 32]).to_hex()),
                chunks: 1,
                lists: vec![ListRef {
                    id: Id([3; 32]).to_hex(),
                    chunks: 1,
                    size: 10,
                }],
            }],
            damaged: None,
            postgres: None,
        };
        let (id, bytes) = snapshot.encode(&keys).expect("encode");
        assert_eq!(
            Snapshot::decode(&keys, &id, &bytes).expect("decode"),
            snapshot
        );
        let other = Keys::derive(SecretKey::from_bytes([5; 32]));
        assert!(
            Snapshot::decode(&other, &id, &bytes).is_err(),
            "manifest from another repository accepted"
        );
    }

    #[test]
    fn rfc3339_parse_normalizes_to_utc() {
        let time = parse_rfc3339("2026-12-03T03:00:00+01:00").expect("parse");
        assert_eq!(format_rfc3339(time), "2026-12-03T02:00:00.000000000Z");
        for bad in ["2026-12-03", "yesterday", "1969-12-31T23:59:59Z", ""] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn list_round_trip_and_mismatch() {
        let chunks = vec![
            ChunkRef {
                id: Id([1; 32]),
                length: 5,
            },
            ChunkRef {
                id: Id([2; 32]),
                length: 7,
            },
        ];
        let bytes = encode_list(&chunks);
        let list = ListRef {
            id: "x".into(),
            chunks: 2,
            size: 12,
        };
        assert_eq!(decode_list(&bytes, &list, "o").expect("decode"), chunks);
        let wrong = ListRef {
            size: 13,
            ..list.clone()
        };
        assert!(decode_list(&bytes, &wrong, "o").is_err());
        assert!(decode_list(&bytes[..40], &list, "o").is_err());
    }
}
