//! Length fields read from the backend never make cairn allocate more than
//! the object it is reading (plus a small constant), whatever their value.
//!
//! A counting global allocator records the largest single allocation made
//! by the current thread while tracking is on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cairn_core::crypto::{Keys, SecretKey};
use cairn_core::pack;
use cairn_core::snapshot::{ListRef, Snapshot, decode_list};

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

#[expect(
    unsafe_code,
    reason = "a global allocator must implement an unsafe trait"
)]
// SAFETY: every call is forwarded unchanged to the system allocator; the
// thread-local cells are const-initialised and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn note(size: usize) {
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

/// Runs `parse` and returns the largest single allocation it made.
fn largest_allocation(parse: impl FnOnce()) -> usize {
    LARGEST.with(|largest| largest.set(0));
    TRACKING.with(|tracking| tracking.set(true));
    parse();
    TRACKING.with(|tracking| tracking.set(false));
    LARGEST.with(Cell::get)
}

/// Allocations up to this size are fixed costs (error messages, small maps).
const SLACK: usize = 64 * 1024;

fn assert_bounded(name: &str, object: &[u8], largest: usize) {
    assert!(
        largest <= object.len() * 2 + SLACK,
        "{name}: a {}-byte object caused a {largest}-byte allocation",
        object.len()
    );
}

#[test]
fn huge_length_fields_allocate_little() {
    let keys = Keys::derive(SecretKey::from_bytes([3; 32]));

    // A pack trailer claiming a 4 GiB header.
    let mut fake_pack = vec![0u8; 200];
    let len = fake_pack.len();
    fake_pack[len - 12..len - 8].copy_from_slice(&u32::MAX.to_le_bytes());
    fake_pack[len - 8..].copy_from_slice(b"CAIRNPK1");
    let largest = largest_allocation(|| {
        let _ = pack::read_header(&keys, &fake_pack, "pack");
    });
    assert_bounded("pack trailer", &fake_pack, largest);

    // Header records claiming u32::MAX blobs.
    let records = vec![0u8; 90];
    let largest = largest_allocation(|| {
        let _ = pack::decode_records(&records, u32::MAX as usize, "header");
    });
    assert_bounded("pack header records", &records, largest);

    // An index body claiming u32::MAX packs, then u32::MAX blobs in one.
    let mut body = u32::MAX.to_le_bytes().to_vec();
    body.extend_from_slice(&[0u8; 40]);
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    let largest = largest_allocation(|| {
        let _ = cairn_core::index_object::decode_body(&body, "index");
    });
    assert_bounded("index body", &body, largest);

    // A chunk list whose reference claims u32::MAX chunks.
    let list_bytes = vec![0u8; 72];
    let reference = ListRef {
        id: "00".into(),
        chunks: u32::MAX,
        size: u64::MAX,
    };
    let largest = largest_allocation(|| {
        let _ = decode_list(&list_bytes, &reference, "list");
    });
    assert_bounded("chunk list", &list_bytes, largest);

    // A manifest whose lists claim absurd counts and sizes.
    let manifest = br#"{"format_version":1,"time":"t","finished":"t","host":"h","user":"u","cairn_version":"0",
        "entries":[{"name":"a","size":18446744073709551615,"hash":"0000000000000000000000000000000000000000000000000000000000000000","chunks":18446744073709551615,
        "lists":[{"id":"00","chunks":4294967295,"size":18446744073709551615},{"id":"00","chunks":4294967295,"size":5}]}]}"#;
    let largest = largest_allocation(|| {
        let _ = Snapshot::from_json(manifest, "snapshot");
    });
    assert_bounded("snapshot manifest", manifest, largest);

    // A key object with the largest accepted KDF memory: rejected on its
    // checksum before any key derivation runs.
    let mut key = vec![0u8; 187];
    key[..8].copy_from_slice(b"CAIRNKEY");
    key[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    let largest = largest_allocation(|| {
        let _ = cairn_core::keyfile::unwrap(&key, b"passphrase", "key");
    });
    assert_bounded("key object", &key, largest);
}

#[test]
fn counting_allocator_sees_allocations() {
    let largest = largest_allocation(|| {
        let buffer = vec![1u8; 1 << 20];
        std::hint::black_box(&buffer);
    });
    assert!(
        largest >= 1 << 20,
        "the counting allocator missed a 1 MiB allocation: {largest}"
    );
}
