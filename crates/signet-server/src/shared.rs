//! Standalone mode on PostgreSQL: several servers share one database. Each server loads entries,
//! agents, policies and federation relationships from it and follows the changes the others
//! make (LISTEN/NOTIFY, a full reload after a lost connection); the CA state lives in the
//! database, encrypted; exactly one server — the holder of an advisory lock — rotates the CA,
//! the others adopt what it stores.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use signet_ca::{KeyStore, KeyStoreError, PersistedState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::agents::AgentRegistry;
use crate::authority::AuthorityService;
use crate::datastore::Datastore;
use crate::datastore::postgres::{Change, PostgresStore};
use crate::index::EntryIndex;
use crate::policies::PolicyStore;

/// The advisory lock whose holder rotates the CA ("signet-c").
const CA_LOCK: i64 = 0x7369_676e_6574_2d63;
/// Format marker of an encrypted CA state.
const SEALED: &[u8; 4] = b"SGN1";

/// How the CA state is kept in the shared database.
#[derive(Clone)]
pub enum CaStateProtection {
    /// Sealed with AES-256-GCM under this key (from a file every server has).
    Encrypted(Zeroizing<Vec<u8>>),
    /// Stored as is: the keys are in a PKCS#11 token (the state holds only their ids), or the
    /// operator opted in to plain-text keys in the database.
    Plain,
}

impl std::fmt::Debug for CaStateProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Encrypted(_) => "Encrypted",
            Self::Plain => "Plain",
        })
    }
}

impl CaStateProtection {
    /// Reads a key file: 32 bytes, base64 (`openssl rand -base64 32`) or 64 hex digits.
    pub fn from_key_file(text: &str) -> Result<Self, String> {
        use base64::Engine;
        let text = text.trim();
        let key = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| e.to_string())?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| "the CA state key file holds neither base64 nor hex".to_owned())?
        };
        if key.len() != 32 {
            return Err(format!(
                "the CA state key must be 32 bytes (openssl rand -base64 32), not {}",
                key.len()
            ));
        }
        Ok(Self::Encrypted(Zeroizing::new(key)))
    }

    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let Self::Encrypted(key) = self else {
            return Ok(plain.to_vec());
        };
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|e| e.to_string())?);
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|e| e.to_string())?;
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(SEALED),
            &mut sealed,
        )
        .map_err(|e| e.to_string())?;
        Ok([&SEALED[..], &nonce, &sealed].concat())
    }

    fn open(&self, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        let sealed = stored.starts_with(SEALED);
        match self {
            Self::Plain if sealed => Err(
                "the stored CA state is encrypted: give this server the CA state key file".into(),
            ),
            Self::Plain => Ok(Zeroizing::new(stored.to_vec())),
            Self::Encrypted(_) if !sealed => Err(
                "the stored CA state is not encrypted, but this server was given a key: refusing to guess".into(),
            ),
            Self::Encrypted(key) => {
                let key = LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, key).map_err(|e| e.to_string())?,
                );
                let rest = &stored[SEALED.len()..];
                if rest.len() < NONCE_LEN {
                    return Err("the stored CA state is truncated".into());
                }
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|e| e.to_string())?;
                let mut buffer = Zeroizing::new(ciphertext.to_vec());
                let plain = key
                    .open_in_place(nonce, Aad::from(SEALED), &mut buffer)
                    .map_err(|_| {
                        "the CA state does not decrypt with this key (a different key file than the other servers?)".to_owned()
                    })?;
                Ok(Zeroizing::new(plain.to_vec()))
            }
        }
    }
}

/// The CA key store in the shared database: generation-checked, so two servers never overwrite
/// each other's keys.
///
/// The `KeyStore` trait is synchronous and is called with the CA lock held. Its queries run on a
/// thread of their own with its own connection: were they driven by the server's runtime, every
/// worker could be blocked on the CA lock while the holder waits for a connection task that no
/// worker is free to run.
pub(crate) struct SharedKeyStore {
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
    protection: CaStateProtection,
}

type Reply<T> = std::sync::mpsc::SyncSender<Result<T, String>>;

