//! `cairn key`: list, add, change and remove the passphrases that open the
//! repository.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use cairn_core::keyfile::KdfParams;
use cairn_core::keys::KeyInfo;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::GlobalArgs;

/// Arguments of `cairn key`.
#[derive(Args, Debug)]
#[command(
    after_help = "Every key object wraps the same master secret under its own passphrase. \
The new passphrase of `add` and `passwd` comes from CAIRN_NEW_PASSWORD_FILE, \
CAIRN_NEW_PASSWORD_COMMAND or CAIRN_NEW_PASSWORD, or is typed twice at a terminal prompt."
)]
pub struct KeyArgs {
    /// The key operation.
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// Subcommands of `cairn key`.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List the key objects and mark the one the current passphrase opens.
    List,
    /// Add a key object for a new passphrase; the current one keeps working.
    Add(NewKeyArgs),
    /// Change the passphrase: add a key object for the new passphrase, then
    /// remove the key object the current passphrase opened.
    Passwd(NewKeyArgs),
    /// Remove a key object, so that its passphrase no longer opens the repository.
    Remove(RemoveArgs),
}

/// Argon2id cost of a new key object.
#[derive(Args, Debug)]
pub struct NewKeyArgs {
    /// Argon2id memory per unlock, in KiB [default: 65536].
    #[arg(long, value_name = "KIB")]
    pub kdf_memory_kib: Option<u32>,
    /// Argon2id passes per unlock [default: 3].
    #[arg(long, value_name = "N")]
    pub kdf_iterations: Option<u32>,
}

/// Arguments of `cairn key remove`.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// Name of the key object under keys/, or a unique prefix of it, as shown by `cairn key list`.
    #[arg(value_name = "KEY_ID")]
    pub key_id: String,
    /// Also remove the key object that the current passphrase opened. The
    /// current passphrase then stops working unless another key object has it.
    #[arg(long)]
    pub allow_current: bool,
}

#[derive(Serialize)]
struct KeyRow<'a> {
    id: &'a str,
    path: &'a str,
    current: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    damaged: Option<String>,
}

#[derive(Serialize)]
struct KdfRow {
    algorithm: &'static str,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

/// Runs one `cairn key` subcommand.
pub fn run(global: &GlobalArgs, args: &KeyArgs) -> Result<()> {
    match &args.command {
        KeyCommand::List => list(global),
        KeyCommand::Add(new) => add(global, new),
        KeyCommand::Passwd(new) => passwd(global, new),
        KeyCommand::Remove(remove_args) => remove(global, remove_args),
    }
}

fn kdf_params(args: &NewKeyArgs) -> Result<KdfParams> {
    let defaults = KdfParams::default();
    let kdf = KdfParams {
        memory_kib: args.kdf_memory_kib.unwrap_or(defaults.memory_kib),
        iterations: args.kdf_iterations.unwrap_or(defaults.iterations),
        parallelism: defaults.parallelism,
    };
    kdf.validate()?;
    Ok(kdf)
}

/// Formats Unix seconds as RFC 3339 in UTC.
fn format_created(seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

fn row(key: &KeyInfo) -> KeyRow<'_> {
    let (created, kdf, damaged) = match &key.header {
        Ok(header) => (
            Some(format_created(header.created)),
            Some(KdfRow {
                algorithm: "argon2id",
                memory_kib: header.kdf.memory_kib,
                iterations: header.kdf.iterations,
                parallelism: header.kdf.parallelism,
            }),
            None,
        ),
        Err(e) => (None, None, Some(e.to_string())),
    };
    KeyRow {
        id: &key.id,
        path: &key.path,
        current: key.current,
        created,
        kdf,
        damaged,
    }
}

fn list(global: &GlobalArgs) -> Result<()> {
    let repository = super::open_repository(global)?;
    let keys = repository.list_keys()?;
    let rows: Vec<KeyRow<'_>> = keys.iter().map(row).collect();
    if global.json {
        return super::print_json(&rows);
    }
    crate::say!(
        "{:<2}{:<34} {:<21} KDF (ARGON2ID)",
        "",
        "ID",
        "CREATED (UTC)"
    );
    for row in &rows {
        let marker = if row.current { "*" } else { "" };
        let details = match (&row.kdf, &row.damaged) {
            (Some(kdf), _) => format!(
                "{} KiB, {} pass(es), {} lane(s)",
                kdf.memory_kib, kdf.iterations, kdf.parallelism
            ),
            (None, Some(reason)) => format!("DAMAGED: {reason}"),
            (None, None) => String::new(),
        };
        crate::say!(
            "{marker:<2}{:<34} {:<21} {details}",
            row.id,
            row.created.as_deref().unwrap_or("-")
        );
    }
    crate::say!(
        "{} key object(s); * marks the one the current passphrase opened",
        rows.len()
    );
    Ok(())
}

fn add(global: &GlobalArgs, args: &NewKeyArgs) -> Result<()> {
    let kdf = kdf_params(args)?;
    let repository = super::open_repository(global)?;
    let passphrase = crate::password::read_new()?;
    let added = repository.add_key(passphrase.as_bytes(), kdf)?;
    if global.json {
        return super::print_json(&serde_json::json!({ "added": added }));
    }
    crate::say!(
        "added key object {added}; the new passphrase and the current one both open the repository"
    );
    Ok(())
}

fn passwd(global: &GlobalArgs, args: &NewKeyArgs) -> Result<()> {
    let kdf = kdf_params(args)?;
    let mut repository = super::open_repository(global)?;
    let passphrase = crate::password::read_new()?;
    let change = repository.change_passphrase(passphrase.as_bytes(), kdf)?;
    if global.json {
        return super::print_json(&serde_json::json!({
            "added": change.added,
            "removed": change.removed,
        }));
    }
    crate::say!(
        "added key object {} for the new passphrase and removed {}, the one the old passphrase opened",
        change.added,
        change.removed
    );
    Ok(())
}

fn remove(global: &GlobalArgs, args: &RemoveArgs) -> Result<()> {
    let repository = super::open_repository(global)?;
    let removed = repository.remove_key(&args.key_id, args.allow_current)?;
    if global.json {
        return super::print_json(&serde_json::json!({ "removed": removed }));
    }
    crate::say!("removed key object {removed}");
    Ok(())
}
