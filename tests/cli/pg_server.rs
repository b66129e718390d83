//! `cairn pg backup`, `restore` and `verify` against throwaway PostgreSQL 15
//! clusters. The source is a multi-database server with roles, row-level
//! security, large objects, a sequence and a LATIN1 database. The tests run
//! the disaster-recovery runbook of docs/postgres.md as written, drills that
//! pass and fail, and backups that must fail without leaving a snapshot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    CAIRN, COMMAND_TIMEOUT, Output, PASSWORD, Repo, array_field, read_to_end_in_thread,
    run_command, string_field, u64_field, wait_with_timeout,
};
use crate::pg::{Cluster, PG_BIN};

/// Roles and databases of the source server.
const SERVER_SQL: &str = r#"
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE tenant_user LOGIN PASSWORD 'tenant-secret';
CREATE ROLE limited LOGIN;
CREATE ROLE rls_reader LOGIN;
CREATE ROLE backup_ro LOGIN BYPASSRLS IN ROLE pg_read_all_data;
CREATE DATABASE app OWNER app_owner;
CREATE DATABASE billing;
CREATE DATABASE legacy ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
ALTER DATABASE app SET work_mem = '8MB';
ALTER DATABASE app SET search_path = "$user", public;
ALTER ROLE tenant_user IN DATABASE app SET statement_timeout = '5s';
REVOKE TEMPORARY ON DATABASE billing FROM PUBLIC;
"#;

/// The tenant database: row-level security, a large object, a sequence,
/// grants to other roles.
const APP_SQL: &str = r#"
CREATE TABLE accounts (
    id serial PRIMARY KEY,
    tenant text NOT NULL,
    name text NOT NULL,
    balance numeric(12, 2) NOT NULL,
    created timestamptz NOT NULL,
    doc jsonb NOT NULL
);
INSERT INTO accounts (tenant, name, balance, created, doc)
SELECT 'tenant-' || (i % 20), 'Konto ' || i || ' ' || md5(i::text), (i % 100000) / 7.0,
       timestamptz '2026-01-01 00:00:00+00' + i * interval '13 seconds',
       jsonb_build_object('plan', i % 4, 'note', 'Zürich ☕ ' || md5((i * 3)::text))
FROM generate_series(1, 100000) AS i;
ALTER TABLE accounts OWNER TO app_owner;
ALTER SEQUENCE accounts_id_seq OWNER TO app_owner;
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON accounts TO tenant_user
    USING (tenant = current_setting('app.tenant', true));
GRANT SELECT ON accounts TO tenant_user;

CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    at timestamptz NOT NULL,
    payload jsonb NOT NULL
);
INSERT INTO events (tenant, at, payload)
SELECT 'tenant-' || (i % 20), timestamptz '2026-02-01 00:00:00+00' + i * interval '1 minute',
       jsonb_build_object('kind', 'login', 'n', i)
FROM generate_series(1, 50000) AS i;

CREATE TABLE secrets (id integer PRIMARY KEY, value text NOT NULL);
INSERT INTO secrets VALUES (1, 'only the owner reads this');

CREATE SEQUENCE invoice_no;
SELECT setval('invoice_no', 4242);
SELECT lo_from_bytea(0, convert_to('large object: scanned contract', 'UTF8'));

GRANT CONNECT ON DATABASE app TO limited, rls_reader;
GRANT SELECT ON accounts, events TO limited;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO rls_reader;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO rls_reader;
"#;

const BILLING_SQL: &str = r#"
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE invoices (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    total numeric(10, 2) NOT NULL
);
INSERT INTO customers SELECT i, 'Customer ' || i FROM generate_series(1, 2000) AS i;
INSERT INTO invoices SELECT i, 1 + i % 2000, i * 1.25 FROM generate_series(1, 20000) AS i;
"#;

/// Text with characters outside ASCII, stored in a LATIN1 database.
const LEGACY_SQL: &str = r#"
CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);
INSERT INTO notes VALUES (1, 'café crème'), (2, 'naïve façade'), (3, 'Größe');
"#;

/// About 1% of the accounts change and events grow, as in a day of use.
const DAY_TWO_SQL: &str = r#"
UPDATE accounts SET balance = balance + 1, doc = doc || '{"plan": 9}' WHERE id BETWEEN 60001 AND 61000;
INSERT INTO events (tenant, at, payload)
SELECT 'tenant-1', timestamptz '2026-03-01 00:00:00+00' + i * interval '1 minute', '{"kind": "logout"}'
FROM generate_series(1, 500) AS i;
"#;

