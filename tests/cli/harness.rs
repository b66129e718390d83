//! Shared helpers for the CLI tests: a temporary repository, a runner that starts
//! `cairn` with a cleared environment, and small file and JSON utilities.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;
use tempfile::TempDir;

/// Path of the binary under test, built by cargo for this test target.
pub const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

/// Passphrase of every test repository.
pub const PASSWORD: &str = "correct horse battery staple";

/// Argon2 settings that make unlocking take milliseconds. Tests never need real ones.
pub const FAST_KDF: [&str; 4] = ["--kdf-memory-kib", "1024", "--kdf-iterations", "1"];

/// Maximum run time of one cairn command. A hung command fails its test instead of
/// blocking the whole suite.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

pub const MIB: usize = 1024 * 1024;

/// Exit status and captured output of one finished command.
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Formats the command, its exit status and its stderr for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\nstderr:\n{}",
            self.command, self.status, self.stderr
        )
    }

    /// Panics with the command's stderr unless it exited with code 0.
    pub fn expect_success(self, action: &str) -> Output {
        assert_eq!(
            self.code(),
            Some(0),
            "{action} failed, expected exit code 0\n{}",
            self.describe()
        );
        self
    }

    /// Parses stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not valid JSON ({error})\nstdout:\n{}\n{}",
                String::from_utf8_lossy(&self.stdout),
                self.describe()
            )
        })
    }
}

/// A repository in a temporary directory, with its own cache directory, home
/// directory and a work directory for input files and restore targets.
pub struct Repo {
    _root: TempDir,
    pub path: PathBuf,
    pub cache: PathBuf,
    pub work: PathBuf,
    home: PathBuf,
}

impl Repo {
    /// Creates the directories but does not run `cairn init`.
    pub fn uninitialized() -> Repo {
        let root = tempfile::Builder::new()
            .prefix("cairn-test-")
            .tempdir()
            .expect("failed to create a temporary directory");
        let path = root.path().join("repo");
        let cache = root.path().join("cache");
        let work = root.path().join("work");
        let home = root.path().join("home");
        for dir in [&cache, &work, &home] {
            fs::create_dir(dir).unwrap_or_else(|e| panic!("failed to create {dir:?}: {e}"));
        }
        Repo {
            _root: root,
            path,
            cache,
            work,
            home,
        }
    }

    /// Runs `cairn init` with fast KDF settings and the given extra options.
    pub fn init_with(options: &[&str]) -> Repo {
        let repo = Repo::uninitialized();
        let mut args = vec!["init"];
        args.extend(FAST_KDF);
        args.extend(options);
        repo.run(&args).expect_success("cairn init");
        repo
    }

    pub fn init() -> Repo {
        Repo::init_with(&[])
    }

    /// Returns a `cairn` command without `--repo`. Its environment is cleared except
    /// for PATH, and sets HOME, CAIRN_CACHE_DIR and CAIRN_PASSWORD to the test's own
    /// values. Stdin is /dev/null.
    pub fn bare_command(&self) -> Command {
        let mut command = Command::new(CAIRN);
        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command
            .env("HOME", &self.home)
            .env("CAIRN_CACHE_DIR", &self.cache)
            .env("CAIRN_PASSWORD", PASSWORD)
            .current_dir(&self.work)
            .stdin(Stdio::null());
        detach_from_terminal(&mut command);
        command
    }

    /// Returns a `cairn --repo PATH ARGS...` command, see `bare_command`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = self.bare_command();
        command.arg("--repo").arg(&self.path).args(args);
        command
    }

    /// Runs `cairn --repo PATH ARGS...` with stdin on /dev/null.
    pub fn run(&self, args: &[&str]) -> Output {
        run_command(self.command(args), &describe_args(args), None)
    }

    /// Runs `cairn --repo PATH ARGS...` with `input` on stdin.
    pub fn run_input(&self, args: &[&str], input: &[u8]) -> Output {
        run_command(self.command(args), &describe_args(args), Some(input))
    }

    /// Backs up `data` from stdin as entry `name` and returns the JSON summary.
    pub fn backup_stdin(&self, name: &str, data: &[u8]) -> Value {
        self.backup_stdin_with(name, data, &[])
    }

    /// Like `backup_stdin`, with extra options for `cairn backup`.
    pub fn backup_stdin_with(&self, name: &str, data: &[u8], options: &[&str]) -> Value {
        let mut args = vec!["--json", "backup", "--name", name, "--stdin"];
        args.extend(options);
        self.run_input(&args, data)
            .expect_success(&format!("backup of entry {name}"))
            .json()
    }

    /// Returns the parsed `cairn snapshots --json` array, oldest first.
    pub fn snapshots(&self) -> Vec<Value> {
        let output = self
            .run(&["--json", "snapshots"])
            .expect_success("list snapshots");
        match output.json() {
            Value::Array(items) => items,
            other => panic!("snapshots --json printed {other}, expected a JSON array"),
        }
    }

    /// Returns the ids from `cairn snapshots --json`, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.snapshots()
            .iter()
            .map(|snapshot| string_field(snapshot, "id"))
            .collect()
    }

    /// Runs `cairn restore SPEC --stdout` and returns the restored bytes.
    pub fn restore_stdout(&self, spec: &str) -> Vec<u8> {
        self.run(&["restore", spec, "--stdout"])
            .expect_success(&format!("restore {spec} to stdout"))
            .stdout
    }

    /// Runs `cairn --json stats` and returns the parsed object.
    pub fn stats(&self) -> Value {
        self.run(&["--json", "stats"])
            .expect_success("cairn stats")
            .json()
    }

    /// Returns every file under the repository's `data/` directory, sorted.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        files_under(&self.path.join("data"))
    }

    /// Returns a path inside the work directory.
    pub fn work_path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

