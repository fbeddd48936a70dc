//! Envoy SDS v3 on the agent's Workload API socket, driven by an xDS client built from the
//! `envoy-types` protos (what Envoy itself speaks): the initial subscription, ACK, a rotation
//! pushed, NACK and stale nonces handled per the xDS protocol, a changed subscription answered at
//! once, FetchSecrets, unknown names, DeltaSecrets and an unattested caller. No
//! `workload.spiffe.io` header is sent, as Envoy sends none.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Deployment, TD, my_uid, wait_for};
use envoy_types::pb::envoy::config::core::v3::{DataSource, Node, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, SpiffeCertValidatorConfig, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

async fn client(d: &Deployment) -> SecretDiscoveryServiceClient<Channel> {
    SecretDiscoveryServiceClient::new(signet_tls::source::unix_channel(d.socket()).await.unwrap())
}

fn request(names: &[&str], last: Option<&DiscoveryResponse>, nack: bool) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: last.map(|r| r.version_info.clone()).unwrap_or_default(),
        node: Some(Node {
            id: "envoy-test".into(),
            cluster: "test".into(),
            ..Node::default()
        }),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        type_url: SECRET_TYPE.into(),
        response_nonce: last.map(|r| r.nonce.clone()).unwrap_or_default(),
        error_detail: nack.then(|| RpcStatus {
            code: 3,
            message: "rejected by the test".into(),
            ..RpcStatus::default()
        }),
        ..DiscoveryRequest::default()
    }
}

fn secrets(response: &DiscoveryResponse) -> Vec<Secret> {
    assert_eq!(response.type_url, SECRET_TYPE);
    response
        .resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, SECRET_TYPE);
            Secret::decode(any.value.as_slice()).unwrap()
        })
        .collect()
}

fn inline(source: Option<&DataSource>) -> Vec<u8> {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(bytes)) => bytes.clone(),
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// The DER blocks of a PEM text.
fn pem_blocks(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8(pem.to_vec()).unwrap();
    let mut blocks = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            inside = true;
            body.clear();
        } else if line.starts_with("-----END") {
            inside = false;
            blocks.push(
                base64::engine::general_purpose::STANDARD
                    .decode(&body)
                    .unwrap(),
            );
        } else if inside {
            body.push_str(line.trim());
        }
    }
    blocks
}

/// The SVID of a `tls_certificate` secret, checked: the chain parses as an X509-SVID, the key is
/// the leaf's.
fn svid_of(secret: &Secret) -> signet_spiffe::X509Svid {
    let Some(secret::Type::TlsCertificate(certificate)) = &secret.r#type else {
        panic!("{} is not a tls_certificate", secret.name);
    };
    let chain: Vec<u8> = pem_blocks(&inline(certificate.certificate_chain.as_ref())).concat();
    let key = pem_blocks(&inline(certificate.private_key.as_ref())).remove(0);
    signet_spiffe::X509Svid::parse(&chain, &key).unwrap()
}

