//! The agent's SVIDs on disk, so that an agent restarted while the server is unreachable serves
//! what it had instead of nothing. One SQLite file in the data directory (mode 0600 inside the
//! 0700 directory, like the agent's own key): the node's entries, the X509-SVID and key of each,
//! and the federated bundles. Written incrementally (only what changed since the last write,
//! at most once per [`PERSIST_INTERVAL`]); a failed write (disk full) is retried and never stops
//! the agent. On start only unexpired SVIDs are loaded, and the restored state counts as *not
//! synced*: a workload no restored entry matches gets UNAVAILABLE until the server answers.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use signet_core::{EntryId, RegistrationEntry};
use signet_proto::agent as wire;
use signet_spiffe::{Bundle, BundleSet, TrustDomain, X509Svid};
use tracing::{debug, info, warn};

use crate::cache::{CachedSvid, SvidCache};

const FILE: &str = "svid-cache.db";
/// Shortest time between two writes.
pub(crate) const PERSIST_INTERVAL: Duration = Duration::from_secs(2);
const SCHEMA_VERSION: i64 = 1;

/// Why the cache file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// SQLite refused.
    #[error("svid cache {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file could not be created.
    #[error("svid cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What was restored from disk.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    pub(crate) entries: Vec<(RegistrationEntry, Option<CachedSvid>)>,
    pub(crate) federated: BundleSet,
    /// SVIDs left out because they expired (or did not parse).
    pub(crate) dropped: usize,
}

type Written = HashMap<EntryId, (Arc<RegistrationEntry>, Option<Arc<CachedSvid>>)>;

/// The open cache file.
pub(crate) struct CacheFile {
    path: PathBuf,
    connection: Connection,
    written: Written,
    federated: Vec<u8>,
}

