//! Key objects. Inputs that pass the checksum reach the KDF, whose cost
//! parameters are bounded by the parser before any memory is allocated.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if cairn_core::keyfile::parse_header(data, "fuzz").is_ok() {
        let _ = cairn_core::keyfile::unwrap(data, b"fuzz", "fuzz");
    }
});
