//! Every parser of bytes read from the backend, fed damaged and random
//! input: it must return an error or a value, never panic, and never accept
//! a modified object as the original.

use cairn_core::Id;
use cairn_core::config::RepoConfig;
use cairn_core::crypto::{Keys, SecretKey};
use cairn_core::index_object::{self, PackRecord};
use cairn_core::keyfile::{self, KdfParams};
use cairn_core::pack::{self, BlobKind, PackBuilder};
use cairn_core::snapshot::{self, ChunkRef, Entry, ListRef, SNAPSHOT_VERSION, Snapshot};
use proptest::prelude::*;

fn keys() -> Keys {
    Keys::derive(SecretKey::from_bytes([11; 32]))
}

/// Valid objects of every kind, sealed with `keys()`.
struct Samples {
    pack: Vec<u8>,
    pack_name: Id,
    index: (Id, Vec<u8>),
    snapshot: (Id, Vec<u8>),
    key: Vec<u8>,
    config: Vec<u8>,
    list: Vec<u8>,
}

fn samples() -> Samples {
    let keys = keys();
    let mut builder = PackBuilder::default();
    for text in [&b"first chunk of rows"[..], b"second", &[7u8; 3000]] {
        let id = keys.chunk_id(text);
        let mut sealed = Vec::new();
        pack::seal_blob(&keys, BlobKind::Data, &id, text, 3, &mut sealed).expect("seal");
        builder.push(BlobKind::Data, id, text.len() as u32, &sealed);
    }
    let sealed_pack = builder.finish(&keys).expect("finish pack");
    let record = PackRecord {
        name: sealed_pack.name,
        size: sealed_pack.bytes.len() as u64,
        entries: sealed_pack.entries.clone(),
    };
    let index = index_object::encode(&keys, &[record]).expect("encode index");
    let chunks = vec![
        ChunkRef {
            id: Id([1; 32]),
            length: 10,
        },
        ChunkRef {
            id: Id([2; 32]),
            length: 20,
        },
    ];
    let list = snapshot::encode_list(&chunks);
    let manifest = Snapshot {
        format_version: SNAPSHOT_VERSION,
        time: "2026-12-04T00:00:00Z".into(),
        finished: "2026-12-04T00:01:00Z".into(),
        host: "db1".into(),
        user: "postgres".into(),
        tags: vec!["daily".into()],
        command: Some(vec!["pg_dump".into(), "app".into()]),
        cairn_version: "0".into(),
        entries: vec![Entry {
            name: "app.dump".into(),
            size: 30,
            hash: None,
            sequence_hash: Some(Id([7; 32]).to_hex()),
            chunks: 2,
            lists: vec![ListRef {
                id: keys.chunk_id(&list).to_hex(),
                chunks: 2,
                size: 30,
            }],
        }],
        damaged: None,
        postgres: None,
    };
    let snapshot = manifest.encode(&keys).expect("encode snapshot");
    let fast = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let key = keyfile::wrap(keys.master(), &[5; 16], b"passphrase", fast, 0).expect("wrap");
    let config = RepoConfig {
        format_version: 1,
        id: hex_id(),
        chunker: Default::default(),
        compression_level: 3,
        pack_size: 16 * 1024 * 1024,
        created: "2026-12-04T00:00:00Z".into(),
    }
    .encode(&keys)
    .expect("encode config");
    Samples {
        pack_name: sealed_pack.name,
        pack: sealed_pack.bytes,
        index,
        snapshot,
        key,
        config,
        list,
    }
}

fn hex_id() -> String {
    "05".repeat(16)
}

/// Runs every parser on `bytes`, each as the object kind it parses.
/// Returns which parsers accepted the input.
fn parse_all(keys: &Keys, samples: &Samples, bytes: &[u8]) -> Vec<&'static str> {
    let mut accepted = Vec::new();
    // A pack is accepted as check --read-data accepts it: its header parses,
    // every blob opens and verifies, and its bytes hash to its name.
    if let Ok(entries) = pack::read_header(keys, bytes, "pack") {
        let blobs_ok = entries.iter().all(|entry| {
            let start = entry.offset as usize;
            let end = start + entry.length as usize;
            bytes
                .get(start..end)
                .is_some_and(|sealed| pack::open_blob(keys, entry, sealed, "pack").is_ok())
        });
        if blobs_ok && Id::of_bytes(bytes) == samples.pack_name {
            accepted.push("pack");
        }
    }
    if index_object::decode(keys, &samples.index.0, bytes).is_ok() {
        accepted.push("index object");
    }
    if Snapshot::decode(keys, &samples.snapshot.0, bytes).is_ok() {
        accepted.push("snapshot");
    }
    if matches!(keyfile::unwrap(bytes, b"passphrase", "key"), Ok(Some(_))) {
        accepted.push("key object");
    }
    if RepoConfig::decode(keys, bytes).is_ok() {
        accepted.push("config");
    }
    let list = ListRef {
        id: "00".into(),
        chunks: 2,
        size: 30,
    };
    if snapshot::decode_list(bytes, &list, "list").is_ok() {
        accepted.push("chunk list");
    }
    accepted
}

#[test]
fn samples_parse_as_themselves() {
    let keys = keys();
    let samples = samples();
    assert_eq!(parse_all(&keys, &samples, &samples.pack), vec!["pack"]);
    assert_eq!(
        parse_all(&keys, &samples, &samples.index.1),
        vec!["index object"]
    );
    assert_eq!(
        parse_all(&keys, &samples, &samples.snapshot.1),
        vec!["snapshot"]
    );
    assert_eq!(parse_all(&keys, &samples, &samples.key), vec!["key object"]);
    assert_eq!(parse_all(&keys, &samples, &samples.config), vec!["config"]);
    assert_eq!(
        parse_all(&keys, &samples, &samples.list),
        vec!["chunk list"]
    );
}

fn mutate(original: &[u8], choice: u8, position: usize, value: u8, length: usize) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let at = if bytes.is_empty() {
        0
    } else {
        position % bytes.len()
    };
    match choice % 4 {
        0 if !bytes.is_empty() => bytes[at] ^= value.max(1),
        1 => bytes.truncate(at),
        2 => bytes.extend(std::iter::repeat_n(value, length % 64 + 1)),
        _ => bytes.insert(at.min(bytes.len()), value),
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let keys = keys();
        let samples = samples();
        let accepted = parse_all(&keys, &samples, &bytes);
        // Random bytes can form a valid chunk list (it has no checksum of
        // its own; its blob's tag protects it), nothing else.
        prop_assert!(accepted.iter().all(|kind| *kind == "chunk list"), "accepted {:?}", accepted);
    }

    #[test]
    fn mutated_objects_are_rejected(
        which in 0usize..5,
        choice in any::<u8>(),
        position in any::<usize>(),
        value in any::<u8>(),
        length in any::<usize>(),
    ) {
        let keys = keys();
        let samples = samples();
        let original: &[u8] = match which {
            0 => &samples.pack,
            1 => &samples.index.1,
            2 => &samples.snapshot.1,
            3 => &samples.key,
            _ => &samples.config,
        };
        let damaged = mutate(original, choice, position, value, length);
        prop_assume!(damaged != original);
        let accepted = parse_all(&keys, &samples, &damaged);
        prop_assert!(
            accepted.iter().all(|kind| *kind == "chunk list"),
            "a modified object was accepted as {:?}", accepted
        );
    }
}
