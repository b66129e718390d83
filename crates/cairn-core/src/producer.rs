//! Running the program that produces a backup stream (`pg_dump`, ...).
//!
//! The producer runs in its own process group so that cairn can stop it and
//! every child it started when storing fails. Its stderr is passed through
//! and the last lines are kept for the error message if it fails.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::error::{Error, Result};

const STDERR_TAIL_LINES: usize = 20;

/// Process groups of the producers that are running, for
/// [`stop_all_producers`].
static RUNNING_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Stops every running producer's process group with SIGTERM. For a
/// process that is about to exit on a signal: PR_SET_PDEATHSIG reaches only
/// the producer itself, not the programs it started (`sh -c 'pg_dump ...'`).
pub fn stop_all_producers() {
    if let Ok(mut groups) = RUNNING_GROUPS.lock() {
        for group in groups.drain(..) {
            kill_group(group, libc::SIGTERM);
        }
    }
}

fn forget_group(group: i32) {
    if let Ok(mut groups) = RUNNING_GROUPS.lock() {
        groups.retain(|g| *g != group);
    }
}

/// A running producer.
pub struct Producer {
    argv: Vec<String>,
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(signal) = status.signal() {
        let name = match signal {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGINT => " (SIGINT)",
            libc::SIGPIPE => " (SIGPIPE)",
            libc::SIGSEGV => " (SIGSEGV)",
            _ => "",
        };
        format!("was killed by signal {signal}{name}")
    } else {
        format!("ended with {status}")
    }
}

/// Bytes of pipe buffer asked for on a stream cairn reads.
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Asks the kernel for a 1 MiB buffer on `pipe` instead of 64 KiB. 1 MiB is
/// the default maximum for an unprivileged process. The writer then blocks
/// and wakes the reader 16 times less often, so a dump streams through the
/// pipe faster. Does nothing when `pipe` is not a pipe or the kernel rejects
/// the size.
#[cfg_attr(
    target_os = "linux",
    expect(unsafe_code, reason = "fcntl(2) has no safe wrapper in std")
)]
pub fn enlarge_pipe(pipe: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours; an
    // fd that is not a pipe gives an error, which is ignored.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pipe;
}

impl Producer {
    /// Starts `argv[0]` with the remaining arguments, stdout piped to cairn.
    pub fn spawn(argv: &[String]) -> Result<Producer> {
        Self::spawn_with_env(argv, &[])
    }

    /// Like [`Producer::spawn`], with extra environment variables. Secrets
    /// for the producer (a database password) go here, never into `argv`,
    /// which every user of the machine can read.
    pub fn spawn_with_env(argv: &[String], env: &[(&str, &str)]) -> Result<Producer> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::Invalid("the producer command is empty".into()));
        };
        let mut command = Command::new(program);
        prepare_child(&mut command);
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Producer(format!(
                    "cannot start producer `{program}`: {e}; no snapshot was written. Check the program name and PATH"
                ))
            })?;
        if let Ok(mut groups) = RUNNING_GROUPS.lock() {
            groups.push(child.id() as i32);
        }
        let stdout = child.stdout.take();
        if let Some(stdout) = &stdout {
            enlarge_pipe(stdout);
        }
        let stderr = child.stderr.take();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_thread = stderr.map(|stderr| {
            let tail = Arc::clone(&tail);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = Vec::new();
                while let Ok(n) = reader.read_until(b'\n', &mut line) {
                    if n == 0 {
                        break;
                    }
                    let _ = std::io::stderr().write_all(&line);
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == STDERR_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(text);
                    }
                    line.clear();
                }
            })
        });
        Ok(Producer {
            argv: argv.to_vec(),
            child: Some(child),
            stdout,
            tail,
            stderr_thread,
        })
    }

    /// Takes the producer's stdout; call once.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    fn command_line(&self) -> String {
        self.argv.join(" ")
    }

    fn stderr_tail(&mut self) -> String {
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        self.tail
            .lock()
            .map(|tail| tail.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Waits for the producer and turns anything but exit status 0 into an
    /// error that shows the status and the end of its stderr.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdout.take());
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait();
        forget_group(child.id() as i32);
        let status = status.map_err(|e| {
            Error::Producer(format!(
                "cannot wait for producer `{}`: {e}",
                self.command_line()
            ))
        })?;
        if status.success() {
            return Ok(());
        }
        let tail = self.stderr_tail();
        let mut message = format!(
            "producer `{}` {}; no snapshot was written",
            self.command_line(),
            describe(status)
        );
        if !tail.is_empty() {
            message.push_str("\nlast lines of its stderr:\n");
            message.push_str(&tail);
        }
        Err(Error::Producer(message))
    }

    /// Stops the producer's whole process group: SIGTERM, then SIGKILL after
    /// two seconds.
    pub fn stop(&mut self) {
        drop(self.stdout.take());
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = child.id() as i32;
        forget_group(group);
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        kill_group(group, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(group, libc::SIGKILL);
        if let Err(e) = child.wait() {
            warn!(error = %e, "cannot reap the stopped producer");
        }
    }
}

/// Sets up a child process as cairn runs every helper program: in its own
/// process group, stopped when cairn dies, and without the passphrase.
/// CAIRN_PASSWORD and CAIRN_NEW_PASSWORD are removed from its environment,
/// where other processes of the user could read them.
pub(crate) fn prepare_child(command: &mut Command) {
    stop_with_parent(command);
    command
        .env_remove("CAIRN_PASSWORD")
        .env_remove("CAIRN_NEW_PASSWORD")
        .process_group(0);
}

/// Asks the kernel to send SIGTERM to the producer when cairn dies, even by
/// SIGKILL, so a killed backup does not leave its producer running.
#[expect(
    unsafe_code,
    reason = "pre_exec and prctl(2) have no safe wrappers in std"
)]
fn stop_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl, which is async-signal-safe and touches no shared state.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[expect(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
pub(crate) fn kill_group(group: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a
    // negative pid addresses the process group the producer leads.
    unsafe {
        libc::kill(-group, signal);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn argv(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn successful_producer() {
        let mut producer = Producer::spawn(&argv("printf hello")).expect("spawn");
        let mut out = String::new();
        producer
            .take_stdout()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        assert_eq!(out, "hello");
        producer.finish().expect("exit 0");
    }

    #[test]
    fn failing_producer_reports_status_and_stderr() {
        let mut producer =
            Producer::spawn(&argv("echo partial; echo 'disk on fire' >&2; exit 3")).expect("spawn");
        let mut out = Vec::new();
        producer
            .take_stdout()
            .expect("stdout")
            .read_to_end(&mut out)
            .expect("read");
        let message = producer.finish().expect_err("must fail").to_string();
        assert!(message.contains("exited with status 3"), "{message}");
        assert!(message.contains("disk on fire"), "{message}");
    }

    #[test]
    fn killed_producer_names_signal() {
        let mut producer = Producer::spawn(&argv("kill -9 $$")).expect("spawn");
        let mut out = Vec::new();
        producer
            .take_stdout()
            .expect("stdout")
            .read_to_end(&mut out)
            .expect("read");
        let message = producer.finish().expect_err("must fail").to_string();
        assert!(message.contains("signal 9"), "{message}");
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let result = Producer::spawn(&["/nonexistent/cairn-test-producer".to_string()]);
        let message = result.err().expect("spawn fails").to_string();
        assert!(message.contains("cannot start producer"), "{message}");
        assert!(message.contains("no snapshot was written"), "{message}");
    }
}
