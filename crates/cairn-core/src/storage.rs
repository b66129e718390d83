//! The storage backend: a narrow interface over Apache OpenDAL.
//!
//! Everything cairn stores goes through [`Storage`]: whole-object reads and
//! writes, ranged reads, listing and deletion. Only [`Storage::open_local`]
//! names an OpenDAL service, so other services need only a constructor.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opendal::{ErrorKind as DalErrorKind, Operator};
use tokio::runtime::Runtime;

use crate::error::{Error, Result};
use crate::faults::{self, FaultKind, FaultPlan, Operation};

/// Name of the folder for in-progress writes inside a local repository.
pub const TEMP_DIR: &str = ".tmp";

/// An object listed in the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the repository root, e.g. `data/ab/ab12…`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// Handle on a repository's backend. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    op: Operator,
    runtime: Arc<Runtime>,
    location: String,
    local_root: Option<PathBuf>,
    faults: Option<Arc<FaultPlan>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("location", &self.location)
            .finish()
    }
}

fn storage_error(operation: &'static str, path: &str, source: opendal::Error) -> Error {
    Error::Storage {
        operation,
        path: path.to_string(),
        source: Box::new(source),
    }
}

fn injected(operation: &'static str, path: &str) -> Error {
    storage_error(
        operation,
        path,
        opendal::Error::new(
            DalErrorKind::Unexpected,
            "failure injected by CAIRN_STORAGE_FAULTS",
        ),
    )
}

fn absolute(root: &Path) -> Result<PathBuf> {
    if root.is_absolute() {
        return Ok(root.to_path_buf());
    }
    let current =
        std::env::current_dir().map_err(|e| Error::io("cannot read the current directory", e))?;
    Ok(current.join(root))
}

impl Storage {
    /// Opens an existing repository folder on the local filesystem.
    ///
    /// Objects are written to `.tmp/` first, flushed with fsync and renamed
    /// into place, so a reader never sees a partial object. A missing folder
    /// is an error, so a mistyped path creates nothing.
    pub fn open_local(root: &Path) -> Result<Self> {
        let root = absolute(root)?;
        if !root.is_dir() {
            return Err(Error::NotARepository {
                location: root.display().to_string(),
            });
        }
        Self::build_local(root)
    }

    /// Creates the folder for a new repository, which must be missing or
    /// empty, and opens it.
    pub fn create_local(root: &Path) -> Result<Self> {
        let root = absolute(root)?;
        if root.exists() {
            let mut entries = std::fs::read_dir(&root)
                .map_err(|e| Error::io(format!("cannot read {}", root.display()), e))?;
            if entries.next().is_some() {
                return Err(Error::Invalid(format!(
                    "{} is not empty; create the repository in a new or empty folder",
                    root.display()
                )));
            }
        } else {
            std::fs::create_dir_all(&root)
                .map_err(|e| Error::io(format!("cannot create {}", root.display()), e))?;
        }
        Self::build_local(root)
    }

    fn build_local(root: PathBuf) -> Result<Self> {
        let root_text = root.to_string_lossy().to_string();
        let temp = root.join(TEMP_DIR);
        let builder = opendal::services::Fs::default()
            .root(&root_text)
            .atomic_write_dir(&temp.to_string_lossy());
        let op = Operator::new(builder).map_err(|e| storage_error("open", &root_text, e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-io")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the I/O runtime", e))?;
        Ok(Storage {
            op,
            runtime: Arc::new(runtime),
            location: root_text,
            local_root: Some(root),
            faults: FaultPlan::from_env().map(Arc::new),
        })
    }

