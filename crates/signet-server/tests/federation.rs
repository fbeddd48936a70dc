//! Federation between two trust domains, each a server started in process (standalone, SQLite in
//! a temp dir): bundle endpoints with both profiles over real TLS on loopback, relationships set
//! through the admin API, live refresh, persistence across a restart with the peer down, and the
//! refusals (wrong endpoint ID, a bundle of another trust domain).
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::net::SocketAddr;
use std::time::Duration;

use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{
    DeleteFederationRequest, GetFederationRequest, SetFederationRequest, SetMode,
};
use signet_server::federation::RefreshBounds;
use signet_server::federation::endpoint::{BundleEndpointConfig, EndpointTls};
use signet_server::{RunningServer, ServerConfig};
use signet_spiffe::TrustDomain;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

struct Server {
    running: Option<RunningServer>,
    admin: AdminClient<Channel>,
    dir: std::path::PathBuf,
    td: TrustDomain,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start(
    td: &str,
    dir: &std::path::Path,
    configure: impl FnOnce(&mut ServerConfig),
) -> Server {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let td = TrustDomain::new(td).unwrap();
    let mut config = ServerConfig::new(td.clone(), dir.to_owned());
    config.bind_address = loopback();
    config.health_address = None;
    config.federation.refresh = RefreshBounds {
        min: Duration::from_millis(200),
        max: Duration::from_secs(2),
        default: Duration::from_secs(1),
    };
    configure(&mut config);
    let running = signet_server::start(config).await.unwrap();
    let admin = AdminClient::new(
        signet_tls::source::unix_channel(running.admin_socket.clone())
            .await
            .unwrap(),
    );
    Server {
        running: Some(running),
        admin,
        dir: dir.to_owned(),
        td,
    }
}

/// A server whose bundle endpoint speaks `https_spiffe` with a 1 s refresh hint.
async fn spiffe_endpoint(td: &str, dir: &std::path::Path) -> Server {
    start(td, dir, |config| {
        config.federation.bundle_endpoint = Some(BundleEndpointConfig {
            address: loopback(),
            tls: EndpointTls::Spiffe,
            refresh_hint: Duration::from_secs(1),
        });
    })
    .await
}

impl Server {
    fn running(&self) -> &RunningServer {
        self.running.as_ref().unwrap()
    }

