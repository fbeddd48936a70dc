//! X.509 and JWT authorities: one signing key each, with its validity window.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::Issuer;
use rustls_pki_types::CertificateDer;
use signet_spiffe::TrustDomain;

use crate::error::{Error, Result};
use crate::key::AuthorityKey;
use crate::profile::{ca_params, random_hex};
use crate::upstream::UpstreamCa;

/// Validity and identity common to both kinds of authority.
pub trait Authority {
    /// Stable identifier: the subject key id (hex) for X.509, the `kid` for JWT.
    fn id(&self) -> &str;
    /// Start of validity.
    fn not_before(&self) -> SystemTime;
    /// End of validity; nothing it signs outlives it.
    fn not_after(&self) -> SystemTime;
}

/// An X.509 signing authority (root, or intermediate under an upstream CA).
pub struct X509Authority {
    id: String,
    cert: CertificateDer<'static>,
    /// Certificates between ours and the trust bundle's roots (upstream mode only).
    upstream_chain: Vec<CertificateDer<'static>>,
    issuer: Issuer<'static, AuthorityKey>,
    key: AuthorityKey,
    not_before: SystemTime,
    not_after: SystemTime,
    self_signed: bool,
}

impl fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Authority")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::Signing(format!("authority certificate does not parse: {e}")))?;
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    let ski = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                Some(k.0.iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
            _ => None,
        })
        .ok_or_else(|| Error::Signing("authority certificate has no subject key id".into()))?;
    Ok((
        at(cert.validity().not_before),
        at(cert.validity().not_after),
        ski,
    ))
}

impl X509Authority {
    /// Creates a new authority of `key` valid from `now` for `ttl`: a self-signed root, or an
    /// intermediate signed by `upstream` (capped at the upstream certificate's expiry).
    pub fn create(
        trust_domain: &TrustDomain,
        key: AuthorityKey,
        now: SystemTime,
        ttl: Duration,
        upstream: Option<&UpstreamCa>,
    ) -> Result<Self> {
        let mut not_after = now + ttl;
        let (cert, upstream_chain) = match upstream {
            None => {
                let params = ca_params(trust_domain, now, not_after, true)?;
                let cert = params
                    .self_signed(&key)
                    .map_err(|e| Error::Signing(e.to_string()))?;
                (cert.der().clone(), Vec::new())
            }
            Some(upstream) => {
                let upstream_cert = &upstream.signing_cert;
                let (_, upstream_not_after, _) = validity(upstream_cert)?;
                if upstream_not_after <= now {
                    return Err(Error::Upstream(
                        "the upstream certificate has expired".into(),
                    ));
                }
                not_after = not_after.min(upstream_not_after);
                let params = ca_params(trust_domain, now, not_after, false)?;
                let issuer = Issuer::from_ca_cert_der(upstream_cert, upstream.key.clone())
                    .map_err(|e| Error::Upstream(e.to_string()))?;
                let cert = params
                    .signed_by(&key, &issuer)
                    .map_err(|e| Error::Signing(e.to_string()))?;
                (cert.der().clone(), upstream.chain.clone())
            }
        };
        Self::from_parts(cert, upstream_chain, key)
    }

    /// Reassembles an authority from persisted parts.
    pub fn from_parts(
        cert: CertificateDer<'static>,
        upstream_chain: Vec<CertificateDer<'static>>,
        key: AuthorityKey,
    ) -> Result<Self> {
        let (not_before, not_after, id) = validity(&cert)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| Error::Signing(e.to_string()))?;
        if parsed.tbs_certificate.subject_pki.raw != key.public_key_der().as_slice() {
            return Err(Error::UnsupportedKey(
                "authority key does not match its certificate".into(),
            ));
        }
        let self_signed = parsed.subject() == parsed.issuer();
        let issuer = Issuer::from_ca_cert_der(&cert, key.clone())
            .map_err(|e| Error::Signing(e.to_string()))?;
        Ok(Self {
            id,
            cert,
            upstream_chain,
            issuer,
            key,
            not_before,
            not_after,
            self_signed,
        })
    }

    /// The authority's certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Certificates between ours and the bundle roots (upstream mode).
    pub fn upstream_chain(&self) -> &[CertificateDer<'static>] {
        &self.upstream_chain
    }

    /// Whether this is a self-signed root (its certificate belongs in the bundle).
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }

    /// The key.
    pub fn key(&self) -> &AuthorityKey {
        &self.key
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, AuthorityKey> {
        &self.issuer
    }
}

impl Authority for X509Authority {
    fn id(&self) -> &str {
        &self.id
    }
    fn not_before(&self) -> SystemTime {
        self.not_before
    }
    fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// A JWT signing authority.
pub struct JwtAuthority {
    kid: String,
    key: AuthorityKey,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("kid", &self.kid)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl JwtAuthority {
    /// Creates a new authority of `key` with a random key id.
    pub fn create(key: AuthorityKey, now: SystemTime, ttl: Duration) -> Result<Self> {
        Ok(Self {
            kid: random_hex(16)?,
            key,
            not_before: now,
            not_after: now + ttl,
        })
    }

    /// Reassembles an authority from persisted parts.
    pub fn from_parts(
        kid: String,
        key: AuthorityKey,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Self {
        Self {
            kid,
            key,
            not_before,
            not_after,
        }
    }

    /// The key.
    pub fn key(&self) -> &AuthorityKey {
        &self.key
    }
}

impl Authority for JwtAuthority {
    fn id(&self) -> &str {
        &self.kid
    }
    fn not_before(&self) -> SystemTime {
        self.not_before
    }
    fn not_after(&self) -> SystemTime {
        self.not_after
    }
}