enum Request {
    Load(Reply<Option<(i64, Vec<u8>)>>),
    Store {
        expected: i64,
        generation: i64,
        state: Vec<u8>,
        reply: Reply<bool>,
    },
}

/// Longest wait for the database while the CA lock is held.
const STORE_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for SharedKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeyStore")
            .field("protection", &self.protection)
            .finish_non_exhaustive()
    }
}

impl SharedKeyStore {
    pub(crate) fn new(
        config: crate::datastore::postgres::PostgresConfig,
        protection: CaStateProtection,
    ) -> Result<Self, KeyStoreError> {
        let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Request>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(unavailable)?;
        std::thread::Builder::new()
            .name("ca-key-store".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut store: Option<Arc<PostgresStore>> = None;
                    while let Some(request) = incoming.recv().await {
                        if store.is_none() {
                            match PostgresStore::connect(config.clone()).await {
                                Ok(connected) => store = Some(connected),
                                Err(error) => {
                                    request.fail(&error.to_string());
                                    continue;
                                }
                            }
                        }
                        let Some(db) = &store else { continue };
                        match request {
                            Request::Load(reply) => {
                                let _ = reply.send(db.load_ca().await.map_err(|e| e.to_string()));
                            }
                            Request::Store {
                                expected,
                                generation,
                                state,
                                reply,
                            } => {
                                let written = db.store_ca(expected, generation, &state).await;
                                let _ = reply.send(written.map_err(|e| e.to_string()));
                            }
                        }
                    }
                });
            })
            .map_err(unavailable)?;
        Ok(Self {
            requests,
            protection,
        })
    }

    fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, KeyStoreError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.requests
            .send(request(reply))
            .map_err(|_| unavailable("the key store thread stopped"))?;
        answer
            .recv_timeout(STORE_TIMEOUT)
            .map_err(|_| unavailable("no answer from the database"))?
            .map_err(unavailable)
    }
}

impl Request {
    fn fail(self, reason: &str) {
        match self {
            Self::Load(reply) => {
                let _ = reply.send(Err(reason.to_owned()));
            }
            Self::Store { reply, .. } => {
                let _ = reply.send(Err(reason.to_owned()));
            }
        }
    }
}

fn unavailable(error: impl std::fmt::Display) -> KeyStoreError {
    KeyStoreError::Unavailable {
        store: "PostgreSQL ca_state".into(),
        reason: error.to_string(),
    }
}

fn corrupt(reason: impl Into<String>) -> KeyStoreError {
    KeyStoreError::Corrupt {
        path: "PostgreSQL ca_state".into(),
        reason: reason.into(),
    }
}

impl KeyStore for SharedKeyStore {
    fn load(&self) -> Result<Option<PersistedState>, KeyStoreError> {
        let Some((_, stored)) = self.ask(Request::Load)? else {
            return Ok(None);
        };
        let plain = self.protection.open(&stored).map_err(corrupt)?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| corrupt(format!("the CA state does not parse: {e}")))
    }

    fn store(&self, state: &PersistedState, expected_generation: u64) -> Result<(), KeyStoreError> {
        let plain = Zeroizing::new(
            serde_json::to_vec(state).map_err(|e| corrupt(format!("encoding: {e}")))?,
        );
        let sealed = self.protection.seal(&plain).map_err(corrupt)?;
        let expected = i64::try_from(expected_generation).unwrap_or(i64::MAX);
        let generation = i64::try_from(state.generation).unwrap_or(i64::MAX);
        let written = self.ask(|reply| Request::Store {
            expected,
            generation,
            state: sealed,
            reply,
        })?;
        if written {
            return Ok(());
        }
        let found = self
            .ask(Request::Load)?
            .map_or(0, |(g, _)| u64::try_from(g).unwrap_or(0));
        Err(KeyStoreError::Conflict {
            expected: expected_generation,
            found,
        })
    }
}

