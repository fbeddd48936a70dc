//! Federation (SPIFFE Federation spec, DESIGN §6): the relationships with other trust domains,
//! one refresher task per relationship fetching the peer's bundle at its refresh hint, the
//! federated bundles (kept per trust domain, never merged, persisted so that a restart with the
//! peer down keeps trust), and this trust domain's own bundle endpoint (`endpoint`).

pub mod endpoint;
mod fetch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rustls::RootCertStore;
use signet_core::Backoff;
use signet_core::federation::FederationRelationship;
use signet_spiffe::{Bundle, BundleSet, TrustDomain};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::datastore::Datastore;
use crate::error::ServerError;
pub use fetch::FetchError;

/// When to fetch a peer's bundle again: its refresh hint, within these bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshBounds {
    /// Never sooner (a hint of 0 must not become a busy loop).
    pub min: Duration,
    /// Never later (a peer that rotates must be followed even with a long hint).
    pub max: Duration,
    /// Without a hint.
    pub default: Duration,
}

impl Default for RefreshBounds {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            default: Duration::from_secs(300),
        }
    }
}

impl RefreshBounds {
    /// The delay before the next fetch after a bundle with `hint`, jittered by ±10 % so that
    /// many servers do not fetch in lockstep.
    pub fn next_after(&self, hint: Option<Duration>) -> Duration {
        let base = hint.unwrap_or(self.default).clamp(self.min, self.max);
        let jitter = 0.9 + 0.2 * rand_unit();
        base.mul_f64(jitter).clamp(self.min, self.max)
    }
}

fn rand_unit() -> f64 {
    let mut byte = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut byte);
    f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
}

/// How a relationship's last refresh went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshStatus {
    /// The last time a bundle was fetched and accepted.
    pub last_success: Option<SystemTime>,
    /// The last failure, if the last attempt failed: (`Ready` reason, message).
    pub last_error: Option<(String, String)>,
    /// When the next fetch is due.
    pub next_refresh: Option<SystemTime>,
}

/// A relationship as reported.
#[derive(Debug, Clone)]
pub struct RelationshipView {
    /// The relationship.
    pub relationship: FederationRelationship,
    /// The bundle held for it, if any.
    pub bundle: Option<Bundle>,
    /// How refreshing goes.
    pub status: RefreshStatus,
}

