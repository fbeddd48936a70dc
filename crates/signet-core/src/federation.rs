//! Federation relationships (SPIFFE Federation spec): another trust domain whose bundle this one
//! fetches from the other's bundle endpoint, authenticated with one of the two profiles.

use std::fmt;

use signet_spiffe::{Bundle, SpiffeId, TrustDomain};

/// How the bundle endpoint of a federated trust domain is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProfile {
    /// `https_web`: a Web PKI certificate for the endpoint's host name, checked against the
    /// system's root certificates.
    HttpsWeb,
    /// `https_spiffe`: the endpoint presents an X509-SVID with this SPIFFE ID, verified with the
    /// federated trust domain's own bundle (the previous one fetched, or the one configured to
    /// start from).
    HttpsSpiffe {
        /// The SPIFFE ID the endpoint's server must have.
        endpoint_spiffe_id: SpiffeId,
    },
}

impl EndpointProfile {
    /// `https_web` or `https_spiffe`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::HttpsWeb => "https_web",
            Self::HttpsSpiffe { .. } => "https_spiffe",
        }
    }
}

/// One federated trust domain and where its bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRelationship {
    /// The federated trust domain.
    pub trust_domain: TrustDomain,
    /// Its bundle endpoint (`https://host[:port]/path`).
    pub bundle_endpoint_url: BundleEndpointUrl,
    /// How the endpoint is authenticated.
    pub profile: EndpointProfile,
}

/// Why a relationship is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FederationError {
    /// The URL is not an `https://` URL with a host.
    #[error("bundle endpoint URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A relationship with our own trust domain.
    #[error("{0} is this server's own trust domain; federation is with other trust domains")]
    OwnTrustDomain(TrustDomain),
    /// The `https_spiffe` endpoint ID is outside the federated trust domain.
    #[error(
        "endpoint SPIFFE ID {id} is not in trust domain {trust_domain}: an https_spiffe endpoint \
         is authenticated with its own trust domain's bundle"
    )]
    EndpointIdOutsideTrustDomain {
        /// The endpoint SPIFFE ID.
        id: SpiffeId,
        /// The federated trust domain.
        trust_domain: TrustDomain,
    },
}

impl FederationRelationship {
    /// A relationship, checked: the endpoint ID of `https_spiffe` belongs to the federated trust
    /// domain, and the trust domain is not `local`.
    pub fn new(
        local: &TrustDomain,
        trust_domain: TrustDomain,
        bundle_endpoint_url: BundleEndpointUrl,
        profile: EndpointProfile,
    ) -> Result<Self, FederationError> {
        if &trust_domain == local {
            return Err(FederationError::OwnTrustDomain(trust_domain));
        }
        if let EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } = &profile
            && endpoint_spiffe_id.trust_domain_name() != trust_domain.as_str()
        {
            return Err(FederationError::EndpointIdOutsideTrustDomain {
                id: endpoint_spiffe_id.clone(),
                trust_domain,
            });
        }
        Ok(Self {
            trust_domain,
            bundle_endpoint_url,
            profile,
        })
    }
}

/// Why a bundle fetched for a relationship may not replace the one held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleRefusal {
    /// No X.509 authority: nothing to verify the peer's X509-SVIDs with.
    #[error("it holds no X.509 authority")]
    NoX509Authority,
    /// A CA certificate names another trust domain in its SPIFFE ID.
    #[error("an X.509 authority belongs to trust domain {named}, not {expected}")]
    OtherTrustDomain {
        /// The trust domain the authority names.
        named: String,
        /// The relationship's trust domain.
        expected: TrustDomain,
    },
    /// The sequence number is lower than the held bundle's.
    #[error("bundle sequence went backwards: have {have}, got {got}")]
    SequenceRegressed {
        /// The held bundle's.
        have: u64,
        /// The fetched bundle's.
        got: u64,
    },
}

