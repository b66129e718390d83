//! Key objects: the master secret wrapped under a passphrase.
//!
//! Layout of `keys/<name>` (integers little-endian):
//!
//! ```text
//! magic "CAIRNKEY" | version u8 = 1 | kdf u8 = 1 (Argon2id v0x13)
//! memory KiB u32 | iterations u32 | parallelism u32 | salt [32] | created unix seconds i64
//! envelope: sealed(repository id [16] || master secret [32])
//! checksum [32] = BLAKE3 of every byte before it
//! ```
//!
//! The envelope is sealed with the Argon2id output and authenticates the
//! header bytes before it, so KDF parameters cannot be changed. The checksum
//! distinguishes a damaged key object from a wrong passphrase.

use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::crypto::{self, Domain, SecretKey};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNKEY";
const VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const HEADER_LEN: usize = 8 + 1 + 1 + 4 + 4 + 4 + 32 + 8;
const SECRET_LEN: usize = 16 + 32;
const OBJECT_LEN: usize = HEADER_LEN + crypto::ENVELOPE_OVERHEAD + SECRET_LEN + 32;

/// Upper bounds on KDF parameters read from a key object, so a forged key
/// object cannot make unlocking allocate or spin without limit.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 64;

/// Argon2id cost parameters of a key object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes and 4 lanes, the second choice of RFC 9106. The
    /// lanes are filled on several cores, so unlocking takes about 80 ms on
    /// the 2-core development machine instead of 145 ms with one lane, at
    /// the same memory cost for a guesser (docs/format.md).
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }
}

impl KdfParams {
    /// Checks the parameters against Argon2's limits and cairn's bounds.
    pub fn validate(&self) -> Result<()> {
        if self.memory_kib < 8 * self.parallelism.max(1) || self.memory_kib > MAX_MEMORY_KIB {
            return Err(Error::Invalid(format!(
                "KDF memory of {} KiB is outside the accepted range 8 KiB per lane to {MAX_MEMORY_KIB} KiB",
                self.memory_kib
            )));
        }
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return Err(Error::Invalid(format!(
                "KDF iterations of {} is outside the accepted range 1 to {MAX_ITERATIONS}",
                self.iterations
            )));
        }
        if self.parallelism == 0 || self.parallelism > MAX_PARALLELISM {
            return Err(Error::Invalid(format!(
                "KDF parallelism of {} is outside the accepted range 1 to {MAX_PARALLELISM}",
                self.parallelism
            )));
        }
        Ok(())
    }
}

/// Decoded header of a key object.
#[derive(Debug, Clone)]
pub struct KeyHeader {
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Creation time, Unix seconds.
    pub created: i64,
}

fn derive_wrapping_key(passphrase: &[u8], salt: &[u8], kdf: KdfParams) -> Result<SecretKey> {
    kdf.validate()?;
    let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| Error::Invalid(format!("invalid Argon2id parameters: {e}")))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|e| Error::Invalid(format!("Argon2id key derivation failed: {e}")))?;
    Ok(SecretKey::from_bytes(*out))
}