struct Tracked {
    relationship: FederationRelationship,
    status: Arc<Mutex<RefreshStatus>>,
    refresher: JoinHandle<()>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// The relationships and the federated bundles.
pub struct Federation {
    local: TrustDomain,
    relationships: Mutex<BTreeMap<TrustDomain, Tracked>>,
    bundles: watch::Sender<Arc<BundleSet>>,
    datastore: Option<Datastore>,
    web_roots: Arc<RootCertStore>,
    bounds: RefreshBounds,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("local", &self.local)
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

/// The roots `https_web` endpoints are checked against: the system's (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured) and any given.
pub fn web_roots(extra: &[rustls_pki_types::CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        warn!(%error, "a system root certificate could not be loaded");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    let (extra_added, ignored) = roots.add_parsable_certificates(extra.iter().cloned());
    if ignored > 0 {
        warn!(ignored, "federation root certificates could not be parsed");
    }
    tracing::debug!(
        system = added,
        extra = extra_added,
        "https_web roots loaded"
    );
    roots
}

impl Federation {
    /// An empty federation of `local`; relationships are added with [`Federation::set`] or
    /// loaded with [`Federation::load`].
    pub fn new(
        local: TrustDomain,
        datastore: Option<Datastore>,
        web_roots: RootCertStore,
        bounds: RefreshBounds,
    ) -> Arc<Self> {
        Arc::new(Self {
            local,
            relationships: Mutex::new(BTreeMap::new()),
            bundles: watch::channel(Arc::new(BundleSet::new())).0,
            datastore,
            web_roots: Arc::new(web_roots),
            bounds,
        })
    }

    /// This server's trust domain.
    pub fn local(&self) -> &TrustDomain {
        &self.local
    }

    /// The federated bundles now; every change is sent to subscribers.
    pub fn bundles(&self) -> Arc<BundleSet> {
        self.bundles.borrow().clone()
    }

    /// Follows the federated bundles.
    pub fn subscribe(&self) -> watch::Receiver<Arc<BundleSet>> {
        self.bundles.subscribe()
    }

    /// Loads the stored relationships and their last bundles and starts refreshing them
    /// (standalone mode).
    pub async fn load(self: &Arc<Self>) -> Result<(), ServerError> {
        let Some(datastore) = &self.datastore else {
            return Ok(());
        };
        let stored = datastore.list_federations().await?;
        let count = stored.len();
        for (relationship, bundle) in stored {
            self.track(relationship, bundle);
        }
        if count > 0 {
            info!(relationships = count, "federation relationships loaded");
        }
        Ok(())
    }

    /// Adds or replaces the relationship with `relationship.trust_domain` and fetches its bundle
    /// at once. `bootstrap` is the bundle to start from (it authenticates an `https_spiffe`
    /// endpoint before the first fetch); without one the bundle held so far is kept.
    pub async fn set(
        self: &Arc<Self>,
        relationship: FederationRelationship,
        bootstrap: Option<Bundle>,
    ) -> Result<(), ServerError> {
        if relationship.trust_domain == self.local {
            return Err(ServerError::InvalidArgument(format!(
                "{} is this server's own trust domain",
                self.local
            )));
        }
        let bundle = bootstrap.or_else(|| self.bundles().get(&relationship.trust_domain).cloned());
        if let Some(datastore) = &self.datastore {
            datastore
                .put_federation(relationship.clone(), bundle.clone())
                .await?;
        }
        self.track(relationship, bundle);
        Ok(())
    }

    /// Ends the relationship with `trust_domain` and forgets its bundle: new handshakes with its
    /// workloads are refused from now on. `false` if there was none.
    pub async fn remove(&self, trust_domain: &TrustDomain) -> Result<bool, ServerError> {
        if let Some(datastore) = &self.datastore {
            datastore.delete_federation(trust_domain.clone()).await?;
        }
        let existed = self.relationships.lock().remove(trust_domain).is_some();
        self.bundles.send_if_modified(|set| {
            if set.get(trust_domain).is_none() {
                return false;
            }
            let mut next = (**set).clone();
            next.remove(trust_domain);
            *set = Arc::new(next);
            true
        });
        if existed {
            info!(%trust_domain, "federation relationship removed");
        }
        Ok(existed)
    }

    /// Trusts `bundle` before any relationship names it (kept from an earlier run); it is used
    /// by the relationship that names its trust domain, and dropped by
    /// [`Federation::forget_unrelated`] otherwise.
    pub fn seed(&self, bundle: Bundle) {
        if bundle.trust_domain() != &self.local {
            self.publish(bundle);
        }
    }

    /// Drops the bundles no relationship names (seeded ones whose relationship is gone).
    pub fn forget_unrelated(&self) {
        let related: Vec<TrustDomain> = self.relationships.lock().keys().cloned().collect();
        self.bundles.send_if_modified(|set| {
            let stale: Vec<TrustDomain> = set
                .iter()
                .map(|b| b.trust_domain().clone())
                .filter(|td| !related.contains(td))
                .collect();
            if stale.is_empty() {
                return false;
            }
            let mut next = (**set).clone();
            for trust_domain in &stale {
                next.remove(trust_domain);
            }
            *set = Arc::new(next);
            true
        });
    }

    /// Every relationship with its bundle and refresh status.
    pub fn list(&self) -> Vec<RelationshipView> {
        let bundles = self.bundles();
        self.relationships
            .lock()
            .values()
            .map(|tracked| RelationshipView {
                relationship: tracked.relationship.clone(),
                bundle: bundles.get(&tracked.relationship.trust_domain).cloned(),
                status: tracked.status.lock().clone(),
            })
            .collect()
    }

    /// One relationship.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<RelationshipView> {
        self.list()
            .into_iter()
            .find(|view| &view.relationship.trust_domain == trust_domain)
    }

    fn track(self: &Arc<Self>, relationship: FederationRelationship, bundle: Option<Bundle>) {
        let trust_domain = relationship.trust_domain.clone();
        if let Some(bundle) = bundle {
            self.publish(bundle);
        }
        let status = Arc::new(Mutex::new(RefreshStatus::default()));
        // The task holds the federation weakly: dropping the server ends it.
        let refresher = signet_unix::spawn_named(
            "federation-refresh",
            refresh_forever(Arc::downgrade(self), relationship.clone(), status.clone()),
        );
        let replaced = self.relationships.lock().insert(
            trust_domain.clone(),
            Tracked {
                relationship,
                status,
                refresher,
            },
        );
        info!(%trust_domain, replaced = replaced.is_some(), "federation relationship set");
    }

    fn publish(&self, bundle: Bundle) {
        self.bundles.send_if_modified(|set| {
            if set.get(bundle.trust_domain()) == Some(&bundle) {
                return false;
            }
            let mut next = (**set).clone();
            next.insert(bundle.clone());
            *set = Arc::new(next);
            true
        });
    }
}

/// Fetches at once, then at every refresh hint; failures retry with backoff and keep the last
/// good bundle.
async fn refresh_forever(
    federation: std::sync::Weak<Federation>,
    relationship: FederationRelationship,
    status: Arc<Mutex<RefreshStatus>>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let Some(this) = federation.upgrade() else {
            return;
        };
        let delay = this
            .refresh_once(&relationship, &status, &mut backoff)
            .await;
        drop(this);
        tokio::time::sleep(delay).await;
    }
}

impl Federation {
    /// One fetch; returns the delay until the next.
    async fn refresh_once(
        &self,
        relationship: &FederationRelationship,
        status: &Mutex<RefreshStatus>,
        backoff: &mut Backoff,
    ) -> Duration {
        let current = self.bundles().get(&relationship.trust_domain).cloned();
        let fetched =
            fetch::fetch_bundle(relationship, current.as_ref(), self.web_roots.clone()).await;
        match fetched {
            Ok(bundle) => {
                backoff.reset();
                let delay = self.bounds.next_after(bundle.refresh_hint());
                if current.as_ref() != Some(&bundle) {
                    if let Some(datastore) = &self.datastore
                        && let Err(error) = datastore.put_federated_bundle(bundle.clone()).await
                    {
                        warn!(trust_domain = %relationship.trust_domain, %error, "could not persist a federated bundle; serving it anyway");
                    }
                    info!(
                        trust_domain = %relationship.trust_domain,
                        sequence = bundle.sequence(),
                        "federated bundle updated"
                    );
                    self.publish(bundle);
                }
                let mut status = status.lock();
                status.last_success = Some(SystemTime::now());
                status.last_error = None;
                status.next_refresh = Some(SystemTime::now() + delay);
                delay
            }
            Err(error) => {
                let delay = backoff.next_delay().min(self.bounds.max);
                warn!(
                    trust_domain = %relationship.trust_domain,
                    endpoint = %relationship.bundle_endpoint_url,
                    reason = error.reason(),
                    %error,
                    retry_in = ?delay,
                    "fetching a federated bundle failed; keeping the last good one"
                );
                let mut status = status.lock();
                status.last_error = Some((error.reason().to_owned(), error.to_string()));
                status.next_refresh = Some(SystemTime::now() + delay);
                delay
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_follows_the_hint_within_bounds_and_jitter() {
        let bounds = RefreshBounds {
            min: Duration::from_secs(5),
            max: Duration::from_secs(600),
            default: Duration::from_secs(300),
        };
        for _ in 0..100 {
            let next = bounds.next_after(Some(Duration::from_secs(60)));
            assert!((54..=66).contains(&next.as_secs()), "{next:?}");
            // A hint of 0 waits at least the minimum (jittered above it, never below).
            let busy = bounds.next_after(Some(Duration::ZERO));
            assert!(
                busy >= bounds.min && busy <= bounds.min.mul_f64(1.1),
                "{busy:?}"
            );
            assert!(bounds.next_after(Some(Duration::from_secs(86400))) <= bounds.max);
            let default = bounds.next_after(None).as_secs();
            assert!((270..=330).contains(&default), "{default}");
        }
    }
}
