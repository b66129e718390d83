//! The repository config object (`config`).

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::{Domain, Keys};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNCFG";
/// Repository format version written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Object path of the config.
pub const CONFIG_PATH: &str = "config";

/// Default target pack size: 16 MiB.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
/// Default zstd level for blobs. On a daily pg_dump series and 2 cores,
/// level 1 backed up about a fifth faster than level 3 and grew the
/// repository about a tenth more per day (docs/benchmarks.md). `cairn init
/// --compression-level 3` makes the other trade.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// Settings fixed when the repository is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Format version of the repository.
    pub format_version: u32,
    /// Random repository id, 16 bytes in hex.
    pub id: String,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// zstd level for blobs (1 to 19).
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Creation time, RFC 3339.
    pub created: String,
}

impl RepoConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        self.chunker.validate()?;
        if !(1..=19).contains(&self.compression_level) {
            return Err(Error::Invalid(format!(
                "compression level {} is outside 1..=19",
                self.compression_level
            )));
        }
        let min_pack = self.chunker.max_size.max(64 * 1024);
        if self.pack_size < min_pack || self.pack_size > 1024 * 1024 * 1024 {
            return Err(Error::Invalid(format!(
                "pack size {} is outside {min_pack} (the largest chunk) to 1 GiB",
                self.pack_size
            )));
        }
        Ok(())
    }

    /// Repository id as bytes.
    pub fn id_bytes(&self) -> Result<[u8; 16]> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(&self.id, &mut id)
            .map_err(|_| Error::corrupt(CONFIG_PATH, "repository id is not 32 hex digits"))?;
        Ok(id)
    }

    /// Seals the config for storage: `magic | repository id [16] | envelope`.
    /// The id stays readable before unlocking, and the envelope authenticates it.
    pub fn encode(&self, keys: &Keys) -> Result<Vec<u8>> {
        let id = self.id_bytes()?;
        let body = serde_json::to_vec(self).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut out = Vec::with_capacity(body.len() + 100);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&id);
        keys.seal_into(
            Domain::Config,
            &id,
            crate::crypto::REPOSITORY_DATA_KEY,
            &body,
            &mut out,
        )?;
        Ok(out)
    }

    /// Opens and validates a stored config.
    pub fn decode(keys: &Keys, bytes: &[u8]) -> Result<Self> {
        let id = peek_id(bytes)?;
        let body = keys.open(Domain::Config, &id, &bytes[24..], CONFIG_PATH)?;
        let config = Self::from_json(&body)?;
        if config.id_bytes()? != id {
            return Err(Error::corrupt(
                CONFIG_PATH,
                "repository id in the header and the body differ",
            ));
        }
        Ok(config)
    }

    /// Parses and validates the JSON body of a config.
    pub fn from_json(body: &[u8]) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Error::corrupt(CONFIG_PATH, format!("invalid JSON: {e}")))?;
        let version = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if version != u64::from(FORMAT_VERSION) {
            return Err(Error::UnsupportedVersion {
                object: CONFIG_PATH.into(),
                found: version as u32,
                supported: FORMAT_VERSION,
            });
        }
        let config: RepoConfig = serde_json::from_value(value)
            .map_err(|e| Error::corrupt(CONFIG_PATH, format!("invalid config: {e}")))?;
        config
            .validate()
            .map_err(|e| Error::corrupt(CONFIG_PATH, e.to_string()))?;
        Ok(config)
    }
}

/// Reads the repository id from a config object without decrypting it.
pub fn peek_id(bytes: &[u8]) -> Result<[u8; 16]> {
    if bytes.len() < 24 || &bytes[..8] != MAGIC {
        return Err(Error::corrupt(
            CONFIG_PATH,
            "not a cairn config object (wrong magic bytes or truncated)",
        ));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[8..24]);
    Ok(id)
}
