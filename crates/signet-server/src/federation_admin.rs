//! The admin API's federation calls (standalone mode): relationships created, updated, listed and
//! deleted live.

use std::time::SystemTime;

use signet_core::federation::{BundleEndpointUrl, EndpointProfile, FederationRelationship};
use signet_proto::admin as pb;
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};
use tonic::Status;

use crate::federation::{Federation, RelationshipView};
use crate::sync_session::bundle_message;

fn unix(t: Option<SystemTime>) -> i64 {
    t.map_or(0, crate::unix_seconds)
}

/// A relationship as the admin API reports it.
pub(crate) fn message(view: &RelationshipView) -> pb::Federation {
    let relationship = &view.relationship;
    let (error_reason, error_message) = view.status.last_error.clone().unwrap_or_default();
    pb::Federation {
        trust_domain: relationship.trust_domain.to_string(),
        bundle_endpoint_url: relationship.bundle_endpoint_url.to_string(),
        profile: relationship.profile.name().to_owned(),
        endpoint_spiffe_id: match &relationship.profile {
            EndpointProfile::HttpsWeb => String::new(),
            EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => endpoint_spiffe_id.to_string(),
        },
        status: Some(pb::FederationStatus {
            last_success: unix(view.status.last_success),
            error_reason,
            error_message,
            next_refresh: unix(view.status.next_refresh),
        }),
        bundle: view.bundle.as_ref().map(bundle_message),
    }
}

fn trust_domain(name: &str) -> Result<TrustDomain, Status> {
    TrustDomain::new(name)
        .map_err(|e| Status::invalid_argument(format!("trust domain {name:?}: {e}")))
}

/// The relationship and starting bundle a request describes.
pub(crate) fn relationship_of(
    local: &TrustDomain,
    request: &pb::SetFederationRequest,
) -> Result<(FederationRelationship, Option<Bundle>), Status> {
    let federated = trust_domain(&request.trust_domain)?;
    let url = BundleEndpointUrl::parse(&request.bundle_endpoint_url)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let profile = match request.profile.as_str() {
        "https_web" => {
            if !request.endpoint_spiffe_id.is_empty() {
                return Err(Status::invalid_argument(
                    "an endpoint SPIFFE ID is for the https_spiffe profile; https_web endpoints are authenticated by their Web PKI certificate",
                ));
            }
            EndpointProfile::HttpsWeb
        }
        "https_spiffe" => {
            if request.endpoint_spiffe_id.is_empty() {
                return Err(Status::invalid_argument(
                    "the https_spiffe profile needs the endpoint's SPIFFE ID",
                ));
            }
            EndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: SpiffeId::new(&request.endpoint_spiffe_id).map_err(|e| {
                    Status::invalid_argument(format!(
                        "endpoint SPIFFE ID {:?}: {e}",
                        request.endpoint_spiffe_id
                    ))
                })?,
            }
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown profile {other:?}: use https_web or https_spiffe"
            )));
        }
    };
    let relationship = FederationRelationship::new(local, federated.clone(), url, profile)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let bundle = if request.trust_domain_bundle.is_empty() {
        None
    } else {
        let bundle = Bundle::from_json_or_pem(federated, &request.trust_domain_bundle)
            .map_err(|e| Status::invalid_argument(format!("trust domain bundle: {e}")))?;
        if bundle.x509_authorities().is_empty() {
            return Err(Status::invalid_argument(
                "trust domain bundle: it holds no X.509 authority",
            ));
        }
        Some(bundle)
    };
    Ok((relationship, bundle))
}

/// `SetFederation`.
pub(crate) async fn set(
    kubernetes: bool,
    federation: &std::sync::Arc<Federation>,
    request: pb::SetFederationRequest,
) -> Result<pb::Federation, Status> {
    if kubernetes {
        return Err(Status::failed_precondition(
            "in Kubernetes mode federation relationships are ClusterFederatedTrustDomain resources: use kubectl",
        ));
    }
    let (relationship, bundle) = relationship_of(federation.local(), &request)?;
    let existing = federation.get(&relationship.trust_domain);
    match (pb::SetMode::try_from(request.mode), &existing) {
        (Ok(pb::SetMode::Create), Some(_)) => {
            return Err(Status::already_exists(format!(
                "a federation relationship with {} exists; use `signet federation update`",
                relationship.trust_domain
            )));
        }
        (Ok(pb::SetMode::Update), None) => {
            return Err(Status::not_found(format!(
                "no federation relationship with {}; use `signet federation create`",
                relationship.trust_domain
            )));
        }
        (Err(_), _) => return Err(Status::invalid_argument("unknown mode")),
        _ => {}
    }
    let holds_bundle = existing.as_ref().is_some_and(|view| view.bundle.is_some());
    if matches!(relationship.profile, EndpointProfile::HttpsSpiffe { .. })
        && bundle.is_none()
        && !holds_bundle
    {
        return Err(Status::invalid_argument(format!(
            "an https_spiffe endpoint is authenticated with {}'s own bundle: give its bundle to start from (--trust-domain-bundle)",
            relationship.trust_domain
        )));
    }
    let trust_domain = relationship.trust_domain.clone();
    federation
        .set(relationship, bundle)
        .await
        .map_err(Status::from)?;
    federation
        .get(&trust_domain)
        .map(|view| message(&view))
        .ok_or_else(|| Status::internal("the relationship vanished"))
}

/// `GetFederation`.
pub(crate) fn get(federation: &Federation, name: &str) -> Result<pb::Federation, Status> {
    let trust_domain = trust_domain(name)?;
    federation
        .get(&trust_domain)
        .map(|view| message(&view))
        .ok_or_else(|| Status::not_found(format!("no federation relationship with {trust_domain}")))
}

/// `DeleteFederation`.
pub(crate) async fn delete(
    kubernetes: bool,
    federation: &Federation,
    name: &str,
) -> Result<pb::DeleteFederationResponse, Status> {
    if kubernetes {
        return Err(Status::failed_precondition(
            "in Kubernetes mode federation relationships are ClusterFederatedTrustDomain resources: use kubectl",
        ));
    }
    let trust_domain = trust_domain(name)?;
    let deleted = federation
        .remove(&trust_domain)
        .await
        .map_err(Status::from)?;
    if !deleted {
        return Err(Status::not_found(format!(
            "no federation relationship with {trust_domain}"
        )));
    }
    Ok(pb::DeleteFederationResponse { deleted })
}