    fn endpoint_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}/",
            self.running().bundle_endpoint_address.unwrap().port()
        )
    }

    fn bundle_pem(&self) -> Vec<u8> {
        std::fs::read(&self.running().bundle_pem).unwrap()
    }

    async fn federate(
        &self,
        peer_td: &str,
        url: &str,
        profile: &str,
        endpoint_id: &str,
        bundle: Vec<u8>,
    ) -> Result<signet_proto::admin::Federation, tonic::Status> {
        self.admin
            .clone()
            .set_federation(SetFederationRequest {
                trust_domain: peer_td.into(),
                bundle_endpoint_url: url.into(),
                profile: profile.into(),
                endpoint_spiffe_id: endpoint_id.into(),
                trust_domain_bundle: bundle,
                mode: SetMode::Upsert as i32,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn status(&self, peer_td: &str) -> signet_proto::admin::Federation {
        self.admin
            .clone()
            .get_federation(GetFederationRequest {
                trust_domain: peer_td.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until the relationship with `peer_td` satisfies `ready`.
    async fn until(
        &self,
        peer_td: &str,
        what: &str,
        ready: impl Fn(&signet_proto::admin::Federation) -> bool,
    ) -> signet_proto::admin::Federation {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.status(peer_td).await;
            if ready(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn federated_bundle_of(&self, peer: &Server) -> Option<signet_spiffe::Bundle> {
        self.running().federation.bundles().get(&peer.td).cloned()
    }
}

fn fetched(status: &signet_proto::admin::Federation) -> bool {
    status.status.as_ref().is_some_and(|s| s.last_success > 0)
}

fn failed_with(reason: &'static str) -> impl Fn(&signet_proto::admin::Federation) -> bool {
    move |status| {
        status
            .status
            .as_ref()
            .is_some_and(|s| s.error_reason == reason)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_spiffe_federation_follows_the_peer_and_survives_its_outage() {
    let dirs = tempfile::tempdir().unwrap();
    let mut a = spiffe_endpoint("a.example", &dirs.path().join("a")).await;
    let b = start("b.example", &dirs.path().join("b"), |_| {}).await;

    // Bootstrapped from A's bundle obtained out of band, then fetched from A's endpoint.
    b.federate(
        "a.example",
        &a.endpoint_url(),
        "https_spiffe",
        "spiffe://a.example/signet/server",
        a.bundle_pem(),
    )
    .await
    .unwrap();
    let status = b.until("a.example", "the first fetch", fetched).await;
    let held = status.bundle.unwrap();
    let served = a.running().authority.bundle();
    assert_eq!(held.sequence, served.sequence().unwrap());
    assert_eq!(
        b.federated_bundle_of(&a).unwrap().x509_authorities(),
        served.x509_authorities()
    );
    // Never merged into B's own bundle.
    assert_eq!(b.running().authority.bundle().x509_authorities().len(), 1);

    // A prepares a new authority: B follows at the refresh hint.
    let before = served.sequence().unwrap();
    a.running()
        .authority
        .force(signet_ca::AuthorityKind::X509, "prepare")
        .unwrap();
    let grown = a.running().authority.bundle();
    assert!(grown.sequence().unwrap() > before);
    let started = std::time::Instant::now();
    b.until("a.example", "the grown bundle", |s| {
        s.bundle
            .as_ref()
            .is_some_and(|b| b.sequence == grown.sequence().unwrap())
    })
    .await;
    eprintln!(
        "bundle change in A visible in B after {:?}",
        started.elapsed()
    );
    assert_eq!(
        b.federated_bundle_of(&a).unwrap().x509_authorities().len(),
        2
    );

    // A goes down: the last good bundle stays, the status says why refreshing fails.
    let a_dir = a.dir.clone();
    let url = a.endpoint_url();
    a.running.take().unwrap().shutdown();
    b.until(
        "a.example",
        "the outage",
        failed_with("EndpointUnreachable"),
    )
    .await;
    assert_eq!(
        b.federated_bundle_of(&a).unwrap().x509_authorities().len(),
        2
    );

    // B restarts while A is still down: trust in A is kept from SQLite.
    let b_dir = b.dir.clone();
    drop(b);
    let b = start("b.example", &b_dir, |_| {}).await;
    let kept = b.status("a.example").await;
    assert_eq!(kept.bundle_endpoint_url, url);
    assert_eq!(kept.bundle.unwrap().sequence, grown.sequence().unwrap());
    drop(a_dir);

    // Deleting the relationship forgets the bundle.
    b.admin
        .clone()
        .delete_federation(DeleteFederationRequest {
            trust_domain: "a.example".into(),
        })
        .await
        .unwrap();
    assert!(b.running().federation.bundles().is_empty());
    let gone = b
        .admin
        .clone()
        .get_federation(GetFederationRequest {
            trust_domain: "a.example".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_another_spiffe_id_is_not_trusted() {
    let dirs = tempfile::tempdir().unwrap();
    let a = spiffe_endpoint("a.example", &dirs.path().join("a")).await;
    let b = start("b.example", &dirs.path().join("b"), |_| {}).await;
    b.federate(
        "a.example",
        &a.endpoint_url(),
        "https_spiffe",
        "spiffe://a.example/bundle-endpoint",
        a.bundle_pem(),
    )
    .await
    .unwrap();
    let status = b
        .until(
            "a.example",
            "the refusal",
            failed_with("AuthenticationFailed"),
        )
        .await;
    assert!(!fetched(&status), "{status:?}");

    // Another trust domain's bundle cannot authenticate A's endpoint either.
    let c = start("c.example", &dirs.path().join("c"), |_| {}).await;
    b.federate(
        "a.example",
        &a.endpoint_url(),
        "https_spiffe",
        "spiffe://a.example/signet/server",
        c.bundle_pem(),
    )
    .await
    .unwrap();
    b.until(
        "a.example",
        "the refusal",
        failed_with("AuthenticationFailed"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_web_endpoints_are_checked_against_web_roots_and_their_bundle_against_the_trust_domain()
 {
    let dirs = tempfile::tempdir().unwrap();
    // A Web PKI of our own: a root and a certificate for 127.0.0.1.
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root_params, root_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let web = dirs.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(web.join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(web.join("tls.key"), leaf_key.serialize_pem()).unwrap();

    let a = start("a.example", &dirs.path().join("a"), |config| {
        config.federation.bundle_endpoint = Some(BundleEndpointConfig {
            address: loopback(),
            tls: EndpointTls::Web {
                cert_file: web.join("tls.crt"),
                key_file: web.join("tls.key"),
            },
            refresh_hint: Duration::from_secs(1),
        });
    })
    .await;
    let root_der = root.der().clone();
    let b = start("b.example", &dirs.path().join("b"), move |config| {
        config.federation.extra_web_roots = vec![root_der];
    })
    .await;
    b.federate("a.example", &a.endpoint_url(), "https_web", "", Vec::new())
        .await
        .unwrap();
    b.until("a.example", "the first fetch", fetched).await;
    assert!(b.federated_bundle_of(&a).is_some());

    // The same endpoint claimed for another trust domain: its CA names a.example, refused.
    b.federate("z.example", &a.endpoint_url(), "https_web", "", Vec::new())
        .await
        .unwrap();
    let status = b
        .until("z.example", "the refusal", failed_with("BundleInvalid"))
        .await;
    assert!(
        status.status.unwrap().error_message.contains("a.example"),
        "names the trust domain it belongs to"
    );
    assert!(
        b.running()
            .federation
            .bundles()
            .get(&TrustDomain::new("z.example").unwrap())
            .is_none()
    );

    // Without our root, the endpoint is not trusted.
    let c = start("c.example", &dirs.path().join("c"), |_| {}).await;
    c.federate("a.example", &a.endpoint_url(), "https_web", "", Vec::new())
        .await
        .unwrap();
    c.until(
        "a.example",
        "the refusal",
        failed_with("AuthenticationFailed"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationships_are_checked_when_written() {
    let dirs = tempfile::tempdir().unwrap();
    let b = start("b.example", &dirs.path().join("b"), |_| {}).await;
    let refused = |result: Result<_, tonic::Status>| result.unwrap_err().code();
    let pem = b.bundle_pem();
    for (td, url, profile, id, bundle) in [
        ("b.example", "https://x/", "https_web", "", Vec::new()),
        ("a.example", "http://x/", "https_web", "", Vec::new()),
        ("a.example", "https://x/", "https_spiffe", "", Vec::new()),
        (
            "a.example",
            "https://x/",
            "https_spiffe",
            "spiffe://c.example/s",
            pem.clone(),
        ),
        // https_spiffe needs a bundle to start from.
        (
            "a.example",
            "https://x/",
            "https_spiffe",
            "spiffe://a.example/s",
            Vec::new(),
        ),
        (
            "a.example",
            "https://x/",
            "https_web",
            "spiffe://a.example/s",
            Vec::new(),
        ),
        ("a.example", "https://x/", "tls", "", Vec::new()),
        (
            "a.example",
            "https://x/",
            "https_web",
            "",
            b"not a bundle".to_vec(),
        ),
    ] {
        assert_eq!(
            refused(b.federate(td, url, profile, id, bundle).await),
            Code::InvalidArgument,
            "{td} {url} {profile} {id}"
        );
    }
    let create = |td: &str| SetFederationRequest {
        trust_domain: td.into(),
        bundle_endpoint_url: "https://127.0.0.1:1/".into(),
        profile: "https_web".into(),
        endpoint_spiffe_id: String::new(),
        trust_domain_bundle: Vec::new(),
        mode: SetMode::Create as i32,
    };
    let mut admin = b.admin.clone();
    admin.set_federation(create("a.example")).await.unwrap();
    assert_eq!(
        admin
            .set_federation(create("a.example"))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    let mut update = create("q.example");
    update.mode = SetMode::Update as i32;
    assert_eq!(
        admin.set_federation(update).await.unwrap_err().code(),
        Code::NotFound
    );
}
