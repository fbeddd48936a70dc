//! X509-SVIDs: parsing a chain and its key, the SPIFFE leaf profile, and path validation against
//! the bundle of the leaf's trust domain.
//!
//! Signature and RFC 5280 path logic come from `rustls-webpki`; this module adds the SPIFFE rules
//! on top (exactly one URI SAN, leaf and signing-certificate key usage, EKU, trust domain choice).

use std::fmt;
use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME,
};

use crate::bundle::{BundleError, BundleSet, split_der_certificates};
use crate::id::{IdError, SpiffeId};

/// Why an X509-SVID or its chain is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X509SvidError {
    /// The chain is empty.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// A certificate does not parse.
    #[error("certificate #{0} of the chain is not valid X.509 DER")]
    BadCertificate(usize),
    /// The leaf has no URI SAN.
    #[error("leaf certificate has no URI SAN carrying a SPIFFE ID")]
    NoUriSan,
    /// The leaf has more than one URI SAN.
    #[error("leaf certificate has {0} URI SANs; an X509-SVID has exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(IdError),
    /// The leaf SPIFFE ID names a trust domain (no path).
    #[error("leaf SPIFFE ID {0} has no path; only signing certificates may omit it")]
    RootPathLeaf(String),
    /// The leaf is a CA certificate.
    #[error("leaf certificate is a CA (basicConstraints cA=true)")]
    LeafIsCa,
    /// The leaf has no keyUsage extension.
    #[error("leaf certificate has no keyUsage extension")]
    MissingKeyUsage,
    /// The keyUsage extension is not critical.
    #[error("keyUsage extension must be critical")]
    KeyUsageNotCritical,
    /// The leaf keyUsage lacks digitalSignature.
    #[error("leaf keyUsage lacks digitalSignature")]
    MissingDigitalSignature,
    /// The leaf keyUsage allows signing certificates or CRLs.
    #[error("leaf keyUsage must not include keyCertSign or cRLSign")]
    LeafCanSign,
    /// The leaf EKU lacks serverAuth or clientAuth.
    #[error("leaf extendedKeyUsage must include both serverAuth and clientAuth")]
    BadExtendedKeyUsage,
    /// The subject is empty but the SAN extension is not critical.
    #[error("subject is empty, so the subjectAltName extension must be critical")]
    SanNotCritical,
    /// An intermediate in the chain is not a signing certificate.
    #[error("intermediate #{0} is not a signing certificate (needs cA=true and keyCertSign)")]
    IntermediateCannotSign(usize),
    /// An intermediate carries a SPIFFE ID with a path.
    #[error("intermediate #{0} has a SPIFFE ID with a path; signing certificates must not")]
    IntermediateWithPath(usize),
    /// No bundle for the leaf's trust domain.
    #[error("no bundle for trust domain {0}")]
    NoBundle(String),
    /// The bundle holds no X.509 authority.
    #[error("bundle of trust domain {0} has no X.509 authorities")]
    EmptyBundle(String),
    /// A bundle certificate could not serve as a trust anchor.
    #[error("bundle certificate #{0} cannot be used as a trust anchor")]
    BadTrustAnchor(usize),
    /// RFC 5280 path validation failed (signature, validity period, CA flags, ...).
    #[error("certificate path validation failed: {0}")]
    PathValidation(String),
    /// The private key does not parse as PKCS#8 or has an unsupported type.
    #[error("private key is not a supported PKCS#8 key (EC P-256/P-384 or RSA)")]
    BadPrivateKey,
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate's public key")]
    KeyMismatch,
}

impl From<BundleError> for X509SvidError {
    fn from(err: BundleError) -> Self {
        match err {
            BundleError::BadCertificate { index } => Self::BadCertificate(index),
            _ => Self::BadCertificate(0),
        }
    }
}

impl X509SvidError {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::EmptyChain | Self::BadCertificate(_) => "malformed",
            Self::NoUriSan | Self::MultipleUriSans(_) | Self::BadSpiffeId(_) => "bad_san",
            Self::RootPathLeaf(_) => "root_path_leaf",
            Self::LeafIsCa | Self::LeafCanSign => "leaf_is_ca",
            Self::MissingKeyUsage
            | Self::KeyUsageNotCritical
            | Self::MissingDigitalSignature
            | Self::BadExtendedKeyUsage
            | Self::SanNotCritical => "bad_extensions",
            Self::IntermediateCannotSign(_) | Self::IntermediateWithPath(_) => "bad_intermediate",
            Self::NoBundle(_) | Self::EmptyBundle(_) | Self::BadTrustAnchor(_) => "no_trust",
            Self::PathValidation(_) => "path_validation",
            Self::BadPrivateKey | Self::KeyMismatch => "bad_key",
        }
    }
}

