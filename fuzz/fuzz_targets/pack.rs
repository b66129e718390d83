//! Whole packs: trailer, header framing and the sealed header. The fuzzer
//! cannot forge the tag, so this explores the framing before decryption.
#![no_main]

use cairn_core::crypto::{Keys, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keys::derive(SecretKey::from_bytes([1; 32]));
    let _ = cairn_core::pack::read_header(&keys, data, "fuzz");
    // The header records as they look after decryption.
    if let Some((count, records)) = data.split_first() {
        let _ = cairn_core::pack::decode_records(records, usize::from(*count), "fuzz");
    }
});
