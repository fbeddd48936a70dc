//! The Workload API served in process over a temporary socket, from a source filled by hand
//! (SVIDs minted by an in-memory CA, JWT-SVIDs by a fake minter): the security header,
//! PermissionDenied, waiting for a pending SVID, pushes on rotation and bundle change, entry
//! removal ending a stream, and JWT-SVIDs minted once, cached and validated.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use signet_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, WitsvidRequest, X509BundlesRequest,
    X509svidRequest,
};
use signet_spiffe::SpiffeId;
use signet_test_support::workload_api::{FakeWorkloadApi, SigningCa, TD, entry_for_uid, my_uid};
use tonic::{Code, Request};

fn mine(name: &str) -> signet_core::RegistrationEntry {
    entry_for_uid(name, my_uid())
}

fn start() -> FakeWorkloadApi {
    FakeWorkloadApi::start(SigningCa::new())
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
    let harness = start();
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
    let harness = start();
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
    assert_eq!(harness.ca.jwts_minted(), 0);
}

#[tokio::test]
async fn a_caller_waits_for_the_svid_of_its_new_entry() {
    let harness = start();
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
    harness.cache.store_svid(&entry.id, harness.ca.svid(&entry));
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
    let harness = start();
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
    harness.cache.store_svid(&entry.id, harness.ca.svid(&entry));
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
    let harness = start();
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
        harness.ca.bundle().to_der_concat()
    );
    assert!(first_jwt.bundles.contains_key(&key));

    // The bundle gains a second X.509 authority (a prepared CA).
    let other = SigningCa::new().bundle();
    let mut grown = harness.ca.bundle();
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
    let harness = start();
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
    assert_eq!(harness.ca.jwts_minted(), 1);

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
    let forged = SigningCa::new().jwt(
        &SpiffeId::new(&format!("spiffe://{TD}/api")).unwrap(),
        &["db".to_owned()],
    );
    let refused = client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: forged,
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}
