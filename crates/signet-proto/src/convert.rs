//! Conversions between wire messages and the typed domain model; every wire value is parsed and
//! validated here, so nothing past this point handles raw strings.

use std::time::Duration;

use signet_core::{EntryId, RegistrationEntry, SelectorSet};
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::agent;

/// A wire message that does not describe a valid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidMessage {
    /// Which field.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl ToString) -> InvalidMessage {
    InvalidMessage {
        field,
        reason: reason.to_string(),
    }
}

impl From<&RegistrationEntry> for agent::Entry {
    fn from(entry: &RegistrationEntry) -> Self {
        Self {
            id: entry.id.to_string(),
            spiffe_id: entry.spiffe_id.to_string(),
            parent_id: entry.parent_id.to_string(),
            selectors: entry.selectors.to_strings(),
            x509_svid_ttl_seconds: u32::try_from(entry.x509_svid_ttl.as_secs()).unwrap_or(u32::MAX),
            jwt_svid_ttl_seconds: u32::try_from(entry.jwt_svid_ttl.as_secs()).unwrap_or(u32::MAX),
            dns_names: entry.dns_names.clone(),
            federates_with: entry
                .federates_with
                .iter()
                .map(ToString::to_string)
                .collect(),
            admin: entry.admin,
            downstream: entry.downstream,
            hint: entry.hint.clone(),
            revision: entry.revision,
        }
    }
}

impl TryFrom<&agent::Entry> for RegistrationEntry {
    type Error = InvalidMessage;
    fn try_from(wire: &agent::Entry) -> Result<Self, Self::Error> {
        Ok(Self {
            id: EntryId::new(wire.id.clone()),
            spiffe_id: SpiffeId::new(&wire.spiffe_id).map_err(|e| invalid("spiffe_id", e))?,
            parent_id: SpiffeId::new(&wire.parent_id).map_err(|e| invalid("parent_id", e))?,
            selectors: SelectorSet::parse_all(&wire.selectors)
                .map_err(|e| invalid("selectors", e))?,
            x509_svid_ttl: Duration::from_secs(wire.x509_svid_ttl_seconds.into()),
            jwt_svid_ttl: Duration::from_secs(wire.jwt_svid_ttl_seconds.into()),
            dns_names: wire.dns_names.clone(),
            federates_with: wire
                .federates_with
                .iter()
                .map(|td| TrustDomain::from_name_or_id(td))
                .collect::<Result<_, _>>()
                .map_err(|e| invalid("federates_with", e))?,
            admin: wire.admin,
            downstream: wire.downstream,
            hint: wire.hint.clone(),
            revision: wire.revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip_and_rejections() {
        let wire = agent::Entry {
            id: "e".into(),
            spiffe_id: "spiffe://example.org/app".into(),
            parent_id: "spiffe://example.org/signet/agent/join/x".into(),
            selectors: vec!["unix:uid:1000".into()],
            x509_svid_ttl_seconds: 3600,
            jwt_svid_ttl_seconds: 300,
            dns_names: vec!["app".into()],
            federates_with: vec!["partner.org".into()],
            hint: "h".into(),
            revision: 4,
            ..Default::default()
        };
        let entry = RegistrationEntry::try_from(&wire).unwrap();
        assert_eq!(agent::Entry::from(&entry), wire);
        let mut bad = wire.clone();
        bad.spiffe_id = "spiffe://example.org/a/".into();
        assert_eq!(
            RegistrationEntry::try_from(&bad).unwrap_err().field,
            "spiffe_id"
        );
        let mut bad = wire;
        bad.selectors = vec!["nocolon".into()];
        assert_eq!(
            RegistrationEntry::try_from(&bad).unwrap_err().field,
            "selectors"
        );
    }
}
