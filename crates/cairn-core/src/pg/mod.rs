//! PostgreSQL: whole-server backups (`cairn pg backup`), restores into a
//! server (`cairn pg restore`) and restore drills (`cairn pg verify`).
//!
//! cairn drives the server's own tools: `pg_dump` and `pg_dumpall` produce
//! the streams, `pg_restore` loads them, and `psql` runs the session that
//! exports the snapshot every dump reads from and records the evidence a
//! drill later compares against. Going through libpq's tools keeps every
//! connection option (URLs, `PG*` variables, service and password files)
//! working exactly as operators know it.
//!
//! docs/postgres.md is the user's guide and the disaster-recovery runbook.

pub mod backup;
pub mod conninfo;
pub mod drill;
pub mod evidence;
pub mod meta;
pub mod restore;
pub mod session;
pub mod tools;

pub use conninfo::Target;
pub use tools::Tools;

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