/// Starts a cluster with the three databases and their contents.
fn seeded_server() -> Cluster {
    let cluster = Cluster::start();
    cluster.run_script("postgres", SERVER_SQL);
    cluster.run_script("app", APP_SQL);
    cluster.run_script("billing", BILLING_SQL);
    cluster.run_script("legacy", LEGACY_SQL);
    cluster
}

/// Connection string for a cluster as the superuser, or as `user`.
fn conninfo(cluster: &Cluster, user: &str) -> String {
    format!("host={} user={user}", cluster.socket_dir())
}

/// Everything a restore must reproduce of one database, as comparable text.
fn fingerprint(cluster: &Cluster, database: &str) -> Vec<String> {
    let mut lines = vec![cluster.query(
        database,
        "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || datctype \
         || ' owner ' || pg_get_userbyid(datdba) \
         || ' acl ' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(datacl) a), '-') \
         || ' settings ' || coalesce((SELECT string_agg(coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*') \
              || ':' || array_to_string(s.setconfig, ','), ';' ORDER BY s.setrole) \
            FROM pg_db_role_setting s WHERE s.setdatabase = d.oid), '-') \
         FROM pg_database d WHERE datname = current_database()",
    )];
    let tables = cluster.query(
        database,
        "SELECT string_agg(format('%I.%I', schemaname, tablename), ' ' ORDER BY schemaname, tablename) \
         FROM pg_tables WHERE schemaname = 'public'",
    );
    for table in tables.split_whitespace() {
        lines.push(format!(
            "{table}: {}",
            cluster.query(
                database,
                &format!(
                    "SELECT count(*) || ' ' || coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '-') \
                     FROM {table} r"
                ),
            )
        ));
    }
    lines.push(cluster.query(
        database,
        "SELECT coalesce(string_agg(tablename || '/' || policyname || '/' || array_to_string(roles, ','), ' ' \
         ORDER BY tablename, policyname), '-') FROM pg_policies",
    ));
    lines.push(cluster.query(
        database,
        "SELECT coalesce(string_agg(c.relname || ':' || c.relrowsecurity || ':' || pg_get_userbyid(c.relowner), ' ' \
         ORDER BY c.relname), '-') FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'",
    ));
    lines.push(cluster.query(
        database,
        "SELECT coalesce(string_agg(oid || '=' || md5(lo_get(oid)), ' ' ORDER BY oid), '-') \
         FROM pg_largeobject_metadata",
    ));
    lines.push(cluster.query(
        database,
        "SELECT coalesce(string_agg(relname, ' ' ORDER BY relname), '-') FROM pg_class \
         WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace",
    ));
    lines
}

/// Roles, their login flag and password hash, as comparable text.
fn role_fingerprint(cluster: &Cluster) -> String {
    cluster.query(
        "postgres",
        "SELECT string_agg(rolname || ':' || rolcanlogin || ':' || coalesce(rolpassword, '-'), ' ' \
         ORDER BY rolname) FROM pg_authid WHERE rolname IN ('app_owner', 'tenant_user', 'limited', 'rls_reader')",
    )
}

fn assert_same_database(restored: &Cluster, expected: &[String], database: &str, label: &str) {
    let found = fingerprint(restored, database);
    assert_eq!(
        found.len(),
        expected.len(),
        "{label}: {database}: different tables: {found:?} vs {expected:?}"
    );
    for (found, expected) in found.iter().zip(expected) {
        assert_eq!(found, expected, "{label}: database {database} differs");
    }
}

/// Runs a `cairn pg backup` and returns its JSON summary.
fn pg_backup(repo: &Repo, args: &[&str]) -> Value {
    let mut all = vec!["--json", "pg", "backup"];
    all.extend(args);
    repo.run(&all).expect_success("cairn pg backup").json()
}

fn entry_names(summary: &Value) -> Vec<String> {
    array_field(summary, "entries")
        .iter()
        .map(|e| string_field(e, "name"))
        .collect()
}

/// Returns the shell block that follows `<!-- runbook-test: NAME -->` in
/// docs/postgres.md.
fn runbook_block(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/postgres.md");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"));
    let marker = format!("<!-- runbook-test: {name} -->");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/postgres.md has no marker {marker}"));
    let mut lines = text[start..].lines().skip(1);
    assert_eq!(
        lines.next(),
        Some("```sh"),
        "the runbook block {name} must start with ```sh"
    );
    let block: Vec<&str> = lines.take_while(|l| *l != "```").collect();
    assert!(!block.is_empty(), "runbook block {name} is empty");
    block.join("\n")
}

