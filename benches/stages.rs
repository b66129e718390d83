//! Criterion benchmarks, one per pipeline stage: chunking, chunk ids,
//! sealing (zstd plus XChaCha20-Poly1305), opening, pack assembly, index
//! lookups and restore assembly. Inputs are generated in memory, so the
//! numbers show CPU cost alone, except for restore assembly, which reads
//! packs of a local repository from the page cache. docs/benchmarks.md has
//! whole-tool measurements.

use std::hint::black_box;

use cairn_core::Repository;
use cairn_core::backup::{BackupOptions, NoProgress, Source};
use cairn_core::chunker::{Chunker, ChunkerParams};
use cairn_core::crypto::{Keys, SecretKey};
use cairn_core::id::Id;
use cairn_core::index::Index;
use cairn_core::index_object::PackRecord;
use cairn_core::keyfile::KdfParams;
use cairn_core::pack::{self, BlobEntry, BlobKind, PackBuilder};
use cairn_core::repo::InitOptions;
use cairn_core::restore::NoRestoreProgress;
use cairn_core::storage::Storage;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// Text that looks like COPY rows of a pg_dump: compressible, with repeats.
fn dump_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut row = 0u64;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        row += 1;
        let line = format!(
            "{row}\t{}\t{}\t{{\"tenant\": {}, \"event\": \"login\", \"ok\": true}}\tnote {:x}\n",
            state % 100_000,
            state % 997,
            state % 50,
            state
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

fn keys() -> Keys {
    Keys::derive(SecretKey::from_bytes([3; 32]))
}

fn chunking(c: &mut Criterion) {
    let data = dump_like(32 << 20);
    let keys = keys();
    let chunker =
        Chunker::new(ChunkerParams::default(), keys.gear()).expect("default parameters are valid");
    let mut group = c.benchmark_group("chunking");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("fastcdc keyed gear 16 KiB", |b| {
        b.iter(|| black_box(chunker.split(&data)).len())
    });
    group.bench_function("chunk ids keyed BLAKE3", |b| {
        let ranges = chunker.split(&data);
        b.iter(|| {
            ranges
                .iter()
                .map(|r| keys.chunk_id(&data[r.clone()]))
                .fold(0u8, |acc, id| acc ^ id.0[0])
        })
    });
    group.finish();
}

fn sealing(c: &mut Criterion) {
    let keys = keys();
    let chunk = dump_like(28 * 1024);
    let id = keys.chunk_id(&chunk);
    let mut group = c.benchmark_group("blob");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    for level in [1, 3] {
        group.bench_function(format!("seal zstd {level}"), |b| {
            b.iter(|| {
                let mut out = Vec::new();
                pack::seal_blob(&keys, BlobKind::Data, &id, &chunk, level, &mut out).expect("seal");
                out
            })
        });
    }
    let mut sealed = Vec::new();
    pack::seal_blob(&keys, BlobKind::Data, &id, &chunk, 3, &mut sealed).expect("seal");
    let entry = BlobEntry {
        kind: BlobKind::Data,
        key_id: 0,
        id,
        offset: 0,
        length: sealed.len() as u32,
        raw_length: chunk.len() as u32,
    };
    group.bench_function("open and verify", |b| {
        b.iter(|| pack::open_blob(&keys, &entry, &sealed, "bench").expect("open"))
    });
    group.finish();
}

fn pack_assembly(c: &mut Criterion) {
    let keys = keys();
    let chunk = dump_like(28 * 1024);
    let mut sealed = Vec::new();
    pack::seal_blob(
        &keys,
        BlobKind::Data,
        &keys.chunk_id(&chunk),
        &chunk,
        3,
        &mut sealed,
    )
    .expect("seal");
    let blobs = (16 << 20) / sealed.len();
    let mut group = c.benchmark_group("pack");
    group.throughput(Throughput::Bytes((blobs * sealed.len()) as u64));
    group.sample_size(20);
    group.bench_function("assemble 16 MiB pack", |b| {
        b.iter(|| {
            let mut builder = PackBuilder::with_capacity(17 << 20);
            for i in 0..blobs {
                builder.push(
                    BlobKind::Data,
                    Id::of_bytes(&i.to_le_bytes()),
                    chunk.len() as u32,
                    &sealed,
                );
            }
            builder.finish(&keys).expect("finish").name
        })
    });
    group.finish();
}

/// Chunk id number `i` of the synthetic index.
fn synthetic_id(i: u64) -> Id {
    Id::of_bytes(&i.to_le_bytes())
}

/// Adds chunks `range` to `index`, 600 per pack and 64 packs per index
/// object, as backups write them.
fn fill_index(index: &mut Index, range: std::ops::Range<u64>) {
    let ids: Vec<u64> = range.collect();
    for (object, group) in ids.chunks(600 * 64).enumerate() {
        let packs: Vec<PackRecord> = group
            .chunks(600)
            .map(|ids| PackRecord {
                name: Id::of_bytes(format!("pack {}", ids[0]).as_bytes()),
                size: 600 * 20_000,
                entries: ids
                    .iter()
                    .enumerate()
                    .map(|(i, n)| BlobEntry {
                        kind: BlobKind::Data,
                        key_id: 0,
                        id: synthetic_id(*n),
                        offset: i as u64 * 20_000,
                        length: 20_000,
                        raw_length: 28_000,
                    })
                    .collect(),
            })
            .collect();
        index
            .insert_index_object(
                &Id::of_bytes(format!("index {object} {}", group[0]).as_bytes()),
                &packs,
            )
            .expect("insert");
    }
}

/// Lookups of known and new chunk ids in an index of `chunks` chunks. The
/// 10-million-chunk index (about 1 GB) is built once into
/// target/bench-index-<chunks> and reused by later runs.
fn index_lookups_with(c: &mut Criterion, chunks: u64) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(format!("bench-index-{chunks}"));
    let done = dir.join("complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the index folder");
        let mut index = Index::open(&dir, "bench").expect("open index");
        let started = std::time::Instant::now();
        fill_index(&mut index, 0..chunks);
        eprintln!(
            "built an index of {chunks} chunks in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        std::fs::write(&done, b"").expect("mark the index complete");
    }
    let index = Index::open(&dir, "bench").expect("open index");
    let mut group = c.benchmark_group("index");
    group.throughput(Throughput::Elements(1000));
    let step = chunks / 1000;
    // 1000 indexed ids spread over the whole index, shifted by one each
    // round so that successive rounds look up different ids.
    let known_batch = |round: u64| -> Vec<_> {
        (0..1000u64)
            .map(|i| synthetic_id((i * step + round) % chunks))
            .collect()
    };
    group.bench_function(
        format!("1000 lookups of known chunks, {chunks} indexed"),
        |b| {
            let mut round = 0u64;
            b.iter_batched(
                || {
                    round += 1;
                    known_batch(round)
                },
                |wanted| {
                    wanted
                        .iter()
                        .filter(|id| index.contains(id).unwrap_or(false))
                        .count()
                },
                BatchSize::SmallInput,
            )
        },
    );
    group.bench_function(
        format!("1000 known chunks in one batch call, {chunks} indexed"),
        |b| {
            let mut round = 0u64;
            b.iter_batched(
                || {
                    round += 1;
                    known_batch(round)
                },
                |wanted| {
                    index
                        .contains_many(&wanted)
                        .map(|found| found.iter().filter(|f| **f).count())
                        .unwrap_or(0)
                },
                BatchSize::SmallInput,
            )
        },
    );
    group.bench_function(
        format!("1000 lookups of new chunks, {chunks} indexed"),
        |b| {
            b.iter(|| {
                (0..1000u64)
                    .filter(|i| {
                        index
                            .contains(&synthetic_id(((i + 1) << 40) + chunks))
                            .unwrap_or(false)
                    })
                    .count()
            })
        },
    );
    group.finish();
}

