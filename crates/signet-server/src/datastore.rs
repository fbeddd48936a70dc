//! The standalone datastore: SQLite in WAL mode with numbered migrations, holding entries, join
//! tokens, attested agents, the CA journal and AuthorizationPolicies. Calls run on the blocking pool.
//!
//! Lost writes are detected, not served: every change to any table bumps a generation counter
//! (SQLite triggers, so no write path can forget it), and after each change the generation is
//! recorded in `<database>.generation` beside it. A database older than its record (a lost or
//! half-lost WAL, a stale copy restored over it, a deleted file) is refused at open.

mod federation;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use signet_core::{EntryId, RegistrationEntry};
use signet_spiffe::SpiffeId;

/// Datastore failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatastoreError {
    /// The database file cannot be opened or is not a healthy SQLite database.
    #[error(
        "database {path} is unusable: {reason}. Restore it from a backup or move it away deliberately"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// The database was written by a newer Signet.
    #[error("database schema version {found} is newer than this Signet supports ({supported})")]
    TooNew {
        /// Version found.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row does not decode.
    #[error("stored {what} does not decode: {reason}")]
    Decode {
        /// Which kind of row.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The database holds fewer committed changes than were recorded beside it.
    #[error(
        "database {path} is at generation {found}, but {record} records generation {recorded}: \
         committed changes (entries, agents, policies, join tokens or CA events) are missing. The \
         database or its write-ahead log ({path}-wal) was lost, truncated or replaced by an older \
         copy. Restore both files from a backup; to serve what remains instead, start once with \
         --accept-data-loss"
    )]
    LostWrites {
        /// The database file.
        path: PathBuf,
        /// The record file.
        record: PathBuf,
        /// The database's generation.
        found: i64,
        /// The generation recorded beside it.
        recorded: i64,
    },
    /// The generation record cannot be read or written.
    #[error("generation record {path}: {reason}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// PostgreSQL refused or could not be reached.
    #[error("PostgreSQL datastore, {what}: {reason}")]
    Postgres {
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The blocking task panicked or was cancelled.
    #[error("datastore task failed: {0}")]
    Task(String),
}

type Result<T, E = DatastoreError> = std::result::Result<T, E>;

impl DatastoreError {
    /// What an operator can act on, safe to tell a caller (no paths, no SQL): the disk is full,
    /// the database is locked by another process, PostgreSQL is unreachable.
    pub fn condition(&self) -> Option<&'static str> {
        use rusqlite::ErrorCode;
        match self {
            DatastoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                match failure.code {
                    ErrorCode::DiskFull => Some("the server's disk is full"),
                    ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                        Some("the database is locked by another process")
                    }
                    ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::SystemIoFailure => {
                        Some("the database cannot be written")
                    }
                    _ => None,
                }
            }
            DatastoreError::Postgres { .. } => Some("the PostgreSQL datastore failed"),
            _ => None,
        }
    }
}

/// Each step brings the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE entries (
        id TEXT PRIMARY KEY,
        spiffe_id TEXT NOT NULL,
        parent_id TEXT NOT NULL,
        body TEXT NOT NULL,
        revision INTEGER NOT NULL
     );
     CREATE INDEX entries_parent ON entries(parent_id);
     CREATE TABLE join_tokens (
        token_hash TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
     );
     CREATE TABLE agents (
        spiffe_id TEXT PRIMARY KEY,
        attestation_type TEXT NOT NULL,
        attested_at INTEGER NOT NULL,
        svid_expires_at INTEGER NOT NULL,
        banned INTEGER NOT NULL DEFAULT 0,
        selectors TEXT NOT NULL DEFAULT '[]'
     );
     CREATE TABLE ca_journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        event TEXT NOT NULL
     );",
    "CREATE TABLE authorization_policies (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        document TEXT NOT NULL,
        revision INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
     );",
    GENERATION_MIGRATION,
    federation::MIGRATION,
];

/// A one-row counter that every change to every table bumps, in the same transaction.
const GENERATION_MIGRATION: &str = "CREATE TABLE generation (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
     );
     INSERT INTO generation (id, value) VALUES (1, 0);
     CREATE TRIGGER entries_insert AFTER INSERT ON entries BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER entries_update AFTER UPDATE ON entries BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER entries_delete AFTER DELETE ON entries BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER join_tokens_insert AFTER INSERT ON join_tokens BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER join_tokens_update AFTER UPDATE ON join_tokens BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER join_tokens_delete AFTER DELETE ON join_tokens BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER agents_insert AFTER INSERT ON agents BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER agents_update AFTER UPDATE ON agents BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER agents_delete AFTER DELETE ON agents BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER ca_journal_insert AFTER INSERT ON ca_journal BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER ca_journal_update AFTER UPDATE ON ca_journal BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER ca_journal_delete AFTER DELETE ON ca_journal BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER policies_insert AFTER INSERT ON authorization_policies BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER policies_update AFTER UPDATE ON authorization_policies BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER policies_delete AFTER DELETE ON authorization_policies BEGIN UPDATE generation SET value = value + 1; END;";

