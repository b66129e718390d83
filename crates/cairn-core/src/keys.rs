//! Key management: listing, adding, replacing and removing key objects.
//!
//! Every key object under `keys/` wraps the same master secret under its own
//! passphrase ([`crate::keyfile`]). Adding or removing a key object therefore
//! never rewrites any other object, and every passphrase that opens some key
//! object of the repository reads all of its data.
//!
//! Adding and replacing a key take a shared lock, so they can run beside a
//! backup. Removing a key takes an exclusive lock, so two concurrent removals
//! cannot each see the other's key as the one that remains.

use tracing::info;

use crate::error::{Error, Result};
use crate::keyfile::{self, KdfParams, KeyHeader};
use crate::lock::Lock;
use crate::repo::{self, Repository};

/// Folder of the key objects in the backend.
const KEYS_PREFIX: &str = "keys/";

/// One key object as listed by [`Repository::list_keys`].
#[derive(Debug)]
pub struct KeyInfo {
    /// Name of the object under `keys/`: 32 hex digits for keys that cairn wrote.
    pub id: String,
    /// Object path, `keys/<id>`.
    pub path: String,
    /// Decoded header, or the reason the object is damaged.
    pub header: Result<KeyHeader>,
    /// Whether the passphrase of this session opened this key object.
    pub current: bool,
}

/// Outcome of [`Repository::change_passphrase`].
#[derive(Debug, Clone)]
pub struct PassphraseChange {
    /// Path of the new key object.
    pub added: String,
    /// Path of the key object that was deleted.
    pub removed: String,
}

fn key_id(path: &str) -> &str {
    path.strip_prefix(KEYS_PREFIX).unwrap_or(path)
}

impl Repository {
    /// Lists every object under `keys/`, sorted by name. A damaged object is
    /// listed with the reason instead of failing the whole listing.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut keys = Vec::new();
        for object in self.storage.list(KEYS_PREFIX)? {
            let header = self
                .storage
                .read(&object.path)
                .and_then(|bytes| keyfile::parse_header(&bytes, &object.path));
            keys.push(KeyInfo {
                id: key_id(&object.path).to_string(),
                current: object.path == self.key_path,
                path: object.path,
                header,
            });
        }
        Ok(keys)
    }

    /// Writes a new key object that wraps this repository's master secret
    /// under `passphrase`, and returns its path. The object is durable when
    /// this returns.
    pub fn add_key(&self, passphrase: &[u8], kdf: KdfParams) -> Result<String> {
        let _lock = Lock::shared(&self.storage, &self.keys, "key add")?;
        self.write_key(passphrase, kdf)
    }

    fn write_key(&self, passphrase: &[u8], kdf: KdfParams) -> Result<String> {
        kdf.validate()?;
        let object = keyfile::wrap(
            self.keys.master(),
            &self.config.id_bytes()?,
            passphrase,
            kdf,
            repo::unix_now(),
        )?;
        let path = format!("{KEYS_PREFIX}{}", repo::random_hex(16));
        self.storage.write(&path, object)?;
        // IMPORTANT: the directory entry is made durable before the caller
        // may delete another key object that this one replaces.
        self.storage.sync_dirs([path.as_str()])?;
        info!(key = %path, "key object added");
        Ok(path)
    }

    /// Replaces the key object that opened this session with one for
    /// `passphrase`. The new object is written and made durable first, and
    /// only then is the old one deleted, so a crash in between leaves both
    /// passphrases working, never neither.
    pub fn change_passphrase(
        &mut self,
        passphrase: &[u8],
        kdf: KdfParams,
    ) -> Result<PassphraseChange> {
        let _lock = Lock::shared(&self.storage, &self.keys, "key passwd")?;
        let added = self.write_key(passphrase, kdf)?;
        let removed = std::mem::replace(&mut self.key_path, added.clone());
        self.storage.delete(&removed)?;
        // IMPORTANT: syncing keys/ makes the deletion durable, so the old
        // passphrase does not come back after a power loss.
        self.storage.sync_dirs([removed.as_str()])?;
        info!(added = %added, removed = %removed, "passphrase changed");
        Ok(PassphraseChange { added, removed })
    }

    /// Deletes the key object whose name starts with `id_prefix` and returns
    /// its path.
    ///
    /// Fails with [`Error::Invalid`] when the prefix matches no key object or
    /// several, when no other key object with an intact header would remain,
    /// and when the object is the one that opened this session unless
    /// `allow_current` is set.
    pub fn remove_key(&self, id_prefix: &str, allow_current: bool) -> Result<String> {
        let _lock = Lock::exclusive(&self.storage, &self.keys, "key remove")?;
        let keys = self.list_keys()?;
        let prefix = id_prefix.to_ascii_lowercase();
        if prefix.is_empty() {
            return Err(Error::Invalid(
                "the key id is empty; give the name, or a unique prefix of it, shown by `cairn key list`"
                    .into(),
            ));
        }

        let matches: Vec<&KeyInfo> = keys.iter().filter(|k| k.id.starts_with(&prefix)).collect();
        let target = match matches.as_slice() {
            [] => {
                return Err(Error::Invalid(format!(
                    "no key object matches {id_prefix:?}; run `cairn key list` to see the key ids"
                )));
            }
            [only] => *only,
            several => {
                let ids: Vec<&str> = several.iter().map(|k| k.id.as_str()).collect();
                return Err(Error::Invalid(format!(
                    "key id prefix {id_prefix:?} is ambiguous: it matches {}; give more characters",
                    ids.join(", ")
                )));
            }
        };

        // NOTE: an intact header does not prove that the object opens this
        // repository. Only its passphrase can show that.
        let others_intact = keys
            .iter()
            .filter(|k| k.path != target.path && k.header.is_ok())
            .count();
        if others_intact == 0 {
            return Err(Error::Invalid(format!(
                "{} is the only intact key object; without it the repository cannot be opened. Add another with `cairn key add` first",
                target.path
            )));
        }

        if target.current && !allow_current {
            return Err(Error::Invalid(format!(
                "{} is the key object that the current passphrase opened, so removing it stops this passphrase from opening the repository. Pass --allow-current to remove it anyway, or use `cairn key passwd` to change the passphrase",
                target.path
            )));
        }

        self.storage.delete(&target.path)?;
        // IMPORTANT: syncing keys/ makes the deletion durable.
        self.storage.sync_dirs([target.path.as_str()])?;
        info!(key = %target.path, "key object removed");
        Ok(target.path.clone())
    }
}