/// An X509-SVID: SPIFFE ID, certificate chain (leaf first) and the leaf's private key.
#[derive(Clone)]
pub struct X509Svid {
    spiffe_id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    private_key_pkcs8: Vec<u8>,
    // Read once at parse: caches and streams ask for them on every call.
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.chain.len())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl X509Svid {
    /// Parses a concatenated DER chain (leaf first) and a PKCS#8 key, applying the leaf profile
    /// rules and checking that the key belongs to the leaf. It does not check trust: see
    /// [`verify_chain`].
    pub fn parse(chain_der: &[u8], private_key_pkcs8: &[u8]) -> Result<Self, X509SvidError> {
        let chain = split_der_certificates(chain_der)?;
        Self::from_parts(chain, private_key_pkcs8.to_vec())
    }

    /// Builds an SVID from already split certificates and a PKCS#8 key.
    pub fn from_parts(
        chain: Vec<Vec<u8>>,
        private_key_pkcs8: Vec<u8>,
    ) -> Result<Self, X509SvidError> {
        let leaf = chain.first().ok_or(X509SvidError::EmptyChain)?;
        let spiffe_id = validate_leaf(leaf)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|_| X509SvidError::BadCertificate(0))?;
        let leaf_public_key = parsed
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .to_vec();
        if private_key_public_bytes(&private_key_pkcs8)? != leaf_public_key {
            return Err(X509SvidError::KeyMismatch);
        }
        let validity = &parsed.tbs_certificate.validity;
        let at = |t: &x509_parser::time::ASN1Time| {
            u64::try_from(t.timestamp()).map_or(SystemTime::UNIX_EPOCH, |s| {
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)
            })
        };
        let (not_before, not_after) = (at(&validity.not_before), at(&validity.not_after));
        Ok(Self {
            spiffe_id,
            chain: chain.into_iter().map(CertificateDer::from).collect(),
            private_key_pkcs8,
            not_before,
            not_after,
        })
    }

    /// The SPIFFE ID of the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The chain as concatenated DER, as the Workload API carries it.
    pub fn chain_der(&self) -> Vec<u8> {
        self.chain
            .iter()
            .flat_map(|c| c.as_ref().iter().copied())
            .collect()
    }

    /// The PKCS#8 private key. Never log it.
    pub fn private_key_pkcs8(&self) -> &[u8] {
        &self.private_key_pkcs8
    }

    /// The leaf's validity start.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The leaf's validity end.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// The notBefore time of a DER certificate.
pub fn not_before_of(cert_der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let secs = u64::try_from(cert.validity().not_before.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The authorityKeyIdentifier of a DER certificate as lowercase hex: the subject key id of the
/// authority that signed it (`None` when absent, as on a self-signed root).
pub fn authority_key_id_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref()
            }
            _ => None,
        })
        .map(|id| id.0.iter().map(|b| format!("{b:02x}")).collect())
}

/// The subjectPublicKey bits of a DER certificate (the EC point, or the DER RSAPublicKey).
pub fn public_key_of(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

/// The notAfter time of a DER certificate.
pub fn not_after_of(cert_der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The DNS names (subjectAltName dNSName entries) of a DER certificate, in certificate order.
pub fn dns_names_of(cert_der: &[u8]) -> Option<Vec<String>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(names)
}

/// The trust domain a CA certificate names in a `spiffe://` URI SAN, if it names one (SPIFFE
/// signing certificates may carry the trust domain's SPIFFE ID).
pub fn trust_domain_of_ca(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => SpiffeId::new(uri)
            .ok()
            .map(|id| id.trust_domain_name().to_owned()),
        _ => None,
    })
}

/// The serial number of a DER certificate as lowercase hex, without DER's sign byte (the digits
/// `openssl x509 -serial` prints, in lower case).
pub fn serial_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let raw = cert.raw_serial();
    // DER pads a positive serial with a leading zero byte when its top bit is set; drop it.
    let significant = raw.iter().position(|byte| *byte != 0).map_or(
        raw.get(raw.len().saturating_sub(1)..).unwrap_or_default(),
        |first| raw.get(first..).unwrap_or_default(),
    );
    Some(
        significant
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
    )
}

/// The public key bytes (EC point or RSAPublicKey DER) of a PKCS#8 private key.
fn private_key_public_bytes(pkcs8: &[u8]) -> Result<Vec<u8>, X509SvidError> {
    use aws_lc_rs::signature::{self, KeyPair};
    for alg in [
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
    ] {
        if let Ok(key) = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8) {
            return Ok(key.public_key().as_ref().to_vec());
        }
    }
    if let Ok(key) = signature::RsaKeyPair::from_pkcs8(pkcs8) {
        return Ok(key.public_key().as_ref().to_vec());
    }
    Err(X509SvidError::BadPrivateKey)
}

