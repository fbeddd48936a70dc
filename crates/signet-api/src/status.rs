//! Status pieces shared by the resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The `Ready` condition type.
pub const READY: &str = "Ready";
/// The `Masked` condition type (ClusterStaticEntry).
pub const MASKED: &str = "Masked";
/// The `Accepted` condition type (AuthorizationPolicy).
pub const ACCEPTED: &str = "Accepted";
/// The `ResolvedRefs` condition type (AuthorizationPolicy).
pub const RESOLVED_REFS: &str = "ResolvedRefs";

/// Builds a condition; `last_transition_time` is kept from `previous` when the status did not
/// change, so conditions never flap their timestamps.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(now, |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation,
        last_transition_time,
    }
}
