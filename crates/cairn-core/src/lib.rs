//! cairn-core: the repository format and backup engine of cairn.
//!
//! cairn stores streams (database dumps above all) in a content-addressed,
//! deduplicating, encrypted repository. The principal types:
//!
//! - [`repo::Repository`]: an unlocked repository; entry point for
//!   [`backup`](repo::Repository::backup), [`restore`](repo::Repository::restore_entry)
//!   and [`check`](repo::Repository::check).
//! - [`storage::Storage`]: the backend (Apache OpenDAL), the source of truth.
//! - [`index::Index`]: the local SQLite view of the backend, rebuildable.
//! - [`chunker`], [`crypto`], [`pack`], [`index_object`], [`snapshot`],
//!   [`keyfile`], [`config`]: one module per pipeline stage or stored object;
//!   docs/format.md describes their byte layouts.
//!
//! Limits: one repository-wide data key (tenant keys are reserved in the blob
//! format but not implemented); only the local filesystem backend is built.

pub mod audit;
pub mod backup;
pub mod check;
pub mod chunker;
pub mod config;
pub mod crypto;
pub mod error;
pub mod failpoint;
pub mod faults;
pub mod forget;
pub mod id;
pub mod index;
pub mod index_object;
pub mod keyfile;
pub mod keys;
pub mod lock;
pub mod object;
pub mod pack;
pub mod pg;
pub mod producer;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod stats;
pub mod storage;

pub use error::{Error, ErrorKind, Result};
pub use id::Id;
pub use repo::Repository;

/// Host name of this machine, or `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Name of the user running cairn: the passwd entry of the effective uid,
/// which the environment cannot change, else `uid <n>`.
pub fn user_name() -> String {
    let uid = effective_uid();
    passwd_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

#[expect(unsafe_code, reason = "geteuid(2) has no safe wrapper in std")]
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, and geteuid(2) documents that it
    // always succeeds.
    unsafe { libc::geteuid() }
}

#[expect(unsafe_code, reason = "getpwuid_r(3) has no safe wrapper in std")]
fn passwd_name(uid: u32) -> Option<String> {
    let mut entry = std::mem::MaybeUninit::<libc::passwd>::zeroed();
    let mut buffer = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to memory owned here and sized as
    // passed; the entry is read only when getpwuid_r reports success.
    unsafe {
        let status = libc::getpwuid_r(
            uid,
            entry.as_mut_ptr(),
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        );
        if status != 0 || result.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr((*result).pw_name);
        Some(name.to_string_lossy().into_owned())
    }
}