fn uri_sans(cert: &X509Certificate<'_>) -> (Vec<String>, Option<bool>) {
    let mut uris = Vec::new();
    let mut critical = None;
    for ext in cert.extensions() {
        if ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME {
            critical = Some(ext.critical);
            if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        uris.push((*uri).to_owned());
                    }
                }
            }
        }
    }
    (uris, critical)
}

/// Applies the X509-SVID leaf profile and returns the leaf's SPIFFE ID.
pub fn validate_leaf(cert_der: &[u8]) -> Result<SpiffeId, X509SvidError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|_| X509SvidError::BadCertificate(0))?;
    if !rest.is_empty() {
        return Err(X509SvidError::BadCertificate(0));
    }
    let (uris, san_critical) = uri_sans(&cert);
    let uri = match uris.as_slice() {
        [] => return Err(X509SvidError::NoUriSan),
        [one] => one,
        many => return Err(X509SvidError::MultipleUriSans(many.len())),
    };
    let spiffe_id = SpiffeId::new(uri).map_err(X509SvidError::BadSpiffeId)?;
    if spiffe_id.is_trust_domain_id() {
        return Err(X509SvidError::RootPathLeaf(spiffe_id.to_string()));
    }
    if cert.subject().iter_attributes().next().is_none() && san_critical != Some(true) {
        return Err(X509SvidError::SanNotCritical);
    }
    let mut key_usage_seen = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc)
                if ext.oid == OID_X509_EXT_BASIC_CONSTRAINTS && bc.ca =>
            {
                return Err(X509SvidError::LeafIsCa);
            }
            ParsedExtension::KeyUsage(ku) if ext.oid == OID_X509_EXT_KEY_USAGE => {
                key_usage_seen = true;
                if !ext.critical {
                    return Err(X509SvidError::KeyUsageNotCritical);
                }
                if ku.key_cert_sign() || ku.crl_sign() {
                    return Err(X509SvidError::LeafCanSign);
                }
                if !ku.digital_signature() {
                    return Err(X509SvidError::MissingDigitalSignature);
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku)
                if ext.oid == OID_X509_EXT_EXTENDED_KEY_USAGE
                    && !(eku.server_auth && eku.client_auth) =>
            {
                return Err(X509SvidError::BadExtendedKeyUsage);
            }
            _ => {}
        }
    }
    if !key_usage_seen {
        return Err(X509SvidError::MissingKeyUsage);
    }
    Ok(spiffe_id)
}

fn validate_intermediate(index: usize, cert_der: &[u8]) -> Result<(), X509SvidError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|_| X509SvidError::BadCertificate(index))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    let can_sign = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        _ => false,
    };
    if !is_ca || !can_sign {
        return Err(X509SvidError::IntermediateCannotSign(index));
    }
    let (uris, _) = uri_sans(&cert);
    for uri in uris {
        if SpiffeId::new(&uri).is_ok_and(|id| !id.is_trust_domain_id()) {
            return Err(X509SvidError::IntermediateWithPath(index));
        }
    }
    Ok(())
}

/// Validates an X509-SVID chain (leaf first) against the bundle of the leaf's trust domain, at
/// the given time, and returns the leaf's SPIFFE ID.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    bundles: &BundleSet,
    now: SystemTime,
) -> Result<SpiffeId, X509SvidError> {
    let leaf = chain.first().ok_or(X509SvidError::EmptyChain)?;
    let spiffe_id = validate_leaf(leaf)?;
    for (offset, intermediate) in chain[1..].iter().enumerate() {
        validate_intermediate(offset + 1, intermediate)?;
    }
    let bundle = bundles
        .get(&spiffe_id.trust_domain())
        .ok_or_else(|| X509SvidError::NoBundle(spiffe_id.trust_domain_name().to_owned()))?;
    if bundle.x509_authorities().is_empty() {
        return Err(X509SvidError::EmptyBundle(
            spiffe_id.trust_domain_name().to_owned(),
        ));
    }
    let anchors = bundle
        .x509_authorities()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            webpki::anchor_from_trusted_cert(c).map_err(|_| X509SvidError::BadTrustAnchor(i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let end_entity = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| X509SvidError::PathValidation(e.to_string()))?;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &chain[1..],
            UnixTime::since_unix_epoch(since_epoch),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| X509SvidError::PathValidation(format!("{e:?}")))?;
    Ok(spiffe_id)
}
