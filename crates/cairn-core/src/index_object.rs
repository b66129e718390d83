//! Index objects (`index/<hash>`): which blobs each pack holds.
//!
//! An index object is written after the packs it names are durable and
//! before any snapshot that needs them. Its body is
//! `pack count u32`, then per pack `name [32] | size u64 | blob count u32`
//! followed by that many blob records (see [`crate::pack`]).

use crate::crypto::{Domain, Keys};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::object;
use crate::pack::{self, BlobEntry, RECORD_LEN};

const MAGIC: &[u8; 8] = b"CAIRNIDX";

/// The blobs of one pack as recorded in an index object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRecord {
    /// Pack name (BLAKE3 of its bytes).
    pub name: Id,
    /// Pack size in bytes.
    pub size: u64,
    /// Blobs in pack order.
    pub entries: Vec<BlobEntry>,
}

/// Object path of an index object with the given name.
pub fn index_path(name: &Id) -> String {
    format!("index/{}", name.to_hex())
}

/// Seals an index object; returns its name and bytes.
pub fn encode(keys: &Keys, packs: &[PackRecord]) -> Result<(Id, Vec<u8>)> {
    let blobs: usize = packs.iter().map(|p| p.entries.len()).sum();
    let mut body = Vec::with_capacity(4 + packs.len() * 44 + blobs * RECORD_LEN);
    body.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for pack in packs {
        body.extend_from_slice(&pack.name.0);
        body.extend_from_slice(&pack.size.to_le_bytes());
        body.extend_from_slice(&(pack.entries.len() as u32).to_le_bytes());
        for entry in &pack.entries {
            pack::encode_record(entry, &mut body);
        }
    }
    let bytes = object::seal(keys, MAGIC, Domain::Index, &body)?;
    Ok((Id::of_bytes(&bytes), bytes))
}

/// Opens and decodes an index object, checking that its name matches its
/// bytes and that every pack's blobs fit inside the pack.
pub fn decode(keys: &Keys, name: &Id, bytes: &[u8]) -> Result<Vec<PackRecord>> {
    let object_name = index_path(name);
    if Id::of_bytes(bytes) != *name {
        return Err(Error::corrupt(
            &object_name,
            "content does not match its name (bit rot or tampering)",
        ));
    }
    let body = object::open(keys, MAGIC, Domain::Index, bytes, &object_name)?;
    decode_body(&body, &object_name)
}

/// Decodes the plaintext body of an index object; `object_name` names it in
/// errors.
pub fn decode_body(body: &[u8], object_name: &str) -> Result<Vec<PackRecord>> {
    let object_name = object_name.to_string();
    let truncated = || Error::corrupt(&object_name, "index object body is truncated");
    let read_u32 = |at: usize| -> Result<u32> {
        let slice = body.get(at..at + 4).ok_or_else(truncated)?;
        Ok(u32::from_le_bytes(
            slice.try_into().map_err(|_| truncated())?,
        ))
    };
    let count = read_u32(0)? as usize;
    let mut at = 4;
    let mut packs = Vec::with_capacity(count.min(body.len() / 44));
    for _ in 0..count {
        let head = body.get(at..at + 44).ok_or_else(truncated)?;
        let pack_name = Id::from_slice(&head[..32]).ok_or_else(truncated)?;
        let size = u64::from_le_bytes(head[32..40].try_into().map_err(|_| truncated())?);
        let blobs = read_u32(at + 40)? as usize;
        at += 44;
        let len = blobs.checked_mul(RECORD_LEN).ok_or_else(truncated)?;
        let records = body.get(at..at + len).ok_or_else(truncated)?;
        let entries = pack::decode_records(records, blobs, &object_name)?;
        at += len;
        let covered: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
        if covered > size {
            return Err(Error::corrupt(
                &object_name,
                format!(
                    "pack {} is listed with {covered} bytes of blobs but a size of {size}",
                    pack_name
                ),
            ));
        }
        packs.push(PackRecord {
            name: pack_name,
            size,
            entries,
        });
    }
    if at != body.len() {
        return Err(Error::corrupt(
            &object_name,
            "index object has trailing bytes",
        ));
    }
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::pack::BlobKind;

    #[test]
    fn index_object_round_trip() {
        let keys = Keys::derive(SecretKey::from_bytes([2; 32]));
        let entry = BlobEntry {
            kind: BlobKind::Data,
            key_id: 0,
            id: Id([7; 32]),
            offset: 0,
            length: 100,
            raw_length: 200,
        };
        let packs = vec![PackRecord {
            name: Id([1; 32]),
            size: 150,
            entries: vec![entry],
        }];
        let (name, bytes) = encode(&keys, &packs).expect("encode");
        assert_eq!(decode(&keys, &name, &bytes).expect("decode"), packs);
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(decode(&keys, &name, &damaged).is_err());
        assert!(decode(&keys, &Id::of_bytes(&damaged), &damaged).is_err());
    }
}
