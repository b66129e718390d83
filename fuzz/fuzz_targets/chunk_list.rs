//! Chunk lists as they look after decryption, against references whose
//! counts and sizes come from the input.
#![no_main]

use cairn_core::snapshot::{ListRef, decode_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let chunks = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let size = u64::from_le_bytes([
        data[4], data[5], data[6], data[7], data[8], data[9], data[10], data[11],
    ]);
    let list = ListRef {
        id: "fuzz".into(),
        chunks,
        size,
    };
    let _ = decode_list(&data[12..], &list, "fuzz");
});
