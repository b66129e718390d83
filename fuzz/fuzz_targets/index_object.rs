//! Index objects: the sealed object, and the body as it looks after
//! decryption.
#![no_main]

use cairn_core::Id;
use cairn_core::crypto::{Keys, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keys::derive(SecretKey::from_bytes([1; 32]));
    let _ = cairn_core::index_object::decode(&keys, &Id::of_bytes(data), data);
    let _ = cairn_core::index_object::decode_body(data, "fuzz");
});
