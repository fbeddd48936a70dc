//! A real Workload API (the agent's service, served on a temporary socket) over a source filled by
//! hand instead of synced from a server: entries and SVIDs minted by an in-memory CA, policies
//! set directly, JWT-SVIDs minted by the same CA. For tests of the Workload API itself and of
//! everything that consumes it (the proxy, `signet-tls` sources).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use signet_agent::{
    AgentMetrics, CachedSvid, JwtMinter, MintedJwt, SvidCache, UnixAttestorConfig, WorkloadApi,
    WorkloadEndpoint, WorkloadSource,
};
use signet_ca::{CaConfig, CertificateAuthority, CsrIdRule, FileKeyStore, SystemClock};
use signet_core::policy::PolicySet;
use signet_core::{EntryId, RegistrationEntry, SelectorSet};
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use signet_spiffe::{Bundle, BundleSet, SpiffeId, TrustDomain, X509Svid};
use signet_tls::SharedBundles;
use tokio::sync::watch;
use tonic::transport::Channel;

/// The trust domain of the fake.
pub const TD: &str = "example.org";
/// The agent every fake entry is parented to.
pub const AGENT: &str = "spiffe://example.org/signet/agent/join/test";

/// An in-memory CA signing what the server would.
#[derive(Debug)]
pub struct SigningCa {
    trust_domain: TrustDomain,
    ca: Mutex<CertificateAuthority>,
    jwts_minted: AtomicUsize,
    _dir: tempfile::TempDir,
}

impl SigningCa {
    /// A new CA for [`TD`] (keys in a temporary directory).
    pub fn new() -> Arc<Self> {
        Self::for_trust_domain(TD)
    }

    /// A new CA for another trust domain (a federated one).
    pub fn for_trust_domain(trust_domain: &str) -> Arc<Self> {
        let trust_domain = TrustDomain::new(trust_domain).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::open(
            CaConfig::new(trust_domain.clone()),
            Arc::new(FileKeyStore::new(dir.path().join("ca.json"))),
            Arc::new(SystemClock),
        )
        .unwrap();
        Arc::new(Self {
            trust_domain,
            ca: Mutex::new(ca),
            jwts_minted: AtomicUsize::new(0),
            _dir: dir,
        })
    }

    /// Its trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Its trust bundle.
    pub fn bundle(&self) -> Bundle {
        self.ca.lock().bundle().unwrap()
    }

    /// A fresh X509-SVID (10 minutes) for `entry`.
    pub fn svid(&self, entry: &RegistrationEntry) -> CachedSvid {
        let (key, csr) = signet_ca::csr::new_key_and_csr(Some(&entry.spiffe_id)).unwrap();
        let minted = self
            .ca
            .lock()
            .mint_x509_svid(&signet_ca::X509SvidRequest {
                csr_der: &csr,
                spiffe_id: &entry.spiffe_id,
                ttl: Duration::from_secs(600),
                dns_names: &[],
                csr_id_rule: CsrIdRule::Exact,
            })
            .unwrap();
        let chain: Vec<u8> = minted.chain.iter().flat_map(|c| c.to_vec()).collect();
        CachedSvid {
            svid: X509Svid::parse(&chain, &key.serialize_der()).unwrap(),
            authority_id: minted.authority_id,
            refresh_at: SystemTime::now() + Duration::from_secs(300),
            revision: entry.revision,
        }
    }

    /// A JWT-SVID of `spiffe_id` for `audience`.
    pub fn jwt(&self, spiffe_id: &SpiffeId, audience: &[String]) -> String {
        self.ca
            .lock()
            .mint_jwt_svid(&signet_ca::JwtSvidRequest {
                spiffe_id,
                audience,
                ttl: Duration::from_secs(300),
                issuer: None,
            })
            .unwrap()
    }

    /// How many JWT-SVIDs the fake Workload APIs minted through it.
    pub fn jwts_minted(&self) -> usize {
        self.jwts_minted.load(Ordering::Relaxed)
    }
}

struct Minter {
    ca: Arc<SigningCa>,
    cache: Arc<SvidCache>,
}

#[tonic::async_trait]
impl JwtMinter for Minter {
    async fn mint(&self, entry: &EntryId, audience: &[String]) -> Result<MintedJwt, tonic::Status> {
        // The server signs for the agent's own entries only.
        let Some(spiffe_id) = self.cache.entry(entry).map(|e| e.spiffe_id.clone()) else {
            return Err(tonic::Status::permission_denied(
                "not an entry of this agent",
            ));
        };
        let token = self.ca.jwt(&spiffe_id, audience);
        self.ca.jwts_minted.fetch_add(1, Ordering::Relaxed);
        Ok(MintedJwt {
            token,
            expires_at: SystemTime::now() + Duration::from_secs(300),
        })
    }
}

