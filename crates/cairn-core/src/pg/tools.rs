//! Finding PostgreSQL client programs of a suitable major version.
//!
//! A dump must come from a `pg_dump` at least as new as the server, and a
//! restore needs a `pg_restore` at least as new as the `pg_dump` that wrote
//! the archive. Candidates come from `--pg-bin`, else from
//! `/usr/lib/postgresql/*/bin` (Debian and Ubuntu's layout) and then `PATH`.
//! The oldest major that is new enough wins, because it is usually the one
//! the server's own packages ship.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// A folder of PostgreSQL client programs of one major version.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Folder holding `pg_dump`, `pg_restore`, `psql`, ...
    pub bin: PathBuf,
    /// Major version, e.g. 15.
    pub major: u32,
    /// First line of `<program> --version`.
    pub version: String,
}

impl Tools {
    /// Path of one program in this folder.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Returns whether the folder has `name`.
    pub fn has(&self, name: &str) -> bool {
        self.program(name).is_file()
    }

    /// Finds a folder whose `program` (`pg_dump` or `pg_restore`) has major
    /// version `min_major` or newer. `what` explains the need in errors.
    pub fn find(pg_bin: Option<&Path>, program: &str, min_major: u32, what: &str) -> Result<Tools> {
        if let Some(dir) = pg_bin {
            let tools = probe(dir, program).ok_or_else(|| {
                Error::Invalid(format!(
                    "--pg-bin {}: no working {program} in this folder",
                    dir.display()
                ))
            })?;
            if tools.major < min_major {
                return Err(Error::Invalid(format!(
                    "{} is version {} ({}), but {what} needs version {min_major} or newer; install the PostgreSQL {min_major} client programs and pass their folder with --pg-bin",
                    tools.program(program).display(),
                    tools.major,
                    tools.version
                )));
            }
            return Ok(tools);
        }
        let mut found: Vec<Tools> = candidate_dirs()
            .iter()
            .filter_map(|dir| probe(dir, program))
            .collect();
        found.sort_by_key(|t| t.major);
        let seen = found
            .iter()
            .map(|t| format!("{} ({})", t.program(program).display(), t.major))
            .collect::<Vec<_>>();
        found
            .into_iter()
            .find(|t| t.major >= min_major)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{what} needs {program} version {min_major} or newer, but {}; install the PostgreSQL {min_major} client programs (Debian: postgresql-client-{min_major}) or pass their folder with --pg-bin",
                    if seen.is_empty() {
                        format!("there is no {program} in PATH or /usr/lib/postgresql/*/bin")
                    } else {
                        format!("only these were found: {}", seen.join(", "))
                    }
                ))
            })
    }
}

/// Versioned folders first, so that on a tie the real folder wins over
/// Debian's `/usr/bin` wrapper.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir("/usr/lib/postgresql") {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .collect(),
        Err(_) => Vec::new(),
    };
    dirs.sort();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

fn probe(dir: &Path, program: &str) -> Option<Tools> {
    let path = dir.join(program);
    if !path.is_file() {
        return None;
    }
    let output = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let major = parse_major(&version)?;
    Some(Tools {
        bin: dir.to_path_buf(),
        major,
        version,
    })
}

/// Major version from a `--version` line such as `pg_dump (PostgreSQL)
/// 15.18 (Debian 15.18-0+deb12u1)` or `pg_dump (PostgreSQL) 9.6.24`.
pub fn parse_major(line: &str) -> Option<u32> {
    let number = line.split(") ").nth(1)?.split_whitespace().next()?;
    let mut parts = number.split('.');
    let digits: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let first: u32 = digits.parse().ok()?;
    if first < 10 {
        let second: u32 = parts.next()?.parse().ok()?;
        return Some(first * 100 + second);
    }
    Some(first)
}

/// Major version from `server_version_num` (150018 -> 15, 90624 -> 906).
pub fn major_of_version_num(num: u32) -> u32 {
    if num >= 100_000 {
        num / 10_000
    } else {
        num / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_restore (PostgreSQL) 17beta2"), Some(17));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(906));
        assert_eq!(parse_major("garbage"), None);
        assert_eq!(major_of_version_num(150018), 15);
        assert_eq!(major_of_version_num(90624), 906);
    }
}
