//! The Workload API served in process over a temporary socket, from a source filled by hand
//! (SVIDs minted by an in-memory CA, JWT-SVIDs by a fake minter): the security header,
//! PermissionDenied, waiting for a pending SVID, pushes on rotation and bundle change, entry
//! removal ending a stream, and JWT-SVIDs minted once, cached and validated.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use signet_agent::{
    AgentMetrics, CachedSvid, JwtMinter, MintedJwt, SvidCache, UnixAttestorConfig, WorkloadApi,
    WorkloadEndpoint, WorkloadSource,
};
use signet_ca::{CaConfig, CertificateAuthority, CsrIdRule, FileKeyStore, SystemClock};
use signet_core::{EntryId, RegistrationEntry, SelectorSet};
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use signet_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, WitsvidRequest, X509BundlesRequest,
    X509svidRequest,
};
use signet_spiffe::{Bundle, BundleSet, SpiffeId, TrustDomain, X509Svid};
use signet_tls::SharedBundles;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Request};

const TD: &str = "example.org";
const AGENT: &str = "spiffe://example.org/signet/agent/join/test";

/// Signs what the server would: X509-SVIDs for the cache and JWT-SVIDs for the minter.
struct FakeServer {
    ca: Mutex<CertificateAuthority>,
    minted: AtomicUsize,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    fn new() -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::open(
            CaConfig::new(TrustDomain::new(TD).unwrap()),
            Arc::new(FileKeyStore::new(dir.path().join("ca.json"))),
            Arc::new(SystemClock),
        )
        .unwrap();
        Arc::new(Self {
            ca: Mutex::new(ca),
            minted: AtomicUsize::new(0),
            _dir: dir,
        })
    }

    fn bundle(&self) -> Bundle {
        self.ca.lock().bundle().unwrap()
    }

    fn svid(&self, entry: &RegistrationEntry) -> CachedSvid {
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
}

struct Minter(Arc<FakeServer>, Arc<SvidCache>);

#[tonic::async_trait]
impl JwtMinter for Minter {
    async fn mint(&self, entry: &EntryId, audience: &[String]) -> Result<MintedJwt, tonic::Status> {
        let matching = self.1.signed_entry_ids();
        assert!(
            matching.contains(entry),
            "minting for an entry of this node"
        );
        let spiffe_id = SpiffeId::new(&format!("spiffe://{TD}/{entry}")).unwrap();
        let token = self
            .0
            .ca
            .lock()
            .mint_jwt_svid(&signet_ca::JwtSvidRequest {
                spiffe_id: &spiffe_id,
                audience,
                ttl: Duration::from_secs(300),
                issuer: None,
            })
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        self.0.minted.fetch_add(1, Ordering::Relaxed);
        Ok(MintedJwt {
            token,
            expires_at: SystemTime::now() + Duration::from_secs(300),
        })
    }
}

/// An entry `spiffe://example.org/<name>` with id `<name>` for the uid of this process (or
/// another uid).
fn entry_for_uid(name: &str, uid: u32) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new(name),
        spiffe_id: SpiffeId::new(&format!("spiffe://{TD}/{name}")).unwrap(),
        parent_id: SpiffeId::new(AGENT).unwrap(),
        selectors: SelectorSet::parse_all(&[format!("unix:uid:{uid}").as_str()]).unwrap(),
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

fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn mine(name: &str) -> RegistrationEntry {
    entry_for_uid(name, my_uid())
}

