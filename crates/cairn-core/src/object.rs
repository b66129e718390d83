//! Encrypted metadata objects: config, index objects, snapshots and locks.
//!
//! Layout: `magic [8] | envelope`, where the envelope's plaintext is
//! `marker u8 | body`, where the marker is 1 for a zstd-compressed body and 0 otherwise.

use std::io::Read;

use crate::crypto::{Domain, Keys};
use crate::error::{Error, Result};

/// Largest decompressed metadata object; anything larger is treated as damage
/// so a forged object cannot exhaust memory.
pub const MAX_OBJECT_PLAINTEXT: u64 = 256 * 1024 * 1024;

const STORED: u8 = 0;
const ZSTD: u8 = 1;

/// Seals `body` as a metadata object with the given magic bytes.
pub fn seal(keys: &Keys, magic: &[u8; 8], domain: Domain, body: &[u8]) -> Result<Vec<u8>> {
    let mut plaintext = Vec::with_capacity(body.len() / 2 + 16);
    match zstd::bulk::compress(body, 3) {
        Ok(compressed) if compressed.len() < body.len() => {
            plaintext.push(ZSTD);
            plaintext.extend_from_slice(&compressed);
        }
        _ => {
            plaintext.push(STORED);
            plaintext.extend_from_slice(body);
        }
    }
    let mut out = Vec::with_capacity(plaintext.len() + 64);
    out.extend_from_slice(magic);
    keys.seal_into(
        domain,
        b"",
        crate::crypto::REPOSITORY_DATA_KEY,
        &plaintext,
        &mut out,
    )?;
    Ok(out)
}

/// Opens a metadata object, checking magic bytes, tag and size bound.
pub fn open(
    keys: &Keys,
    magic: &[u8; 8],
    domain: Domain,
    bytes: &[u8],
    object: &str,
) -> Result<Vec<u8>> {
    if bytes.len() < 8 || &bytes[..8] != magic {
        return Err(Error::corrupt(
            object,
            format!(
                "wrong magic bytes: expected {:?} (zero-length, truncated or a different kind of object)",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let plaintext = keys.open(domain, b"", &bytes[8..], object)?;
    let Some((&marker, body)) = plaintext.split_first() else {
        return Err(Error::corrupt(object, "object has no compression marker"));
    };
    match marker {
        STORED => Ok(body.to_vec()),
        ZSTD => {
            let decoder = zstd::stream::read::Decoder::new(body)
                .map_err(|e| Error::corrupt(object, format!("zstd: {e}")))?;
            let mut out = Vec::new();
            decoder
                .take(MAX_OBJECT_PLAINTEXT + 1)
                .read_to_end(&mut out)
                .map_err(|e| Error::corrupt(object, format!("zstd decompression failed: {e}")))?;
            if out.len() as u64 > MAX_OBJECT_PLAINTEXT {
                return Err(Error::corrupt(object, "object expands beyond 256 MiB"));
            }
            Ok(out)
        }
        other => Err(Error::corrupt(
            object,
            format!("unknown compression marker {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    #[test]
    fn object_round_trip_and_tamper() {
        let keys = Keys::derive(SecretKey::from_bytes([1; 32]));
        let body = b"{\"a\": 1, \"a\": 1, \"a\": 1, \"a\": 1, \"a\": 1}".repeat(10);
        let sealed = seal(&keys, b"CAIRNTST", Domain::Snapshot, &body).expect("seal");
        assert_eq!(
            open(&keys, b"CAIRNTST", Domain::Snapshot, &sealed, "o").expect("open"),
            body
        );
        assert!(open(&keys, b"CAIRNTST", Domain::Index, &sealed, "o").is_err());
        assert!(open(&keys, b"CAIRNXXX", Domain::Snapshot, &sealed, "o").is_err());
        assert!(open(&keys, b"CAIRNTST", Domain::Snapshot, &[], "o").is_err());
        for at in 0..sealed.len() {
            let mut damaged = sealed.clone();
            damaged[at] ^= 0x80;
            assert!(
                open(&keys, b"CAIRNTST", Domain::Snapshot, &damaged, "o").is_err(),
                "byte {at}"
            );
        }
    }
}
