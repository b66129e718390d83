//! Sealed blobs with record fields taken from the input.
#![no_main]

use cairn_core::Id;
use cairn_core::crypto::{Keys, SecretKey};
use cairn_core::pack::{BlobEntry, BlobKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keys::derive(SecretKey::from_bytes([1; 32]));
    if data.len() < 5 {
        return;
    }
    let raw_length = u32::from_le_bytes([data[0], data[1], data[2], 0]);
    let kind = if data[3] & 1 == 0 {
        BlobKind::Data
    } else {
        BlobKind::List
    };
    let sealed = &data[4..];
    let entry = BlobEntry {
        kind,
        key_id: 0,
        id: Id::of_bytes(sealed),
        offset: 0,
        length: sealed.len() as u32,
        raw_length,
    };
    let _ = cairn_core::pack::open_blob(&keys, &entry, sealed, "fuzz");
});
