//! `cairn init`.

use std::time::Instant;

use anyhow::Result;
use cairn_core::Repository;
use cairn_core::chunker::ChunkerParams;
use cairn_core::keyfile::KdfParams;
use cairn_core::repo::InitOptions;
use clap::Args;

use crate::GlobalArgs;

/// Arguments of `cairn init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Argon2id memory per unlock, in KiB [default: 65536].
    #[arg(long, value_name = "KIB")]
    pub kdf_memory_kib: Option<u32>,
    /// Argon2id passes per unlock [default: 3].
    #[arg(long, value_name = "N")]
    pub kdf_iterations: Option<u32>,
    /// Smallest chunk, in bytes [default: 4096]. Fixed for the repository's life.
    #[arg(long, value_name = "BYTES")]
    pub chunk_min: Option<u32>,
    /// Average chunk, in bytes, a power of two [default: 16384].
    #[arg(long, value_name = "BYTES")]
    pub chunk_avg: Option<u32>,
    /// Largest chunk, in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub chunk_max: Option<u32>,
    /// Target pack size, in bytes [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub pack_size: Option<u32>,
    /// zstd compression level for chunks, 1 to 19 [default: 1]. Higher levels
    /// store less and back up more slowly.
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,
}

/// Creates the repository.
pub fn run(global: &GlobalArgs, args: &InitArgs) -> Result<()> {
    let defaults = InitOptions::default();
    let kdf_defaults = KdfParams::default();
    let chunk_defaults = ChunkerParams::default();
    let options = InitOptions {
        chunker: ChunkerParams {
            min_size: args.chunk_min.unwrap_or(chunk_defaults.min_size),
            avg_size: args.chunk_avg.unwrap_or(chunk_defaults.avg_size),
            max_size: args.chunk_max.unwrap_or(chunk_defaults.max_size),
            normalization: chunk_defaults.normalization,
        },
        compression_level: args.compression_level.unwrap_or(defaults.compression_level),
        pack_size: args.pack_size.unwrap_or(defaults.pack_size),
        kdf: KdfParams {
            memory_kib: args.kdf_memory_kib.unwrap_or(kdf_defaults.memory_kib),
            iterations: args.kdf_iterations.unwrap_or(kdf_defaults.iterations),
            parallelism: kdf_defaults.parallelism,
        },
    };
    options.chunker.validate()?;
    options.kdf.validate()?;
    let cache = super::cache_dir(global)?;
    // The passphrase is read before anything is created, so a mistyped
    // confirmation leaves no folder behind.
    let passphrase = crate::password::read(true)?;
    let storage = super::create_storage(global)?;
    let started = Instant::now();
    let repository = Repository::init(storage, passphrase.as_bytes(), &options, &cache)?;
    let elapsed = started.elapsed();
    // The audit trail starts with the creation of the repository.
    crate::audit::register(&repository, cache);
    if global.json {
        super::print_json(&serde_json::json!({
            "id": repository.config.id,
            "location": repository.storage.location(),
            "config": repository.config,
        }))?;
    } else {
        crate::say!(
            "created cairn repository {} at {}",
            repository.config.id,
            repository.storage.location()
        );
        crate::say!(
            "chunks {}/{}/{} bytes (min/avg/max), packs {} bytes, zstd level {}; key derivation took {} ms",
            options.chunker.min_size,
            options.chunker.avg_size,
            options.chunker.max_size,
            options.pack_size,
            options.compression_level,
            elapsed.as_millis()
        );
        crate::say!(
            "keep the passphrase safe: without it no data in this repository can be restored"
        );
    }
    Ok(())
}
