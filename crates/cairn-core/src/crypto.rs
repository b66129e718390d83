//! Keys and the sealed envelope used for every encrypted object and blob.
//!
//! A repository has one random 256-bit master secret. Every key that cairn
//! uses is derived from it with BLAKE3's key derivation mode and a fixed
//! context string, so adding a purpose never changes an existing key.
//!
//! Envelope layout (all integers little-endian):
//!
//! ```text
//! version u8 = 1 | key id u32 | nonce [24] | ciphertext | tag [16]
//! ```
//!
//! The associated data is `domain || name || version || key id`, where the
//! domain names the kind of object (blob, pack header, snapshot...) and the
//! name is the blob id for blobs and empty otherwise. A blob moved under
//! another id, or a header pasted into a snapshot object, fails the tag check.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::id::Id;

/// Envelope format version written by this build.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes of envelope framing: version, key id and nonce.
pub const ENVELOPE_HEADER_LEN: usize = 1 + 4 + 24;
/// Bytes of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Total bytes an envelope adds to its plaintext.
pub const ENVELOPE_OVERHEAD: usize = ENVELOPE_HEADER_LEN + TAG_LEN;

/// Key id of the repository-wide data key. Other ids are reserved for
/// per-tenant data keys.
pub const REPOSITORY_DATA_KEY: u32 = 0;

/// Kind of object an envelope protects, bound into the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// A chunk of a stream.
    DataBlob,
    /// A chunk list of a snapshot entry.
    ListBlob,
    /// The header at the end of a pack.
    PackHeader,
    /// An index object.
    Index,
    /// A snapshot manifest.
    Snapshot,
    /// The repository config object.
    Config,
    /// A lock object.
    Lock,
    /// The master secret inside a key object.
    KeyObject,
    /// A restore drill record.
    Drill,
    /// An audit record.
    Audit,
}

impl Domain {
    fn label(self) -> &'static [u8] {
        match self {
            Domain::DataBlob => b"cairn/blob/data",
            Domain::ListBlob => b"cairn/blob/list",
            Domain::PackHeader => b"cairn/pack-header",
            Domain::Index => b"cairn/index",
            Domain::Snapshot => b"cairn/snapshot",
            Domain::Config => b"cairn/config",
            Domain::Lock => b"cairn/lock",
            Domain::KeyObject => b"cairn/key",
            Domain::Drill => b"cairn/drill",
            Domain::Audit => b"cairn/audit",
        }
    }
}

/// A 256-bit symmetric key, zeroized on drop and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// Generates a key from the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SecretKey(bytes)
    }

    /// Exposes the key bytes to a cipher or KDF.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Every key derived from the master secret of a repository.
#[derive(Clone)]
pub struct Keys {
    master: SecretKey,
    chunk_id: SecretKey,
    stream_hash: SecretKey,
    sequence_hash: SecretKey,
    data: SecretKey,
    metadata: SecretKey,
    gear: Box<[u64; 256]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

fn derive(context: &str, master: &SecretKey) -> SecretKey {
    SecretKey(blake3::derive_key(context, master.expose()))
}

impl Keys {
    /// Derives all keys from a master secret.
    pub fn derive(master: SecretKey) -> Self {
        let gear_seed = derive("cairn 2026-12-04 chunker gear table", &master);
        let mut xof = blake3::Hasher::new_keyed(gear_seed.expose()).finalize_xof();
        let mut gear = Box::new([0u64; 256]);
        let mut word = [0u8; 8];
        for slot in gear.iter_mut() {
            xof.fill(&mut word);
            *slot = u64::from_le_bytes(word);
        }
        word.zeroize();
        Keys {
            chunk_id: derive("cairn 2026-12-04 chunk id", &master),
            stream_hash: derive("cairn 2026-12-04 stream hash", &master),
            sequence_hash: derive("cairn 2026-12-05 chunk sequence hash", &master),
            data: derive("cairn 2026-12-04 data key 0", &master),
            metadata: derive("cairn 2026-12-04 metadata key", &master),
            gear,
            master,
        }
    }

    /// Returns the master secret, for wrapping into a new key object.
    pub fn master(&self) -> &SecretKey {
        &self.master
    }

    /// Computes the id of a chunk: keyed BLAKE3 of its plaintext.
    pub fn chunk_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(self.chunk_id.expose(), plaintext).as_bytes())
    }

    /// Starts a keyed hash over a whole stream: the entry hash of format 1
    /// snapshots, still checked when they are restored.
    pub fn stream_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(self.stream_hash.expose())
    }

    /// Starts a keyed hash over the chunk records of a stream in order, the
    /// entry hash of format 2 snapshots; feed it with
    /// [`crate::snapshot::SequenceHasher`].
    pub fn sequence_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(self.sequence_hash.expose())
    }

    /// Returns the keyed gear table of the chunker.
    pub fn gear(&self) -> &[u64; 256] {
        &self.gear
    }

    /// Returns the key that seals envelopes of `domain` under `key_id`.
    fn key_for(&self, domain: Domain, key_id: u32) -> Result<&SecretKey> {
        match domain {
            Domain::DataBlob | Domain::ListBlob => {
                if key_id == REPOSITORY_DATA_KEY {
                    Ok(&self.data)
                } else {
                    Err(Error::Invalid(format!(
                        "data key {key_id} is not known to this version of cairn; only key 0 (the repository data key) exists"
                    )))
                }
            }
            _ => Ok(&self.metadata),
        }
    }

    /// Seals `plaintext` into a new envelope appended to `out`.
    pub fn seal_into(
        &self,
        domain: Domain,
        name: &[u8],
        key_id: u32,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let key = self.key_for(domain, key_id)?;
        seal_with(key, domain, name, key_id, plaintext, out)
    }

    /// Seals `plaintext` into a new envelope.
    pub fn seal(&self, domain: Domain, name: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + ENVELOPE_OVERHEAD);
        self.seal_into(domain, name, REPOSITORY_DATA_KEY, plaintext, &mut out)?;
        Ok(out)
    }

    /// Opens an envelope, verifying its tag. `object` names it in errors.
    pub fn open(
        &self,
        domain: Domain,
        name: &[u8],
        envelope: &[u8],
        object: &str,
    ) -> Result<Vec<u8>> {
        let key_id = envelope_key_id(envelope, object)?;
        let key = self.key_for(domain, key_id)?;
        open_with(key, domain, name, envelope, object)
    }
}

