//! `signet datastore migrate`: copies a standalone server's SQLite database and CA key file into
//! PostgreSQL, so that several servers can share it. Idempotent: every row is an upsert (or kept
//! when present), the CA state and journal are copied only into a database that has none, so an
//! interrupted run is simply run again. Ends with a count of every table on both sides.

use std::path::Path;

use signet_ca::KeyStore;

use crate::datastore::Datastore;
use crate::datastore::postgres::PostgresConfig;
use crate::error::ServerError;
use crate::shared::{CaStateProtection, SharedKeyStore};

/// Rows copied, per table, and whether both sides agree.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// (table, rows in SQLite, rows in PostgreSQL afterwards).
    pub tables: Vec<(&'static str, usize, i64)>,
    /// What happened to the CA state.
    pub ca_state: String,
}

impl MigrationReport {
    /// Whether PostgreSQL holds at least every row of the source (it may hold more: other
    /// servers' rows, or an earlier run's).
    pub fn verified(&self) -> bool {
        self.tables
            .iter()
            .all(|(_, source, target)| i64::try_from(*source).is_ok_and(|s| *target >= s))
    }
}

/// Progress of one table: (table, done, total).
pub type Progress<'a> = &'a (dyn Fn(&str, usize, usize) + Sync);

/// Copies everything from the SQLite database at `sqlite` (and the CA key file `ca_keys`
/// beside it) into the PostgreSQL database of `target`.
pub async fn sqlite_to_postgres(
    sqlite: &Path,
    ca_keys: &Path,
    target: PostgresConfig,
    protection: CaStateProtection,
    progress: Progress<'_>,
) -> Result<MigrationReport, ServerError> {
    if !sqlite.exists() {
        return Err(ServerError::InvalidArgument(format!(
            "{} does not exist",
            sqlite.display()
        )));
    }
    let source = Datastore::open(sqlite)?;
    let destination = Datastore::postgres(target.clone()).await?;
    let store = destination
        .shared()
        .cloned()
        .ok_or_else(|| ServerError::InvalidArgument("the target is not PostgreSQL".into()))?;
    let mut report = MigrationReport::default();

    let entries = source.list_entries().await?;
    let total = entries.len();
    for (done, entry) in entries.into_iter().enumerate() {
        destination.put_entry(entry).await?;
        progress("entries", done + 1, total);
    }
    report
        .tables
        .push(("entries", total, store.count("entries").await?));

    let agents = source.list_agents().await?;
    let total = agents.len();
    for (done, agent) in agents.into_iter().enumerate() {
        let (id, banned) = (agent.spiffe_id.clone(), agent.banned);
        destination.upsert_agent(agent).await?;
        store.set_banned(id, banned).await?;
        progress("agents", done + 1, total);
    }
    report
        .tables
        .push(("agents", total, store.count("agents").await?));

    let tokens = source.join_token_rows().await?;
    let total = tokens.len();
    for (done, token) in tokens.into_iter().enumerate() {
        store.copy_join_token(token).await?;
        progress("join tokens", done + 1, total);
    }
    report
        .tables
        .push(("join_tokens", total, store.count("join_tokens").await?));

    let policies = source.list_policies().await?;
    let total = policies.len();
    for (done, policy) in policies.iter().enumerate() {
        store.copy_policy(policy).await?;
        progress("policies", done + 1, total);
    }
    report.tables.push((
        "authorization_policies",
        total,
        store.count("authorization_policies").await?,
    ));

    let federations = source.list_federations().await?;
    let total = federations.len();
    for (done, (relationship, bundle)) in federations.into_iter().enumerate() {
        destination.put_federation(relationship, bundle).await?;
        progress("federation relationships", done + 1, total);
    }
    report.tables.push((
        "federation_relationships",
        total,
        store.count("federation_relationships").await?,
    ));

    let journal = source.journal_rows().await?;
    let total = journal.len();
    store.copy_journal(&journal).await?;
    progress("CA journal", total, total);
    report
        .tables
        .push(("ca_journal", total, store.count("ca_journal").await?));

    report.ca_state = copy_ca_state(ca_keys, target, protection).await?;
    Ok(report)
}

async fn copy_ca_state(
    ca_keys: &Path,
    config: PostgresConfig,
    protection: CaStateProtection,
) -> Result<String, ServerError> {
    let path = ca_keys.to_owned();
    let source = tokio::task::spawn_blocking(move || signet_ca::FileKeyStore::new(path).load())
        .await
        .map_err(|e| ServerError::InvalidArgument(e.to_string()))?
        .map_err(signet_ca::Error::from)?;
    let Some(state) = source else {
        return Ok(format!(
            "no CA key file at {}: the first server creates the CA",
            ca_keys.display()
        ));
    };
    let target = SharedKeyStore::new(config, protection).map_err(signet_ca::Error::from)?;
    tokio::task::block_in_place(|| match target.load() {
        // The same CA, not merely the same generation: two deployments' CAs can both be at 1.
        Ok(Some(present))
            if serde_json::to_value(&present).ok() == serde_json::to_value(&state).ok() =>
        {
            Ok(format!(
                "CA state already in the database (generation {})",
                present.generation
            ))
        }
        Ok(Some(present)) => Err(ServerError::InvalidArgument(format!(
            "the database already holds another CA state (generation {}, the file has {}): not \
             overwritten; migrate into an empty database",
            present.generation, state.generation
        ))),
        Ok(None) => {
            // The stored state's own generation is kept: expected is "nothing stored".
            target
                .store(&state, 0)
                .map_err(|e| ServerError::Ca(signet_ca::Error::from(e)))?;
            Ok(format!(
                "CA state copied (generation {}, {} X.509 and {} JWT authorities)",
                state.generation,
                state.x509.len(),
                state.jwt.len()
            ))
        }
        Err(error) => Err(ServerError::Ca(signet_ca::Error::from(error))),
    })
}
