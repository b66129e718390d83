//! Snapshot manifests: the sealed object, and the JSON body as it looks
//! after decryption.
#![no_main]

use cairn_core::Id;
use cairn_core::crypto::{Keys, SecretKey};
use cairn_core::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keys::derive(SecretKey::from_bytes([1; 32]));
    let _ = Snapshot::decode(&keys, &Id::of_bytes(data), data);
    let _ = Snapshot::from_json(data, "fuzz");
});