/// Runs a runbook block with bash, as an operator would: cairn and the
/// PostgreSQL 15 programs on PATH, PGHOST and PGUSER naming `server`.
fn run_runbook(name: &str, repo: &Repo, server: &Cluster, dir: &Path) -> Output {
    let block = runbook_block(name);
    let cairn_dir = Path::new(CAIRN).parent().expect("cairn has a folder");
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", &block])
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:{PG_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
                cairn_dir.display()
            ),
        )
        .env("HOME", dir)
        .env("PGHOST", server.socket_dir())
        .env("PGUSER", "postgres")
        .env("PGCLIENTENCODING", "UTF8")
        .env("CAIRN_REPOSITORY", &repo.path)
        .env("CAIRN_CACHE_DIR", &repo.cache)
        .env("CAIRN_PASSWORD", PASSWORD)
        .current_dir(dir)
        .stdin(Stdio::null());
    run_command(command, &format!("runbook block {name}"), None)
}

#[test]
fn pg_server_backup_drill_and_runbook() {
    let source = seeded_server();
    let repo = Repo::init();
    let superuser = conninfo(&source, "postgres");

    // Day one: the whole server, one snapshot.
    let summary = pg_backup(&repo, &["--all", "--connection", &superuser]);
    assert_eq!(
        entry_names(&summary),
        [
            "globals.sql",
            "app.dump",
            "billing.dump",
            "legacy.dump",
            "postgres.dump"
        ]
    );
    let snapshots = repo.snapshots();
    assert_eq!(snapshots.len(), 1);
    let meta = &snapshots[0]["postgres"];
    assert_eq!(
        meta["server_version_num"].as_u64().map(|v| v / 10_000),
        Some(15)
    );
    assert_eq!(meta["globals"]["complete"], Value::Bool(true));
    let roles = array_field(meta, "roles");
    assert!(
        roles.contains(&Value::from("tenant_user")),
        "roles: {roles:?}"
    );
    let databases = array_field(meta, "databases");
    let app = databases
        .iter()
        .find(|d| d["name"] == "app")
        .expect("app recorded");
    let accounts = array_field(&app["evidence"], "tables")
        .iter()
        .find(|t| t["name"] == "accounts")
        .expect("accounts in the evidence")
        .clone();
    assert_eq!(u64_field(&accounts, "rows"), 100_000);
    assert!(accounts["checksum"].is_string(), "no checksum: {accounts}");
    assert_eq!(accounts["rls"], Value::Bool(true));
    let policies = array_field(&app["evidence"], "policies");
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0]["name"], "tenant_isolation");
    assert_eq!(u64_field(&app["evidence"], "large_objects"), 1);
    let legacy = databases
        .iter()
        .find(|d| d["name"] == "legacy")
        .expect("legacy recorded");
    assert_eq!(legacy["encoding"], "LATIN1");
    assert!(string_field(app, "wal_lsn").contains('/'), "{app}");

    // A drill on a separate scratch server passes and is recorded.
    let scratch = Cluster::start();
    let drill = repo
        .run(&[
            "--json",
            "pg",
            "verify",
            "latest",
            "--scratch",
            &conninfo(&scratch, "postgres"),
        ])
        .expect_success("drill of day one")
        .json();
    assert_eq!(drill["passed"], Value::Bool(true), "{drill}");
    for db in array_field(&drill, "databases") {
        assert_eq!(db["amcheck"], "passed", "{db}");
        assert!(array_field(db, "differences").is_empty(), "{db}");
    }
    let listed = repo.snapshots();
    assert_eq!(listed[0]["drill"]["passed"], Value::Bool(true));
    let leftovers = scratch.query(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_drill_%'",
    );
    assert_eq!(leftovers, "0", "scratch databases were not dropped");

    // Day two: about 1% of the rows change; the backup stores little.
    source.run_script("app", DAY_TWO_SQL);
    let summary = pg_backup(&repo, &["--all", "--connection", &superuser]);
    let app_entry = array_field(&summary, "entries")
        .iter()
        .find(|e| e["name"] == "app.dump")
        .expect("app.dump")
        .clone();
    let (size, new_bytes) = (
        u64_field(&app_entry, "size"),
        u64_field(&app_entry, "new_bytes"),
    );
    assert!(
        new_bytes * 5 < size,
        "day two stored {new_bytes} new bytes of a {size}-byte dump; dedup is not working"
    );
    let expected: Vec<(String, Vec<String>)> = ["app", "billing", "legacy"]
        .iter()
        .map(|db| (db.to_string(), fingerprint(&source, db)))
        .collect();
    let expected_roles = role_fingerprint(&source);

    // Runbook: the whole server is lost; a new, empty server takes over.
    let replacement = Cluster::start();
    let work = tempfile::tempdir().expect("temporary folder");
    let output = run_runbook("server-lost", &repo, &replacement, work.path());
    let output = output.expect_success("runbook: whole server lost");
    let listing = String::from_utf8_lossy(&output.stdout).to_string();
    for db in ["app", "billing", "legacy", "postgres"] {
        assert!(
            listing.lines().any(|l| l == db),
            "{db} missing after restore: {listing}"
        );
    }
    for (db, fingerprint) in &expected {
        assert_same_database(&replacement, fingerprint, db, "whole server lost");
    }
    assert_eq!(
        role_fingerprint(&replacement),
        expected_roles,
        "roles differ on the new server"
    );

    // Runbook: one database is lost on the running server.
    source.run_script("postgres", "DROP DATABASE app;");
    run_runbook("database-lost", &repo, &source, work.path())
        .expect_success("runbook: one database lost");
    let app_expected = &expected[0].1;
    assert_same_database(&source, app_expected, "app", "one database lost");

    // Runbook: one table is damaged; the others keep today's changes.
    source.run_script(
        "app",
        "DELETE FROM accounts WHERE id % 7 = 0; UPDATE accounts SET balance = 0 WHERE id < 100; \
         INSERT INTO events (tenant, at, payload) VALUES ('tenant-2', now(), '{\"kind\": \"after\"}');",
    );
    let events_today = source.query("app", "SELECT count(*) FROM events");
    run_runbook("table-damaged", &repo, &source, work.path())
        .expect_success("runbook: one table damaged");
    let repaired = fingerprint(&source, "app");
    let accounts_line = |lines: &[String]| {
        lines
            .iter()
            .find(|l| l.starts_with("public.accounts:"))
            .cloned()
            .expect("accounts line")
    };
    assert_eq!(
        accounts_line(&repaired),
        accounts_line(app_expected),
        "accounts not repaired"
    );
    assert_eq!(
        source.query("app", "SELECT count(*) FROM events"),
        events_today,
        "the table repair touched other tables"
    );
    assert_eq!(
        source.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app_recovered'"
        ),
        "0"
    );
}

