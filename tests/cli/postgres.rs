//! Backs up a real PostgreSQL database with `cairn backup -- pg_dump`, changes it,
//! backs it up again, and restores both snapshots with pg_restore into new
//! databases whose contents must equal the database at each backup.

use std::process::Stdio;

use crate::harness::{
    COMMAND_TIMEOUT, MIB, Repo, first_entry, read_to_end_in_thread, run_command, snapshot_id,
    u64_field, wait_with_timeout,
};
use crate::pg::{Cluster, pg_program};

/// Schema and rows with non-ASCII text, jsonb, bytea, a secondary index, a sequence
/// and a view. pg_dump -Fc -Z0 of this database was 30.4 MB with PostgreSQL 15.18.
const DAY_ONE_SQL: &str = r#"
CREATE TABLE customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    city text NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL,
    profile jsonb NOT NULL
);

CREATE SEQUENCE order_id_seq;

CREATE TABLE orders (
    id bigint PRIMARY KEY DEFAULT nextval('order_id_seq'),
    customer_id integer NOT NULL REFERENCES customers (id),
    amount numeric(12, 2) NOT NULL,
    status text NOT NULL,
    placed_at timestamptz NOT NULL,
    comment text
);

ALTER SEQUENCE order_id_seq OWNED BY orders.id;

CREATE TABLE attachments (
    id integer PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    file_name text NOT NULL,
    content bytea NOT NULL
);

CREATE INDEX orders_customer_id_idx ON orders (customer_id);

CREATE VIEW customer_totals AS
SELECT c.id AS customer_id,
       c.city,
       count(o.id) AS order_count,
       coalesce(sum(o.amount), 0) AS total
FROM customers c
LEFT JOIN orders o ON o.customer_id = c.id
GROUP BY c.id, c.city;

INSERT INTO customers
SELECT i,
       'Kunde ' || i || ' ' || md5(i::text),
       (ARRAY['Zürich', '東京', 'São Paulo', 'Kraków', 'Reykjavík', 'Москва', 'القاهرة', 'Montréal'])[1 + i % 8],
       'customer' || i || '@example.com',
       timestamptz '2024-01-01 00:00:00+00' + i * interval '37 seconds',
       jsonb_build_object(
           'tier', i % 5,
           'tags', jsonb_build_array('t' || i % 7, 'u' || i % 11),
           'note', '🦀 ' || md5((i * 7)::text))
FROM generate_series(1, 50000) AS i;

INSERT INTO orders (customer_id, amount, status, placed_at, comment)
SELECT 1 + (i * 7919) % 50000,
       round(((i * 31) % 100000) / 100.0 + 0.99, 2),
       (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + i % 4],
       timestamptz '2024-01-01 00:00:00+00' + i * interval '11 seconds',
       CASE WHEN i % 10 = 0 THEN NULL ELSE 'Bestellung für ' || md5(i::text) || ' ☕' END
FROM generate_series(1, 150000) AS i;

INSERT INTO attachments
SELECT i,
       i * 20,
       'scan_' || i || '.bin',
       (SELECT string_agg(sha256(int4send(i * 16 + k)), ''::bytea ORDER BY k)
        FROM generate_series(0, 15) AS k)
FROM generate_series(1, 5000) AS i;
"#;

/// Changes about 1% of the rows of `orders` and `customers` and adds new orders.
///
/// Most changed rows are contiguous ranges, as daily changes to recent rows
/// are, plus 30 single rows spread over a table. Changes spread evenly over
/// 1% of all rows would touch nearly every chunk of a 30 MB dump, so no
/// content-defined chunking could deduplicate it.
const DAY_TWO_SQL: &str = r#"
UPDATE orders
SET status = 'shipped', comment = coalesce(comment, '') || ' (versandt)'
WHERE id > 148500;

UPDATE customers
SET profile = profile || '{"tier": 9}'
WHERE id BETWEEN 20001 AND 20500;

INSERT INTO orders (customer_id, amount, status, placed_at, comment)
SELECT i, 12.50, 'new', timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', 'Neu 🆕'
FROM generate_series(1, 200) AS i;

UPDATE customers
SET email = 'changed-' || id || '@example.org'
WHERE id IN (SELECT (i * 1657) % 50000 + 1 FROM generate_series(1, 30) AS i);
"#;

/// Tables and the primary key that orders their rows for checksums.
const TABLES: [(&str, &str); 3] = [("customers", "id"), ("orders", "id"), ("attachments", "id")];

/// Contents of a database that a restore must reproduce.
struct DatabaseState {
    /// Per table: name, row count and md5 of all rows as text in key order.
    tables: Vec<(String, String, String)>,
    view_checksum: String,
    /// `last_value/is_called` of order_id_seq.
    sequence: String,
    /// Names of the indexes in schema public, comma-separated.
    indexes: String,
}

fn capture_state(cluster: &Cluster, database: &str) -> DatabaseState {
    let tables = TABLES
        .iter()
        .map(|(table, key)| {
            let count = cluster.query(database, &format!("SELECT count(*) FROM {table}"));
            let checksum = cluster.query(
                database,
                &format!("SELECT md5(string_agg(t::text, ',' ORDER BY t.{key})) FROM {table} t"),
            );
            (table.to_string(), count, checksum)
        })
        .collect();
    DatabaseState {
        tables,
        view_checksum: cluster.query(
            database,
            "SELECT md5(string_agg(v::text, ',' ORDER BY v.customer_id)) FROM customer_totals v",
        ),
        sequence: cluster.query(
            database,
            "SELECT last_value || '/' || is_called FROM order_id_seq",
        ),
        indexes: cluster.query(
            database,
            "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes \
             WHERE schemaname = 'public'",
        ),
    }
}

