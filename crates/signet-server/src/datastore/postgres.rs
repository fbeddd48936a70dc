//! The PostgreSQL datastore: several servers share one database (replication and failover are
//! PostgreSQL's). Every write notifies the others in its own transaction (`pg_notify` on
//! `signet_changes`, delivered at commit), so changes reach every server within milliseconds
//! without polling; a server that lost its listening connection resyncs everything.
//!
//! Schema migrations are versioned and run at start under an advisory lock, so servers starting
//! together do not race.

use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
use signet_core::{EntryId, RegistrationEntry};
use signet_spiffe::SpiffeId;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Config, NoTls};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::{
    AgentRecord, DatastoreError, PolicyWrite, Result, StoredPolicy, TokenRedemption, decode_entry,
    from_unix,
};
use crate::unix_seconds as unix;

/// The channel every write notifies.
pub const CHANNEL: &str = "signet_changes";
/// The advisory lock key of schema migrations ("signet-m").
const MIGRATION_LOCK: i64 = 0x7369_676e_6574_2d6d;

/// Each step brings the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &["CREATE TABLE entries (
        id TEXT PRIMARY KEY,
        spiffe_id TEXT NOT NULL,
        parent_id TEXT NOT NULL,
        body TEXT NOT NULL,
        revision BIGINT NOT NULL
     );
     CREATE INDEX entries_parent ON entries(parent_id);
     CREATE TABLE join_tokens (
        token_hash TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT
     );
     CREATE TABLE agents (
        spiffe_id TEXT PRIMARY KEY,
        attestation_type TEXT NOT NULL,
        attested_at BIGINT NOT NULL,
        svid_expires_at BIGINT NOT NULL,
        banned BOOLEAN NOT NULL DEFAULT false,
        selectors TEXT NOT NULL DEFAULT '[]'
     );
     CREATE TABLE ca_journal (
        id BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        event TEXT NOT NULL
     );
     CREATE TABLE authorization_policies (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        document TEXT NOT NULL,
        revision BIGINT NOT NULL,
        PRIMARY KEY (namespace, name)
     );
     CREATE TABLE federation_relationships (
        trust_domain TEXT PRIMARY KEY,
        bundle_endpoint_url TEXT NOT NULL,
        profile TEXT NOT NULL,
        endpoint_spiffe_id TEXT
     );
     CREATE TABLE federated_bundles (
        trust_domain TEXT PRIMARY KEY,
        spiffe_json TEXT NOT NULL
     );
     CREATE TABLE ca_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        generation BIGINT NOT NULL,
        state BYTEA NOT NULL
     );"];

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/db?sslmode=require` (no password in it: see `password`).
    pub url: String,
    /// The password, from a file or the environment; never logged.
    pub password: Option<Zeroizing<String>>,
    /// Extra roots that sign the database's TLS certificate (besides the system's).
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redacted(&self.url))
            .finish_non_exhaustive()
    }
}

/// The URL without a password that may have been put in it.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl PostgresConfig {
    fn client_config(&self) -> Result<Config> {
        let mut config = Config::from_str(&self.url).map_err(|e| DatastoreError::Postgres {
            what: format!("the datastore URL {}", redacted(&self.url)),
            reason: e.to_string(),
        })?;
        if let Some(password) = &self.password {
            config.password(password.as_bytes());
        }
        if config.get_application_name().is_none() {
            config.application_name("signet-server");
        }
        Ok(config)
    }

    fn tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        let roots = crate::federation::web_roots(&self.extra_roots);
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_postgres_rustls::MakeRustlsConnect::new(config)
    }

    fn wants_tls(config: &Config) -> bool {
        !matches!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        )
    }
}

fn pg(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> DatastoreError {
    let what = what.into();
    move |e| DatastoreError::Postgres {
        what,
        reason: e.to_string(),
    }
}

/// Bodies up to this size travel in the notification itself (PostgreSQL allows 8,000 bytes), so
/// the other servers need no query to apply the change.
const INLINE_BODY: usize = 7000;

/// The server messages (notifications, notices) of a connection outside the pool.
type MessageStream =
    futures::stream::BoxStream<'static, std::result::Result<AsyncMessage, tokio_postgres::Error>>;

/// What changed, from a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An entry was written or deleted.
    Entry(EntryId),
    /// An entry was written; here it is.
    EntryWritten(Box<RegistrationEntry>),
    /// An agent was attested, banned, unbanned or evicted.
    Agents,
    /// Policies changed.
    Policies,
    /// Federation relationships changed.
    Federation,
    /// The CA state changed.
    Ca,
    /// Notifications may have been missed (the listening connection was lost): reload all.
    Resync,
}

impl Change {
    fn payload(&self) -> String {
        match self {
            Self::Entry(id) => format!("entry:{id}"),
            Self::EntryWritten(entry) => match serde_json::to_string(entry) {
                Ok(body) if body.len() <= INLINE_BODY => format!("entry+{body}"),
                _ => format!("entry:{}", entry.id),
            },
            Self::Agents => "agents".into(),
            Self::Policies => "policies".into(),
            Self::Federation => "federation".into(),
            Self::Ca => "ca".into(),
            Self::Resync => "resync".into(),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        Some(match payload {
            "agents" => Self::Agents,
            "policies" => Self::Policies,
            "federation" => Self::Federation,
            "ca" => Self::Ca,
            "resync" => Self::Resync,
            other => match other.strip_prefix("entry+") {
                Some(body) => Self::EntryWritten(Box::new(decode_entry(body).ok()?)),
                None => Self::Entry(EntryId::new(other.strip_prefix("entry:")?)),
            },
        })
    }
}

/// A pool of connections to the shared database.
pub(crate) struct PostgresStore {
    pool: Pool,
    config: PostgresConfig,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects and brings the schema up to date.
    pub(crate) async fn connect(config: PostgresConfig) -> Result<Arc<Self>> {
        let client_config = config.client_config()?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if PostgresConfig::wants_tls(&client_config) {
            Manager::from_config(client_config, config.tls(), manager_config)
        } else {
            Manager::from_config(client_config, NoTls, manager_config)
        };
        let pool =
            Pool::builder(manager)
                .max_size(16)
                .build()
                .map_err(|e| DatastoreError::Postgres {
                    what: "building the connection pool".into(),
                    reason: e.to_string(),
                })?;
        let store = Arc::new(Self { pool, config });
        store.migrate().await?;
        info!(url = %redacted(&store.config.url), "PostgreSQL datastore ready");
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| DatastoreError::Postgres {
            what: format!("connecting to {}", redacted(&self.config.url)),
            reason: e.to_string(),
        })
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        // A session lock: servers starting together migrate one after the other.
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("taking the migration lock"))?;
        let result = self.migrate_locked(&mut client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("releasing the migration lock"));
        result.and(unlocked.map(|_| ()))
    }

    async fn migrate_locked(&self, client: &mut deadpool_postgres::Object) -> Result<()> {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS signet_schema (version INTEGER NOT NULL)")
            .await
            .map_err(pg("creating the schema table"))?;
        let version: i32 = client
            .query_opt("SELECT version FROM signet_schema", &[])
            .await
            .map_err(pg("reading the schema version"))?
            .map_or(0, |row| row.get(0));
        let supported = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        if version > supported {
            return Err(DatastoreError::TooNew {
                found: i64::from(version),
                supported: i64::from(supported),
            });
        }
        for (index, step) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            let next = i32::try_from(index + 1).unwrap_or(i32::MAX);
            let tx = client.transaction().await.map_err(pg("migrating"))?;
            tx.batch_execute(step)
                .await
                .map_err(pg(format!("migration {next}")))?;
            tx.execute("DELETE FROM signet_schema", &[])
                .await
                .map_err(pg("migrating"))?;
            tx.execute("INSERT INTO signet_schema (version) VALUES ($1)", &[&next])
                .await
                .map_err(pg("migrating"))?;
            tx.commit().await.map_err(pg("migrating"))?;
            info!(version = next, "datastore schema migrated");
        }
        Ok(())
    }

    /// Runs `sql` then notifies `change`, in one transaction.
    async fn write(
        &self,
        what: &str,
        change: Change,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let changed = tx.execute(sql, params).await.map_err(pg(what))?;
        if changed > 0 {
            notify(&tx, &change).await?;
        }
        tx.commit().await.map_err(pg(what))?;
        Ok(changed)
    }

    pub(crate) async fn list_entries(&self) -> Result<Vec<RegistrationEntry>> {
        let rows = self
            .client()
            .await?
            .query("SELECT body FROM entries ORDER BY id", &[])
            .await
            .map_err(pg("listing entries"))?;
        rows.iter().map(|r| decode_entry(r.get(0))).collect()
    }

    pub(crate) async fn get_entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT body FROM entries WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(pg("reading an entry"))?;
        row.map(|r| decode_entry(r.get(0))).transpose()
    }

    pub(crate) async fn put_entry(&self, entry: RegistrationEntry, body: String) -> Result<()> {
        let revision = i64::try_from(entry.revision).unwrap_or(i64::MAX);
        self.write(
            "writing an entry",
            Change::EntryWritten(Box::new(entry.clone())),
            "INSERT INTO entries (id, spiffe_id, parent_id, body, revision) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET spiffe_id = excluded.spiffe_id,
             parent_id = excluded.parent_id, body = excluded.body, revision = excluded.revision",
            &[
                &entry.id.as_str(),
                &entry.spiffe_id.as_str(),
                &entry.parent_id.as_str(),
                &body,
                &revision,
            ],
        )
        .await
        .map(|_| ())
    }

    pub(crate) async fn delete_entry(&self, id: EntryId) -> Result<bool> {
        let change = Change::Entry(id.clone());
        self.write(
            "deleting an entry",
            change,
            "DELETE FROM entries WHERE id = $1",
            &[&id.as_str()],
        )
        .await
        .map(|n| n > 0)
    }

    pub(crate) async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT namespace, name, document, revision FROM authorization_policies
                 ORDER BY namespace, name",
                &[],
            )
            .await
            .map_err(pg("listing policies"))?;
        Ok(rows
            .iter()
            .map(|r| StoredPolicy {
                namespace: r.get(0),
                name: r.get(1),
                document: r.get(2),
                revision: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            })
            .collect())
    }

    pub(crate) async fn put_policies(
        &self,
        policies: Vec<(String, String, String)>,
    ) -> Result<Vec<PolicyWrite>> {
        let what = "writing policies";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let mut writes = Vec::with_capacity(policies.len());
        for (namespace, name, document) in &policies {
            let existing = tx
                .query_opt(
                    "SELECT document, revision FROM authorization_policies
                     WHERE namespace = $1 AND name = $2 FOR UPDATE",
                    &[namespace, name],
                )
                .await
                .map_err(pg(what))?;
            let write = match existing {
                Some(row) if row.get::<_, String>(0) == *document => PolicyWrite::Unchanged,
                Some(row) => {
                    tx.execute(
                        "UPDATE authorization_policies SET document = $3, revision = $4
                         WHERE namespace = $1 AND name = $2",
                        &[namespace, name, document, &(row.get::<_, i64>(1) + 1)],
                    )
                    .await
                    .map_err(pg(what))?;
                    PolicyWrite::Configured
                }
                None => {
                    tx.execute(
                        "INSERT INTO authorization_policies (namespace, name, document, revision)
                         VALUES ($1, $2, $3, 1)",
                        &[namespace, name, document],
                    )
                    .await
                    .map_err(pg(what))?;
                    PolicyWrite::Created
                }
            };
            writes.push(write);
        }
        if writes.iter().any(|w| *w != PolicyWrite::Unchanged) {
            notify(&tx, &Change::Policies).await?;
        }
        tx.commit().await.map_err(pg(what))?;
        Ok(writes)
    }

    pub(crate) async fn delete_policy(&self, namespace: String, name: String) -> Result<bool> {
        self.write(
            "deleting a policy",
            Change::Policies,
            "DELETE FROM authorization_policies WHERE namespace = $1 AND name = $2",
            &[&namespace, &name],
        )
        .await
        .map(|n| n > 0)
    }

    pub(crate) async fn create_join_token(
        &self,
        token_hash: String,
        agent_id: SpiffeId,
        expires_at: SystemTime,
    ) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO join_tokens (token_hash, agent_id, expires_at) VALUES ($1, $2, $3)",
                &[&token_hash, &agent_id.as_str(), &unix(expires_at)],
            )
            .await
            .map_err(pg("storing a join token"))?;
        Ok(())
    }

    /// One conditional update decides: of servers redeeming the same token at once, exactly one
    /// sees its row change.
    pub(crate) async fn redeem_join_token(
        &self,
        token_hash: String,
        now: SystemTime,
    ) -> Result<TokenRedemption> {
        let what = "redeeming a join token";
        let client = self.client().await?;
        let redeemed = client
            .query_opt(
                "UPDATE join_tokens SET used_at = $2
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
                 RETURNING agent_id",
                &[&token_hash, &unix(now)],
            )
            .await
            .map_err(pg(what))?;
        if let Some(row) = redeemed {
            let id: String = row.get(0);
            return SpiffeId::new(&id)
                .map(TokenRedemption::Accepted)
                .map_err(|e| DatastoreError::Decode {
                    what: "join token",
                    reason: e.to_string(),
                });
        }
        let row = client
            .query_opt(
                "SELECT used_at IS NOT NULL FROM join_tokens WHERE token_hash = $1",
                &[&token_hash],
            )
            .await
            .map_err(pg(what))?;
        Ok(match row {
            None => TokenRedemption::Unknown,
            Some(r) if r.get::<_, bool>(0) => TokenRedemption::AlreadyUsed,
            Some(_) => TokenRedemption::Expired,
        })
    }

    pub(crate) async fn upsert_agent(&self, record: AgentRecord) -> Result<()> {
        let selectors = serde_json::to_string(&record.selectors).unwrap_or_else(|_| "[]".into());
        self.write(
            "recording an agent",
            Change::Agents,
            "INSERT INTO agents (spiffe_id, attestation_type, attested_at, svid_expires_at, banned, selectors)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (spiffe_id) DO UPDATE SET attestation_type = excluded.attestation_type,
             attested_at = excluded.attested_at, svid_expires_at = excluded.svid_expires_at,
             selectors = excluded.selectors",
            &[
                &record.spiffe_id.as_str(),
                &record.attestation_type,
                &unix(record.attested_at),
                &unix(record.svid_expires_at),
                &record.banned,
                &selectors,
            ],
        )
        .await
        .map(|_| ())
    }

    pub(crate) async fn set_agent_svid_expiry(
        &self,
        id: SpiffeId,
        expires_at: SystemTime,
    ) -> Result<()> {
        // Not a change other servers act on: no notification.
        self.client()
            .await?
            .execute(
                "UPDATE agents SET svid_expires_at = $1 WHERE spiffe_id = $2",
                &[&unix(expires_at), &id.as_str()],
            )
            .await
            .map_err(pg("recording an agent SVID"))?;
        Ok(())
    }

    pub(crate) async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT spiffe_id, attestation_type, attested_at, svid_expires_at, banned, selectors
                 FROM agents ORDER BY spiffe_id",
                &[],
            )
            .await
            .map_err(pg("listing agents"))?;
        rows.iter()
            .map(|r| {
                let id: String = r.get(0);
                Ok(AgentRecord {
                    spiffe_id: SpiffeId::new(&id).map_err(|e| DatastoreError::Decode {
                        what: "agent",
                        reason: e.to_string(),
                    })?,
                    attestation_type: r.get(1),
                    attested_at: from_unix(r.get(2)),
                    svid_expires_at: from_unix(r.get(3)),
                    banned: r.get(4),
                    selectors: serde_json::from_str(r.get(5)).unwrap_or_default(),
                })
            })
            .collect()
    }

    pub(crate) async fn delete_agent(&self, id: SpiffeId) -> Result<bool> {
        self.write(
            "evicting an agent",
            Change::Agents,
            "DELETE FROM agents WHERE spiffe_id = $1",
            &[&id.as_str()],
        )
        .await
        .map(|n| n > 0)
    }

    pub(crate) async fn set_banned(&self, id: SpiffeId, banned: bool) -> Result<bool> {
        self.write(
            "banning an agent",
            Change::Agents,
            "UPDATE agents SET banned = $2 WHERE spiffe_id = $1",
            &[&id.as_str(), &banned],
        )
        .await
        .map(|n| n > 0)
    }

    pub(crate) async fn journal(&self, at: i64, event: String) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO ca_journal (at, event) VALUES ($1, $2)",
                &[&at, &event],
            )
            .await
            .map_err(pg("writing the CA journal"))?;
        Ok(())
    }

    pub(crate) async fn journal_tail(&self, limit: u32) -> Result<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT event FROM (SELECT id, event FROM ca_journal ORDER BY id DESC LIMIT $1) t
                 ORDER BY id",
                &[&i64::from(limit)],
            )
            .await
            .map_err(pg("reading the CA journal"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Every federation relationship with its stored bundle, as text columns.
    pub(crate) async fn federation_rows(
        &self,
    ) -> Result<Vec<(String, String, String, Option<String>, Option<String>)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT r.trust_domain, r.bundle_endpoint_url, r.profile, r.endpoint_spiffe_id,
                        b.spiffe_json
                 FROM federation_relationships r
                 LEFT JOIN federated_bundles b ON b.trust_domain = r.trust_domain
                 ORDER BY r.trust_domain",
                &[],
            )
            .await
            .map_err(pg("listing federation relationships"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect())
    }

    pub(crate) async fn put_federation(
        &self,
        trust_domain: String,
        url: String,
        profile: String,
        endpoint_id: Option<String>,
        bundle_json: Option<String>,
    ) -> Result<()> {
        let what = "writing a federation relationship";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        tx.execute(
            "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (trust_domain) DO UPDATE SET bundle_endpoint_url = excluded.bundle_endpoint_url,
             profile = excluded.profile, endpoint_spiffe_id = excluded.endpoint_spiffe_id",
            &[&trust_domain, &url, &profile, &endpoint_id],
        )
        .await
        .map_err(pg(what))?;
        if let Some(json) = bundle_json {
            tx.execute(
                "INSERT INTO federated_bundles (trust_domain, spiffe_json) VALUES ($1, $2)
                 ON CONFLICT (trust_domain) DO UPDATE SET spiffe_json = excluded.spiffe_json",
                &[&trust_domain, &json],
            )
            .await
            .map_err(pg(what))?;
        }
        notify(&tx, &Change::Federation).await?;
        tx.commit().await.map_err(pg(what))?;
        Ok(())
    }

    pub(crate) async fn put_federated_bundle(
        &self,
        trust_domain: String,
        json: String,
    ) -> Result<()> {
        // Each server fetches for itself: no notification.
        self.client()
            .await?
            .execute(
                "INSERT INTO federated_bundles (trust_domain, spiffe_json)
                 SELECT $1, $2 WHERE EXISTS
                   (SELECT 1 FROM federation_relationships WHERE trust_domain = $1)
                 ON CONFLICT (trust_domain) DO UPDATE SET spiffe_json = excluded.spiffe_json",
                &[&trust_domain, &json],
            )
            .await
            .map_err(pg("storing a federated bundle"))?;
        Ok(())
    }

    pub(crate) async fn delete_federation(&self, trust_domain: String) -> Result<bool> {
        let what = "deleting a federation relationship";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let deleted = tx
            .execute(
                "DELETE FROM federation_relationships WHERE trust_domain = $1",
                &[&trust_domain],
            )
            .await
            .map_err(pg(what))?;
        tx.execute(
            "DELETE FROM federated_bundles WHERE trust_domain = $1",
            &[&trust_domain],
        )
        .await
        .map_err(pg(what))?;
        if deleted > 0 {
            notify(&tx, &Change::Federation).await?;
        }
        tx.commit().await.map_err(pg(what))?;
        Ok(deleted > 0)
    }

    /// Copies a join token as it is (migration); an existing one is kept.
    pub(crate) async fn copy_join_token(
        &self,
        (hash, agent_id, expires_at, used_at): (String, String, i64, Option<i64>),
    ) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO join_tokens (token_hash, agent_id, expires_at, used_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING",
                &[&hash, &agent_id, &expires_at, &used_at],
            )
            .await
            .map_err(pg("copying a join token"))?;
        Ok(())
    }

    /// Copies a policy with its revision (migration).
    pub(crate) async fn copy_policy(&self, policy: &StoredPolicy) -> Result<()> {
        self.write(
            "copying a policy",
            Change::Policies,
            "INSERT INTO authorization_policies (namespace, name, document, revision)
             VALUES ($1, $2, $3, $4) ON CONFLICT (namespace, name) DO UPDATE
             SET document = excluded.document, revision = excluded.revision",
            &[
                &policy.namespace,
                &policy.name,
                &policy.document,
                &i64::try_from(policy.revision).unwrap_or(i64::MAX),
            ],
        )
        .await
        .map(|_| ())
    }

    /// Copies the CA journal when the database has none yet (migration; idempotent).
    pub(crate) async fn copy_journal(&self, events: &[(i64, String)]) -> Result<bool> {
        let what = "copying the CA journal";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        tx.execute("LOCK TABLE ca_journal IN EXCLUSIVE MODE", &[])
            .await
            .map_err(pg(what))?;
        let present: i64 = tx
            .query_one("SELECT count(*) FROM ca_journal", &[])
            .await
            .map_err(pg(what))?
            .get(0);
        if present > 0 {
            return Ok(false);
        }
        for (at, event) in events {
            tx.execute(
                "INSERT INTO ca_journal (at, event) VALUES ($1, $2)",
                &[at, event],
            )
            .await
            .map_err(pg(what))?;
        }
        tx.commit().await.map_err(pg(what))?;
        Ok(true)
    }

    /// Rows per table, for the migration's verification.
    pub(crate) async fn count(&self, table: &str) -> Result<i64> {
        let allowed = [
            "entries",
            "agents",
            "join_tokens",
            "authorization_policies",
            "federation_relationships",
            "ca_journal",
        ];
        if !allowed.contains(&table) {
            return Err(DatastoreError::Task(format!("no table {table:?} to count")));
        }
        // The name is one of the constants above, never input.
        let row = self
            .client()
            .await?
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(pg("counting rows"))?;
        Ok(row.get(0))
    }

    /// The stored CA state and its generation.
    pub(crate) async fn load_ca(&self) -> Result<Option<(i64, Vec<u8>)>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT generation, state FROM ca_state WHERE id = 1", &[])
            .await
            .map_err(pg("reading the CA state"))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Replaces the CA state only if its stored generation is `expected` (0: none stored yet).
    /// Returns false when another server wrote first.
    pub(crate) async fn store_ca(
        &self,
        expected: i64,
        generation: i64,
        state: &[u8],
    ) -> Result<bool> {
        let what = "writing the CA state";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let changed = if expected == 0 {
            tx.execute(
                "INSERT INTO ca_state (id, generation, state) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&generation, &state],
            )
            .await
        } else {
            tx.execute(
                "UPDATE ca_state SET generation = $1, state = $2 WHERE id = 1 AND generation = $3",
                &[&generation, &state, &expected],
            )
            .await
        }
        .map_err(pg(what))?;
        if changed == 1 {
            notify(&tx, &Change::Ca).await?;
        }
        tx.commit().await.map_err(pg(what))?;
        Ok(changed == 1)
    }

    /// A dedicated connection that holds the CA rotation lock while this server leads.
    pub(crate) async fn dedicated(&self) -> Result<tokio_postgres::Client> {
        let (client, messages) = self.connect_outside_pool().await?;
        // Nothing listens on this connection: its messages only need draining.
        tokio::spawn(messages.for_each(|_| async {}));
        Ok(client)
    }

    /// A connection of its own (TLS as the URL asks), with the stream of its server messages,
    /// which must be polled for the connection to make progress.
    async fn connect_outside_pool(&self) -> Result<(tokio_postgres::Client, MessageStream)> {
        let config = self.config.client_config()?;
        if PostgresConfig::wants_tls(&config) {
            let (client, mut connection) = config
                .connect(self.config.tls())
                .await
                .map_err(pg("connecting"))?;
            Ok((
                client,
                futures::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed(),
            ))
        } else {
            let (client, mut connection) = config.connect(NoTls).await.map_err(pg("connecting"))?;
            Ok((
                client,
                futures::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed(),
            ))
        }
    }

    /// Listens on [`CHANNEL`] forever, reconnecting with backoff; after every (re)connection a
    /// [`Change::Resync`] is sent first, since notifications sent meanwhile were lost.
    pub(crate) fn listen(
        self: &Arc<Self>,
    ) -> (mpsc::UnboundedReceiver<Change>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let this = self.clone();
        let task = signet_unix::spawn_named("datastore-listen", async move {
            let mut backoff = signet_core::Backoff::new(
                std::time::Duration::from_millis(200),
                std::time::Duration::from_secs(10),
            );
            loop {
                match this.listen_once(&tx, &mut backoff).await {
                    Ok(()) => return, // nobody listens any more
                    Err(error) => {
                        warn!(%error, "lost the datastore notification connection; reconnecting")
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        });
        (rx, task)
    }

    async fn listen_once(
        &self,
        tx: &mpsc::UnboundedSender<Change>,
        backoff: &mut signet_core::Backoff,
    ) -> Result<()> {
        let (client, mut messages) = self.connect_outside_pool().await?;
        // The connection must be polled for LISTEN to complete.
        let statement = format!("LISTEN {CHANNEL}");
        let listen = client.batch_execute(&statement);
        tokio::pin!(listen);
        loop {
            tokio::select! {
                done = &mut listen => {
                    done.map_err(pg("listening"))?;
                    break;
                }
                message = messages.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(pg("listening")(e)),
                    None => return Err(DatastoreError::Postgres { what: "listening".into(), reason: "connection closed".into() }),
                },
            }
        }
        backoff.reset();
        if tx.send(Change::Resync).is_err() {
            return Ok(());
        }
        debug!("listening for datastore changes");
        while let Some(message) = messages.next().await {
            match message.map_err(pg("listening"))? {
                AsyncMessage::Notification(n) if n.channel() == CHANNEL => {
                    if let Some(change) = Change::parse(n.payload())
                        && tx.send(change).is_err()
                    {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(DatastoreError::Postgres {
            what: "listening".into(),
            reason: "connection closed".into(),
        })
    }
}

async fn notify(tx: &deadpool_postgres::Transaction<'_>, change: &Change) -> Result<()> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &change.payload()])
        .await
        .map_err(pg("notifying the other servers"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_in_a_url() {
        assert_eq!(
            redacted("postgres://signet:s3cret@db.example:5432/signet?sslmode=require"),
            "postgres://signet@db.example:5432/signet?sslmode=require"
        );
        assert_eq!(
            redacted("postgres://signet@db/signet"),
            "postgres://signet@db/signet"
        );
        assert_eq!(redacted("host=db user=signet"), "host=db user=signet");
        let config = PostgresConfig {
            url: "postgres://u:hunter2@h/d".into(),
            password: Some(Zeroizing::new("hunter3".into())),
            extra_roots: Vec::new(),
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
    }

    #[test]
    fn notification_payloads_round_trip() {
        let entry: RegistrationEntry = serde_json::from_value(serde_json::json!({
            "id": "e-2", "spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/signet/agent/join/a",
            "selectors": ["unix:uid:1"], "x509_svid_ttl": {"secs": 3600, "nanos": 0},
            "jwt_svid_ttl": {"secs": 300, "nanos": 0}, "dns_names": [], "federates_with": [],
            "admin": false, "downstream": false, "hint": "", "revision": 3
        }))
        .unwrap();
        assert!(
            Change::EntryWritten(Box::new(entry.clone()))
                .payload()
                .starts_with("entry+")
        );
        let mut huge = entry.clone();
        huge.dns_names = (0..500).map(|i| format!("name-{i}.example.org")).collect();
        assert_eq!(
            Change::EntryWritten(Box::new(huge)).payload(),
            "entry:e-2",
            "a body too large for a notification is read by id"
        );
        assert_eq!(Change::parse("entry+{not json"), None);
        for change in [
            Change::EntryWritten(Box::new(entry)),
            Change::Entry(EntryId::new("e-1")),
            Change::Agents,
            Change::Policies,
            Change::Federation,
            Change::Ca,
            Change::Resync,
        ] {
            assert_eq!(Change::parse(&change.payload()), Some(change));
        }
        assert_eq!(Change::parse("garbage"), None);
    }
}