async fn next(
    responses: &mut tonic::Streaming<DiscoveryResponse>,
    within: Duration,
) -> Option<DiscoveryResponse> {
    tokio::time::timeout(within, responses.message())
        .await
        .ok()
        .map(|r| r.expect("the stream failed").expect("the stream ended"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_secrets_follows_the_xds_protocol_and_pushes_rotations() {
    let d = Deployment::start();
    let id = format!("spiffe://{TD}/envoy");
    d.create_entry(
        &id,
        &format!("unix:uid:{}", my_uid()),
        &["--x509-svid-ttl", "8s"],
    );
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    let mut sds = client(&d).await;
    let (tx, rx) = mpsc::channel(8);
    let names = [
        "default",
        "ROOTCA",
        "ALL",
        id.as_str(),
        "spiffe://example.org",
    ];
    // As Envoy reconnecting: the first request carries the previous stream's version and nonce.
    let mut first_request = request(&names, None, false);
    first_request.version_info = "7".into();
    first_request.response_nonce = "7".into();
    tx.send(first_request).await.unwrap();
    let mut responses = sds
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    // The initial subscription: every name, in the order asked.
    let first = next(&mut responses, Duration::from_secs(10))
        .await
        .expect("a first response");
    let got = secrets(&first);
    let got_names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(got_names, names);
    let svid = svid_of(&got[0]);
    assert_eq!(svid.spiffe_id().as_str(), id);
    assert_eq!(svid_of(&got[3]).spiffe_id().as_str(), id);
    let bundle_pem = std::fs::read(d.server_dir().join("bundle.pem")).unwrap();
    for validation in [&got[1], &got[4]] {
        let Some(secret::Type::ValidationContext(context)) = &validation.r#type else {
            panic!("{} is not a validation context", validation.name);
        };
        assert_eq!(
            pem_blocks(&inline(context.trusted_ca.as_ref())),
            pem_blocks(&bundle_pem),
            "{}",
            validation.name
        );
    }
    let Some(secret::Type::ValidationContext(all)) = &got[2].r#type else {
        panic!("ALL is not a validation context");
    };
    let validator = all
        .custom_validator_config
        .as_ref()
        .expect("the SPIFFE validator");
    assert_eq!(validator.name, "envoy.tls.cert_validator.spiffe");
    let config = SpiffeCertValidatorConfig::decode(
        validator.typed_config.as_ref().unwrap().value.as_slice(),
    )
    .unwrap();
    assert_eq!(config.trust_domains.len(), 1);
    assert_eq!(config.trust_domains[0].name, TD);
    assert_eq!(
        pem_blocks(&inline(config.trust_domains[0].trust_bundle.as_ref())),
        pem_blocks(&bundle_pem)
    );

    // ACK: nothing is sent again.
    tx.send(request(&names, Some(&first), false)).await.unwrap();
    assert!(
        next(&mut responses, Duration::from_millis(800))
            .await
            .is_none()
    );

    // The SVID rotates at half its 8 s lifetime: pushed with a new version.
    let rotated = next(&mut responses, Duration::from_secs(15))
        .await
        .expect("a rotation push");
    assert_ne!(rotated.version_info, first.version_info);
    assert_ne!(rotated.nonce, first.nonce);
    let new_svid = svid_of(&secrets(&rotated)[0]);
    assert_ne!(new_svid.chain(), svid.chain(), "a new certificate");

    // NACK: logged, not resent; the stream lives on and the next rotation still arrives.
    tx.send(request(&names, Some(&rotated), true))
        .await
        .unwrap();
    assert!(
        next(&mut responses, Duration::from_millis(800))
            .await
            .is_none()
    );
    // A request answering an older response (stale nonce) is ignored.
    tx.send(request(&["ROOTCA"], Some(&first), false))
        .await
        .unwrap();
    assert!(
        next(&mut responses, Duration::from_millis(500))
            .await
            .is_none()
    );
    let again = next(&mut responses, Duration::from_secs(15))
        .await
        .expect("the next rotation after a NACK");

    // A changed subscription is answered at once, with just what it names.
    tx.send(request(&["ROOTCA"], Some(&again), false))
        .await
        .unwrap();
    let narrowed = next(&mut responses, Duration::from_secs(2))
        .await
        .expect("an answer to the new subscription");
    let narrowed = secrets(&narrowed);
    assert_eq!(narrowed.len(), 1);
    assert_eq!(narrowed[0].name, "ROOTCA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_secrets_and_refusals() {
    let d = Deployment::start();
    let mut sds = client(&d).await;
    // No entry for this process yet: an unattested caller gets nothing.
    let refused = sds
        .fetch_secrets(request(&["default"], None, false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let id = format!("spiffe://{TD}/fetch");
    d.create_entry(&id, &format!("unix:uid:{}", my_uid()), &[]);
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    let fetched = sds
        .fetch_secrets(request(&["default"], None, false))
        .await
        .unwrap()
        .into_inner();
    let got = secrets(&fetched);
    assert_eq!(got.len(), 1);
    assert_eq!(svid_of(&got[0]).spiffe_id().as_str(), id);

    // No names: everything the caller may have.
    let everything = secrets(
        &sds.fetch_secrets(request(&[], None, false))
            .await
            .unwrap()
            .into_inner(),
    );
    let names: Vec<&str> = everything.iter().map(|s| s.name.as_str()).collect();
    for wanted in [
        "default",
        "ROOTCA",
        "ALL",
        id.as_str(),
        "spiffe://example.org",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }

    // Another workload's identity, or a name that does not exist, is refused.
    for unknown in ["spiffe://example.org/someone-else", "nonsense"] {
        let refused = sds
            .fetch_secrets(request(&["default", unknown], None, false))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{unknown}");
        assert!(refused.message().contains(unknown), "{}", refused.message());
    }
    // Another resource type is refused.
    let mut wrong_type = request(&["default"], None, false);
    wrong_type.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    assert_eq!(
        sds.fetch_secrets(wrong_type).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    // DeltaSecrets is not implemented (documented).
    let (_tx, rx) = mpsc::channel(1);
    let delta = sds
        .delta_secrets(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(delta.code(), tonic::Code::Unimplemented);
}