/// Holds the CA lock on a dedicated connection while it can: `true` while this server rotates
/// the CA. A lost connection releases the lock in PostgreSQL; another server takes it.
pub(crate) fn spawn_ca_leader(
    store: Arc<PostgresStore>,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = signet_unix::spawn_named("ca-lock", async move {
        loop {
            let client = match store.dedicated().await {
                Ok(client) => client,
                Err(error) => {
                    tx.send_replace(false);
                    warn!(%error, "CA lock: cannot reach the database");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            loop {
                let held = if *tx.borrow() {
                    // Still connected: the session lock is still ours.
                    client.simple_query("SELECT 1").await.map(|_| true)
                } else {
                    client
                        .query_one("SELECT pg_try_advisory_lock($1)", &[&CA_LOCK])
                        .await
                        .map(|row| row.get::<_, bool>(0))
                };
                match held {
                    Ok(held) => {
                        if held != *tx.borrow() {
                            info!(leading = held, "CA rotation lock");
                        }
                        tx.send_replace(held);
                    }
                    Err(error) => {
                        warn!(%error, "CA lock connection lost");
                        tx.send_replace(false);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    });
    (rx, task)
}

/// What a change from another server updates.
pub(crate) struct Followers {
    pub(crate) datastore: Datastore,
    pub(crate) index: Arc<EntryIndex>,
    pub(crate) agents: Arc<AgentRegistry>,
    pub(crate) policies: Arc<PolicyStore>,
    pub(crate) authority: Arc<AuthorityService>,
    pub(crate) federation: Arc<crate::federation::Federation>,
}

/// Applies the changes other servers make, as they are notified.
pub(crate) fn spawn_follow(
    store: &Arc<PostgresStore>,
    followers: Followers,
) -> Vec<JoinHandle<()>> {
    let (mut changes, listener) = store.listen();
    let follow = signet_unix::spawn_named("datastore-follow", async move {
        while let Some(change) = changes.recv().await {
            if let Err(error) = followers.apply(&change).await {
                warn!(%error, ?change, "could not apply a change from the shared datastore; resyncing at the next change");
            }
        }
    });
    vec![listener, follow]
}

impl Followers {
    async fn apply(&self, change: &Change) -> Result<(), crate::error::ServerError> {
        match change {
            // This server's own writes come back too.
            Change::Entry(id) => match self.datastore.get_entry(id).await? {
                Some(entry) => self.index.upsert_if_changed(entry),
                None => {
                    self.index.remove(id);
                }
            },
            Change::EntryWritten(entry) => self.index.upsert_if_changed((**entry).clone()),
            Change::Agents => self.agents.reload(&self.datastore.list_agents().await?),
            Change::Policies => {
                crate::policy_admin::load_standalone(&self.datastore, &self.policies).await?;
            }
            Change::Federation => self.federation.load().await?,
            Change::Ca => {
                self.authority.reload()?;
            }
            Change::Resync => {
                self.index.replace(self.datastore.list_entries().await?);
                self.agents.reload(&self.datastore.list_agents().await?);
                crate::policy_admin::load_standalone(&self.datastore, &self.policies).await?;
                self.federation.load().await?;
                self.authority.reload()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_state_is_sealed_and_only_opens_with_its_key() {
        let key = CaStateProtection::from_key_file(&"ab".repeat(32)).unwrap();
        let sealed = key.seal(b"{\"secret\":1}").unwrap();
        assert!(sealed.starts_with(SEALED));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.open(&sealed).unwrap().as_slice(), b"{\"secret\":1}");
        let other = CaStateProtection::from_key_file(&"cd".repeat(32)).unwrap();
        assert!(
            other
                .open(&sealed)
                .unwrap_err()
                .contains("does not decrypt")
        );
        assert!(
            CaStateProtection::Plain
                .open(&sealed)
                .unwrap_err()
                .contains("encrypted")
        );
        assert!(key.open(b"{}").unwrap_err().contains("not encrypted"));
        assert!(key.open(b"SGN1abc").unwrap_err().contains("truncated"));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key.open(&tampered).is_err());
    }

    #[test]
    fn key_files_are_32_bytes_of_base64_or_hex() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(CaStateProtection::from_key_file(&format!("{b64}\n")).is_ok());
        assert!(CaStateProtection::from_key_file(&"0f".repeat(32)).is_ok());
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(
            CaStateProtection::from_key_file(&short)
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(CaStateProtection::from_key_file("not a key!").is_err());
    }
}
