//! Typed errors of the repository engine.
//!
//! Each variant carries the object name, path or value involved so that the
//! command-line front end can tell the operator what failed and what to do.

use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Broad classes of failure that callers branch on (for exit codes, retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Input, arguments or environment given by the user are unusable.
    Usage,
    /// The passphrase did not open any key object.
    WrongPassphrase,
    /// Stored data failed verification: damaged, truncated or tampered.
    Integrity,
    /// The producer of a backup stream failed.
    Producer,
    /// Another process holds a conflicting lock.
    Locked,
    /// Anything else: storage failures, local I/O, the index cache.
    Other,
}

/// Errors returned by the repository engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The location contains no cairn repository.
    #[error(
        "no cairn repository at {location}: the object `config` is missing; run `cairn init` to create one, or check --repo / CAIRN_REPOSITORY"
    )]
    NotARepository {
        /// Repository location as given by the user.
        location: String,
    },

    /// `init` found an existing repository.
    #[error(
        "a repository already exists at {location}; choose an empty location or use the existing repository"
    )]
    AlreadyExists {
        /// Repository location as given by the user.
        location: String,
    },

    /// No key object accepted the passphrase.
    #[error(
        "wrong passphrase: none of the {tried} key object(s) in the repository opens with it; check CAIRN_PASSWORD, CAIRN_PASSWORD_FILE or CAIRN_PASSWORD_COMMAND"
    )]
    WrongPassphrase {
        /// Number of key objects tried.
        tried: usize,
    },

    /// The repository has no key objects at all.
    #[error(
        "the repository has no key objects under keys/; it cannot be opened without one (restore keys/ from a copy of the repository)"
    )]
    NoKeys,

    /// The passphrase opened a key object, but it belongs to another repository.
    #[error(
        "key object {name} belongs to another repository (repository id {found}, expected {expected}); remove it from keys/"
    )]
    ForeignKey {
        /// Object name of the key.
        name: String,
        /// Repository id found in the key object.
        found: String,
        /// Repository id of this repository.
        expected: String,
    },

    /// A stored object failed verification or could not be decoded.
    #[error("{object} is damaged: {reason}")]
    Corrupt {
        /// Object name in the backend (`data/ab/ab12…`, `snapshots/…`) or a chunk id.
        object: String,
        /// Description of the failed check.
        reason: String,
    },

    /// A stored object was written by a newer or unknown format version.
    #[error(
        "{object} has format version {found}, but this cairn reads version {supported}; upgrade cairn"
    )]
    UnsupportedVersion {
        /// Object name.
        object: String,
        /// Version found.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },

    /// A chunk needed by a snapshot is not in the index.
    #[error(
        "chunk {id} is not in any pack of the index; the repository is missing data (run `cairn check`)"
    )]
    MissingChunk {
        /// Chunk id in hex.
        id: String,
    },

    /// The storage backend failed.
    #[error("storage {operation} of {path} failed: {source}")]
    Storage {
        /// Operation that failed (read, write, list, delete, stat).
        operation: &'static str,
        /// Object path.
        path: String,
        /// Backend error.
        #[source]
        source: Box<opendal::Error>,
    },

    /// The local SQLite index cache failed.
    #[error("index cache {path}: {source}")]
    Cache {
        /// Path of the SQLite file.
        path: String,
        /// SQLite error.
        #[source]
        source: Box<rusqlite::Error>,
    },

    /// Local file I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// Operation that failed, with the path.
        context: String,
        /// I/O error.
        #[source]
        source: io::Error,
    },

    /// The program producing the backup stream failed.
    #[error("{0}")]
    Producer(String),

    /// The backup stream was empty and empty streams were not allowed.
    #[error(
        "the stream for entry {name} is empty (0 bytes), so no snapshot was written; check the command, file or pipe that feeds it, or pass --allow-empty if an empty entry is expected"
    )]
    EmptyStream {
        /// Entry name.
        name: String,
    },

    /// A snapshot reference matched nothing.
    #[error("no snapshot matches {query}; run `cairn snapshots` to list them")]
    SnapshotNotFound {
        /// Reference given by the user.
        query: String,
    },

    /// A snapshot id prefix matched several snapshots.
    #[error("snapshot prefix {query} is ambiguous: it matches {matches}; give more characters")]
    AmbiguousSnapshot {
        /// Prefix given by the user.
        query: String,
        /// Matching ids.
        matches: String,
    },

    /// A snapshot does not contain the requested entry.
    #[error("snapshot {snapshot} has no entry {entry}; its entries are: {available}")]
    EntryNotFound {
        /// Snapshot id.
        snapshot: String,
        /// Requested entry name.
        entry: String,
        /// Entry names present.
        available: String,
    },

    /// Invalid user input.
    #[error("{0}")]
    Invalid(String),

    /// A restore target exists already.
    #[error("{path} already exists; pass --overwrite to replace it, or choose another --target")]
    TargetExists {
        /// Target path.
        path: String,
    },

    /// The operation was interrupted by a signal.
    #[error("interrupted")]
    Interrupted,

    /// A conflicting lock exists, or this process lost its lock.
    #[error("{0}")]
    Locked(String),

    /// A PostgreSQL server or tool failed during a restore or drill.
    #[error("{0}")]
    Postgres(String),

    /// A restore drill found a restored database that differs from the
    /// evidence recorded at backup time.
    #[error("{0}")]
    DrillFailed(String),
}

