//! The admin API's CA calls: the authorities with their rotation state, and the operator's
//! rotation steps (prepare, activate, taint, revoke). The rules that keep trust intact live in
//! `signet_ca::rotation`; refusals come back as FAILED_PRECONDITION with the step to take first.

use signet_ca::{AuthorityInfo, AuthorityKind, AuthorityStatus};
use signet_proto::admin as pb;
use tonic::Status;
use tracing::info;

use crate::authority::AuthorityService;
use crate::svid_reports::SvidReports;

use crate::unix_seconds as unix;

pub(crate) fn kind_name(kind: AuthorityKind) -> &'static str {
    match kind {
        AuthorityKind::X509 => "x509",
        AuthorityKind::Jwt => "jwt",
    }
}

pub(crate) fn status_name(status: AuthorityStatus) -> &'static str {
    match status {
        AuthorityStatus::Prepared => "prepared",
        AuthorityStatus::Active => "active",
        AuthorityStatus::Old => "old",
    }
}

fn message(info: &AuthorityInfo, reports: &SvidReports) -> pb::Authority {
    let usage = reports.usage(info.kind, &info.id);
    pb::Authority {
        svids: usage.svids,
        agents: usage.agents,
        kind: kind_name(info.kind).to_owned(),
        id: info.id.clone(),
        status: status_name(info.status).to_owned(),
        tainted: info.tainted,
        not_before: unix(info.not_before),
        not_after: unix(info.not_after),
    }
}

/// `ListAuthorities`.
pub(crate) fn list(
    authority: &AuthorityService,
    reports: &SvidReports,
) -> pb::ListAuthoritiesResponse {
    pb::ListAuthoritiesResponse {
        authorities: authority
            .authorities()
            .iter()
            .map(|info| message(info, reports))
            .collect(),
        reporting_agents: reports.reporting_agents(),
    }
}

/// A revoke takes the authority out of every bundle: SVIDs it signed stop authenticating. Unless
/// forced, it waits until the agents report none left (they re-sign after the taint).
fn check_nothing_depends_on(
    kind: AuthorityKind,
    id: &str,
    reports: &SvidReports,
) -> Result<(), Status> {
    let usage = reports.usage(kind, id);
    if usage.svids == 0 {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "{} live SVIDs on {} agents are still signed by {} authority {id}; after a taint the \
         agents re-sign them within their re-sign window: wait until `signet ca show` counts 0, \
         or revoke with --force (those workloads then fail to authenticate to anyone holding \
         the new bundle until they re-sign)",
        usage.svids,
        usage.agents,
        kind_name(kind)
    )))
}

/// `ChangeAuthority`.
pub(crate) fn change(
    authority: &AuthorityService,
    reports: &SvidReports,
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
    if request.force && request.action != "revoke" {
        return Err(Status::invalid_argument("only revoke can be forced"));
    }
    // The rotation rules speak first (an untainted authority cannot be revoked at all).
    let tainted = authority
        .authorities()
        .iter()
        .any(|a| a.kind == kind && a.id == id && a.tainted);
    if request.action == "revoke" && tainted && !request.force {
        check_nothing_depends_on(kind, id, reports)?;
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
    info!(kind = kind_name(kind), action = %request.action, id, force = request.force, ?events, "CA changed by an operator");
    Ok(list(authority, reports))
}