/// Rewrites the newest snapshot with the row count of `accounts` and the
/// checksum of `events` changed, as if the backup had recorded other data
/// than the dump holds; returns the new snapshot's id.
fn tamper_evidence(repo: &Repo) -> String {
    rewrite_pg_meta(repo, |meta| {
        let app = meta
            .databases
            .iter_mut()
            .find(|d| d.name == "app")
            .expect("app");
        let table = app
            .evidence
            .tables
            .iter_mut()
            .find(|t| t.name == "accounts")
            .expect("accounts");
        table.rows += 1;
        let events = app
            .evidence
            .tables
            .iter_mut()
            .find(|t| t.name == "events")
            .expect("events");
        events.checksum = Some("12345".into());
    })
}

#[test]
fn pg_drill_names_table_that_differs() {
    let source = seeded_server();
    let repo = Repo::init();
    pg_backup(
        &repo,
        &["app", "--connection", &conninfo(&source, "postgres")],
    );

    // A scratch role that is not a superuser is rejected before anything
    // is written.
    let weak_scratch = Cluster::start();
    weak_scratch.run_script("postgres", "CREATE ROLE drill LOGIN CREATEDB;");
    let weak = repo.run(&[
        "pg",
        "verify",
        "latest",
        "--scratch",
        &conninfo(&weak_scratch, "drill"),
    ]);
    assert_eq!(weak.code(), Some(2), "{}", weak.describe());
    assert!(weak.stderr.contains("not a superuser"), "{}", weak.stderr);
    assert!(
        !repo.path.join("drills").exists(),
        "a rejected drill left a record"
    );
    drop(weak_scratch);

    // The source server itself is never a scratch server.
    let refused = repo.run(&[
        "pg",
        "verify",
        "latest",
        "--scratch",
        &conninfo(&source, "postgres"),
    ]);
    assert_eq!(refused.code(), Some(2), "{}", refused.describe());
    assert!(
        refused.stderr.contains("separate server"),
        "{}",
        refused.stderr
    );

    let tampered = tamper_evidence(&repo);
    let scratch = Cluster::start();
    let failed = repo.run(&[
        "pg",
        "verify",
        &tampered[..12],
        "--scratch",
        &conninfo(&scratch, "postgres"),
    ]);
    assert_eq!(failed.code(), Some(3), "{}", failed.describe());
    assert!(
        failed
            .stderr
            .contains("public.accounts: 100000 rows restored, 100001 at backup time"),
        "{}",
        failed.stderr
    );
    assert!(
        failed
            .stderr
            .contains("public.events: row count matches (50000) but the contents differ"),
        "{}",
        failed.stderr
    );
    let listed = repo.snapshots();
    let record = listed
        .iter()
        .find(|s| string_field(s, "id") == tampered)
        .expect("tampered snapshot listed");
    assert_eq!(record["drill"]["passed"], Value::Bool(false), "{record}");
    let table = repo.run(&["snapshots"]).expect_success("snapshots");
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("FAILED"),
        "{}",
        table.describe()
    );
}