impl Error {
    /// Returns the class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::WrongPassphrase { .. } | Error::NoKeys | Error::ForeignKey { .. } => {
                ErrorKind::WrongPassphrase
            }
            Error::Corrupt { .. }
            | Error::UnsupportedVersion { .. }
            | Error::MissingChunk { .. } => ErrorKind::Integrity,
            Error::Producer(_) => ErrorKind::Producer,
            Error::DrillFailed(_) => ErrorKind::Integrity,
            Error::Locked(_) => ErrorKind::Locked,
            Error::NotARepository { .. }
            | Error::AlreadyExists { .. }
            | Error::SnapshotNotFound { .. }
            | Error::AmbiguousSnapshot { .. }
            | Error::EntryNotFound { .. }
            | Error::Invalid(_)
            | Error::EmptyStream { .. }
            | Error::TargetExists { .. } => ErrorKind::Usage,
            Error::Storage { .. }
            | Error::Cache { .. }
            | Error::Io { .. }
            | Error::Postgres(_)
            | Error::Interrupted => ErrorKind::Other,
        }
    }

    /// Builds a [`Error::Corrupt`] for `object`.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// Returns the message for output that names `object` already: without
    /// the object name when the error is about `object`, and whole
    /// otherwise. For a blob of the pack `object`, whose errors name
    /// `data/ab/ab12… (blob cd34…)`, the blob id stays.
    pub fn message_without(&self, object: &str) -> String {
        match self {
            Error::Corrupt {
                object: named,
                reason,
            } => match named.strip_prefix(object) {
                Some("") => reason.clone(),
                Some(rest) if rest.starts_with(" (") && rest.ends_with(')') => {
                    format!("{}: {reason}", &rest[2..rest.len() - 1])
                }
                _ => self.to_string(),
            },
            Error::UnsupportedVersion {
                object: named,
                found,
                supported,
            } if named == object => format!(
                "written in format version {found}, but this cairn reads version {supported}; upgrade cairn"
            ),
            Error::Storage {
                operation,
                path,
                source,
            } if path == object => format!("storage {operation} failed: {source}"),
            other => other.to_string(),
        }
    }

    /// Builds a [`Error::Io`] with a context string.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: &str = "data/ab/ab12";

    #[test]
    fn message_without_same_object() {
        let error = Error::corrupt(PACK, "authentication failed");
        assert_eq!(error.message_without(PACK), "authentication failed");
    }

    #[test]
    fn message_without_keeps_blob_id() {
        let error = Error::corrupt(format!("{PACK} (blob cd34)"), "authentication failed");
        assert_eq!(
            error.message_without(PACK),
            "blob cd34: authentication failed"
        );
    }

    #[test]
    fn message_without_other_object() {
        let error = Error::corrupt("snapshots/ef56", "invalid JSON");
        assert_eq!(
            error.message_without(PACK),
            "snapshots/ef56 is damaged: invalid JSON"
        );
        let longer_name = Error::corrupt(format!("{PACK}99"), "invalid JSON");
        assert_eq!(
            longer_name.message_without(PACK),
            format!("{PACK}99 is damaged: invalid JSON")
        );
    }

    #[test]
    fn message_without_version() {
        let error = Error::UnsupportedVersion {
            object: PACK.to_string(),
            found: 9,
            supported: 1,
        };
        let message = error.message_without(PACK);
        assert!(!message.contains(PACK), "{message}");
        assert!(message.contains("format version 9"), "{message}");
        assert!(message.contains("upgrade cairn"), "{message}");
    }
}
