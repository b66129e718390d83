//! Reading the repository passphrase from the environment or a terminal.
//!
//! Sources, exactly one of which may be set: `CAIRN_PASSWORD_FILE` (a file
//! whose first line is the passphrase), `CAIRN_PASSWORD_COMMAND` (a shell
//! command that prints it), `CAIRN_PASSWORD`. Without any, cairn prompts on
//! the terminal without echo. There is deliberately no command-line option:
//! arguments are visible to every user in the process list.

use std::io::IsTerminal;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

const SOURCES: [&str; 3] = [
    "CAIRN_PASSWORD_FILE",
    "CAIRN_PASSWORD_COMMAND",
    "CAIRN_PASSWORD",
];

fn strip_line_end(mut text: Zeroizing<String>) -> Zeroizing<String> {
    if let Some(end) = text.find(['\n', '\r']) {
        text.truncate(end);
    }
    text
}

/// Reads the passphrase. With `confirm`, a terminal prompt asks twice.
pub fn read(confirm: bool) -> Result<Zeroizing<String>> {
    let set: Vec<&str> = SOURCES
        .iter()
        .copied()
        .filter(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
        .collect();
    if set.len() > 1 {
        return Err(cairn_core::Error::Invalid(format!(
            "several passphrase sources are set ({}); set only one of CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND and CAIRN_PASSWORD",
            set.join(", ")
        ))
        .into());
    }
    let passphrase = match set.first().copied() {
        Some("CAIRN_PASSWORD_FILE") => {
            let path = std::env::var_os("CAIRN_PASSWORD_FILE").unwrap_or_default();
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the passphrase file {} named by CAIRN_PASSWORD_FILE",
                    std::path::Path::new(&path).display()
                )
            })?;
            strip_line_end(Zeroizing::new(text))
        }
        Some("CAIRN_PASSWORD_COMMAND") => {
            let command = std::env::var("CAIRN_PASSWORD_COMMAND")
                .context("CAIRN_PASSWORD_COMMAND is not valid UTF-8")?;
            let output = Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .context("cannot run CAIRN_PASSWORD_COMMAND with sh")?;
            if !output.status.success() {
                bail!(
                    "CAIRN_PASSWORD_COMMAND failed ({}); fix the command and retry",
                    output.status
                );
            }
            let text = String::from_utf8(output.stdout)
                .context("CAIRN_PASSWORD_COMMAND printed bytes that are not UTF-8")?;
            strip_line_end(Zeroizing::new(text))
        }
        Some(_) => Zeroizing::new(
            std::env::var("CAIRN_PASSWORD").context("CAIRN_PASSWORD is not valid UTF-8")?,
        ),
        None => prompt(confirm)?,
    };
    if passphrase.is_empty() {
        bail!("the passphrase is empty; an empty passphrase is not accepted");
    }
    Ok(passphrase)
}

fn prompt(confirm: bool) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!(
            "no passphrase: set CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD, or run cairn on a terminal to be prompted"
        );
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Repository passphrase: ")
            .context("cannot read the passphrase from the terminal")?,
    );
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat passphrase: ")
                .context("cannot read the passphrase from the terminal")?,
        );
        if *first != *second {
            bail!("the two passphrases differ; nothing was created");
        }
    }
    Ok(first)
}
