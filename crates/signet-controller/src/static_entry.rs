//! A ClusterStaticEntry compiled into its registration entry.

use std::time::Duration;

use signet_api::ClusterStaticEntry;
use signet_core::{EntryId, RegistrationEntry, SelectorSet, parse_go_duration};
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::cluster_spiffe_id::{SourceOrder, is_dns_name, source_order};

/// Why a ClusterStaticEntry cannot be used (`Ready=False`, reason `Invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct StaticEntryError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn error(field: &'static str, message: impl ToString) -> StaticEntryError {
    StaticEntryError {
        field,
        message: message.to_string(),
    }
}

/// A usable static entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledStaticEntry {
    /// Masking order.
    pub order: SourceOrder,
    /// Generation compiled.
    pub generation: Option<i64>,
    /// The entry.
    pub entry: RegistrationEntry,
}

/// Compiles a resource for the server's trust domain.
pub fn compile(
    resource: &ClusterStaticEntry,
    trust_domain: &TrustDomain,
    defaults: (Duration, Duration),
) -> Result<CompiledStaticEntry, StaticEntryError> {
    let spec = &resource.spec;
    let ttl = |field, value: Option<&String>, default| -> Result<Duration, StaticEntryError> {
        match value {
            None => Ok(default),
            Some(text) => {
                let parsed = parse_go_duration(text).map_err(|e| error(field, e))?;
                Ok(if parsed.is_zero() { default } else { parsed })
            }
        }
    };
    for name in &spec.dns_names {
        if !is_dns_name(name) {
            return Err(error("dnsNames", format!("{name:?} is not a DNS name")));
        }
    }
    let mut entry = RegistrationEntry {
        id: EntryId::new(format!(
            "cse/{}",
            resource.metadata.name.as_deref().unwrap_or_default()
        )),
        spiffe_id: SpiffeId::new(&spec.spiffe_id).map_err(|e| error("spiffeID", e))?,
        parent_id: SpiffeId::new(&spec.parent_id).map_err(|e| error("parentID", e))?,
        selectors: SelectorSet::parse_all(&spec.selectors).map_err(|e| error("selectors", e))?,
        x509_svid_ttl: ttl("x509SVIDTTL", spec.x509_svid_ttl.as_ref(), defaults.0)?,
        jwt_svid_ttl: ttl("jwtSVIDTTL", spec.jwt_svid_ttl.as_ref(), defaults.1)?,
        dns_names: spec.dns_names.clone(),
        federates_with: spec
            .federates_with
            .iter()
            .map(|td| TrustDomain::new(td).map_err(|e| error("federatesWith", e)))
            .collect::<Result<_, _>>()?,
        admin: spec.admin,
        downstream: spec.downstream,
        hint: spec.hint.clone().unwrap_or_default(),
        revision: 0,
    };
    if !entry.parent_id.is_member_of(trust_domain) {
        return Err(error(
            "parentID",
            format!("{} is not in trust domain {trust_domain}", entry.parent_id),
        ));
    }
    entry
        .validate(trust_domain)
        .map_err(|e| error("spiffeID", e))?;
    entry.revision = entry.content_revision();
    Ok(CompiledStaticEntry {
        order: source_order(&resource.metadata),
        generation: resource.metadata.generation,
        entry,
    })
}