/// Builds a key object wrapping `master` for `repository_id`.
pub fn wrap(
    master: &SecretKey,
    repository_id: &[u8; 16],
    passphrase: &[u8],
    kdf: KdfParams,
    created: i64,
) -> Result<Vec<u8>> {
    let mut salt = [0u8; 32];
    rand::rng().fill_bytes(&mut salt);
    let wrapping = derive_wrapping_key(passphrase, &salt, kdf)?;

    let mut out = Vec::with_capacity(OBJECT_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(KDF_ARGON2ID);
    out.extend_from_slice(&kdf.memory_kib.to_le_bytes());
    out.extend_from_slice(&kdf.iterations.to_le_bytes());
    out.extend_from_slice(&kdf.parallelism.to_le_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&created.to_le_bytes());

    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    secret[..16].copy_from_slice(repository_id);
    secret[16..].copy_from_slice(master.expose());
    let header = out.clone();
    crypto::seal_with(
        &wrapping,
        Domain::KeyObject,
        &header,
        0,
        secret.as_ref(),
        &mut out,
    )?;
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    Ok(out)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Checks framing and checksum, and decodes the header of a key object.
pub fn parse_header(bytes: &[u8], object: &str) -> Result<KeyHeader> {
    if bytes.len() != OBJECT_LEN {
        return Err(Error::corrupt(
            object,
            format!("key object is {} bytes, expected {OBJECT_LEN}", bytes.len()),
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err(Error::corrupt(
            object,
            "not a cairn key object (bad magic bytes)",
        ));
    }
    let (body, checksum) = bytes.split_at(OBJECT_LEN - 32);
    if blake3::hash(body).as_bytes() != checksum {
        return Err(Error::corrupt(
            object,
            "checksum mismatch: the key object was modified or damaged",
        ));
    }
    if bytes[8] != VERSION {
        return Err(Error::UnsupportedVersion {
            object: object.to_string(),
            found: u32::from(bytes[8]),
            supported: u32::from(VERSION),
        });
    }
    if bytes[9] != KDF_ARGON2ID {
        return Err(Error::corrupt(
            object,
            format!("unknown KDF id {}", bytes[9]),
        ));
    }
    let kdf = KdfParams {
        memory_kib: read_u32(bytes, 10),
        iterations: read_u32(bytes, 14),
        parallelism: read_u32(bytes, 18),
    };
    kdf.validate()
        .map_err(|e| Error::corrupt(object, e.to_string()))?;
    let mut created = [0u8; 8];
    created.copy_from_slice(&bytes[54..62]);
    Ok(KeyHeader {
        kdf,
        created: i64::from_le_bytes(created),
    })
}

/// Unwraps a key object. Returns `Ok(None)` when the passphrase is wrong for
/// this key object, and an error when the object is damaged.
pub fn unwrap(
    bytes: &[u8],
    passphrase: &[u8],
    object: &str,
) -> Result<Option<([u8; 16], SecretKey)>> {
    let header = parse_header(bytes, object)?;
    let salt = &bytes[22..54];
    let wrapping = derive_wrapping_key(passphrase, salt, header.kdf)?;
    let envelope = &bytes[HEADER_LEN..OBJECT_LEN - 32];
    let Ok(secret) = crypto::open_with(
        &wrapping,
        Domain::KeyObject,
        &bytes[..HEADER_LEN],
        envelope,
        object,
    ) else {
        return Ok(None);
    };
    let secret = Zeroizing::new(secret);
    let mut repository_id = [0u8; 16];
    repository_id.copy_from_slice(&secret[..16]);
    let mut master = [0u8; 32];
    master.copy_from_slice(&secret[16..SECRET_LEN]);
    let key = SecretKey::from_bytes(master);
    zeroize::Zeroize::zeroize(&mut master);
    Ok(Some((repository_id, key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn wrap_unwrap_round_trip() {
        let master = SecretKey::from_bytes([9; 32]);
        let object = wrap(&master, &[3; 16], b"pass", FAST, 1).expect("wrap");
        let (repo, key) = unwrap(&object, b"pass", "k")
            .expect("unwrap")
            .expect("right passphrase");
        assert_eq!(repo, [3; 16]);
        assert_eq!(key.expose(), master.expose());
    }

    #[test]
    fn wrong_passphrase_is_none() {
        let object =
            wrap(&SecretKey::from_bytes([9; 32]), &[3; 16], b"pass", FAST, 1).expect("wrap");
        assert!(
            unwrap(&object, b"other", "k")
                .expect("not damaged")
                .is_none()
        );
    }

    #[test]
    fn any_flipped_byte_is_damage() {
        let object =
            wrap(&SecretKey::from_bytes([9; 32]), &[3; 16], b"pass", FAST, 1).expect("wrap");
        for at in 0..object.len() {
            let mut damaged = object.clone();
            damaged[at] ^= 0x40;
            let result = unwrap(&damaged, b"pass", "k");
            assert!(
                matches!(
                    result,
                    Err(Error::Corrupt { .. }) | Err(Error::UnsupportedVersion { .. })
                ),
                "byte {at}: {result:?}"
            );
        }
    }

    #[test]
    fn huge_memory_parameter_is_rejected() {
        let mut object =
            wrap(&SecretKey::from_bytes([9; 32]), &[3; 16], b"pass", FAST, 1).expect("wrap");
        object[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        let len = object.len();
        let checksum = blake3::hash(&object[..len - 32]);
        object[len - 32..].copy_from_slice(checksum.as_bytes());
        let result = unwrap(&object, b"pass", "k");
        assert!(matches!(result, Err(Error::Corrupt { .. })), "{result:?}");
    }
}
