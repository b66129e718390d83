//! Metadata that `cairn pg backup` records with a snapshot: the server, each
//! database, and the evidence a restore drill compares against.

use serde::{Deserialize, Serialize};

/// PostgreSQL metadata of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PgSnapshot {
    /// `server_version` of the source server, e.g. `15.18 (Debian ...)`.
    pub server_version: String,
    /// `server_version_num`, e.g. 150018.
    pub server_version_num: u32,
    /// First line of `pg_dump --version`.
    pub pg_dump_version: String,
    /// Major version of that pg_dump; a restore needs a pg_restore at least
    /// this new.
    pub pg_dump_major: u32,
    /// The source server's system identifier (from `pg_control_system()`),
    /// used to recognise the source server at restore time.
    pub system_identifier: String,
    /// Connection string of the source, without password.
    pub connection: String,
    /// Made with `--all`: every database of the server at that time.
    #[serde(default)]
    pub all: bool,
    /// The globals entry, when one was taken.
    #[serde(default)]
    pub globals: Option<GlobalsInfo>,
    /// Roles of the server at backup time, without `pg_*` roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// One record per database entry.
    pub databases: Vec<PgDatabase>,
}

/// The `globals.sql` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalsInfo {
    /// Entry name.
    pub entry: String,
    /// False when the backup role was not a superuser and only roles,
    /// without passwords, could be dumped (`--roles-only
    /// --no-role-passwords`); tablespaces and passwords are then missing.
    pub complete: bool,
}

/// One dumped database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PgDatabase {
    /// Database name.
    pub name: String,
    /// Entry holding its `pg_dump -Fc` archive.
    pub entry: String,
    /// Server encoding name, e.g. `UTF8`.
    pub encoding: String,
    /// `datcollate`.
    pub collate: String,
    /// `datctype`.
    pub ctype: String,
    /// Locale provider (`c`, `i` for ICU, `b` builtin) where the server has
    /// one (PostgreSQL 15 and later).
    #[serde(default)]
    pub locale_provider: Option<String>,
    /// ICU locale, when the provider is ICU.
    #[serde(default)]
    pub icu_locale: Option<String>,
    /// Owner of the database.
    #[serde(default)]
    pub owner: Option<String>,
    /// Privileges granted on the database; `None` for the default
    /// privileges.
    #[serde(default)]
    pub grants: Option<Vec<DatabaseGrant>>,
    /// `ALTER DATABASE ... SET` and `ALTER ROLE ... IN DATABASE ... SET`
    /// settings.
    #[serde(default)]
    pub settings: Vec<DatabaseSettings>,
    /// `pg_database_size` at backup time.
    pub size_bytes: u64,
    /// WAL position when the snapshot was exported.
    pub wal_lsn: String,
    /// When the exported snapshot was taken, RFC 3339.
    pub started: String,
    /// When the dump and the evidence were complete, RFC 3339.
    pub finished: String,
    /// Evidence recorded in the dump's own snapshot.
    pub evidence: Evidence,
}

/// One privilege on a database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseGrant {
    /// Role name, or `PUBLIC`.
    pub grantee: String,
    /// `CONNECT`, `CREATE` or `TEMPORARY`.
    pub privilege: String,
    /// Granted `WITH GRANT OPTION`.
    pub grantable: bool,
}

/// Settings of a database, for all roles or for one role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseSettings {
    /// The role they apply to; `None` for every role.
    pub role: Option<String>,
    /// `name=value` items, as `pg_db_role_setting` stores them.
    pub settings: Vec<String>,
}

/// Facts about a database's contents, recorded in one MVCC snapshot.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Evidence {
    /// Whether table checksums were computed.
    pub checksums: bool,
    /// Method that computed them. Checksums made by different methods are
    /// not compared.
    #[serde(default)]
    pub checksum_method: String,
    /// Ordinary tables (and partitions) outside system schemas.
    pub tables: Vec<TableEvidence>,
    /// Schemas outside the system ones.
    pub schemas: Vec<String>,
    /// Row-level security policies.
    pub policies: Vec<PolicyEvidence>,
    /// Installed extensions and their versions.
    pub extensions: Vec<ExtensionEvidence>,
    /// Sequences. Their values are not transactional, so a drill checks
    /// only that each one exists.
    pub sequences: Vec<String>,
    /// Number of large objects.
    pub large_objects: u64,
    /// Checksum over the large objects' ids and contents.
    #[serde(default)]
    pub large_object_checksum: Option<String>,
}

/// One table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEvidence {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Row count.
    pub rows: u64,
    /// Order-independent checksum of the rows: the sum of a 64-bit hash of
    /// each row's text form, as a decimal.
    #[serde(default)]
    pub checksum: Option<String>,
    /// Row-level security enabled.
    pub rls: bool,
    /// Row-level security forced for the owner too.
    pub force_rls: bool,
}

impl TableEvidence {
    /// `schema.name` for messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// One row-level security policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyEvidence {
    /// Schema of the table.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Policy name.
    pub name: String,
    /// Command it applies to (`ALL`, `SELECT`, ...).
    pub command: String,
    /// Roles it applies to.
    pub roles: Vec<String>,
}

/// One extension.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExtensionEvidence {
    /// Extension name.
    pub name: String,
    /// Installed version.
    pub version: String,
}