/// Whether opening a database older than its generation record is refused or accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LostWrites {
    /// Refuse (the default).
    #[default]
    Refuse,
    /// Serve what remains and record the database's generation as the new baseline.
    Accept,
}

/// An AuthorizationPolicy as stored in standalone mode: the applied document (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub namespace: String,
    pub name: String,
    pub document: String,
    /// Starts at 1; grows by one with every change of the document.
    pub revision: u64,
}

/// What applying one policy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyWrite {
    Created,
    Configured,
    Unchanged,
}

/// An attested agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// `join_token` or `k8s_psat`.
    pub attestation_type: String,
    /// When it attested.
    pub attested_at: SystemTime,
    /// When its current SVID expires.
    pub svid_expires_at: SystemTime,
    /// Banned agents may not attest again.
    pub banned: bool,
    /// Node selectors from attestation.
    pub selectors: Vec<String>,
}

/// The outcome of redeeming a join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRedemption {
    /// Valid: the agent gets this ID.
    Accepted(SpiffeId),
    /// Never issued.
    Unknown,
    /// Already used once.
    AlreadyUsed,
    /// Past its expiry.
    Expired,
}

/// Handle to the database: SQLite in the data directory (one server), or PostgreSQL shared by
/// several servers.
#[derive(Debug, Clone)]
pub struct Datastore {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite {
        conn: Arc<Mutex<Connection>>,
        record: Arc<GenerationRecord>,
    },
    Postgres {
        store: Arc<postgres::PostgresStore>,
        /// CA journal events, written in order by one task (`journal_now` is synchronous).
        journal: tokio::sync::mpsc::UnboundedSender<(i64, String)>,
    },
}

/// `<database>.generation`: the last generation known committed.
#[derive(Debug)]
struct GenerationRecord {
    path: PathBuf,
    /// The value in the file; only written under the connection's lock, so it only grows.
    recorded: std::sync::atomic::AtomicI64,
}

