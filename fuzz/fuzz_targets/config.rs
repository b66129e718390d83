//! Config objects: the sealed object, and the JSON body as it looks after
//! decryption.
#![no_main]

use cairn_core::config::RepoConfig;
use cairn_core::crypto::{Keys, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keys::derive(SecretKey::from_bytes([1; 32]));
    let _ = RepoConfig::decode(&keys, data);
    let _ = RepoConfig::from_json(data);
});
