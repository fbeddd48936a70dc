//! The agent API of a server started in process (standalone, SQLite in a temp dir, a manual
//! clock), driven by agent clients over real mutual TLS: join tokens, signing restricted to the
//! caller's entries, the snapshot in chunks and exact deltas, and a ban ending a stream.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signet_agent::agent_svid;
use signet_ca::ManualClock;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{
    AgentRequest, CreateEntryRequest, CreateJoinTokenRequest, DeleteEntryRequest,
};
use signet_proto::agent::agent_service_client::AgentServiceClient;
use signet_proto::agent::sync_entries_response::Update;
use signet_proto::agent::{
    AttestAgentRequest, Entry, MintJwtSvidRequest, SignX509SvidsRequest, SvidRequest,
    SyncEntriesRequest, SyncEntriesResponse, attest_agent_request::Attestation,
};
use signet_server::{RunningServer, ServerConfig};
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};
use tonic::Code;
use tonic::transport::Channel;

const TD: &str = "example.org";
const WAIT: Duration = Duration::from_secs(5);

struct Server {
    running: Option<RunningServer>,
    clock: Arc<ManualClock>,
    admin: AdminClient<Channel>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
    }
}

/// An attested agent: its ID and a client presenting its SVID.
struct Agent {
    id: String,
    client: AgentServiceClient<Channel>,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let mut config =
            ServerConfig::new(TrustDomain::new(TD).unwrap(), dir.path().join("server"));
        config.bind_address = "127.0.0.1:0".parse().unwrap();
        config.health_address = None;
        config.clock = clock.clone();
        adjust(&mut config);
        let running = signet_server::start(config).await.unwrap();
        let admin = AdminClient::new(unix_channel(running.admin_socket.clone()).await);
        Self {
            running: Some(running),
            clock,
            admin,
            _dir: dir,
        }
    }

    fn running(&self) -> &RunningServer {
        self.running.as_ref().unwrap()
    }

    fn address(&self) -> String {
        self.running().agent_address.to_string()
    }

    fn bootstrap(&self) -> Bundle {
        agent_svid::read_bundle_file(&self.running().bundle_pem, &TrustDomain::new(TD).unwrap())
            .unwrap()
    }

    fn server_id() -> SpiffeId {
        signet_core::server_id(&TrustDomain::new(TD).unwrap()).unwrap()
    }

    async fn token(&self) -> String {
        self.admin
            .clone()
            .create_join_token(CreateJoinTokenRequest { ttl_seconds: 600 })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    async fn attest(
        &self,
        token: &str,
    ) -> Result<agent_svid::PersistedIdentity, signet_agent::AgentError> {
        agent_svid::attest_with_join_token(
            &self.address(),
            self.bootstrap(),
            Self::server_id(),
            token,
        )
        .await
    }

    async fn agent(&self) -> Agent {
        let identity = self.attest(&self.token().await).await.unwrap();
        let client = signet_test_support::agent_client(&self.address(), &identity);
        Agent {
            id: identity.svid.spiffe_id().to_string(),
            client,
        }
    }

    async fn create_entry(&self, path: &str, parent: &str) -> String {
        self.admin
            .clone()
            .create_entry(CreateEntryRequest {
                entry: Some(Entry {
                    spiffe_id: format!("spiffe://{TD}/{path}"),
                    parent_id: parent.to_owned(),
                    selectors: vec!["unix:uid:4242".into()],
                    ..Entry::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .id
    }
}

async fn unix_channel(path: std::path::PathBuf) -> Channel {
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

fn csr_for(path: &str) -> Vec<u8> {
    let id = SpiffeId::new(&format!("spiffe://{TD}/{path}")).unwrap();
    agent_svid::key_and_csr(Some(&id)).unwrap().1
}

async fn next(stream: &mut tonic::Streaming<SyncEntriesResponse>) -> Update {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .update
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cannot_get_svids_for_entries_of_another_agent() {
    let server = Server::start().await;
    let owner = server.agent().await;
    let mut rogue = server.agent().await;
    assert_ne!(rogue.id, owner.id);
    let victim = server.create_entry("victim", &owner.id).await;

    let response = rogue
        .client
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![SvidRequest {
                entry_id: victim.clone(),
                csr: csr_for("victim"),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.results[0].svid_chain.is_empty());
    assert!(!response.results[0].error.is_empty());
    let jwt = rogue
        .client
        .mint_jwt_svid(MintJwtSvidRequest {
            entry_id: victim,
            audience: vec!["x".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(jwt.code(), Code::PermissionDenied);

    // Its own entry, but a CSR that smuggles another ID: refused too.
    let own = server.create_entry("rogue-own", &rogue.id).await;
    let response = rogue
        .client
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![SvidRequest {
                entry_id: own.clone(),
                csr: csr_for("victim"),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        response.results[0].error.contains("CSR"),
        "{}",
        response.results[0].error
    );
    // The honest request for its own entry is signed.
    let response = rogue
        .client
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![SvidRequest {
                entry_id: own,
                csr: csr_for("rogue-own"),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        response.results[0].error.is_empty(),
        "{}",
        response.results[0].error
    );
    assert!(!response.results[0].svid_chain.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn join_tokens_are_single_use_and_expire() {
    let server = Server::start().await;
    let token = server.token().await;
    // A request with an unusable CSR is refused without using the token up.
    let bundles = Arc::new(signet_tls::SharedBundles::new(agent_svid::single(
        server.bootstrap(),
    )));
    let mut raw =
        signet_agent::client::connect(&server.address(), bundles, Server::server_id(), None)
            .unwrap();
    for csr in [b"not a CSR".to_vec(), Vec::new()] {
        let refused = raw
            .attest_agent(AttestAgentRequest {
                attestation: Some(Attestation::JoinToken(token.clone())),
                csr,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    }
    server.attest(&token).await.unwrap();
    let reused = server.attest(&token).await.unwrap_err();
    assert!(reused.to_string().contains("already used"), "{reused}");
    let unknown = server.attest("nope").await.unwrap_err();
    assert!(unknown.to_string().contains("not valid"), "{unknown}");

    // A token is good until its TTL has passed on the server's clock, not a moment longer.
    let short = server
        .admin
        .clone()
        .create_join_token(CreateJoinTokenRequest { ttl_seconds: 60 })
        .await
        .unwrap()
        .into_inner()
        .token;
    server.clock.advance(Duration::from_secs(61));
    let expired = server.attest(&short).await.unwrap_err();
    assert!(expired.to_string().contains("expired"), "{expired}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_comes_in_chunks_and_changes_as_exact_deltas() {
    let server = Server::start().await;
    let mut agent = server.agent().await;
    let other = server.agent().await;
    // One entry more than a message holds.
    let mut ids = Vec::new();
    for i in 0..1_001 {
        ids.push(server.create_entry(&format!("w/{i}"), &agent.id).await);
    }
    server.create_entry("theirs", &other.id).await;
    let mut stream = agent
        .client
        .sync_entries(SyncEntriesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut stream).await, Update::Bundle(_)));
    let mut chunks = Vec::new();
    loop {
        match next(&mut stream).await {
            Update::Snapshot(chunk) => {
                let last = chunk.last;
                chunks.push(chunk);
                if last {
                    break;
                }
            }
            Update::Policies(_) | Update::FederatedBundles(_) => {}
            other => panic!("unexpected before the snapshot's end: {other:?}"),
        }
    }
    assert_eq!(
        chunks.iter().map(|c| c.entries.len()).collect::<Vec<_>>(),
        [1000, 1]
    );
    let mut sent: Vec<String> = chunks
        .iter()
        .flat_map(|c| c.entries.iter().map(|e| e.id.clone()))
        .collect();
    sent.sort();
    ids.sort();
    assert_eq!(sent, ids, "exactly this agent's entries");

    let added = server.create_entry("added", &agent.id).await;
    server.create_entry("not-mine", &other.id).await;
    match next(&mut stream).await {
        Update::Delta(delta) => {
            assert_eq!(delta.upserted.len(), 1);
            assert_eq!(delta.upserted[0].id, added);
            assert!(delta.removed.is_empty());
        }
        other => panic!("expected a delta, got {other:?}"),
    }
    server
        .admin
        .clone()
        .delete_entry(DeleteEntryRequest { id: ids[0].clone() })
        .await
        .unwrap();
    match next(&mut stream).await {
        Update::Delta(delta) => {
            assert!(delta.upserted.is_empty());
            assert_eq!(delta.removed, [ids[0].clone()]);
        }
        other => panic!("expected a delta, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ban_ends_the_stream_and_an_eviction_removes_the_agent() {
    let server = Server::start().await;
    let mut banned = server.agent().await;
    let evicted = server.agent().await;
    let mut stream = banned
        .client
        .sync_entries(SyncEntriesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut stream).await, Update::Bundle(_)));
    server
        .admin
        .clone()
        .ban_agent(AgentRequest {
            spiffe_id: banned.id.clone(),
        })
        .await
        .unwrap();
    // The open stream ends with PermissionDenied; new calls are refused.
    let ended = loop {
        match tokio::time::timeout(WAIT, stream.message()).await.unwrap() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::PermissionDenied);
    let refused = banned
        .client
        .sync_entries(SyncEntriesRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("banned"), "{refused}");

    server
        .admin
        .clone()
        .evict_agent(AgentRequest {
            spiffe_id: evicted.id.clone(),
        })
        .await
        .unwrap();
    let listed = server
        .admin
        .clone()
        .list_agents(signet_proto::admin::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.agents.iter().all(|a| a.spiffe_id != evicted.id));
    let mut evicted_client = evicted.client;
    let refused = evicted_client
        .sync_entries(SyncEntriesRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_changes_that_are_malformed_or_would_break_trust_are_refused() {
    use signet_proto::admin::ListAuthoritiesRequest;
    let server = Server::start().await;
    let mut admin = server.admin.clone();
    let change = |kind: &str, action: &str, id: &str| change(kind, action, id, false);
    let active = admin
        .list_authorities(ListAuthoritiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .authorities
        .into_iter()
        .find(|a| a.kind == "x509" && a.status == "active")
        .unwrap()
        .id;
    for (request, code) in [
        (change("rsa", "prepare", ""), Code::InvalidArgument),
        (change("x509", "rotate", ""), Code::InvalidArgument),
        (change("x509", "taint", ""), Code::InvalidArgument),
        (change("x509", "prepare", &active), Code::InvalidArgument),
        // The active authority can be neither tainted nor revoked.
        (change("x509", "taint", &active), Code::FailedPrecondition),
        (change("x509", "revoke", &active), Code::FailedPrecondition),
        (
            change("jwt", "revoke", "no-such-key"),
            Code::FailedPrecondition,
        ),
    ] {
        let refused = admin.change_authority(request.clone()).await.unwrap_err();
        assert_eq!(refused.code(), code, "{request:?}: {refused}");
    }
    // Nothing changed.
    let after = admin
        .list_authorities(ListAuthoritiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .authorities;
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|a| a.status == "active" && !a.tainted));
}

fn change(
    kind: &str,
    action: &str,
    id: &str,
    force: bool,
) -> signet_proto::admin::ChangeAuthorityRequest {
    signet_proto::admin::ChangeAuthorityRequest {
        kind: kind.into(),
        action: action.into(),
        id: id.into(),
        force,
    }
}

/// Rotates the `kind` authority and taints the one that was active; returns its id.
async fn rotate_and_taint(admin: &mut AdminClient<Channel>, kind: &str) -> String {
    let old = admin
        .list_authorities(signet_proto::admin::ListAuthoritiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .authorities
        .into_iter()
        .find(|a| a.kind == kind && a.status == "active")
        .unwrap()
        .id;
    for action in ["prepare", "activate"] {
        admin
            .change_authority(change(kind, action, "", false))
            .await
            .unwrap();
    }
    admin
        .change_authority(change(kind, "taint", &old, false))
        .await
        .unwrap();
    old
}

fn uses(pairs: &[(&str, u32)]) -> Vec<signet_proto::agent::AuthorityUse> {
    pairs
        .iter()
        .map(|(id, svids)| signet_proto::agent::AuthorityUse {
            authority_id: (*id).to_owned(),
            svids: *svids,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_waits_for_the_agents_to_hold_no_svid_of_the_authority_unless_forced() {
    use signet_proto::admin::ListAuthoritiesRequest;
    use signet_proto::agent::ReportSvidsRequest;
    let server = Server::start().await;
    let mut admin = server.admin.clone();
    let list = |mut admin: AdminClient<Channel>| async move {
        admin
            .list_authorities(ListAuthoritiesRequest {})
            .await
            .unwrap()
            .into_inner()
    };
    let change = |action: &str, id: &str, force: bool| change("x509", action, id, force);
    let old = rotate_and_taint(&mut admin, "x509").await;

    let mut a = server.agent().await;
    let mut b = server.agent().await;
    a.client
        .report_svids(ReportSvidsRequest {
            x509: uses(&[(&old, 3)]),
            jwt: Vec::new(),
        })
        .await
        .unwrap();
    b.client
        .report_svids(ReportSvidsRequest {
            x509: uses(&[(&old, 1)]),
            jwt: Vec::new(),
        })
        .await
        .unwrap();
    let listed = list(admin.clone()).await;
    assert_eq!(listed.reporting_agents, 2);
    let counted = listed.authorities.iter().find(|x| x.id == old).unwrap();
    assert_eq!((counted.svids, counted.agents), (4, 2));

    let refused = admin
        .change_authority(change("revoke", &old, false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("4 live SVIDs on 2 agents"),
        "{refused}"
    );
    assert!(refused.message().contains("--force"), "{refused}");
    let refused = admin
        .change_authority(change("prepare", "", true))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "only revoke is forced"
    );

    // Agent a re-signed everything; b went silent: its report ages out after 150 s.
    a.client
        .report_svids(ReportSvidsRequest::default())
        .await
        .unwrap();
    assert!(
        admin
            .change_authority(change("revoke", &old, false))
            .await
            .is_err()
    );
    server.clock.advance(Duration::from_secs(151));
    admin
        .change_authority(change("revoke", &old, false))
        .await
        .unwrap();
    assert!(
        list(admin.clone())
            .await
            .authorities
            .iter()
            .all(|x| x.id != old)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forced_revoke_goes_through_and_hostile_reports_are_refused() {
    use signet_proto::agent::ReportSvidsRequest;
    let server = Server::start().await;
    let mut admin = server.admin.clone();
    let change = |action: &str, id: &str, force: bool| change("jwt", action, id, force);
    let old = rotate_and_taint(&mut admin, "jwt").await;
    let mut agent = server.agent().await;

    let too_many: Vec<(String, u32)> = (0..65).map(|i| (format!("k{i}"), 1)).collect();
    let too_many: Vec<(&str, u32)> = too_many.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    let long = "a".repeat(129);
    for hostile in [
        ReportSvidsRequest {
            x509: uses(&too_many),
            jwt: Vec::new(),
        },
        ReportSvidsRequest {
            x509: Vec::new(),
            jwt: uses(&[("", 1)]),
        },
        ReportSvidsRequest {
            x509: uses(&[(long.as_str(), 1)]),
            jwt: Vec::new(),
        },
        ReportSvidsRequest {
            x509: uses(&[("line\nbreak", 1)]),
            jwt: Vec::new(),
        },
    ] {
        let refused = agent.client.report_svids(hostile).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
    agent
        .client
        .report_svids(ReportSvidsRequest {
            x509: Vec::new(),
            jwt: uses(&[(&old, u32::MAX), (&old, 5)]),
        })
        .await
        .unwrap();
    assert!(
        admin
            .change_authority(change("revoke", &old, false))
            .await
            .is_err()
    );
    let after = admin
        .change_authority(change("revoke", &old, true))
        .await
        .unwrap()
        .into_inner();
    assert!(after.authorities.iter().all(|a| a.id != old));

    // Only an attested agent reports.
    let mut stranger = AgentServiceClient::new(
        Channel::from_shared(format!("http://{}", server.address()))
            .unwrap()
            .connect_lazy(),
    );
    assert!(
        stranger
            .report_svids(ReportSvidsRequest::default())
            .await
            .is_err()
    );
}

/// A join-token agent whose SVID expired while the server was down re-attests with a proof made
/// with the SVID's key; hostile or stale proofs, a foreign SVID, an SVID past the grace window
/// and evicted or banned agents are refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_agent_svid_re_attests_within_the_grace_window_only() {
    use signet_ca::Clock;
    use signet_proto::agent::{ExpiredSvidProof, attest_agent_request::Attestation};
    let server = Server::start().await;
    let identity = server.attest(&server.token().await).await.unwrap();
    let expired_by = |secs: u64| identity.svid.not_after() + Duration::from_secs(secs);
    // The server's clock: 1 h past the SVID's expiry.
    server.clock.set(expired_by(3600));
    let now = |server: &Server| {
        i64::try_from(
            server
                .clock
                .now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    };
    let proof = |svid: &signet_spiffe::X509Svid, signed_at: i64, csr: &[u8]| {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, svid.private_key_pkcs8())
                .unwrap();
        let signature = key
            .sign(
                &aws_lc_rs::rand::SystemRandom::new(),
                &signet_core::reattest::message(signed_at, csr),
            )
            .unwrap();
        ExpiredSvidProof {
            svid_chain: svid.chain_der(),
            signed_at,
            signature: signature.as_ref().to_vec(),
        }
    };
    let attest = |proof: ExpiredSvidProof, csr: Vec<u8>| {
        let address = server.address();
        let bootstrap = server.bootstrap();
        async move {
            let bundles = Arc::new(signet_tls::SharedBundles::new(agent_svid::single(
                bootstrap,
            )));
            let mut client =
                signet_agent::client::connect(&address, bundles, Server::server_id(), None)
                    .unwrap();
            client
                .attest_agent(AttestAgentRequest {
                    attestation: Some(Attestation::ExpiredSvid(proof)),
                    csr,
                })
                .await
        }
    };
    let id = identity.svid.spiffe_id().clone();
    let csr = || signet_ca::csr::new_key_and_csr(Some(&id)).unwrap().1;

    // Hostile proofs first.
    let c = csr();
    let mut forged = proof(&identity.svid, now(&server), &c);
    forged.signature[10] ^= 1;
    let refused = attest(forged, c.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    let other_csr = csr();
    let refused = attest(proof(&identity.svid, now(&server), &c), other_csr)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "a proof signs one CSR: {refused}"
    );
    let refused = attest(proof(&identity.svid, now(&server) - 3600, &c), c.clone())
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("clock skew or replay"),
        "{refused}"
    );
    let foreign = signet_test_support::TestCa::new(TD);
    let (leaf, key) = foreign.issue(&signet_test_support::LeafSpec::svid(&id.to_string()));
    let foreign_svid = signet_spiffe::X509Svid::parse(&leaf, &key).unwrap();
    let refused = attest(proof(&foreign_svid, now(&server), &c), c.clone())
        .await
        .unwrap_err();
    assert!(refused.message().contains("not one of ours"), "{refused}");

    // The real proof: a new SVID for the same agent.
    let c = csr();
    let renewed = attest(proof(&identity.svid, now(&server), &c), c)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.spiffe_id, id.to_string());

    // Past the grace window (7 days by default): a new join token is needed.
    server.clock.set(expired_by(8 * 24 * 3600));
    let c = csr();
    let refused = attest(proof(&identity.svid, now(&server), &c), c)
        .await
        .unwrap_err();
    assert!(refused.message().contains("new join token"), "{refused}");

    // Within the window but evicted: refused.
    server.clock.set(expired_by(60));
    server
        .admin
        .clone()
        .evict_agent(AgentRequest {
            spiffe_id: id.to_string(),
        })
        .await
        .unwrap();
    let c = csr();
    let refused = attest(proof(&identity.svid, now(&server), &c), c)
        .await
        .unwrap_err();
    assert!(refused.message().contains("evicted"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_over_its_signing_budget_is_told_when_to_come_back_and_others_are_not_slowed() {
    let server = Server::start_with(|config| {
        config.admission.agent_sign_rate = 5.0;
        config.admission.agent_sign_burst = 10.0;
        config.health_address = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut greedy = server.agent().await;
    let mut other = server.agent().await;
    let mut entries = Vec::new();
    for n in 0..12 {
        entries.push(server.create_entry(&format!("g{n}"), &greedy.id).await);
    }
    let other_entry = server.create_entry("o", &other.id).await;
    let batch = |ids: &[String], prefix: &str| SignX509SvidsRequest {
        requests: ids
            .iter()
            .enumerate()
            .map(|(n, id)| SvidRequest {
                entry_id: id.clone(),
                csr: csr_for(&format!("{prefix}{n}")),
            })
            .collect(),
    };
    let signed = greedy
        .client
        .sign_x509_svids(batch(&entries[..10], "g"))
        .await
        .unwrap()
        .into_inner();
    assert!(signed.results.iter().all(|r| r.error.is_empty()));
    // The burst is spent: two more are refused with a pushback of about 2 / 5 s (+ jitter).
    let refused = greedy
        .client
        .sign_x509_svids(batch(&entries[..2], "g"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let wait = signet_proto::pushback::pushback_of(&refused).unwrap();
    assert!(
        (Duration::from_millis(300)..=Duration::from_millis(700)).contains(&wait),
        "{wait:?}"
    );
    let jwt = greedy
        .client
        .mint_jwt_svid(MintJwtSvidRequest {
            entry_id: entries[0].clone(),
            audience: vec!["x".into()],
        })
        .await;
    assert_eq!(
        jwt.unwrap_err().code(),
        Code::ResourceExhausted,
        "JWT-SVIDs draw on the same budget"
    );
    // The other agent has its own budget.
    let signed = other
        .client
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![SvidRequest {
                entry_id: other_entry,
                csr: csr_for("o"),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(signed.results[0].error.is_empty());
    // Having waited as told, the greedy agent is served again.
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    let signed = greedy
        .client
        .sign_x509_svids(batch(&entries[10..12], "g1"))
        .await;
    assert!(signed.is_ok(), "{signed:?}");
    let port = server.running().health_address.unwrap().port();
    let metrics = tokio::task::spawn_blocking(move || {
        signet_test_support::apps::http_request(port, "GET", "/metrics").1
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("signet_server_admission_refusals_total{call=\"sign_x509_svids\",reason=\"agent_sign_rate\"} 1"),
        "{metrics}"
    );
}

fn metric(port: u16, line_prefix: &str) -> f64 {
    let (_, text) = signet_test_support::apps::http_request(port, "GET", "/metrics");
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn svids_that_arrive_expired_are_refused_and_asked_for_again_with_backoff() {
    let server = Server::start_with(|config| {
        config.health_address = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let agent = signet_agent::start(signet_agent::AgentConfig {
        trust_domain: TrustDomain::new(TD).unwrap(),
        server_address: server.address(),
        trust_bundle_path: server.running().bundle_pem.clone(),
        join_token: Some(server.token().await),
        kubernetes: None,
        data_dir: dir.path().join("agent"),
        workload: signet_agent::WorkloadEndpoint::new(dir.path().join("api.sock")),
        unix_attestor: signet_agent::UnixAttestorConfig::default(),
        health_address: None,
        taint_resign_window: signet_agent::DEFAULT_TAINT_RESIGN_WINDOW,
        availability_target: Duration::ZERO,
        persist_svids: false,
    })
    .await
    .unwrap();
    // The server's clock goes 10 minutes behind ours: a 60 s SVID it signs expired 9 minutes
    // before it arrives.
    server
        .clock
        .set(SystemTime::now() - Duration::from_secs(600));
    server
        .admin
        .clone()
        .create_entry(CreateEntryRequest {
            entry: Some(Entry {
                spiffe_id: format!("spiffe://{TD}/skewed"),
                parent_id: agent.agent_id.to_string(),
                selectors: vec!["unix:uid:4242".into()],
                x509_svid_ttl_seconds: 60,
                ..Entry::default()
            }),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(agent.cache.counts(), (1, 0), "an expired SVID was stored");
    let port = server.running().health_address.unwrap().port();
    let signed = tokio::task::spawn_blocking(move || {
        metric(port, "signet_server_svids_signed_total{kind=\"x509\"}")
    })
    .await
    .unwrap();
    // Backoff from 200 ms: a handful of attempts in 4 s, not a hot loop.
    assert!((1.0..=12.0).contains(&signed), "{signed} signing attempts");
    // With the server's clock right again, the next attempt brings a usable SVID.
    server.clock.set(SystemTime::now());
    signet_test_support::wait_for("a usable SVID", Duration::from_secs(15), || {
        agent.cache.counts() == (1, 1)
    });
    agent.shutdown();
}