/// Asserts that the restored database has the contents captured before the backup.
fn assert_same_state(restored: &DatabaseState, expected: &DatabaseState, label: &str) {
    for (restored_table, expected_table) in restored.tables.iter().zip(&expected.tables) {
        let (table, expected_count, expected_checksum) = expected_table;
        let (_, restored_count, restored_checksum) = restored_table;
        assert_eq!(
            restored_count, expected_count,
            "{label}: row count of table {table} differs after restore"
        );
        assert_eq!(
            restored_checksum, expected_checksum,
            "{label}: contents of table {table} differ after restore"
        );
    }
    assert_eq!(
        restored.view_checksum, expected.view_checksum,
        "{label}: rows of view customer_totals differ after restore"
    );
    assert_eq!(
        restored.sequence, expected.sequence,
        "{label}: order_id_seq last_value/is_called differs after restore"
    );
    assert_eq!(
        restored.indexes, expected.indexes,
        "{label}: the set of indexes differs after restore"
    );
}

/// Runs `cairn backup --json --name app.dump -- pg_dump -Fc -Z0 ... app` and returns
/// the snapshot id and the summary.
fn backup_database(repo: &Repo, cluster: &Cluster) -> (String, serde_json::Value) {
    let pg_dump = pg_program("pg_dump");
    let summary = repo
        .run(&[
            "--json",
            "backup",
            "--name",
            "app.dump",
            "--",
            crate::harness::path_arg(&pg_dump),
            "-Fc",
            "-Z0",
            "-h",
            cluster.socket_dir(),
            "-U",
            "postgres",
            "app",
        ])
        .expect_success("backup of pg_dump output")
        .json();
    (snapshot_id(&summary), summary)
}

/// Creates `database` and fills it with `cairn restore SPEC --stdout | pg_restore`.
fn restore_database(repo: &Repo, cluster: &Cluster, spec: &str, database: &str) {
    cluster.query("postgres", &format!("CREATE DATABASE {database}"));

    let mut restore = repo.command(&["restore", spec, "--stdout"]);
    restore.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut cairn = restore.spawn().expect("failed to start cairn restore");
    let pipe = cairn.stdout.take().expect("cairn stdout was piped");
    let cairn_stderr = read_to_end_in_thread(cairn.stderr.take().expect("cairn stderr was piped"));

    let mut pg_restore = cluster.client_command("pg_restore");
    pg_restore
        .args(["--exit-on-error", "-d", database])
        .stdin(Stdio::from(pipe));
    let restored = run_command(pg_restore, &format!("pg_restore -d {database}"), None);

    let cairn_status = wait_with_timeout(&mut cairn, COMMAND_TIMEOUT, "cairn restore");
    let cairn_stderr = String::from_utf8_lossy(
        &cairn_stderr
            .join()
            .expect("cairn stderr reader thread panicked"),
    )
    .into_owned();
    assert!(
        cairn_status.success(),
        "cairn restore {spec} --stdout failed with {cairn_status}\nstderr:\n{cairn_stderr}\n\
         pg_restore stderr:\n{}",
        restored.stderr
    );
    assert_eq!(
        restored.code(),
        Some(0),
        "pg_restore of {spec} failed\n{}\ncairn restore stderr:\n{cairn_stderr}",
        restored.describe()
    );
}

#[test]
fn pg_dump_backup_and_restore() {
    let cluster = Cluster::start();
    cluster.query("postgres", "CREATE DATABASE app");
    cluster.run_script("app", DAY_ONE_SQL);
    let day_one = capture_state(&cluster, "app");

    let repo = Repo::init();
    let (first_id, first) = backup_database(&repo, &cluster);
    let first_size = u64_field(first_entry(&first), "size");
    assert!(
        first_size > 20 * MIB as u64,
        "the first dump has {first_size} bytes, expected about 30 MB of table data"
    );

    cluster.run_script("app", DAY_TWO_SQL);
    let day_two = capture_state(&cluster, "app");
    assert_ne!(
        day_two.tables[1].2, day_one.tables[1].2,
        "the day-two changes did not change table orders, so the restore comparison proves nothing"
    );
    assert_ne!(
        day_two.sequence, day_one.sequence,
        "the day-two inserts did not advance order_id_seq"
    );

    let (second_id, second) = backup_database(&repo, &cluster);
    let second_size = u64_field(first_entry(&second), "size");
    let second_stored = u64_field(&second, "stored_bytes");
    assert!(
        second_stored < second_size / 10,
        "the second backup stored {second_stored} bytes for a dump of {second_size} bytes \
         with about 1% of rows changed, expected less than 10%"
    );
    eprintln!(
        "second-day growth: {second_stored} of {second_size} bytes ({:.2}%)",
        second_stored as f64 * 100.0 / second_size as f64
    );

    restore_database(
        &repo,
        &cluster,
        &format!("{first_id}:app.dump"),
        "restored_day_one",
    );
    let restored_one = capture_state(&cluster, "restored_day_one");
    assert_same_state(&restored_one, &day_one, "first snapshot");

    restore_database(
        &repo,
        &cluster,
        &format!("{second_id}:app.dump"),
        "restored_day_two",
    );
    let restored_two = capture_state(&cluster, "restored_day_two");
    assert_same_state(&restored_two, &day_two, "second snapshot");
}