/// An entry `spiffe://example.org/<name>` (id `<name>`) for processes of `uid`.
pub fn entry_for_uid(name: &str, uid: u32) -> RegistrationEntry {
    entry_with_selector(name, &format!("unix:uid:{uid}"))
}

/// An entry `spiffe://example.org/<name>` (id `<name>`) with one selector.
pub fn entry_with_selector(name: &str, selector: &str) -> RegistrationEntry {
    entry_in(TD, name, selector)
}

/// An entry `spiffe://<trust_domain>/<name>` (id `<name>`) with one selector.
pub fn entry_in(trust_domain: &str, name: &str, selector: &str) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new(name),
        spiffe_id: SpiffeId::new(&format!("spiffe://{trust_domain}/{name}")).unwrap(),
        parent_id: SpiffeId::new(AGENT).unwrap(),
        selectors: SelectorSet::parse_all(&[selector]).unwrap(),
        x509_svid_ttl: Duration::from_secs(600),
        jwt_svid_ttl: Duration::from_secs(300),
        dns_names: vec![],
        federates_with: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        revision: 1,
    }
}

/// The uid of this process.
pub fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The agent's Workload API on a temporary socket, served from a hand-filled source.
#[derive(Debug)]
pub struct FakeWorkloadApi {
    /// The CA its SVIDs come from.
    pub ca: Arc<SigningCa>,
    /// What it serves (entries, SVIDs, the bundle).
    pub cache: Arc<SvidCache>,
    policies: watch::Sender<Option<Arc<PolicySet>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Drop for FakeWorkloadApi {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl FakeWorkloadApi {
    /// Serves SVIDs of `ca` (share one CA between several fakes for peers that trust each
    /// other). Must be called within a Tokio runtime.
    pub fn start(ca: Arc<SigningCa>) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cache = Arc::new(SvidCache::new());
        let bundle = ca.bundle();
        cache.set_bundle(bundle.clone());
        let mut trusted = BundleSet::new();
        trusted.insert(bundle);
        let policies = watch::channel(None);
        let source = WorkloadSource::new(
            ca.trust_domain().clone(),
            cache.clone(),
            Arc::new(SharedBundles::new(trusted)),
            policies.1,
            Arc::new(Minter {
                ca: ca.clone(),
                cache: cache.clone(),
            }),
        );
        let api = WorkloadApi::new(
            source,
            UnixAttestorConfig::default(),
            None,
            Arc::new(AgentMetrics::default()),
        );
        let dir = tempfile::tempdir().unwrap();
        let endpoint = WorkloadEndpoint::new(dir.path().join("sockets").join("api.sock"));
        let tasks = signet_agent::serve_workload_api(&endpoint, api).unwrap();
        Self {
            ca,
            cache,
            policies: policies.0,
            tasks: tasks.into(),
            dir,
        }
    }

    /// Its socket.
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("sockets").join("api.sock")
    }

    /// `unix:<socket>`, as clients are pointed at it.
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// Entries with SVIDs, as after a sync and a signing round.
    pub fn issue(&self, entries: Vec<RegistrationEntry>) {
        self.cache.replace_entries(entries.clone());
        self.rotate(&entries);
    }

    /// New SVIDs for `entries` (a rotation).
    pub fn rotate(&self, entries: &[RegistrationEntry]) {
        for entry in entries {
            self.cache.store_svid(&entry.id, self.ca.svid(entry));
        }
    }

    /// The federated trust domains' bundles, as the server would push them.
    pub fn set_federated_bundles(&self, bundles: Vec<Bundle>) {
        let mut set = BundleSet::new();
        for bundle in bundles {
            set.insert(bundle);
        }
        self.cache.set_federated_bundles(set);
    }

    /// The trust domain's policies, as the server would push them.
    pub fn set_policies(&self, policies: PolicySet) {
        self.policies.send_replace(Some(Arc::new(policies)));
    }

    /// A client of it.
    pub async fn client(&self) -> SpiffeWorkloadApiClient<Channel> {
        SpiffeWorkloadApiClient::new(unix_channel(&self.socket()).await)
    }
}

/// A gRPC channel over the Unix socket at `path`.
pub async fn unix_channel(path: &Path) -> Channel {
    signet_tls::source::unix_channel(path.to_owned())
        .await
        .unwrap()
}