impl GenerationRecord {
    fn error(&self, reason: impl std::fmt::Display) -> DatastoreError {
        DatastoreError::Record {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn read(path: &Path) -> Result<Option<i64>> {
        match std::fs::read_to_string(path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|e| DatastoreError::Record {
                    path: path.to_owned(),
                    reason: format!("not a generation number: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DatastoreError::Record {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Durably replaces the file (temporary file, fsync, rename, fsync of the directory).
    fn write(&self, generation: i64) -> Result<()> {
        use std::io::Write as _;
        use std::sync::atomic::Ordering;
        let staging = self.path.with_extension("generation.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&staging)
            .map_err(|e| self.error(e))?;
        file.write_all(format!("{generation}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| self.error(e))?;
        std::fs::rename(&staging, &self.path).map_err(|e| self.error(e))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.error(e))?;
        }
        self.recorded.store(generation, Ordering::Release);
        Ok(())
    }

    /// Records the connection's generation when it grew.
    fn follow(&self, conn: &Connection) -> Result<()> {
        let generation = current_generation(conn)?;
        if generation > self.recorded.load(std::sync::atomic::Ordering::Acquire) {
            self.write(generation)?;
        }
        Ok(())
    }
}

fn current_generation(conn: &Connection) -> Result<i64> {
    Ok(
        conn.query_row("SELECT value FROM generation WHERE id = 1", [], |r| {
            r.get(0)
        })?,
    )
}

use crate::unix_seconds as unix;

fn from_unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

impl Datastore {
    /// Opens (creating if needed) and migrates the database; a damaged file, or one that lost
    /// writes recorded beside it, is an error.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, LostWrites::Refuse)
    }

    /// Opens the database, deciding what a database older than its generation record means.
    pub fn open_with(path: &Path, lost_writes: LostWrites) -> Result<Self> {
        let corrupt = |reason: String| DatastoreError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let conn = Connection::open(path).map_err(|e| corrupt(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(format!(
                "cannot enable WAL (journal_mode is {mode})"
            )));
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        if check != "ok" {
            return Err(corrupt(check));
        }
        // FULL: a commit is on disk before the call returns, so a recorded generation is never
        // ahead of the database except when data was really lost.
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        let mut record_path = path.as_os_str().to_owned();
        record_path.push(".generation");
        let record_path = PathBuf::from(record_path);
        let recorded = GenerationRecord::read(&record_path)?;
        let record = Arc::new(GenerationRecord {
            path: record_path,
            recorded: std::sync::atomic::AtomicI64::new(recorded.unwrap_or(-1)),
        });
        let store = Self {
            backend: Backend::Sqlite {
                conn: Arc::new(Mutex::new(conn)),
                record: record.clone(),
            },
        };
        store.migrate()?;
        let conn = store.lock()?;
        let found = current_generation(&conn)?;
        match recorded {
            Some(recorded) if found < recorded && lost_writes == LostWrites::Refuse => {
                return Err(DatastoreError::LostWrites {
                    path: path.to_owned(),
                    record: record.path.clone(),
                    found,
                    recorded,
                });
            }
            Some(recorded) if found == recorded => {}
            // First open, a crash between a commit and its record, a deleted record, or loss
            // accepted by the operator: the database's generation is the baseline from now on.
            _ => record.write(found)?,
        }
        drop(conn);
        Ok(store)
    }

    /// Connects to a PostgreSQL database shared by several servers and migrates it.
    pub async fn postgres(config: postgres::PostgresConfig) -> Result<Self> {
        let store = postgres::PostgresStore::connect(config).await?;
        let (journal, mut events) = tokio::sync::mpsc::unbounded_channel::<(i64, String)>();
        let writer = store.clone();
        signet_unix::spawn_named("ca-journal", async move {
            while let Some((at, event)) = events.recv().await {
                if let Err(error) = writer.journal(at, event).await {
                    tracing::warn!(%error, "could not write the CA journal");
                }
            }
        });
        Ok(Self {
            backend: Backend::Postgres { store, journal },
        })
    }

    /// The shared PostgreSQL store, when this is one.
    pub(crate) fn shared(&self) -> Option<&Arc<postgres::PostgresStore>> {
        match &self.backend {
            Backend::Postgres { store, .. } => Some(store),
            Backend::Sqlite { .. } => None,
        }
    }

    /// Changes committed since the database was created (SQLite: the lost-writes check).
    pub async fn generation(&self) -> Result<i64> {
        self.call(|conn| current_generation(conn)).await
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock()?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(DatastoreError::TooNew {
                found: version,
                supported,
            });
        }
        for (index, step) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            let tx = conn.transaction()?;
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn sqlite(&self) -> Result<(&Arc<Mutex<Connection>>, &Arc<GenerationRecord>)> {
        match &self.backend {
            Backend::Sqlite { conn, record } => Ok((conn, record)),
            Backend::Postgres { .. } => Err(DatastoreError::Task(
                "a SQLite operation on the PostgreSQL datastore".into(),
            )),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.sqlite()?
            .0
            .lock()
            .map_err(|_| DatastoreError::Task("database mutex poisoned".into()))
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (conn, record) = self.sqlite()?;
        let (conn, record) = (conn.clone(), record.clone());
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| DatastoreError::Task("database mutex poisoned".into()))?;
            let result = f(&mut guard);
            // Recorded even when the call failed after a commit; under the lock, so in order.
            record.follow(&guard)?;
            result
        })
        .await
        .map_err(|e| DatastoreError::Task(e.to_string()))?
    }

    /// All entries.
    pub async fn list_entries(&self) -> Result<Vec<RegistrationEntry>> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.list_entries().await;
        }
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT body FROM entries ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|body| decode_entry(&body?)).collect()
        })
        .await
    }