/// Rewrites the newest snapshot with its PostgreSQL metadata changed by
/// `edit`; returns the new snapshot's id.
fn rewrite_pg_meta(
    repo: &Repo,
    edit: impl FnOnce(&mut cairn_core::pg::meta::PgSnapshot),
) -> String {
    let storage = cairn_core::storage::Storage::open_local(&repo.path).expect("open storage");
    let repository =
        cairn_core::Repository::open(storage, PASSWORD.as_bytes(), &repo.cache).expect("open");
    let (_, mut snapshot) = repository.find_snapshot("latest").expect("latest");
    edit(snapshot.postgres.as_mut().expect("pg metadata"));
    let (id, bytes) = snapshot.encode(&repository.keys).expect("encode");
    repository
        .storage
        .write(&cairn_core::snapshot::snapshot_path(&id), bytes)
        .expect("write snapshot");
    id.to_hex()
}

#[test]
fn pg_drill_names_every_failed_database() {
    let source = Cluster::start();
    source.run_script(
        "postgres",
        "CREATE DATABASE alpha; CREATE DATABASE beta; CREATE DATABASE gamma;",
    );
    for database in ["alpha", "beta", "gamma"] {
        source.run_script(
            database,
            "CREATE TABLE items AS SELECT i AS id, md5(i::text) AS name FROM generate_series(1, 500) AS i;",
        );
    }
    let repo = Repo::init();
    pg_backup(
        &repo,
        &[
            "alpha",
            "beta",
            "gamma",
            "--connection",
            &conninfo(&source, "postgres"),
        ],
    );

    // alpha records a locale that the scratch server lacks, so its scratch
    // database cannot be created. gamma records one row more than its dump
    // holds. beta is intact.
    let tampered = rewrite_pg_meta(&repo, |meta| {
        for database in &mut meta.databases {
            match database.name.as_str() {
                "alpha" => database.collate = "xx_XX.UTF-8".into(),
                "gamma" => database.evidence.tables[0].rows += 1,
                _ => {}
            }
        }
    });
    let scratch = Cluster::start();
    let failed = repo.run(&[
        "pg",
        "verify",
        &tampered[..12],
        "--scratch",
        &conninfo(&scratch, "postgres"),
    ]);
    assert_eq!(
        failed.code(),
        Some(3),
        "a drill with failed databases should exit 3\n{}",
        failed.describe()
    );
    let headline = failed
        .stderr
        .lines()
        .find(|line| line.starts_with("cairn: error"))
        .unwrap_or_else(|| panic!("no error line\n{}", failed.describe()));
    assert!(
        headline.contains("alpha, gamma"),
        "the first error line should name both failed databases\n{}",
        failed.describe()
    );
    assert!(
        failed
            .stderr
            .contains("database alpha: cannot create database"),
        "the drill should say what failed for alpha\n{}",
        failed.describe()
    );
    assert!(
        failed
            .stderr
            .contains("database gamma: table public.items: 500 rows restored, 501 at backup time"),
        "the drill should go on after alpha and say what failed for gamma\n{}",
        failed.describe()
    );
    assert!(
        !failed.stderr.contains("database beta:"),
        "the intact database beta should not be listed as failed\n{}",
        failed.describe()
    );

    let listed = repo.snapshots();
    let record = listed
        .iter()
        .find(|s| string_field(s, "id") == tampered)
        .expect("tampered snapshot listed");
    assert_eq!(record["drill"]["passed"], Value::Bool(false), "{record}");
    let checked: Vec<String> = array_field(&record["drill"], "databases")
        .iter()
        .map(|db| string_field(db, "name"))
        .collect();
    assert_eq!(
        checked,
        ["alpha", "beta", "gamma"],
        "the drill record should cover every database"
    );
    let leftovers = scratch.query(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_drill_%'",
    );
    assert_eq!(leftovers, "0", "scratch databases were not dropped");
}