fn index_lookups(c: &mut Criterion) {
    index_lookups_with(c, 200_000);
    index_lookups_with(c, 10_000_000);
}

/// Restores a 64 MiB entry of a local repository with default chunking,
/// compression and pack size to a sink: window planning, ranged pack reads,
/// opening and verifying every chunk, and writing in stream order.
fn restore_assembly(c: &mut Criterion) {
    const SIZE: usize = 64 << 20;
    let dir = tempfile::tempdir().expect("create a temporary folder");
    let storage = Storage::create_local(&dir.path().join("repo")).expect("create the storage");
    // A cheap key derivation: unlocking is not what this measures.
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    };
    let passphrase = b"bench passphrase";
    let mut repo = Repository::init(storage, passphrase, &options, &dir.path().join("cache"))
        .expect("init the repository");
    let source = Source {
        name: "app.dump".to_string(),
        reader: Box::new(std::io::Cursor::new(dump_like(SIZE))),
        producer: None,
    };
    repo.backup(vec![source], &BackupOptions::default(), &NoProgress)
        .expect("back up the entry");
    let (id, snapshot) = repo.find_snapshot("latest").expect("find the snapshot");
    let entry = repo
        .select_entry(&id, &snapshot, Some("app.dump"))
        .expect("select the entry");

    let mut group = c.benchmark_group("restore");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.bench_function("64 MiB entry to a sink", |b| {
        b.iter(|| {
            repo.restore_entry(entry, &mut std::io::sink(), &NoRestoreProgress)
                .expect("restore the entry")
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    chunking,
    sealing,
    pack_assembly,
    index_lookups,
    restore_assembly
);
criterion_main!(benches);