/// Reads the key id of an envelope without opening it.
pub fn envelope_key_id(envelope: &[u8], object: &str) -> Result<u32> {
    if envelope.len() < ENVELOPE_OVERHEAD {
        return Err(Error::corrupt(
            object,
            format!(
                "encrypted envelope is {} bytes, shorter than the {ENVELOPE_OVERHEAD}-byte minimum",
                envelope.len()
            ),
        ));
    }
    if envelope[0] != ENVELOPE_VERSION {
        return Err(Error::UnsupportedVersion {
            object: object.to_string(),
            found: u32::from(envelope[0]),
            supported: u32::from(ENVELOPE_VERSION),
        });
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&envelope[1..5]);
    Ok(u32::from_le_bytes(id))
}

fn associated_data(domain: Domain, name: &[u8], header: &[u8]) -> Vec<u8> {
    let label = domain.label();
    let mut ad = Vec::with_capacity(label.len() + 1 + name.len() + header.len());
    ad.extend_from_slice(label);
    ad.push(0);
    ad.extend_from_slice(name);
    ad.extend_from_slice(&header[..5]);
    ad
}

/// Seals with an explicit key: used for key objects, whose key comes from the
/// passphrase rather than from the master secret.
pub fn seal_with(
    key: &SecretKey,
    domain: Domain,
    name: &[u8],
    key_id: u32,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let start = out.len();
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&key_id.to_le_bytes());
    out.extend_from_slice(&nonce);
    let ad = associated_data(domain, name, &out[start..]);
    let body = out.len();
    out.extend_from_slice(plaintext);
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    // The cipher rejects only messages longer than 2^38 bytes (RFC 8439 limit).
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), &ad, (&mut out[body..]).into())
        .map_err(|_| {
            Error::Invalid(format!(
                "cannot encrypt {} bytes in one envelope: the message is too long",
                plaintext.len()
            ))
        })?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// Opens with an explicit key; see [`seal_with`].
pub fn open_with(
    key: &SecretKey,
    domain: Domain,
    name: &[u8],
    envelope: &[u8],
    object: &str,
) -> Result<Vec<u8>> {
    envelope_key_id(envelope, object)?;
    let ad = associated_data(domain, name, envelope);
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&envelope[5..ENVELOPE_HEADER_LEN]);
    let tag_start = envelope.len() - TAG_LEN;
    let tag = Tag::try_from(&envelope[tag_start..])
        .map_err(|_| Error::corrupt(object, "authentication tag has the wrong length"))?;
    let mut plaintext = envelope[ENVELOPE_HEADER_LEN..tag_start].to_vec();
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    cipher
        .decrypt_inout_detached(&XNonce::from(nonce), &ad, plaintext.as_mut_slice().into(), &tag)
        .map_err(|_| {
            Error::corrupt(
                object,
                "authentication failed: the bytes were modified, truncated or belong to another object",
            )
        })?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(SecretKey::from_bytes([7; 32]))
    }

    #[test]
    fn seal_open_round_trip() {
        let keys = keys();
        let sealed = keys.seal(Domain::Snapshot, b"", b"hello").expect("seal");
        assert_eq!(sealed.len(), 5 + ENVELOPE_OVERHEAD);
        let opened = keys
            .open(Domain::Snapshot, b"", &sealed, "x")
            .expect("open");
        assert_eq!(opened, b"hello");
    }

    #[test]
    fn open_rejects_every_flipped_bit() {
        let keys = keys();
        let sealed = keys
            .seal(Domain::DataBlob, b"id", b"some plaintext")
            .expect("seal");
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut damaged = sealed.clone();
                damaged[byte] ^= 1 << bit;
                let result = keys.open(Domain::DataBlob, b"id", &damaged, "x");
                assert!(
                    result.is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn open_rejects_other_domain_or_name() {
        let keys = keys();
        let sealed = keys
            .seal(Domain::DataBlob, b"id-a", b"payload")
            .expect("seal");
        assert!(keys.open(Domain::DataBlob, b"id-b", &sealed, "x").is_err());
        assert!(keys.open(Domain::ListBlob, b"id-a", &sealed, "x").is_err());
    }

    #[test]
    fn open_rejects_truncation() {
        let keys = keys();
        let sealed = keys.seal(Domain::Index, b"", b"payload").expect("seal");
        for len in 0..sealed.len() {
            assert!(
                keys.open(Domain::Index, b"", &sealed[..len], "x").is_err(),
                "length {len}"
            );
        }
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        let text = format!("{:?} {:?}", SecretKey::from_bytes([1; 32]), keys());
        assert!(!text.contains("1, 1"), "{text}");
        assert!(text.contains("redacted"));
    }
}