impl std::fmt::Debug for CacheFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFile")
            .field("path", &self.path)
            .field("rows", &self.written.len())
            .finish_non_exhaustive()
    }
}

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn from_unix_seconds(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

impl CacheFile {
    /// Opens (creating, 0600) the cache file in `data_dir`. A file that cannot be read as one
    /// is moved aside and a new one started: the cache is only a copy of what the server holds.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, PersistError> {
        let path = data_dir.join(FILE);
        match Self::open_at(&path) {
            Ok(file) => Ok(file),
            Err(error) => {
                let aside = path.with_extension("db.unreadable");
                warn!(%error, aside = %aside.display(), "the persisted SVID cache is unreadable; starting a new one");
                let _ = std::fs::rename(&path, &aside);
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                Self::open_at(&path)
            }
        }
    }

    fn open_at(path: &Path) -> Result<Self, PersistError> {
        let sqlite = |source| PersistError::Sqlite {
            path: path.to_owned(),
            source,
        };
        // Created 0600 before SQLite opens it; SQLite gives its -wal/-shm files the same mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| PersistError::Io {
                path: path.to_owned(),
                source,
            })?;
        let connection = Connection::open(path).map_err(sqlite)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS svids (
                     entry_id TEXT PRIMARY KEY,
                     entry BLOB NOT NULL,
                     chain BLOB,
                     key BLOB,
                     authority_id TEXT,
                     refresh_at INTEGER,
                     revision INTEGER
                 );",
            )
            .map_err(sqlite)?;
        let version: Option<i64> = connection
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'schema'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite)?;
        match version {
            None => {
                connection
                    .execute(
                        "INSERT INTO meta (name, value) VALUES ('schema', ?1)",
                        params![SCHEMA_VERSION],
                    )
                    .map_err(sqlite)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(sqlite(rusqlite::Error::InvalidParameterName(format!(
                    "schema version {other}, this agent reads {SCHEMA_VERSION}"
                ))));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            connection,
            written: HashMap::new(),
            federated: Vec::new(),
        })
    }

    fn sqlite(&self, source: rusqlite::Error) -> PersistError {
        PersistError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Everything held that is still valid at `now` for `trust_domain`.
    pub(crate) fn load(
        &mut self,
        trust_domain: &TrustDomain,
        now: SystemTime,
    ) -> Result<Restored, PersistError> {
        let mut restored = Restored::default();
        let rows: Vec<RowData> = {
            let mut statement = self
                .connection
                .prepare(
                    "SELECT entry_id, entry, chain, key, authority_id, refresh_at, revision FROM svids",
                )
                .map_err(|e| self.sqlite(e))?;
            statement
                .query_map([], |row| {
                    Ok(RowData {
                        entry: row.get(1)?,
                        chain: row.get(2)?,
                        key: row.get(3)?,
                        authority_id: row.get(4)?,
                        refresh_at: row.get(5)?,
                        revision: row.get(6)?,
                    })
                })
                .map_err(|e| self.sqlite(e))?
                .collect::<Result<_, _>>()
                .map_err(|e| self.sqlite(e))?
        };
        for row in rows {
            let Some(entry) = wire::Entry::decode(row.entry.as_slice())
                .ok()
                .and_then(|w| RegistrationEntry::try_from(&w).ok())
            else {
                restored.dropped += 1;
                continue;
            };
            let svid = row.svid(&entry, now);
            if svid.is_none() && row.chain.is_some() {
                restored.dropped += 1;
            }
            restored.entries.push((entry, svid));
        }
        let federated: Option<Vec<u8>> = self
            .connection
            .query_row(
                "SELECT value FROM meta WHERE name = 'federated'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sqlite(e))?;
        if let Some(bytes) = federated
            && let Ok(bundles) = wire::FederatedBundles::decode(bytes.as_slice())
        {
            for b in bundles.bundles {
                if let Ok(td) = TrustDomain::new(&b.trust_domain)
                    && td != *trust_domain
                    && let Ok(bundle) = Bundle::from_spiffe_json(td, &b.spiffe_json)
                {
                    restored.federated.insert(bundle);
                }
            }
        }
        Ok(restored)
    }

    /// Writes what changed in `cache` since the last write. On failure nothing is marked
    /// written, so the next call tries again.
    pub(crate) fn save(&mut self, cache: &SvidCache) -> Result<usize, PersistError> {
        let view = cache.persist_view();
        let federated = federated_bytes(&cache.federated_bundles());
        let mut changed: Vec<&(Arc<RegistrationEntry>, Option<Arc<CachedSvid>>)> = Vec::new();
        for slot in &view {
            let same = self.written.get(&slot.0.id).is_some_and(|(entry, svid)| {
                Arc::ptr_eq(entry, &slot.0)
                    && match (svid, &slot.1) {
                        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                        (None, None) => true,
                        _ => false,
                    }
            });
            if !same {
                changed.push(slot);
            }
        }
        let current: std::collections::HashSet<&EntryId> = view.iter().map(|s| &s.0.id).collect();
        let removed: Vec<EntryId> = self
            .written
            .keys()
            .filter(|id| !current.contains(id))
            .cloned()
            .collect();
        if changed.is_empty() && removed.is_empty() && federated == self.federated {
            return Ok(0);
        }
        let transaction = self
            .connection
            .transaction()
            .map_err(|e| PersistError::Sqlite {
                path: self.path.clone(),
                source: e,
            })?;
        let result = (|| {
            {
                let mut upsert = transaction.prepare_cached(
                    "INSERT INTO svids (entry_id, entry, chain, key, authority_id, refresh_at, revision)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (entry_id) DO UPDATE SET entry = ?2, chain = ?3, key = ?4,
                         authority_id = ?5, refresh_at = ?6, revision = ?7",
                )?;
                for (entry, svid) in &changed {
                    let encoded = wire::Entry::from(entry.as_ref()).encode_to_vec();
                    let revision = svid
                        .as_ref()
                        .map(|s| i64::try_from(s.revision).unwrap_or(i64::MAX));
                    upsert.execute(params![
                        entry.id.as_str(),
                        encoded,
                        svid.as_ref().map(|s| s.svid.chain_der()),
                        svid.as_ref().map(|s| s.svid.private_key_pkcs8().to_vec()),
                        svid.as_ref().map(|s| s.authority_id.clone()),
                        svid.as_ref().map(|s| unix_seconds(s.refresh_at)),
                        revision,
                    ])?;
                }
                let mut delete =
                    transaction.prepare_cached("DELETE FROM svids WHERE entry_id = ?1")?;
                for id in &removed {
                    delete.execute(params![id.as_str()])?;
                }
                transaction.execute(
                    "INSERT INTO meta (name, value) VALUES ('federated', ?1)
                     ON CONFLICT (name) DO UPDATE SET value = ?1",
                    params![federated],
                )?;
            }
            transaction.commit()
        })();
        result.map_err(|e| self.sqlite(e))?;
        let count = changed.len() + removed.len();
        for (entry, svid) in changed {
            self.written
                .insert(entry.id.clone(), (entry.clone(), svid.clone()));
        }
        for id in removed {
            self.written.remove(&id);
        }
        self.federated = federated;
        Ok(count)
    }

    /// Marks what was restored as written, so that the first save writes only real changes.
    pub(crate) fn mark_written(&mut self, cache: &SvidCache) {
        self.written = cache
            .persist_view()
            .into_iter()
            .map(|slot| (slot.0.id.clone(), slot))
            .collect();
        self.federated = federated_bytes(&cache.federated_bundles());
    }
}

struct RowData {
    entry: Vec<u8>,
    chain: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    authority_id: Option<String>,
    refresh_at: Option<i64>,
    revision: Option<i64>,
}

impl RowData {
    /// The SVID of this row if it is one of `entry`'s, whole, and unexpired at `now`.
    fn svid(&self, entry: &RegistrationEntry, now: SystemTime) -> Option<CachedSvid> {
        let (Some(chain), Some(key)) = (&self.chain, &self.key) else {
            return None;
        };
        let svid = X509Svid::parse(chain, key).ok()?;
        if svid.spiffe_id() != &entry.spiffe_id || svid.not_after() <= now {
            return None;
        }
        Some(CachedSvid {
            svid,
            authority_id: self.authority_id.clone().unwrap_or_default(),
            refresh_at: from_unix_seconds(self.refresh_at.unwrap_or(0)),
            revision: self
                .revision
                .and_then(|r| u64::try_from(r).ok())
                .unwrap_or(0),
        })
    }
}

fn federated_bytes(bundles: &[Arc<Bundle>]) -> Vec<u8> {
    let mut list: Vec<wire::Bundle> = bundles
        .iter()
        .map(|b| wire::Bundle {
            trust_domain: b.trust_domain().to_string(),
            spiffe_json: b.to_spiffe_json().into_bytes(),
            sequence: 0,
        })
        .collect();
    list.sort_by(|a, b| a.trust_domain.cmp(&b.trust_domain));
    wire::FederatedBundles { bundles: list }.encode_to_vec()
}

/// Restores the persisted cache into `cache`, which has not synced yet.
pub(crate) fn restore(
    file: &mut CacheFile,
    cache: &SvidCache,
    trust_domain: &TrustDomain,
) -> Result<(), PersistError> {
    let restored = file.load(trust_domain, SystemTime::now())?;
    let entries = restored.entries.len();
    let svids = restored
        .entries
        .iter()
        .filter(|(_, svid)| svid.is_some())
        .count();
    if entries > 0 {
        cache.restore(restored.entries, restored.federated);
        info!(
            entries,
            svids,
            expired = restored.dropped,
            "restored the persisted SVID cache; serving it until the server answers"
        );
    }
    file.mark_written(cache);
    Ok(())
}

/// Writes changes of `cache` to `file` at most every [`PERSIST_INTERVAL`], forever.
pub(crate) async fn keep_written(
    file: CacheFile,
    cache: Arc<SvidCache>,
    failures: prometheus_client::metrics::counter::Counter,
) {
    let file = Arc::new(parking_lot::Mutex::new(file));
    let mut changes = cache.subscribe();
    let mut failing = false;
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(PERSIST_INTERVAL).await;
        changes.mark_unchanged();
        let (file, cache) = (file.clone(), cache.clone());
        let result = tokio::task::spawn_blocking(move || file.lock().save(&cache)).await;
        match result {
            Ok(Ok(count)) => {
                if failing {
                    info!("the SVID cache is written to disk again");
                    failing = false;
                }
                if count > 0 {
                    debug!(rows = count, "SVID cache written");
                }
            }
            Ok(Err(error)) => {
                failures.inc();
                if !failing {
                    warn!(%error, "could not write the SVID cache to disk (serving is not affected; retrying)");
                    failing = true;
                }
                // Retry even if nothing else changes.
                changes.mark_changed();
            }
            Err(error) => warn!(%error, "the SVID cache writer stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_test_support::workload_api::{SigningCa, entry_for_uid};

    fn cached(ca: &SigningCa, entry: &RegistrationEntry) -> CachedSvid {
        let minted = ca.svid(entry);
        CachedSvid {
            svid: minted.svid,
            authority_id: minted.authority_id,
            refresh_at: minted.refresh_at,
            revision: minted.revision,
        }
    }

    #[test]
    fn what_is_written_comes_back_and_only_changes_are_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = SigningCa::new();
        let td = ca.trust_domain().clone();
        let cache = SvidCache::new();
        let a = entry_for_uid("a", 1);
        let b = entry_for_uid("b", 2);
        cache.replace_entries(vec![a.clone(), b.clone()]);
        cache.store_svid(&a.id, cached(&ca, &a));
        let mut federated = BundleSet::new();
        federated.insert(SigningCa::for_trust_domain("other.org").bundle());
        cache.set_federated_bundles(federated);

        let mut file = CacheFile::open(dir.path()).unwrap();
        assert_eq!(file.save(&cache).unwrap(), 2);
        assert_eq!(file.save(&cache).unwrap(), 0, "nothing changed");
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        // b signed, a removed: two rows change.
        cache.store_svid(&b.id, cached(&ca, &b));
        cache.apply_delta(vec![], std::slice::from_ref(&a.id));
        assert_eq!(file.save(&cache).unwrap(), 2);
        drop(file);

        let mut reopened = CacheFile::open(dir.path()).unwrap();
        let restored = reopened.load(&td, SystemTime::now()).unwrap();
        assert_eq!(restored.entries.len(), 1);
        let (entry, svid) = &restored.entries[0];
        assert_eq!(entry, &b);
        let svid = svid.as_ref().unwrap();
        assert_eq!(svid.svid.spiffe_id(), &b.spiffe_id);
        assert_eq!(restored.federated.len(), 1);

        let fresh = SvidCache::new();
        restore(&mut reopened, &fresh, &td).unwrap();
        assert_eq!(fresh.counts(), (1, 1));
        assert!(!fresh.is_synced());
        assert_eq!(
            reopened.save(&fresh).unwrap(),
            0,
            "restored rows are not rewritten"
        );

        // Eleven minutes later the 10-minute SVID is expired: the entry comes back without it.
        let later = SystemTime::now() + Duration::from_secs(660);
        let restored = reopened.load(&td, later).unwrap();
        assert_eq!(restored.entries.len(), 1);
        assert!(restored.entries[0].1.is_none());
        assert_eq!(restored.dropped, 1);
    }

    #[test]
    fn a_file_of_a_newer_schema_is_moved_aside_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let file = CacheFile::open(dir.path()).unwrap();
        file.connection
            .execute("UPDATE meta SET value = 99 WHERE name = 'schema'", [])
            .unwrap();
        drop(file);
        let mut reopened = CacheFile::open(dir.path()).unwrap();
        assert!(dir.path().join("svid-cache.db.unreadable").exists());
        let td = TrustDomain::new("example.org").unwrap();
        assert!(
            reopened
                .load(&td, SystemTime::now())
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[test]
    fn an_unreadable_file_is_moved_aside_and_a_hostile_row_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            b"this is not a database, it is a trap",
        )
        .unwrap();
        let mut file = CacheFile::open(dir.path()).unwrap();
        assert!(dir.path().join("svid-cache.db.unreadable").exists());
        let ca = SigningCa::new();
        let td = ca.trust_domain().clone();
        assert!(
            file.load(&td, SystemTime::now())
                .unwrap()
                .entries
                .is_empty()
        );

        // A row whose SVID belongs to another entry's ID, one with a key that does not match
        // its certificate, and one whose entry does not parse.
        let a = entry_for_uid("a", 1);
        let b = entry_for_uid("b", 2);
        let svid_b = cached(&ca, &b);
        let svid_a = cached(&ca, &a);
        let insert = |id: &str, entry: Vec<u8>, chain: Vec<u8>, key: Vec<u8>| {
            file.connection
                .execute(
                    "INSERT INTO svids (entry_id, entry, chain, key, authority_id, refresh_at, revision)
                     VALUES (?1, ?2, ?3, ?4, 'x', 0, 0)",
                    params![id, entry, chain, key],
                )
                .unwrap();
        };
        insert(
            "a",
            wire::Entry::from(&a).encode_to_vec(),
            svid_b.svid.chain_der(),
            svid_b.svid.private_key_pkcs8().to_vec(),
        );
        insert(
            "b",
            wire::Entry::from(&b).encode_to_vec(),
            svid_b.svid.chain_der(),
            svid_a.svid.private_key_pkcs8().to_vec(),
        );
        insert("c", b"\xff\xff garbage".to_vec(), vec![], vec![]);
        let restored = file.load(&td, SystemTime::now()).unwrap();
        assert_eq!(restored.dropped, 3, "{restored:?}");
        assert!(restored.entries.iter().all(|(_, svid)| svid.is_none()));
    }
}
