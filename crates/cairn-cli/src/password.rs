//! Reading the repository passphrase from the environment or a terminal.
//!
//! Sources, exactly one of which may be set: `CAIRN_PASSWORD_FILE` (a file
//! whose first line is the passphrase), `CAIRN_PASSWORD_COMMAND` (a shell
//! command that prints it), `CAIRN_PASSWORD`. Without any, cairn prompts on
//! the terminal without echo. There is deliberately no command-line option:
//! arguments are visible to every user in the process list.
//!
//! A new passphrase (`cairn key add`, `cairn key passwd`) comes the same way
//! from `CAIRN_NEW_PASSWORD_FILE`, `CAIRN_NEW_PASSWORD_COMMAND` or
//! `CAIRN_NEW_PASSWORD`, or is typed twice at a terminal prompt.

use std::io::IsTerminal;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

/// Variable-name prefix and terminal prompts of one passphrase.
struct Sources {
    /// `{prefix}_FILE`, `{prefix}_COMMAND` and `{prefix}` name the sources.
    prefix: &'static str,
    prompt: &'static str,
    repeat_prompt: &'static str,
}

const CURRENT: Sources = Sources {
    prefix: "CAIRN_PASSWORD",
    prompt: "Repository passphrase: ",
    repeat_prompt: "Repeat passphrase: ",
};

const NEW: Sources = Sources {
    prefix: "CAIRN_NEW_PASSWORD",
    prompt: "New passphrase: ",
    repeat_prompt: "Repeat new passphrase: ",
};

fn strip_line_end(mut text: Zeroizing<String>) -> Zeroizing<String> {
    if let Some(end) = text.find(['\n', '\r']) {
        text.truncate(end);
    }
    text
}

/// Reads the passphrase. With `confirm`, a terminal prompt reads it twice.
pub fn read(confirm: bool) -> Result<Zeroizing<String>> {
    read_from(&CURRENT, confirm)
}

/// Reads a new passphrase from the `CAIRN_NEW_PASSWORD` sources. At a
/// terminal prompt it is typed twice.
pub fn read_new() -> Result<Zeroizing<String>> {
    read_from(&NEW, true)
}

/// Returns the variables of `sources` that are set and not empty, in the
/// order file, command, passphrase.
fn set_variables(sources: &Sources) -> Vec<String> {
    let prefix = sources.prefix;
    [
        format!("{prefix}_FILE"),
        format!("{prefix}_COMMAND"),
        prefix.to_string(),
    ]
    .into_iter()
    .filter(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
    .collect()
}

/// Names the source that [`read`] takes the passphrase from: the variable
/// that is set, or the terminal prompt. With several set, names the first.
pub fn current_source() -> String {
    set_variables(&CURRENT)
        .into_iter()
        .next()
        .unwrap_or_else(|| "the terminal prompt".to_string())
}

fn read_from(sources: &Sources, confirm: bool) -> Result<Zeroizing<String>> {
    let prefix = sources.prefix;
    let file_var = format!("{prefix}_FILE");
    let command_var = format!("{prefix}_COMMAND");
    let set = set_variables(sources);
    if set.len() > 1 {
        return Err(cairn_core::Error::Invalid(format!(
            "several passphrase sources are set ({}); set only one of {file_var}, {command_var} and {prefix}",
            set.join(", ")
        ))
        .into());
    }
    let source = set.first().map(String::as_str);
    let passphrase = match source {
        Some(name) if name == file_var => {
            let path = std::env::var_os(&file_var).unwrap_or_default();
            // A passphrase file that cannot be read is a setup mistake, like
            // a missing passphrase source, so it exits 2 as that does.
            let text = std::fs::read_to_string(&path).map_err(|e| {
                cairn_core::Error::Invalid(format!(
                    "cannot read the passphrase file {} named by {file_var}: {e}; check the path and its permissions",
                    std::path::Path::new(&path).display()
                ))
            })?;
            strip_line_end(Zeroizing::new(text))
        }
        Some(name) if name == command_var => {
            let command = std::env::var(&command_var)
                .with_context(|| format!("{command_var} is not valid UTF-8"))?;
            let output = Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("cannot run {command_var} with sh"))?;
            if !output.status.success() {
                bail!(
                    "{command_var} failed ({}); fix the command and retry",
                    output.status
                );
            }
            let text = String::from_utf8(output.stdout)
                .with_context(|| format!("{command_var} printed bytes that are not UTF-8"))?;
            strip_line_end(Zeroizing::new(text))
        }
        Some(_) => Zeroizing::new(
            std::env::var(prefix).with_context(|| format!("{prefix} is not valid UTF-8"))?,
        ),
        None => prompt(sources, confirm)?,
    };
    if passphrase.is_empty() {
        let origin = source.unwrap_or("the terminal prompt");
        return Err(cairn_core::Error::Invalid(format!(
            "the passphrase from {origin} is empty, and cairn does not accept an empty passphrase; give the repository's passphrase there"
        ))
        .into());
    }
    Ok(passphrase)
}

fn prompt(sources: &Sources, confirm: bool) -> Result<Zeroizing<String>> {
    let prefix = sources.prefix;
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        return Err(cairn_core::Error::Invalid(format!(
            "no passphrase: none of {prefix}_FILE, {prefix}_COMMAND and {prefix} is set, and there is no terminal to prompt on; set one of them, or run cairn on a terminal"
        ))
        .into());
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(sources.prompt)
            .context("cannot read the passphrase from the terminal")?,
    );
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password(sources.repeat_prompt)
                .context("cannot read the passphrase from the terminal")?,
        );
        if *first != *second {
            bail!("the two passphrases differ; nothing was created");
        }
    }
    Ok(first)
}
