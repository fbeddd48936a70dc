//! Registration entries: which SPIFFE ID a workload with given selectors gets, under which agent.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::selector::SelectorSet;

/// Longest hint allowed (Workload API §8).
pub const MAX_HINT_BYTES: usize = 1024;

/// Why an entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The SPIFFE ID is not in the server's trust domain.
    #[error("{0} is not in trust domain {1}")]
    ForeignTrustDomain(String, String),
    /// The SPIFFE ID has no path.
    #[error("{0} has no path; workload IDs need one")]
    NoPath(String),
    /// The SPIFFE ID is under Signet's reserved `/signet/` path.
    #[error("{0} is under the reserved path /signet/")]
    Reserved(String),
    /// The entry has no selector (it would match every workload).
    #[error("an entry needs at least one selector")]
    NoSelectors,
    /// The hint is too long.
    #[error("hint is longer than 1024 bytes")]
    HintTooLong,
    /// A TTL is zero.
    #[error("TTLs must be positive")]
    ZeroTtl,
    /// A DNS name an SVID could not carry.
    #[error(transparent)]
    DnsName(#[from] signet_spiffe::DnsNameError),
}

/// A stable entry identifier.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(String);

impl EntryId {
    /// Wraps an id string.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({})", self.0)
    }
}

/// A registration entry (DESIGN §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationEntry {
    /// Stable id.
    pub id: EntryId,
    /// The identity granted.
    pub spiffe_id: SpiffeId,
    /// The agent that may serve it.
    pub parent_id: SpiffeId,
    /// Selectors a workload must all have.
    pub selectors: SelectorSet,
    /// X509-SVID lifetime.
    pub x509_svid_ttl: Duration,
    /// JWT-SVID lifetime.
    pub jwt_svid_ttl: Duration,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Foreign trust domains whose bundles the workload receives.
    pub federates_with: Vec<TrustDomain>,
    /// Admin workloads may call the admin API over mTLS.
    pub admin: bool,
    /// Downstream workloads may mint SVIDs for others.
    pub downstream: bool,
    /// Workload API hint.
    pub hint: String,
    /// Incremented on every change.
    pub revision: u64,
}

/// The server's SPIFFE ID.
pub fn server_id(trust_domain: &TrustDomain) -> Result<SpiffeId, signet_spiffe::IdError> {
    trust_domain.id_from_segments(&["signet", "server"])
}

impl RegistrationEntry {
    /// Checks the entry's rules for the server's trust domain.
    pub fn validate(&self, trust_domain: &TrustDomain) -> Result<(), EntryError> {
        if !self.spiffe_id.is_member_of(trust_domain) {
            return Err(EntryError::ForeignTrustDomain(
                self.spiffe_id.to_string(),
                trust_domain.to_string(),
            ));
        }
        if self.spiffe_id.is_trust_domain_id() {
            return Err(EntryError::NoPath(self.spiffe_id.to_string()));
        }
        if self.spiffe_id.segments().next() == Some("signet") {
            return Err(EntryError::Reserved(self.spiffe_id.to_string()));
        }
        if self.selectors.is_empty() {
            return Err(EntryError::NoSelectors);
        }
        if self.hint.len() > MAX_HINT_BYTES {
            return Err(EntryError::HintTooLong);
        }
        if self.x509_svid_ttl.is_zero() || self.jwt_svid_ttl.is_zero() {
            return Err(EntryError::ZeroTtl);
        }
        for name in &self.dns_names {
            signet_spiffe::DnsName::new(name)?;
        }
        Ok(())
    }

    /// A revision derived from the content alone (FNV-1a over every field but `id` and
    /// `revision`): replicas computing the same entry agree on it, and it changes whenever
    /// anything an SVID depends on changes.
    pub fn content_revision(&self) -> u64 {
        let mut hash = Fnv::default();
        hash.field(self.spiffe_id.as_str().as_bytes());
        hash.field(self.parent_id.as_str().as_bytes());
        for selector in self.selectors.iter() {
            hash.field(selector.kind().as_bytes());
            hash.field(selector.value().as_bytes());
        }
        hash.field(&self.x509_svid_ttl.as_nanos().to_le_bytes());
        hash.field(&self.jwt_svid_ttl.as_nanos().to_le_bytes());
        for name in &self.dns_names {
            hash.field(name.as_bytes());
        }
        hash.field(b"|");
        for td in &self.federates_with {
            hash.field(td.as_str().as_bytes());
        }
        hash.field(&[u8::from(self.admin), u8::from(self.downstream)]);
        hash.field(self.hint.as_bytes());
        // Zero is reserved for "never signed" on the agent side.
        hash.0.max(1)
    }

    /// Whether a workload with `workload_selectors` may use this entry.
    pub fn matches(&self, workload_selectors: &SelectorSet) -> bool {
        self.selectors.is_subset_of(workload_selectors)
    }
}

/// 64-bit FNV-1a with length-prefixed fields, so field boundaries cannot collide.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, data: &[u8]) {
        for byte in data {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, data: &[u8]) {
        self.bytes(&(data.len() as u64).to_le_bytes());
        self.bytes(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> RegistrationEntry {
        RegistrationEntry {
            id: EntryId::new("e1"),
            spiffe_id: SpiffeId::new(id).unwrap(),
            parent_id: SpiffeId::new("spiffe://example.org/signet/agent/join/t").unwrap(),
            selectors: SelectorSet::parse_all(&["unix:uid:1000"]).unwrap(),
            x509_svid_ttl: Duration::from_secs(3600),
            jwt_svid_ttl: Duration::from_secs(300),
            dns_names: vec![],
            federates_with: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            revision: 0,
        }
    }

    #[test]
    fn validation_rules() {
        let td = TrustDomain::new("example.org").unwrap();
        assert!(entry("spiffe://example.org/app").validate(&td).is_ok());
        assert!(matches!(
            entry("spiffe://other.org/app").validate(&td),
            Err(EntryError::ForeignTrustDomain(..))
        ));
        assert!(matches!(
            entry("spiffe://example.org").validate(&td),
            Err(EntryError::NoPath(_))
        ));
        assert!(matches!(
            entry("spiffe://example.org/signet/server").validate(&td),
            Err(EntryError::Reserved(_))
        ));
        let mut e = entry("spiffe://example.org/app");
        e.selectors = SelectorSet::new();
        assert_eq!(e.validate(&td), Err(EntryError::NoSelectors));
        let mut e = entry("spiffe://example.org/app");
        e.hint = "h".repeat(1025);
        assert_eq!(e.validate(&td), Err(EntryError::HintTooLong));
        let mut e = entry("spiffe://example.org/app");
        e.x509_svid_ttl = Duration::ZERO;
        assert_eq!(e.validate(&td), Err(EntryError::ZeroTtl));
        // "signetx" is not the reserved segment.
        assert!(
            entry("spiffe://example.org/signetx/a")
                .validate(&td)
                .is_ok()
        );
    }

    #[test]
    fn content_revision_tracks_content_only() {
        let a = entry("spiffe://example.org/app");
        let mut b = a.clone();
        b.id = EntryId::new("other");
        b.revision = 42;
        assert_eq!(a.content_revision(), b.content_revision());
        b.dns_names = vec!["app.example.org".into()];
        assert_ne!(a.content_revision(), b.content_revision());
        let mut c = a.clone();
        c.hint = "x".into();
        assert_ne!(a.content_revision(), c.content_revision());
        assert_ne!(a.content_revision(), 0);
    }

    #[test]
    fn reserved_ids() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(
            server_id(&td).unwrap().as_str(),
            "spiffe://example.org/signet/server"
        );
    }
}
