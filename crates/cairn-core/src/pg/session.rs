//! A `psql` session driven over pipes: one connection that can hold a
//! transaction open (and with it an exported snapshot) while `pg_dump`
//! runs beside it.
//!
//! Each statement is followed by `\echo` of a marker line; the output up to
//! the marker is the statement's result. psql runs with `ON_ERROR_STOP`, so
//! a failed statement ends psql and the error is taken from its stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;

use super::{Target, Tools};
use crate::error::{Error, Result};

/// Settings of every cairn session, so that values print the same way in
/// the session that records evidence and the one that checks it.
pub const SESSION_SETTINGS: &str = "SET row_security = off; \
SET statement_timeout = 0; SET lock_timeout = 0; \
SET idle_in_transaction_session_timeout = 0; SET TimeZone = 'UTC'; \
SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
SET extra_float_digits = 3; SET bytea_output = 'hex';";

/// A connected psql.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    marker: String,
    /// `database` on `target`, for messages.
    describe: String,
}

impl Session {
    /// Connects to `database` and applies [`SESSION_SETTINGS`].
    pub fn connect(tools: &Tools, target: &Target, database: &str) -> Result<Session> {
        let mut command = Command::new(tools.program("psql"));
        crate::producer::prepare_child(&mut command);
        command
            .args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
            .args(["-P", "pager=off", "-d"])
            .arg(target.for_database(database))
            .envs(target.env())
            .env("PGAPPNAME", "cairn")
            .env("PGCLIENTENCODING", "UTF8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            Error::Postgres(format!(
                "cannot start {}: {e}",
                tools.program("psql").display()
            ))
        })?;
        let (Some(stdin), Some(stdout), Some(mut stderr_pipe)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::Postgres("psql started without pipes".into()));
        };
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let stderr_thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                if let Ok(mut text) = sink.lock()
                    && text.len() < 64 * 1024
                {
                    text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }
        });
        let mut session = Session {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            stderr,
            stderr_thread: Some(stderr_thread),
            marker: format!("cairn-end-of-result-{}", crate::repo::random_hex(8)),
            describe: format!("database {database} on {}", target.display()),
        };
        session.execute(SESSION_SETTINGS)?;
        Ok(session)
    }

    /// Returns the process group of psql, to stop it from another thread.
    pub fn process_group(&self) -> i32 {
        self.child.id() as i32
    }

    /// Runs SQL and returns the output lines (fields separated by `|`).
    pub fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        // psql sends a statement at its semicolon; without one the marker
        // would print before the result.
        let sql = sql.trim_end();
        let end = if sql.ends_with(';') { "" } else { ";" };
        let script = format!("{sql}{end}\n\\echo {}\n", self.marker);
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(script.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("session closed")),
        };
        if written.is_err() {
            return Err(self.failure());
        }
        let mut lines = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failure()),
                Ok(_) => {}
            }
            let text = line.trim_end_matches('\n');
            if text == self.marker {
                return Ok(lines);
            }
            lines.push(text.to_string());
        }
    }

    /// Runs SQL whose result is ignored.
    pub fn execute(&mut self, sql: &str) -> Result<()> {
        self.query(sql).map(|_| ())
    }

    /// Runs a query returning one value and returns it as text.
    pub fn value(&mut self, sql: &str) -> Result<String> {
        let lines = self.query(sql)?;
        match lines.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(Error::Postgres(format!(
                "{}: expected one value from `{sql}`, got {} lines",
                self.describe,
                lines.len()
            ))),
        }
    }

    /// Runs a query returning one `jsonb` value and decodes it.
    pub fn json<T: DeserializeOwned>(&mut self, sql: &str) -> Result<T> {
        let text = self.value(sql)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Postgres(format!(
                "{}: cannot decode the result of `{sql}`: {e}",
                self.describe
            ))
        })
    }

    /// Ends the session cleanly (`\q`).
    pub fn close(mut self) -> Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\\q\n");
        }
        let status = self
            .child
            .wait()
            .map_err(|e| Error::Postgres(format!("cannot wait for psql: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    /// Builds the error after psql stopped replying from its stderr, which
    /// contains the server's message.
    fn failure(&mut self) -> Error {
        self.stdin.take();
        let _ = self.child.wait();
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        let stderr = self
            .stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let detail = if stderr.is_empty() {
            "psql ended without a message".to_string()
        } else {
            stderr
        };
        Error::Postgres(format!("{}: {detail}", self.describe))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin.take();
        if let Ok(None) = self.child.try_wait() {
            crate::producer::kill_group(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