/// Whether `fetched`, served by `trust_domain`'s bundle endpoint, may replace `current`: it must
/// hold an X.509 authority, every CA certificate that names a trust domain must name this one (a
/// bundle served for another trust domain is refused), and the sequence may not go backwards.
pub fn accept_fetched_bundle(
    trust_domain: &TrustDomain,
    current: Option<&Bundle>,
    fetched: &Bundle,
) -> Result<(), BundleRefusal> {
    if fetched.x509_authorities().is_empty() {
        return Err(BundleRefusal::NoX509Authority);
    }
    for authority in fetched.x509_authorities() {
        if let Some(named) = signet_spiffe::x509::trust_domain_of_ca(authority)
            && named != trust_domain.as_str()
        {
            return Err(BundleRefusal::OtherTrustDomain {
                named,
                expected: trust_domain.clone(),
            });
        }
    }
    if let (Some(have), Some(got)) = (current.and_then(Bundle::sequence), fetched.sequence())
        && got < have
    {
        return Err(BundleRefusal::SequenceRegressed { have, got });
    }
    Ok(())
}

/// An `https://` URL of a bundle endpoint, split into what the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointUrl {
    url: String,
    host: String,
    port: u16,
    path_and_query: String,
}

impl BundleEndpointUrl {
    /// Parses `https://host[:port][/path]`; anything else (another scheme, user info, a
    /// fragment, no host) is refused.
    pub fn parse(url: &str) -> Result<Self, FederationError> {
        let invalid = |reason| FederationError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| invalid("the scheme must be https"))?;
        if url.contains('#') {
            return Err(invalid("a fragment is not allowed"));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("whitespace is not allowed"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(invalid("user information is not allowed"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| invalid("bad host or port"))?;
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        let path_and_query = if path.is_empty() || path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            path_and_query,
        })
    }

    /// The host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 unless given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query to request.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for BundleEndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = match after {
            "" => 443,
            _ => after.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, port.parse().ok()?)),
        Some(_) => None,
        None => Some((authority, 443)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_https_with_a_host() {
        let url = BundleEndpointUrl::parse("https://b.example:8443/bundle?x=1").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path_and_query()),
            ("b.example", 8443, "/bundle?x=1")
        );
        let url = BundleEndpointUrl::parse("https://b.example").unwrap();
        assert_eq!((url.port(), url.path_and_query()), (443, "/"));
        let url = BundleEndpointUrl::parse("https://[::1]:9000").unwrap();
        assert_eq!((url.host(), url.port()), ("::1", 9000));
        for bad in [
            "http://b.example",
            "https://",
            "https://:8443/",
            "https://user@b.example/",
            "https://b.example/#frag",
            "https://b.example:99999/",
            "https://b.example:x/",
            "https://b.example/a b",
            "ftp://b.example",
        ] {
            assert!(BundleEndpointUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relationships_are_with_other_trust_domains_and_pin_their_ids() {
        let local = TrustDomain::new("a.example").unwrap();
        let url = BundleEndpointUrl::parse("https://b.example/").unwrap();
        let b = TrustDomain::new("b.example").unwrap();
        assert!(matches!(
            FederationRelationship::new(
                &local,
                local.clone(),
                url.clone(),
                EndpointProfile::HttpsWeb
            ),
            Err(FederationError::OwnTrustDomain(_))
        ));
        let foreign_id = SpiffeId::new("spiffe://c.example/signet/server").unwrap();
        assert!(matches!(
            FederationRelationship::new(
                &local,
                b.clone(),
                url.clone(),
                EndpointProfile::HttpsSpiffe {
                    endpoint_spiffe_id: foreign_id
                }
            ),
            Err(FederationError::EndpointIdOutsideTrustDomain { .. })
        ));
        let own_id = SpiffeId::new("spiffe://b.example/signet/server").unwrap();
        let ok = FederationRelationship::new(
            &local,
            b,
            url,
            EndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: own_id,
            },
        )
        .unwrap();
        assert_eq!(ok.profile.name(), "https_spiffe");
    }
}
