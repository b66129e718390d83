//! A throwaway PostgreSQL 15 cluster that listens only on a unix socket in a
//! temporary directory and is stopped when the `Cluster` value drops.

use std::ffi::CStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use crate::harness::{Output, path_arg, run_command};

/// Directory of the PostgreSQL 15 binaries installed by Debian's postgresql-15.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Settings appended to postgresql.conf. No TCP listener, and no fsync because the
/// cluster is deleted after the test.
const SERVER_SETTINGS: &str = "
listen_addresses = ''
fsync = off
synchronous_commit = off
full_page_writes = off
";

/// PATH for the PostgreSQL tools. It includes /usr/sbin, where runuser lives.
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

pub fn pg_program(name: &str) -> PathBuf {
    Path::new(PG_BIN).join(name)
}

pub struct Cluster {
    data: PathBuf,
    log: PathBuf,
    socket_dir: PathBuf,
    /// True when the tests run as root. PostgreSQL refuses to run as root, so the
    /// server tools then run as the `postgres` user through runuser.
    run_as_postgres: bool,
    // Dropped last, after Drop::drop has stopped the server.
    dir: TempDir,
}

impl Cluster {
    /// Creates a cluster with initdb and starts it with `pg_ctl start -w`.
    pub fn start() -> Cluster {
        let postgres = pg_program("postgres");
        assert!(
            postgres.is_file(),
            "PostgreSQL 15 server binaries are missing: {postgres:?} does not exist. \
             Install the Debian package postgresql-15 (.ci/run does this)."
        );

        let run_as_postgres = is_root();

        // Unix socket paths are limited to about 100 bytes, and TMPDIR may be long,
        // so the cluster lives directly under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir_in("/tmp")
            .expect("failed to create a temporary directory for PostgreSQL");
        let socket_dir = dir.path().join("socket");
        fs::create_dir(&socket_dir).expect("failed to create the socket directory");
        if run_as_postgres {
            let (uid, gid) = postgres_user_ids();
            for path in [dir.path(), socket_dir.as_path()] {
                chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("failed to chown {path:?} to postgres: {e}"));
            }
        }

        let cluster = Cluster {
            data: dir.path().join("data"),
            log: dir.path().join("server.log"),
            socket_dir,
            run_as_postgres,
            dir,
        };

        cluster
            .run_server_tool(
                "initdb",
                &[
                    "-D",
                    path_arg(&cluster.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-locale",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
            )
            .expect_success("initdb");

        let config_path = cluster.data.join("postgresql.conf");
        let mut config = OpenOptions::new()
            .append(true)
            .open(&config_path)
            .unwrap_or_else(|e| panic!("failed to open {config_path:?}: {e}"));
        writeln!(
            config,
            "{SERVER_SETTINGS}unix_socket_directories = '{}'",
            path_arg(&cluster.socket_dir)
        )
        .expect("failed to append to postgresql.conf");

        let started = cluster.run_server_tool(
            "pg_ctl",
            &[
                "-D",
                path_arg(&cluster.data),
                "-l",
                path_arg(&cluster.log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert_eq!(
            started.code(),
            Some(0),
            "pg_ctl start failed\n{}\nserver log:\n{}",
            started.describe(),
            fs::read_to_string(&cluster.log).unwrap_or_default()
        );
        cluster
    }

    /// Returns the directory that contains the server's socket, for `-h`.
    pub fn socket_dir(&self) -> &str {
        path_arg(&self.socket_dir)
    }

    /// Runs initdb or pg_ctl, as the `postgres` user when the tests run as root.
    fn run_server_tool(&self, program: &str, args: &[&str]) -> Output {
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(pg_program(program));
            command
        } else {
            Command::new(pg_program(program))
        };
        command
            .args(args)
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        run_command(command, &format!("{program} {}", args.join(" ")), None)
    }

    /// Returns a psql, pg_dump or pg_restore command that connects to this cluster
    /// as the `postgres` superuser, with a cleared environment and stdin on /dev/null.
    pub fn client_command(&self, program: &str) -> Command {
        let mut command = Command::new(pg_program(program));
        command
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("PGCLIENTENCODING", "UTF8")
            .args(["-h", self.socket_dir(), "-U", "postgres"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs one SQL statement in `database` and returns its unaligned output with
    /// the trailing newline removed.
    pub fn query(&self, database: &str, sql: &str) -> String {
        let mut command = self.client_command("psql");
        command.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
            "-c",
            sql,
        ]);
        let output = run_command(command, &format!("psql -d {database} -c {sql}"), None)
            .expect_success("psql query");
        String::from_utf8(output.stdout)
            .expect("psql output is not UTF-8")
            .trim_end()
            .to_string()
    }

    /// Runs an SQL script in `database`, stopping at the first error.
    pub fn run_script(&self, database: &str, script: &str) {
        let mut command = self.client_command("psql");
        command.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database]);
        run_command(
            command,
            &format!("psql -d {database} < script"),
            Some(script.as_bytes()),
        )
        .expect_success("psql script");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = path_arg(&self.data).to_string();
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(pg_program("pg_ctl"));
            command
        } else {
            Command::new(pg_program("pg_ctl"))
        };
        command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        // Drop must not panic, because it may run while a failed test unwinds.
        match command.output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "pg_ctl stop failed for {data}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("failed to run pg_ctl stop for {data}: {error}"),
        }
    }
}

/// Returns whether the tests run with effective user id 0.
// The workspace denies unsafe code for the product. libc's functions are all
// unsafe to call, so this test helper allows it.
#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks up the uid and gid of the `postgres` user that Debian's packages create.
#[allow(unsafe_code)]
fn postgres_user_ids() -> (u32, u32) {
    let name: &CStr = c"postgres";
    // SAFETY: the name is a valid C string, and the returned entry is read at once,
    // before any other call could overwrite getpwnam's static buffer.
    unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        assert!(
            !entry.is_null(),
            "the tests run as root, but there is no user postgres to run the server as \
             (PostgreSQL refuses to run as root)"
        );
        ((*entry).pw_uid, (*entry).pw_gid)
    }
}