struct Harness {
    server: Arc<FakeServer>,
    cache: Arc<SvidCache>,
    socket: PathBuf,
    _policies: watch::Sender<Option<Arc<signet_core::policy::PolicySet>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Harness {
    fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let server = FakeServer::new();
        let cache = Arc::new(SvidCache::new());
        let bundle = server.bundle();
        cache.set_bundle(bundle.clone());
        let mut set = BundleSet::new();
        set.insert(bundle);
        let policies = watch::channel(None);
        let source = WorkloadSource::new(
            TrustDomain::new(TD).unwrap(),
            cache.clone(),
            Arc::new(SharedBundles::new(set)),
            policies.1,
            Arc::new(Minter(server.clone(), cache.clone())),
        );
        let api = WorkloadApi::new(
            source,
            UnixAttestorConfig::default(),
            None,
            Arc::new(AgentMetrics::default()),
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sockets").join("api.sock");
        let tasks =
            signet_agent::serve_workload_api(&WorkloadEndpoint::new(socket.clone()), api).unwrap();
        Self {
            server,
            cache,
            socket,
            _policies: policies.0,
            tasks: tasks.into(),
            _dir: dir,
        }
    }

    /// Entries with SVIDs, as after a sync and a signing round.
    fn issue(&self, entries: Vec<RegistrationEntry>) {
        self.cache.replace_entries(entries.clone());
        for entry in &entries {
            self.cache.store_svid(&entry.id, self.server.svid(entry));
        }
    }

    async fn client(&self) -> SpiffeWorkloadApiClient<Channel> {
        SpiffeWorkloadApiClient::new(channel(&self.socket).await)
    }
}

async fn channel(path: &Path) -> Channel {
    let path = path.to_owned();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

fn with_header<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

const PUSH_WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn requests_without_the_exact_security_header_are_invalid() {
    let harness = Harness::start();
    harness.issue(vec![mine("web")]);
    let mut client = harness.client().await;
    let status = client.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "security header missing from request");
    let mut wrong = Request::new(X509BundlesRequest {});
    wrong
        .metadata_mut()
        .insert("workload.spiffe.io", "TRUE".parse().unwrap());
    assert_eq!(
        client.fetch_x509_bundles(wrong).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut twice = Request::new(JwtsvidRequest {
        audience: vec!["db".into()],
        spiffe_id: String::new(),
    });
    for _ in 0..2 {
        twice
            .metadata_mut()
            .append("workload.spiffe.io", "true".parse().unwrap());
    }
    assert_eq!(
        client.fetch_jwtsvid(twice).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // The WIT profile is not implemented.
    assert_eq!(
        client
            .fetch_witsvid(with_header(WitsvidRequest::default()))
            .await
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
}

#[tokio::test]
async fn a_caller_no_entry_selects_gets_permission_denied() {
    let harness = Harness::start();
    harness.issue(vec![entry_for_uid(
        "someone-else",
        my_uid().wrapping_add(4242),
    )]);
    let mut client = harness.client().await;
    let status = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "no identity issued");
    let status = client
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(harness.server.minted.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_caller_waits_for_the_svid_of_its_new_entry() {
    let harness = Harness::start();
    // The entry arrived; its SVID is still being signed.
    let entry = mine("new");
    harness.cache.replace_entries(vec![entry.clone()]);
    let mut client = harness.client().await;
    let call = tokio::spawn(async move {
        client
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .map(|r| r.into_inner())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !call.is_finished(),
        "the call waits instead of PermissionDenied"
    );
    harness
        .cache
        .store_svid(&entry.id, harness.server.svid(&entry));
    let mut stream = tokio::time::timeout(PUSH_WAIT, call)
        .await
        .expect("answered once the SVID is there")
        .unwrap()
        .unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
    assert_eq!(first.svids[0].spiffe_id, format!("spiffe://{TD}/new"));
}

#[tokio::test]
async fn rotation_and_removal_are_pushed_to_open_streams() {
    let harness = Harness::start();
    let entry = mine("rotating");
    harness.issue(vec![entry.clone()]);
    let mut client = harness.client().await;
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
    // The signer rotates the SVID.
    harness
        .cache
        .store_svid(&entry.id, harness.server.svid(&entry));
    let second = tokio::time::timeout(PUSH_WAIT, stream.message())
        .await
        .expect("the rotation is pushed")
        .unwrap()
        .unwrap();
    assert_eq!(second.svids[0].spiffe_id, first.svids[0].spiffe_id);
    assert_ne!(
        second.svids[0].x509_svid, first.svids[0].x509_svid,
        "a new certificate was pushed"
    );
    assert_eq!(second.svids[0].bundle, first.svids[0].bundle);
    // The entry is deleted: the workload is told to stop using its identity.
    harness.cache.replace_entries(Vec::new());
    let ended = tokio::time::timeout(PUSH_WAIT, stream.message())
        .await
        .expect("the removal is pushed");
    assert_eq!(ended.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn bundle_streams_push_a_changed_bundle() {
    let harness = Harness::start();
    harness.issue(vec![mine("web")]);
    let mut client = harness.client().await;
    let mut x509 = client
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut jwt = client
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let key = format!("spiffe://{TD}");
    let first_x509 = x509.message().await.unwrap().unwrap();
    let first_jwt = jwt.message().await.unwrap().unwrap();
    assert_eq!(
        first_x509.bundles[&key],
        harness.server.bundle().to_der_concat()
    );
    assert!(first_jwt.bundles.contains_key(&key));

    // The bundle gains a second X.509 authority (a prepared CA).
    let other = FakeServer::new().bundle();
    let mut grown = harness.server.bundle();
    for root in other.x509_authorities() {
        grown.add_x509_authority(root.as_ref()).unwrap();
    }
    harness.cache.set_bundle(grown.clone());
    let next = tokio::time::timeout(PUSH_WAIT, x509.message())
        .await
        .expect("the X.509 bundle change is pushed")
        .unwrap()
        .unwrap();
    assert_eq!(next.bundles[&key], grown.to_der_concat());
    assert_ne!(next.bundles[&key], first_x509.bundles[&key]);
}

#[tokio::test]
async fn jwt_svids_are_minted_once_per_audience_and_validate() {
    let harness = Harness::start();
    harness.issue(vec![mine("api")]);
    let mut client = harness.client().await;
    let fetch = |audience: &str| {
        with_header(JwtsvidRequest {
            audience: vec![audience.to_owned()],
            spiffe_id: String::new(),
        })
    };
    let first = client
        .fetch_jwtsvid(fetch("db"))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .fetch_jwtsvid(fetch("db"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.svids.len(), 1);
    assert_eq!(first.svids[0].spiffe_id, format!("spiffe://{TD}/api"));
    assert_eq!(
        first.svids[0].svid, again.svids[0].svid,
        "served from the cache"
    );
    assert_eq!(harness.server.minted.load(Ordering::Relaxed), 1);

    let valid = client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: first.svids[0].svid.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(valid.spiffe_id, format!("spiffe://{TD}/api"));
    let wrong_audience = client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "cache".into(),
            svid: first.svids[0].svid.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(wrong_audience.code(), Code::InvalidArgument);
    // A token of another trust domain's key does not validate.
    let foreign = FakeServer::new();
    let forged = foreign
        .ca
        .lock()
        .mint_jwt_svid(&signet_ca::JwtSvidRequest {
            spiffe_id: &SpiffeId::new(&format!("spiffe://{TD}/api")).unwrap(),
            audience: &["db".to_owned()],
            ttl: Duration::from_secs(60),
            issuer: None,
        })
        .unwrap();
    let refused = client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: forged,
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}