/// Starts the command in its own session. Without a controlling terminal a
/// password prompt fails at once instead of waiting for a key press.
// The workspace denies unsafe code for the product. Only pre_exec can call setsid
// in the child, so this test helper allows it.
#[allow(unsafe_code)]
fn detach_from_terminal(command: &mut Command) {
    // SAFETY: setsid is async-signal-safe and the closure touches no other state.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

fn describe_args(args: &[&str]) -> String {
    format!("cairn {}", args.join(" "))
}

/// Runs a command to completion, capturing stdout and stderr. With `input`, stdin is
/// a pipe that receives it. Without, stdin stays as the command set it. Kills the
/// command and panics after COMMAND_TIMEOUT.
pub fn run_command(mut command: Command, description: &str, input: Option<&[u8]>) -> Output {
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start {description}: {error}"));

    // Write stdin on its own thread so that a full stdout pipe cannot deadlock us.
    // A write error is ignored: cairn may exit before it reads all input, and the
    // caller checks the exit code.
    let writer = input.map(|data| {
        let data = data.to_vec();
        let mut stdin = child.stdin.take().expect("stdin was piped");
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let stdout_reader = read_to_end_in_thread(child.stdout.take().expect("stdout was piped"));
    let stderr_reader = read_to_end_in_thread(child.stderr.take().expect("stderr was piped"));

    let status = wait_with_timeout(&mut child, COMMAND_TIMEOUT, description);
    if let Some(writer) = writer {
        writer.join().expect("stdin writer thread panicked");
    }
    let stdout = stdout_reader.join().expect("stdout reader thread panicked");
    let stderr = stderr_reader.join().expect("stderr reader thread panicked");
    Output {
        command: description.to_string(),
        status,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

pub fn read_to_end_in_thread<R: Read + Send + 'static>(mut source: R) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = source.read_to_end(&mut buffer);
        buffer
    })
}

/// Waits for the child. Kills it with SIGKILL and panics if it runs past `timeout`.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration, description: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{description} did not finish within {timeout:?} and was killed");
            }
            Err(error) => panic!("failed to wait for {description}: {error}"),
        }
    }
}

/// Returns `len` pseudo-random bytes. The same seed gives the same bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Returns every regular file below `dir`, sorted. A missing directory has none.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => panic!("failed to list {current:?}: {error}"),
        };
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("failed to list {current:?}: {e}"));
            let file_type = entry.file_type().expect("failed to read a file type");
            if file_type.is_dir() {
                pending.push(entry.path());
            } else if file_type.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

/// Returns the names of the entries directly inside `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("failed to list {dir:?}: {e}"))
        .map(|entry| {
            entry
                .expect("failed to read a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Converts a temporary path to `&str` for use as a command-line argument.
pub fn path_arg(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("temporary path {path:?} is not valid UTF-8"))
}

pub fn u64_field(object: &Value, key: &str) -> u64 {
    object.get(key).and_then(Value::as_u64).unwrap_or_else(|| {
        panic!("field {key:?} is missing or not an unsigned integer in {object}")
    })
}

pub fn f64_field(object: &Value, key: &str) -> f64 {
    object
        .get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("field {key:?} is missing or not a number in {object}"))
}

pub fn string_field(object: &Value, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {key:?} is missing or not a string in {object}"))
        .to_string()
}

pub fn array_field<'a>(object: &'a Value, key: &str) -> &'a Vec<Value> {
    object
        .get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("field {key:?} is missing or not an array in {object}"))
}

/// Returns the snapshot id of a backup summary, checking that it is 64 hex digits.
pub fn snapshot_id(summary: &Value) -> String {
    let id = string_field(summary, "snapshot");
    assert!(
        is_hex_id(&id),
        "snapshot id {id:?} in the backup summary is not 64 lowercase hex digits"
    );
    id
}

/// Returns the first entry of a backup summary.
pub fn first_entry(summary: &Value) -> &Value {
    array_field(summary, "entries")
        .first()
        .unwrap_or_else(|| panic!("backup summary has no entries: {summary}"))
}

pub fn is_hex_id(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// Returns the first 8 hex digits of a snapshot id, the shortest form that an
/// error message may use to name a snapshot.
pub fn short_id(id: &str) -> &str {
    &id[..8]
}

/// Asserts that two byte strings are equal without printing them whole.
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], label: &str) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{label}: restored {} bytes, expected {}",
        actual.len(),
        expected.len()
    );
    let first_difference = actual.iter().zip(expected).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "{label}: restored bytes differ from the input, first at this offset"
    );
}

/// Exit status and stderr of a child whose stdout was closed early.
pub struct ChildPipes {
    pub status: ExitStatus,
    pub stderr: String,
}

/// Closes the child's stdout without reading it, then waits for it.
pub fn close_stdout_and_wait(mut child: Child) -> ChildPipes {
    drop(child.stdout.take());
    let stderr = child.stderr.take().map(read_to_end_in_thread);
    let status = wait_with_timeout(
        &mut child,
        Duration::from_secs(60),
        "cairn with a closed stdout",
    );
    let stderr = stderr
        .map(|thread| thread.join().unwrap_or_default())
        .unwrap_or_default();
    ChildPipes {
        status,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