fn assert_no_snapshot(repo: &Repo, label: &str) {
    assert!(
        repo.snapshots().is_empty(),
        "{label}: a failed backup left a snapshot"
    );
}

fn assert_backup_fails(repo: &Repo, args: &[&str], code: i32, needle: &str, label: &str) {
    let mut all = vec!["pg", "backup"];
    all.extend(args);
    let output = repo.run(&all);
    assert_eq!(output.code(), Some(code), "{label}: {}", output.describe());
    assert!(
        output.stderr.contains(needle),
        "{label}: expected {needle:?} in:\n{}",
        output.stderr
    );
    assert_no_snapshot(repo, label);
}

/// A psql session that holds an ACCESS EXCLUSIVE lock on `app.accounts`
/// until `release` is called, so a pg_dump that starts meanwhile waits.
struct TableLock {
    child: Child,
}

impl TableLock {
    fn take(cluster: &Cluster) -> TableLock {
        let mut command = cluster.client_command("psql");
        command
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "app"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("start psql");
        child
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"BEGIN;\nLOCK TABLE accounts IN ACCESS EXCLUSIVE MODE;\n")
            .expect("send LOCK");
        wait_for(
            cluster,
            "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' \
             AND relation = (SELECT oid FROM pg_class WHERE relname = 'accounts') AND granted",
            "app",
        );
        TableLock { child }
    }

    fn release(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"COMMIT;\n");
        }
        wait_with_timeout(&mut self.child, COMMAND_TIMEOUT, "lock holder");
    }
}

