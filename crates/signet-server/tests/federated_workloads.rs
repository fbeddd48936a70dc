//! Workloads of two federated trust domains authenticate each other: two servers and two agents
//! started in process, each workload's SVID and bundles taken from its own agent's Workload API
//! by `signet-tls`, mutual TLS over loopback in both directions; ending the relationship ends
//! it for new handshakes.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use signet_agent::{AgentConfig, UnixAttestorConfig, WorkloadEndpoint};
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{
    CreateEntryRequest, CreateJoinTokenRequest, DeleteFederationRequest, SetFederationRequest,
    SetMode,
};
use signet_proto::agent::Entry;
use signet_server::federation::RefreshBounds;
use signet_server::federation::endpoint::{BundleEndpointConfig, EndpointTls};
use signet_server::{RunningServer, ServerConfig};
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_tls::config::{ClientAuth, any_authenticated, client_config, server_config};
use signet_tls::source::{SourceOptions, WorkloadSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(15);

/// A trust domain: its server, its agent and one workload identity for this process.
struct Domain {
    server: RunningServer,
    agent: signet_agent::RunningAgent,
    admin: AdminClient<Channel>,
    td: TrustDomain,
}

async fn domain(name: &str, federates_with: &str, dir: &std::path::Path) -> Domain {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let td = TrustDomain::new(name).unwrap();
    let mut config = ServerConfig::new(td.clone(), dir.join("server"));
    config.bind_address = "127.0.0.1:0".parse().unwrap();
    config.health_address = None;
    config.federation.bundle_endpoint = Some(BundleEndpointConfig {
        address: "127.0.0.1:0".parse().unwrap(),
        tls: EndpointTls::Spiffe,
        refresh_hint: Duration::from_secs(1),
    });
    config.federation.refresh = RefreshBounds {
        min: Duration::from_millis(200),
        max: Duration::from_secs(2),
        default: Duration::from_secs(1),
    };
    let server = signet_server::start(config).await.unwrap();
    let mut admin = AdminClient::new(
        signet_tls::source::unix_channel(server.admin_socket.clone())
            .await
            .unwrap(),
    );
    let token = admin
        .create_join_token(CreateJoinTokenRequest { ttl_seconds: 600 })
        .await
        .unwrap()
        .into_inner()
        .token;
    let agent = signet_agent::start(AgentConfig {
        trust_domain: td.clone(),
        server_address: server.agent_address.to_string(),
        trust_bundle_path: server.bundle_pem.clone(),
        join_token: Some(token),
        kubernetes: None,
        data_dir: dir.join("agent"),
        workload: WorkloadEndpoint::new(dir.join("sockets").join("api.sock")),
        unix_attestor: UnixAttestorConfig::default(),
        health_address: None,
        taint_resign_window: signet_agent::DEFAULT_TAINT_RESIGN_WINDOW,
        availability_target: std::time::Duration::ZERO,
        persist_svids: false,
    })
    .await
    .unwrap();
    let uid = rustix::process::getuid().as_raw();
    admin
        .create_entry(CreateEntryRequest {
            entry: Some(Entry {
                spiffe_id: format!("spiffe://{name}/workload"),
                parent_id: agent.agent_id.to_string(),
                selectors: vec![format!("unix:uid:{uid}")],
                federates_with: vec![federates_with.to_owned()],
                ..Entry::default()
            }),
        })
        .await
        .unwrap();
    Domain {
        server,
        agent,
        admin,
        td,
    }
}

impl Domain {
    async fn federate_with(&self, peer: &Domain) {
        self.admin
            .clone()
            .set_federation(SetFederationRequest {
                trust_domain: peer.td.to_string(),
                bundle_endpoint_url: format!(
                    "https://127.0.0.1:{}/",
                    peer.server.bundle_endpoint_address.unwrap().port()
                ),
                profile: "https_spiffe".into(),
                endpoint_spiffe_id: format!("spiffe://{}/signet/server", peer.td),
                trust_domain_bundle: std::fs::read(&peer.server.bundle_pem).unwrap(),
                mode: SetMode::Upsert as i32,
            })
            .await
            .unwrap();
    }

    async fn source(&self) -> WorkloadSource {
        let mut options = SourceOptions::new(self.agent.socket_path.clone());
        options.watch_policy = false;
        WorkloadSource::start(options).await.unwrap()
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn trusts(source: &WorkloadSource, td: &TrustDomain) -> bool {
    signet_tls::BundleSource::bundles(source.bundles().as_ref())
        .get(td)
        .is_some()
}

/// One mutual-TLS exchange from `client` to `server`; the IDs each side saw, or the error.
async fn handshake(
    client: &WorkloadSource,
    server: &WorkloadSource,
    server_id: &str,
) -> Result<(SpiffeId, SpiffeId), String> {
    let server_config = server_config(
        server.svid(),
        server.bundles(),
        any_authenticated(),
        ClientAuth::Required,
        &[],
    )
    .unwrap();
    let expected = SpiffeId::new(server_id).unwrap();
    let client_config = client_config(
        client.svid(),
        client.bundles(),
        Arc::new(move |id: &SpiffeId| *id == expected),
        &[],
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = signet_tls::peer_id(tls.get_ref().1.peer_certificates().unwrap_or_default())
            .ok_or("no client ID")?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let outcome = async {
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let server_seen =
            signet_tls::peer_id(tls.get_ref().1.peer_certificates().unwrap_or_default())
                .ok_or("no server ID")?;
        let mut greeting = Vec::new();
        tls.read_to_end(&mut greeting)
            .await
            .map_err(|e| e.to_string())?;
        if greeting != b"hello" {
            return Err(format!("server said {greeting:?}"));
        }
        Ok(server_seen)
    }
    .await;
    let server_side = served.await.unwrap();
    Ok((outcome?, server_side?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_of_federated_trust_domains_complete_mutual_tls_until_the_relationship_ends() {
    let dir = tempfile::tempdir().unwrap();
    let a = domain("a.example", "b.example", &dir.path().join("a")).await;
    let b = domain("b.example", "a.example", &dir.path().join("b")).await;
    a.federate_with(&b).await;
    b.federate_with(&a).await;
    let in_a = a.source().await;
    let in_b = b.source().await;
    until("A's workload to trust b.example", || trusts(&in_a, &b.td)).await;
    until("B's workload to trust a.example", || trusts(&in_b, &a.td)).await;

    let (server_seen, client_seen) = handshake(&in_a, &in_b, "spiffe://b.example/workload")
        .await
        .unwrap();
    assert_eq!(server_seen.as_str(), "spiffe://b.example/workload");
    assert_eq!(client_seen.as_str(), "spiffe://a.example/workload");
    let (server_seen, client_seen) = handshake(&in_b, &in_a, "spiffe://a.example/workload")
        .await
        .unwrap();
    assert_eq!(server_seen.as_str(), "spiffe://a.example/workload");
    assert_eq!(client_seen.as_str(), "spiffe://b.example/workload");

    // B ends the relationship: its workloads stop trusting A's, new handshakes fail.
    b.admin
        .clone()
        .delete_federation(DeleteFederationRequest {
            trust_domain: "a.example".into(),
        })
        .await
        .unwrap();
    until("B's workload to forget a.example", || !trusts(&in_b, &a.td)).await;
    assert!(
        handshake(&in_a, &in_b, "spiffe://b.example/workload")
            .await
            .is_err()
    );
    assert!(
        handshake(&in_b, &in_a, "spiffe://a.example/workload")
            .await
            .is_err()
    );
}
