//! Opening, creating and unlocking a repository.

use std::path::{Path, PathBuf};

use rand::RngCore;
use tracing::{debug, info};

use crate::chunker::ChunkerParams;
use crate::config::{self, CONFIG_PATH, RepoConfig};
use crate::crypto::{Keys, SecretKey};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{Index, Location, SyncReport};
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
    /// Path of the key object that the passphrase opened, `keys/<32 hex>`.
    pub key_path: String,
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn random_hex(bytes: usize) -> String {
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
            key_path,
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
        let mut first_foreign = None;
        for object in &key_objects {
            let bytes = storage.read(&object.path)?;
            match keyfile::unwrap(&bytes, passphrase, &object.path) {
                Ok(Some((found_id, _))) if found_id != repository_id => {
                    // Another key object may still open this repository, so
                    // a key copied in from elsewhere does not block the open.
                    tracing::warn!(key = %object.path, "key object belongs to another repository");
                    first_foreign.get_or_insert(Error::ForeignKey {
                        name: object.path.clone(),
                        found: hex::encode(found_id),
                        expected: hex::encode(repository_id),
                    });
                }
                Ok(Some((_, key))) => {
                    debug!(key = %object.path, "passphrase opened key object");
                    master = Some((object.path.clone(), key));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(key = %object.path, error = %e.message_without(&object.path), "key object is damaged");
                    first_damage.get_or_insert(e);
                }
            }
        }
        let Some((key_path, master)) = master else {
            if let Some(foreign) = first_foreign {
                return Err(foreign);
            }
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
            key_path,
        })
    }

    /// Resolves `latest` or a unique id prefix to a snapshot.
    ///
    /// The snapshot is read again from the backend and verified, because the
    /// local index keeps a manifest even after its object was damaged. A
    /// prefix that matches only an unreadable snapshot object returns the
    /// damage found in it, not [`Error::SnapshotNotFound`].
    pub fn find_snapshot(&self, query: &str) -> Result<(Id, Snapshot)> {
        let mut snapshots = self.index.snapshots()?;
        if query == "latest" {
            self.ensure_latest_is_known()?;
            // A snapshot marked damaged is never `latest`: at 3 a.m. the
            // newest snapshot that restores is the one that is wanted.
            snapshots.retain(|(_, snapshot)| snapshot.damaged.is_none());
            let (id, _) = snapshots.pop().ok_or_else(|| Error::SnapshotNotFound {
                query: "latest (the repository has no snapshots that are not marked damaged)"
                    .into(),
            })?;
            return Ok((id, self.read_snapshot(&id)?));
        }
        let wanted = query.to_ascii_lowercase();
        if wanted.is_empty() || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{query:?} is not a snapshot id: use `latest` or hexadecimal digits of an id"
            )));
        }
        let matches: Vec<&(Id, Snapshot)> = snapshots
            .iter()
            .filter(|(id, _)| id.to_hex().starts_with(&wanted))
            .collect();
        match matches.len() {
            0 => {
                // Marking a snapshot damaged gives it a new id, but check
                // printed the old one, and the operator may still use it.
                let renamed: Vec<&(Id, Snapshot)> = snapshots
                    .iter()
                    .filter(|(_, snapshot)| {
                        snapshot
                            .damaged
                            .as_ref()
                            .is_some_and(|damage| damage.original.starts_with(&wanted))
                    })
                    .collect();
                if let [(id, _)] = renamed.as_slice() {
                    tracing::warn!(
                        query,
                        snapshot = %id.short(),
                        "the snapshot was marked damaged and has a new id; using it"
                    );
                    return Ok((*id, self.read_snapshot(id)?));
                }
                let unindexed: Vec<Id> = self
                    .storage
                    .list("snapshots/")?
                    .into_iter()
                    .filter_map(|o| {
                        o.path
                            .strip_prefix("snapshots/")
                            .filter(|name| name.starts_with(&wanted))
                            .and_then(|name| Id::from_hex(name).ok())
                    })
                    .collect();
                match unindexed.as_slice() {
                    [id] => Ok((*id, self.read_snapshot(id)?)),
                    _ => Err(Error::SnapshotNotFound {
                        query: query.into(),
                    }),
                }
            }
            1 => {
                let id = matches[0].0;
                Ok((id, self.read_snapshot(&id)?))
            }
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

    /// Fails when a snapshot object could not be read while the index was
    /// synced. Its time is unknown, so `latest` might silently pick the day
    /// before; at restore time that must be an error, not a fallback.
    pub fn ensure_latest_is_known(&self) -> Result<()> {
        let Some((path, reason)) = self.sync_report.unreadable_snapshots.first() else {
            return Ok(());
        };
        Err(Error::corrupt(
            path,
            format!(
                "this snapshot cannot be read ({reason}), and it may be the newest one, so `latest` is not resolved to an older snapshot; run `cairn check`, and to restore an older snapshot name its id (`cairn snapshots` lists the readable ones)"
            ),
        ))
    }

    /// Returns the newest snapshot that has an entry named `entry`, read
    /// again from the backend as in [`Repository::find_snapshot`].
    pub fn find_latest_with_entry(&self, entry: &str) -> Result<(Id, Snapshot)> {
        self.ensure_latest_is_known()?;
        let (id, _) = self
            .index
            .snapshots()?
            .into_iter()
            .rev()
            .find(|(_, snapshot)| snapshot.damaged.is_none() && snapshot.entry(entry).is_some())
            .ok_or_else(|| Error::SnapshotNotFound {
                query: format!(
                    "latest:{entry} (no snapshot that is not marked damaged has an entry named {entry})"
                ),
            })?;
        Ok((id, self.read_snapshot(&id)?))
    }

    /// Reads a snapshot object from the backend and verifies it.
    fn read_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let bytes = self.storage.read(&snapshot::snapshot_path(id))?;
        Snapshot::decode(&self.keys, id, &bytes)
    }

    /// Finds a readable copy of a blob. When the index records the blob only
    /// in packs that are missing or of the wrong size, the error names one.
    pub fn locate_blob(&self, id: &Id) -> Result<Location> {
        if let Some(location) = self.index.lookup(id)? {
            return Ok(location);
        }
        match self.index.lookup_any(id)? {
            Some(lost) => Err(Error::corrupt(
                pack::pack_path(&lost.pack),
                format!(
                    "the pack is missing or has the wrong size, so chunk {id} in it cannot be read; run `cairn check`"
                ),
            )),
            None => Err(Error::MissingChunk { id: id.to_hex() }),
        }
    }

    /// Reads, verifies and decodes one chunk list of an entry.
    pub fn load_list(&self, list: &ListRef) -> Result<Vec<ChunkRef>> {
        let id = Id::from_hex(&list.id)?;
        let location = self.locate_blob(&id)?;
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
