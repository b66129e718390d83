//! Opening, creating and unlocking a repository.

use std::path::{Path, PathBuf};

use rand::RngCore;
use tracing::{debug, info};

use crate::chunker::ChunkerParams;
use crate::config::{self, CONFIG_PATH, RepoConfig};
use crate::crypto::{Keys, SecretKey};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{Index, SyncReport};
use crate::keyfile::{self, KdfParams};
use crate::pack::{self, BlobKind};
use crate::snapshot::{self, ChunkRef, ListRef, Snapshot};
use crate::storage::Storage;

/// Settings for a new repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// zstd level for blobs.
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Argon2id parameters for the first key object.
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression_level: config::DEFAULT_COMPRESSION_LEVEL,
            pack_size: config::DEFAULT_PACK_SIZE,
            kdf: KdfParams::default(),
        }
    }
}

/// An unlocked repository with its synced local index.
pub struct Repository {
    /// Backend access.
    pub storage: Storage,
    /// Keys derived from the master secret.
    pub keys: Keys,
    /// Settings fixed at init.
    pub config: RepoConfig,
    /// Local SQLite index.
    pub index: Index,
    /// Outcome of the last index sync.
    pub sync_report: SyncReport,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

impl Repository {
    /// Creates a repository in an empty location and returns it unlocked.
    pub fn init(
        storage: Storage,
        passphrase: &[u8],
        options: &InitOptions,
        cache_dir: &Path,
    ) -> Result<Repository> {
        if storage.exists(CONFIG_PATH)? || !storage.list("keys/")?.is_empty() {
            return Err(Error::AlreadyExists {
                location: storage.location().to_string(),
            });
        }
        options.kdf.validate()?;
        let config = RepoConfig {
            format_version: config::FORMAT_VERSION,
            id: random_hex(16),
            chunker: options.chunker,
            compression_level: options.compression_level,
            pack_size: options.pack_size,
            created: snapshot::now_rfc3339(),
        };
        config.validate()?;
        let keys = Keys::derive(SecretKey::random());
        let key_object = keyfile::wrap(
            keys.master(),
            &config.id_bytes()?,
            passphrase,
            options.kdf,
            unix_now(),
        )?;
        let key_path = format!("keys/{}", random_hex(16));
        // IMPORTANT: the key object is written before the config, so a
        // config never exists without a key that opens it.
        storage.write(&key_path, key_object)?;
        storage.sync_dirs([key_path.as_str()])?;
        storage.write(CONFIG_PATH, config.encode(&keys)?)?;
        storage.sync_dirs([CONFIG_PATH])?;
        info!(location = storage.location(), id = %config.id, "repository created");
        let index = Index::open(cache_dir, &config.id)?;
        Ok(Repository {
            storage,
            keys,
            config,
            index,
            sync_report: SyncReport::default(),
        })
    }

    /// Unlocks a repository with a passphrase, opens its local index under
    /// `cache_dir` and syncs the index with the backend.
    pub fn open(storage: Storage, passphrase: &[u8], cache_dir: &Path) -> Result<Repository> {
        let config_bytes = match storage.read(CONFIG_PATH) {
            Ok(bytes) => bytes,
            Err(Error::Storage { source, .. }) if source.kind() == opendal::ErrorKind::NotFound => {
                return Err(Error::NotARepository {
                    location: storage.location().to_string(),
                });
            }
            Err(e) => return Err(e),
        };
        let repository_id = config::peek_id(&config_bytes)?;
        let key_objects = storage.list("keys/")?;
        if key_objects.is_empty() {
            return Err(Error::NoKeys);
        }
        let mut master = None;
        let mut first_damage = None;
        for object in &key_objects {
            let bytes = storage.read(&object.path)?;
            match keyfile::unwrap(&bytes, passphrase, &object.path) {
                Ok(Some((found_id, key))) => {
                    if found_id != repository_id {
                        return Err(Error::ForeignKey {
                            name: object.path.clone(),
                            found: hex::encode(found_id),
                            expected: hex::encode(repository_id),
                        });
                    }
                    debug!(key = %object.path, "passphrase opened key object");
                    master = Some(key);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(key = %object.path, error = %e, "key object is damaged");
                    first_damage.get_or_insert(e);
                }
            }
        }
        let Some(master) = master else {
            return Err(match first_damage {
                // With a single damaged key object, say so: the passphrase
                // may well be right.
                Some(damage) if key_objects.len() == 1 => damage,
                _ => Error::WrongPassphrase {
                    tried: key_objects.len(),
                },
            });
        };
        let keys = Keys::derive(master);
        let config = RepoConfig::decode(&keys, &config_bytes)?;
        let mut index = Index::open(cache_dir, &config.id)?;
        let sync_report = index.sync(&storage, &keys)?;
        Ok(Repository {
            storage,
            keys,
            config,
            index,
            sync_report,
        })
    }

    /// Resolves `latest` or a unique id prefix to a snapshot.
    pub fn find_snapshot(&self, query: &str) -> Result<(Id, Snapshot)> {
        let mut snapshots = self.index.snapshots()?;
        if query == "latest" {
            return snapshots.pop().ok_or_else(|| Error::SnapshotNotFound {
                query: "latest (the repository has no snapshots)".into(),
            });
        }
        let wanted = query.to_ascii_lowercase();
        if wanted.is_empty() || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{query:?} is not a snapshot id: use `latest` or hexadecimal digits of an id"
            )));
        }
        let matches: Vec<(Id, Snapshot)> = snapshots
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&wanted))
            .collect();
        match matches.len() {
            0 => Err(Error::SnapshotNotFound {
                query: query.into(),
            }),
            1 => Ok(matches
                .into_iter()
                .next()
                .ok_or_else(|| Error::SnapshotNotFound {
                    query: query.into(),
                })?),
            _ => Err(Error::AmbiguousSnapshot {
                query: query.into(),
                matches: matches
                    .iter()
                    .map(|(id, _)| id.short())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Returns the newest snapshot that has an entry named `entry`.
    pub fn find_latest_with_entry(&self, entry: &str) -> Result<(Id, Snapshot)> {
        self.index
            .snapshots()?
            .into_iter()
            .rev()
            .find(|(_, snapshot)| snapshot.entry(entry).is_some())
            .ok_or_else(|| Error::SnapshotNotFound {
                query: format!("latest:{entry} (no snapshot has an entry named {entry})"),
            })
    }

    /// Reads, verifies and decodes one chunk list of an entry.
    pub fn load_list(&self, list: &ListRef) -> Result<Vec<ChunkRef>> {
        let id = Id::from_hex(&list.id)?;
        let location = self.index.lookup(&id)?.ok_or_else(|| Error::MissingChunk {
            id: list.id.clone(),
        })?;
        if location.entry.kind != BlobKind::List {
            return Err(Error::corrupt(
                list.id.clone(),
                "chunk list id names a data blob",
            ));
        }
        let pack_path = pack::pack_path(&location.pack);
        let sealed = self.storage.read_range(
            &pack_path,
            location.entry.offset..location.entry.offset + u64::from(location.entry.length),
        )?;
        let bytes = pack::open_blob(&self.keys, &location.entry, &sealed, &pack_path)?;
        snapshot::decode_list(&bytes, list, &pack_path)
    }

    /// Default cache folder: `$XDG_CACHE_HOME/cairn` or `~/.cache/cairn`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("cairn"));
        }
        std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .map(|home| PathBuf::from(home).join(".cache").join("cairn"))
    }
}
