//! The admin API's CA calls: the authorities with their rotation state, and the operator's
//! rotation steps (prepare, activate, taint, revoke). The rules that keep trust intact live in
//! `signet_ca::rotation`; refusals come back as FAILED_PRECONDITION with the step to take first.

use signet_ca::{AuthorityInfo, AuthorityKind, AuthorityStatus};
use signet_proto::admin as pb;
use tonic::Status;
use tracing::info;

use crate::authority::AuthorityService;

use crate::unix_seconds as unix;

fn kind_name(kind: AuthorityKind) -> &'static str {
    match kind {
        AuthorityKind::X509 => "x509",
        AuthorityKind::Jwt => "jwt",
    }
}

fn status_name(status: AuthorityStatus) -> &'static str {
    match status {
        AuthorityStatus::Prepared => "prepared",
        AuthorityStatus::Active => "active",
        AuthorityStatus::Old => "old",
    }
}

fn message(info: &AuthorityInfo) -> pb::Authority {
    pb::Authority {
        kind: kind_name(info.kind).to_owned(),
        id: info.id.clone(),
        status: status_name(info.status).to_owned(),
        tainted: info.tainted,
        not_before: unix(info.not_before),
        not_after: unix(info.not_after),
    }
}

/// `ListAuthorities`.
pub(crate) fn list(authority: &AuthorityService) -> pb::ListAuthoritiesResponse {
    pb::ListAuthoritiesResponse {
        authorities: authority.authorities().iter().map(message).collect(),
    }
}

/// `ChangeAuthority`.
pub(crate) fn change(
    authority: &AuthorityService,
    request: &pb::ChangeAuthorityRequest,
) -> Result<pb::ListAuthoritiesResponse, Status> {
    let kind = match request.kind.as_str() {
        "x509" => AuthorityKind::X509,
        "jwt" => AuthorityKind::Jwt,
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown authority kind {other:?}: use x509 or jwt"
            )));
        }
    };
    let id = request.id.as_str();
    let needs_id = matches!(request.action.as_str(), "taint" | "revoke");
    if needs_id == id.is_empty() {
        return Err(Status::invalid_argument(if needs_id {
            "taint and revoke name the authority (see `signet ca show`)"
        } else {
            "prepare and activate take no authority id"
        }));
    }
    let events = match request.action.as_str() {
        "prepare" => authority.command(|ca| ca.prepare(kind)),
        "activate" => authority.command(|ca| ca.activate(kind)),
        "taint" => authority.command(|ca| ca.taint(kind, id)),
        "revoke" => authority.command(|ca| ca.revoke(kind, id)),
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown action {other:?}: use prepare, activate, taint or revoke"
            )));
        }
    }
    .map_err(Status::from)?;
    info!(kind = kind_name(kind), action = %request.action, id, ?events, "CA changed by an operator");
    Ok(list(authority))
}