    /// Human-readable location of the repository.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Root folder when the backend is the local filesystem.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// Returns the async runtime that drives backend I/O.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Reads a whole object.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.runtime.block_on(self.read_async(path))
    }

    /// Returns the injected fault for this operation; delays are applied here.
    async fn fault(&self, operation: Operation, path: &str) -> Option<FaultKind> {
        let kind = self.faults.as_ref()?.check(operation, path)?;
        if kind == FaultKind::Delay {
            tokio::time::sleep(faults::DELAY).await;
            return None;
        }
        Some(kind)
    }

    /// Reads a whole object (async form, for concurrent reads).
    pub async fn read_async(&self, path: &str) -> Result<Vec<u8>> {
        let fault = self.fault(Operation::Read, path).await;
        if fault == Some(FaultKind::Fail) {
            return Err(injected("read", path));
        }
        let buffer = self
            .op
            .read(path)
            .await
            .map_err(|e| storage_error("read", path, e))?;
        let mut bytes = buffer.to_vec();
        if fault == Some(FaultKind::Truncate) {
            bytes.truncate(bytes.len() / 2);
        }
        Ok(bytes)
    }

    /// Reads `range` of an object. Errors if the object is shorter.
    pub async fn read_range_async(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let expected = range.end - range.start;
        let fault = self.fault(Operation::Read, path).await;
        if fault == Some(FaultKind::Fail) {
            return Err(injected("read", path));
        }
        let buffer = self
            .op
            .read_with(path)
            .range(range.clone())
            .await
            .map_err(|e| storage_error("read", path, e))?;
        let mut bytes = buffer.to_vec();
        if fault == Some(FaultKind::Truncate) {
            bytes.truncate(bytes.len() / 2);
        }
        if bytes.len() as u64 != expected {
            return Err(Error::corrupt(
                path,
                format!(
                    "object is shorter than expected: bytes {}..{} requested, {} returned",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Reads `range` of an object.
    pub fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.runtime.block_on(self.read_range_async(path, range))
    }

    /// Writes a whole object; it becomes visible only once complete and
    /// flushed to stable storage.
    pub async fn write_async(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        // IMPORTANT: the fs service writes to .tmp/, calls fsync on the file
        // and renames it into place. The object is durable when this returns,
        // except for its directory entry, which `sync_dirs` makes durable.
        let mut bytes = bytes;
        match self.fault(Operation::Write, path).await {
            Some(FaultKind::Fail) => return Err(injected("write", path)),
            Some(FaultKind::Truncate) => bytes.truncate(bytes.len() / 2),
            _ => {}
        }
        self.op
            .write(path, bytes)
            .await
            .map_err(|e| storage_error("write", path, e))?;
        Ok(())
    }

    /// Writes a whole object; see [`Storage::write_async`].
    pub fn write(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.runtime.block_on(self.write_async(path, bytes))
    }

    /// Makes the directory entries of recently written objects durable.
    ///
    /// On the local filesystem a renamed file can vanish after a power loss
    /// until its directory is synced. Call this before writing an object that
    /// refers to the ones just written.
    pub fn sync_dirs<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let mut dirs: Vec<PathBuf> = paths
            .into_iter()
            .filter_map(|p| Path::new(p).parent().map(|d| root.join(d)))
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            // IMPORTANT: fsync of the directory makes the rename durable.
            let handle = std::fs::File::open(&dir)
                .map_err(|e| Error::io(format!("cannot open {} to sync it", dir.display()), e))?;
            handle
                .sync_all()
                .map_err(|e| Error::io(format!("cannot sync directory {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Returns whether an object exists.
    pub fn exists(&self, path: &str) -> Result<bool> {
        self.runtime.block_on(async {
            match self.op.stat(path).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == DalErrorKind::NotFound => Ok(false),
                Err(e) => Err(storage_error("stat", path, e)),
            }
        })
    }

    /// Lists the objects under `prefix` (such as `audit/`) whose names are
    /// meant to be object ids, each with its path and the id; `None` for a
    /// name that is not an id.
    pub fn list_ids(&self, prefix: &str) -> Result<Vec<(String, Option<crate::id::Id>)>> {
        Ok(self
            .list(prefix)?
            .into_iter()
            .map(|object| {
                let id = object
                    .path
                    .strip_prefix(prefix)
                    .and_then(|name| crate::id::Id::from_hex(name).ok());
                (object.path, id)
            })
            .collect())
    }

    /// Lists every object under `prefix` (a folder name ending in `/`),
    /// recursively, sorted by path.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.runtime.block_on(async {
            let entries = match self.op.list_with(prefix).recursive(true).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == DalErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(storage_error("list", prefix, e)),
            };
            let mut objects: Vec<ObjectInfo> = entries
                .into_iter()
                .filter(|entry| entry.metadata().is_file())
                .map(|entry| ObjectInfo {
                    path: entry.path().to_string(),
                    size: entry.metadata().content_length(),
                })
                .collect();
            objects.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(objects)
        })
    }

    /// Deletes an object; deleting a missing object succeeds.
    pub fn delete(&self, path: &str) -> Result<()> {
        self.runtime.block_on(async {
            self.op
                .delete(path)
                .await
                .map_err(|e| storage_error("delete", path, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::create_local(&dir.path().join("repo")).expect("create");
        storage
            .write("data/ab/abc", b"hello world".to_vec())
            .expect("write");
        storage.sync_dirs(["data/ab/abc"]).expect("sync");
        assert_eq!(storage.read("data/ab/abc").expect("read"), b"hello world");
        assert_eq!(
            storage.read_range("data/ab/abc", 6..11).expect("range"),
            b"world"
        );
        assert!(storage.read_range("data/ab/abc", 6..20).is_err());
        let listed = storage.list("data/").expect("list");
        assert_eq!(
            listed,
            vec![ObjectInfo {
                path: "data/ab/abc".into(),
                size: 11
            }]
        );
        assert!(storage.list("index/").expect("list missing").is_empty());
        assert!(storage.exists("data/ab/abc").expect("stat"));
        storage.delete("data/ab/abc").expect("delete");
        assert!(!storage.exists("data/ab/abc").expect("stat"));
    }

    #[test]
    fn open_missing_folder_creates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("typo");
        let result = Storage::open_local(&missing);
        assert!(
            matches!(result, Err(Error::NotARepository { .. })),
            "{result:?}"
        );
        assert!(!missing.exists(), "opening a missing folder created it");
    }

    #[test]
    fn create_rejects_non_empty_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("notes.txt"), b"unrelated").expect("write");
        let result = Storage::create_local(dir.path());
        assert!(matches!(result, Err(Error::Invalid(_))), "{result:?}");
    }
}