/// Polls `sql` in `database` until it returns a non-zero count.
fn wait_for(cluster: &Cluster, sql: &str, database: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.query(database, sql) == "0" {
        assert!(Instant::now() < deadline, "timed out waiting for: {sql}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `cairn pg backup ARGS` in the background.
fn spawn_backup(repo: &Repo, args: &[&str]) -> Child {
    let mut all = vec!["pg", "backup"];
    all.extend(args);
    let mut command = repo.command(&all);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.spawn().expect("start cairn pg backup")
}

fn finish(mut child: Child) -> (Option<i32>, String) {
    let stderr = read_to_end_in_thread(child.stderr.take().expect("stderr"));
    let stdout = read_to_end_in_thread(child.stdout.take().expect("stdout"));
    let status = wait_with_timeout(&mut child, COMMAND_TIMEOUT, "cairn pg backup");
    let _ = stdout.join();
    let stderr = String::from_utf8_lossy(&stderr.join().expect("stderr thread")).into_owned();
    (status.code(), stderr)
}

const PG_DUMP_WAITING: &str = "SELECT count(*) FROM pg_stat_activity \
    WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'";

#[test]
fn pg_backup_failures_leave_no_snapshot() {
    let source = seeded_server();
    let repo = Repo::init();
    let superuser = conninfo(&source, "postgres");

    // A pg_dump older than the server is rejected before anything runs.
    // Only PostgreSQL 15 is installed here, so a script replaces an
    // old pg_dump; psql is the real one.
    let old_bin = tempfile::tempdir().expect("temporary folder");
    let fake = old_bin.path().join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.14'\n").expect("write script");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::os::unix::fs::symlink(
        PathBuf::from(PG_BIN).join("psql"),
        old_bin.path().join("psql"),
    )
    .expect("link psql");
    let old = old_bin.path().to_str().expect("UTF-8 path");
    assert_backup_fails(
        &repo,
        &["app", "--connection", &superuser, "--pg-bin", old],
        2,
        "needs version 15 or newer",
        "old pg_dump",
    );

    // Typing mistakes are invalid input (exit code 2), not a failed dump.
    assert_backup_fails(
        &repo,
        &["--all", "--exclude", "appp", "--connection", &superuser],
        2,
        "--exclude appp",
        "misspelt --exclude",
    );
    assert_backup_fails(
        &repo,
        &["app", "--connection", "hots=/tmp user=postgres"],
        2,
        "invalid connection option",
        "misspelt connection option",
    );

    // No server at that address.
    assert_backup_fails(
        &repo,
        &[
            "app",
            "--connection",
            "host=/nonexistent/socket user=postgres",
        ],
        5,
        "cannot connect",
        "no server",
    );

    // A table the backup role cannot read.
    assert_backup_fails(
        &repo,
        &[
            "app",
            "--no-globals",
            "--connection",
            &conninfo(&source, "limited"),
        ],
        5,
        "permission denied",
        "unreadable table",
    );

    // Row-level security would hide rows from a role without BYPASSRLS.
    assert_backup_fails(
        &repo,
        &[
            "app",
            "--no-globals",
            "--connection",
            &conninfo(&source, "rls_reader"),
        ],
        5,
        "row-level security",
        "rows hidden by RLS",
    );

    // The server terminates pg_dump's connection while it runs.
    let lock = TableLock::take(&source);
    let backup = spawn_backup(&repo, &["app", "--connection", &superuser]);
    wait_for(&source, PG_DUMP_WAITING, "postgres");
    source.query(
        "postgres",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pg_dump'",
    );
    lock.release();
    let (code, stderr) = finish(backup);
    assert_eq!(code, Some(5), "terminated pg_dump: {stderr}");
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(stderr.contains("no snapshot was written"), "{stderr}");
    assert_no_snapshot(&repo, "terminated pg_dump");

    // A database is dropped while the run waits to reach it.
    let lock = TableLock::take(&source);
    let backup = spawn_backup(&repo, &["app", "billing", "--connection", &superuser]);
    wait_for(&source, PG_DUMP_WAITING, "postgres");
    source.run_script("postgres", "DROP DATABASE billing;");
    lock.release();
    let (code, stderr) = finish(backup);
    assert_eq!(code, Some(5), "dropped database: {stderr}");
    assert!(stderr.contains("billing"), "{stderr}");
    assert_no_snapshot(&repo, "dropped database");

    // The same server backs up fine afterwards.
    pg_backup(&repo, &["app", "--connection", &superuser]);
    assert_eq!(repo.snapshots().len(), 1);

    // A role that reads all data but is not a superuser gets roles
    // without passwords, and a warning.
    let output = repo
        .run(&[
            "pg",
            "backup",
            "legacy",
            "--connection",
            &conninfo(&source, "backup_ro"),
        ])
        .expect_success("backup as a role that is not a superuser");
    assert!(
        output.stderr.contains("not a superuser"),
        "{}",
        output.stderr
    );
    let snapshots = repo.snapshots();
    let globals = &snapshots[1]["postgres"]["globals"];
    assert_eq!(globals["complete"], Value::Bool(false), "{globals}");
    let script = repo.restore_stdout(&format!(
        "{}:globals.sql",
        string_field(&snapshots[1], "id")
    ));
    let script = String::from_utf8_lossy(&script);
    assert!(script.contains("CREATE ROLE tenant_user"), "{script}");
    assert!(
        !script.contains("SCRAM-SHA-256"),
        "a password hash leaked into a roles-only dump"
    );
}

#[test]
fn pg_restore_checks_target_first() {
    let source = seeded_server();
    let repo = Repo::init();
    let superuser = conninfo(&source, "postgres");
    pg_backup(&repo, &["--all", "--connection", &superuser]);
    let target = Cluster::start();
    let server = conninfo(&target, "postgres");
    let to_database = |db: &str| format!("{server} dbname={db}");

    // Without the roles, the restore fails with a hint, and the database
    // created for it is dropped again.
    let failed = repo.run(&[
        "pg", "restore", "latest", "--db", "app", "--to", &server, "--create",
    ]);
    assert_eq!(failed.code(), Some(1), "{}", failed.describe());
    assert!(failed.stderr.contains("add --globals"), "{}", failed.stderr);
    assert_eq!(
        target.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app'"
        ),
        "0",
        "the database of the failed restore was left behind"
    );

    // A plain backup in the same repository does not become `latest` for
    // the PostgreSQL commands.
    repo.run_input(&["backup", "--stdin", "--name", "notes.txt"], b"not a dump")
        .expect_success("plain backup");

    // The table of contents, without a target.
    let listing = repo
        .run(&["pg", "restore", "latest", "--db", "app", "--list"])
        .expect_success("pg restore --list");
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        listing.contains("TABLE public accounts app_owner"),
        "{listing}"
    );

    // Into the source database on the source server: rejected.
    let refused = repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "app",
        "--to",
        &format!("{superuser} dbname=app"),
    ]);
    assert_eq!(refused.code(), Some(2), "{}", refused.describe());
    assert!(
        refused.stderr.contains("overwrite the source"),
        "{}",
        refused.stderr
    );

    // A forgotten --create: the maintenance database is not a target.
    let slip = repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "app",
        "--to",
        &to_database("postgres"),
    ]);
    assert_eq!(slip.code(), Some(2), "{}", slip.describe());
    assert!(slip.stderr.contains("add --create"), "{}", slip.stderr);

    // A table that the snapshot does not have.
    let unknown = repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "app",
        "--to",
        &server,
        "--create",
        "--as",
        "x",
        "--table",
        "public.nosuch",
    ]);
    assert_eq!(unknown.code(), Some(2), "{}", unknown.describe());
    assert!(
        unknown.stderr.contains("no table public.nosuch"),
        "{}",
        unknown.stderr
    );

    // --all checks every target first: a non-empty billing stops it before
    // app is restored.
    target.run_script("postgres", "CREATE DATABASE billing; ");
    target.run_script("billing", "CREATE TABLE occupied (id int);");
    let all = repo.run(&[
        "pg",
        "restore",
        "latest",
        "--all",
        "--create",
        "--globals",
        "--to",
        &server,
    ]);
    assert_eq!(all.code(), Some(2), "{}", all.describe());
    assert!(
        all.stderr.contains("nothing was restored"),
        "{}",
        all.stderr
    );
    assert_eq!(
        target.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app'"
        ),
        "0"
    );
    target.run_script("postgres", "DROP DATABASE billing;");

    // A target database that does not exist, without --create.
    let missing = repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "app",
        "--to",
        &to_database("nope"),
    ]);
    assert_eq!(missing.code(), Some(2), "{}", missing.describe());
    assert!(missing.stderr.contains("--create"), "{}", missing.stderr);

    // An existing database with another encoding: rejected, then forced.
    target.run_script(
        "postgres",
        "CREATE DATABASE legacy_utf8 TEMPLATE template0 ENCODING 'UTF8';",
    );
    let mismatch = repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "legacy",
        "--to",
        &to_database("legacy_utf8"),
    ]);
    assert_eq!(mismatch.code(), Some(2), "{}", mismatch.describe());
    assert!(
        mismatch.stderr.contains("encoding UTF8"),
        "{}",
        mismatch.stderr
    );
    repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "legacy",
        "--to",
        &to_database("legacy_utf8"),
        "--force-locale",
    ])
    .expect_success("restore with --force-locale");
    assert_eq!(
        target.query("legacy_utf8", "SELECT body FROM notes WHERE id = 2"),
        "naïve façade",
        "text was not converted from LATIN1"
    );

    // A database that is not empty: rejected without --clean.
    let full = repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "legacy",
        "--to",
        &to_database("legacy_utf8"),
        "--force-locale",
    ]);
    assert_eq!(full.code(), Some(2), "{}", full.describe());
    assert!(full.stderr.contains("not empty"), "{}", full.stderr);
    repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "legacy",
        "--to",
        &to_database("legacy_utf8"),
        "--force-locale",
        "--clean",
    ])
    .expect_success("restore with --clean");

    // Parallel restore through a file, with roles created first.
    let output = repo
        .run(&[
            "pg",
            "restore",
            "latest",
            "--db",
            "app",
            "--to",
            &server,
            "--create",
            "--as",
            "app_parallel",
            "--jobs",
            "2",
            "--globals",
        ])
        .expect_success("parallel restore");
    assert!(output.stderr.contains("seekable file"), "{}", output.stderr);
    assert_same_database(
        &target,
        &fingerprint(&source, "app"),
        "app_parallel",
        "parallel restore",
    );

    // Only one table, named with its schema.
    repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "billing",
        "--to",
        &server,
        "--create",
        "--as",
        "billing_part",
        "--table",
        "public.customers",
    ])
    .expect_success("restore of one table");
    assert_eq!(
        target.query(
            "billing_part",
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'"
        ),
        "customers"
    );

    // A damaged pack stops the restore with exit code 3, naming the pack,
    // and nothing is committed.
    let pack = crate::harness::files_under(&repo.path.join("data"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack");
    let saved = std::fs::read(&pack).expect("read pack");
    let mut damaged = saved.clone();
    damaged[1000] ^= 0x55;
    std::fs::write(&pack, &damaged).expect("damage pack");
    let broken = repo.run(&[
        "pg",
        "restore",
        "latest",
        "--db",
        "app",
        "--to",
        &server,
        "--create",
        "--as",
        "app_damaged",
    ]);
    assert_eq!(broken.code(), Some(3), "{}", broken.describe());
    assert!(broken.stderr.contains("data/"), "{}", broken.stderr);
    assert_eq!(
        target.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app_damaged'"
        ),
        "0"
    );
    std::fs::write(&pack, &saved).expect("repair pack");

    // The new database gets the snapshot's encoding and locale.
    repo.run(&[
        "pg", "restore", "latest", "--db", "legacy", "--to", &server, "--create",
    ])
    .expect_success("restore of the LATIN1 database");
    assert_same_database(
        &target,
        &fingerprint(&source, "legacy"),
        "legacy",
        "LATIN1 restore",
    );
}