    /// Inserts or replaces an entry.
    pub async fn put_entry(&self, entry: RegistrationEntry) -> Result<()> {
        let body = serde_json::to_string(&entry).map_err(|e| DatastoreError::Decode {
            what: "entry",
            reason: e.to_string(),
        })?;
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.put_entry(entry, body).await;
        }
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO entries (id, spiffe_id, parent_id, body, revision) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET spiffe_id=excluded.spiffe_id, parent_id=excluded.parent_id,
                 body=excluded.body, revision=excluded.revision",
                params![
                    entry.id.as_str(),
                    entry.spiffe_id.as_str(),
                    entry.parent_id.as_str(),
                    body,
                    i64::try_from(entry.revision).unwrap_or(i64::MAX)
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes an entry; returns whether it existed.
    pub async fn delete_entry(&self, id: EntryId) -> Result<bool> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.delete_entry(id).await;
        }
        self.call(move |conn| {
            Ok(conn.execute("DELETE FROM entries WHERE id = ?1", [id.as_str()])? > 0)
        })
        .await
    }

    /// Every stored AuthorizationPolicy, by namespace and name.
    pub async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.list_policies().await;
        }
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT namespace, name, document, revision FROM authorization_policies
                 ORDER BY namespace, name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(StoredPolicy {
                    namespace: r.get(0)?,
                    name: r.get(1)?,
                    document: r.get(2)?,
                    revision: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Stores policies (namespace, name, document) in one transaction: all or none.
    pub async fn put_policies(
        &self,
        policies: Vec<(String, String, String)>,
    ) -> Result<Vec<PolicyWrite>> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.put_policies(policies).await;
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut writes = Vec::with_capacity(policies.len());
            for (namespace, name, document) in policies {
                let existing: Option<(String, i64)> = tx
                    .query_row(
                        "SELECT document, revision FROM authorization_policies
                         WHERE namespace = ?1 AND name = ?2",
                        params![namespace, name],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let write = match existing {
                    Some((old, _)) if old == document => PolicyWrite::Unchanged,
                    Some((_, revision)) => {
                        tx.execute(
                            "UPDATE authorization_policies SET document = ?3, revision = ?4
                             WHERE namespace = ?1 AND name = ?2",
                            params![namespace, name, document, revision + 1],
                        )?;
                        PolicyWrite::Configured
                    }
                    None => {
                        tx.execute(
                            "INSERT INTO authorization_policies (namespace, name, document, revision)
                             VALUES (?1, ?2, ?3, 1)",
                            params![namespace, name, document],
                        )?;
                        PolicyWrite::Created
                    }
                };
                writes.push(write);
            }
            tx.commit()?;
            Ok(writes)
        })
        .await
    }

    /// Deletes a policy; returns whether it existed.
    pub async fn delete_policy(&self, namespace: String, name: String) -> Result<bool> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.delete_policy(namespace, name).await;
        }
        self.call(move |conn| {
            Ok(conn.execute(
                "DELETE FROM authorization_policies WHERE namespace = ?1 AND name = ?2",
                params![namespace, name],
            )? > 0)
        })
        .await
    }

    /// Stores a join token by its hash.
    pub async fn create_join_token(
        &self,
        token_hash: String,
        agent_id: SpiffeId,
        expires_at: SystemTime,
    ) -> Result<()> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store
                .create_join_token(token_hash, agent_id, expires_at)
                .await;
        }
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO join_tokens (token_hash, agent_id, expires_at) VALUES (?1, ?2, ?3)",
                params![token_hash, agent_id.as_str(), unix(expires_at)],
            )?;
            Ok(())
        })
        .await
    }

    /// Redeems a join token atomically: at most one caller ever gets `Accepted`.
    pub async fn redeem_join_token(
        &self,
        token_hash: String,
        now: SystemTime,
    ) -> Result<TokenRedemption> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.redeem_join_token(token_hash, now).await;
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let row: Option<(String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT agent_id, expires_at, used_at FROM join_tokens WHERE token_hash = ?1",
                    [&token_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let outcome = match row {
                None => TokenRedemption::Unknown,
                Some((_, _, Some(_))) => TokenRedemption::AlreadyUsed,
                Some((_, expires_at, None)) if expires_at <= unix(now) => TokenRedemption::Expired,
                Some((agent_id, _, None)) => {
                    tx.execute(
                        "UPDATE join_tokens SET used_at = ?1 WHERE token_hash = ?2 AND used_at IS NULL",
                        params![unix(now), token_hash],
                    )?;
                    let id = SpiffeId::new(&agent_id).map_err(|e| DatastoreError::Decode {
                        what: "join token",
                        reason: e.to_string(),
                    })?;
                    TokenRedemption::Accepted(id)
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    /// Records or refreshes an attested agent, keeping its ban flag.
    pub async fn upsert_agent(&self, record: AgentRecord) -> Result<()> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.upsert_agent(record).await;
        }
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO agents (spiffe_id, attestation_type, attested_at, svid_expires_at, banned, selectors)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(spiffe_id) DO UPDATE SET attestation_type=excluded.attestation_type,
                 attested_at=excluded.attested_at, svid_expires_at=excluded.svid_expires_at,
                 selectors=excluded.selectors",
                params![
                    record.spiffe_id.as_str(),
                    record.attestation_type,
                    unix(record.attested_at),
                    unix(record.svid_expires_at),
                    record.banned,
                    serde_json::to_string(&record.selectors).unwrap_or_else(|_| "[]".into()),
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Updates the expiry of an agent's SVID after renewal.
    pub async fn set_agent_svid_expiry(&self, id: SpiffeId, expires_at: SystemTime) -> Result<()> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.set_agent_svid_expiry(id, expires_at).await;
        }
        self.call(move |conn| {
            conn.execute(
                "UPDATE agents SET svid_expires_at = ?1 WHERE spiffe_id = ?2",
                params![unix(expires_at), id.as_str()],
            )?;
            Ok(())
        })
        .await
    }

    /// All agents.
    pub async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.list_agents().await;
        }
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT spiffe_id, attestation_type, attested_at, svid_expires_at, banned, selectors FROM agents ORDER BY spiffe_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            rows.map(|row| {
                let (id, kind, attested, expires, banned, selectors) = row?;
                Ok(AgentRecord {
                    spiffe_id: SpiffeId::new(&id)
                        .map_err(|e| DatastoreError::Decode { what: "agent", reason: e.to_string() })?,
                    attestation_type: kind,
                    attested_at: from_unix(attested),
                    svid_expires_at: from_unix(expires),
                    banned,
                    selectors: serde_json::from_str(&selectors).unwrap_or_default(),
                })
            })
            .collect()
        })
        .await
    }

    /// Removes an agent (eviction): its SVID is no longer accepted and it must attest again.
    pub async fn delete_agent(&self, id: SpiffeId) -> Result<bool> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.delete_agent(id).await;
        }
        self.call(move |conn| {
            Ok(conn.execute("DELETE FROM agents WHERE spiffe_id = ?1", [id.as_str()])? > 0)
        })
        .await
    }

    /// Bans an agent; returns whether it existed.
    pub async fn ban_agent(&self, id: SpiffeId) -> Result<bool> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.set_banned(id, true).await;
        }
        self.call(move |conn| {
            Ok(conn.execute(
                "UPDATE agents SET banned = 1 WHERE spiffe_id = ?1",
                [id.as_str()],
            )? > 0)
        })
        .await
    }

    /// Lifts a ban; false when the agent is unknown.
    pub async fn unban_agent(&self, id: SpiffeId) -> Result<bool> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.set_banned(id, false).await;
        }
        self.call(move |conn| {
            Ok(conn.execute(
                "UPDATE agents SET banned = 0 WHERE spiffe_id = ?1",
                [id.as_str()],
            )? > 0)
        })
        .await
    }

    /// Appends a CA event synchronously, so events keep their order (they are rare).
    pub fn journal_now(&self, event: &str) -> Result<()> {
        if let Backend::Postgres { journal, .. } = &self.backend {
            return journal
                .send((unix(SystemTime::now()), event.to_owned()))
                .map_err(|_| DatastoreError::Task("the CA journal writer stopped".into()));
        }
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO ca_journal (at, event) VALUES (?1, ?2)",
            params![unix(SystemTime::now()), event],
        )?;
        self.sqlite()?.1.follow(&conn)
    }

    /// Every join token row (hash, agent id, expiry, use), for `signet datastore migrate`.
    pub(crate) async fn join_token_rows(&self) -> Result<Vec<(String, String, i64, Option<i64>)>> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT token_hash, agent_id, expires_at, used_at FROM join_tokens ORDER BY token_hash",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Every CA journal event with its time, oldest first, for `signet datastore migrate`.
    pub(crate) async fn journal_rows(&self) -> Result<Vec<(i64, String)>> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT at, event FROM ca_journal ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// One entry (PostgreSQL: what a notification named).
    pub(crate) async fn get_entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.get_entry(id).await;
        }
        let id = id.clone();
        self.call(move |conn| {
            let body: Option<String> = conn
                .query_row(
                    "SELECT body FROM entries WHERE id = ?1",
                    [id.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            body.map(|b| decode_entry(&b)).transpose()
        })
        .await
    }

    /// The last `limit` journal events, oldest first.
    pub async fn journal_tail(&self, limit: u32) -> Result<Vec<String>> {
        if let Backend::Postgres { store, .. } = &self.backend {
            return store.journal_tail(limit).await;
        }
        self.call(move |conn| {
            let mut stmt = conn.prepare("SELECT event FROM (SELECT id, event FROM ca_journal ORDER BY id DESC LIMIT ?1) ORDER BY id")?;
            let rows = stmt.query_map([limit], |r| r.get::<_, String>(0))?;
            rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
        })
        .await
    }
}

fn decode_entry(body: &str) -> Result<RegistrationEntry> {
    serde_json::from_str(body).map_err(|e| DatastoreError::Decode {
        what: "entry",
        reason: e.to_string(),
    })
}
