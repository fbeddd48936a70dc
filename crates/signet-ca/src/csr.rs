//! Certificate signing requests: the signature is verified and the request may ask for exactly
//! one thing, the SPIFFE ID the caller is authorised for.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use signet_spiffe::SpiffeId;

use crate::error::{Error, Result};

/// A CSR whose signature verified and whose only URI SAN is the expected SPIFFE ID.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    spki_der: Vec<u8>,
}

impl VerifiedCsr {
    /// The DER SubjectPublicKeyInfo of the requester.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// Which URI SANs a CSR may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsrIdRule {
    /// Exactly the expected SPIFFE ID (workload SVIDs).
    #[default]
    Exact,
    /// The expected SPIFFE ID or none at all: for node attestation, where the server assigns the
    /// agent's ID and the agent cannot know it beforehand.
    ExactOrNone,
}

/// A new P-256 key and a DER CSR signed by it, naming `id` as its only URI SAN if given (node
/// attestation sends none: the server assigns the agent's ID).
pub fn new_key_and_csr(id: Option<&SpiffeId>) -> Result<(rcgen::KeyPair, Vec<u8>)> {
    let internal = |e: rcgen::Error| Error::InvalidRequest(format!("building a CSR: {e}"));
    let key = rcgen::KeyPair::generate().map_err(internal)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(id) = id {
        let uri = id.as_str().try_into().map_err(internal)?;
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    }
    let csr = params.serialize_request(&key).map_err(internal)?;
    Ok((key, csr.der().to_vec()))
}

/// Parses and verifies a DER CSR for `expected`.
pub fn verify_csr(der: &[u8], expected: &SpiffeId) -> Result<VerifiedCsr> {
    verify_csr_with(der, expected, CsrIdRule::Exact)
}

/// Parses and verifies a DER CSR for `expected` under `rule`.
pub fn verify_csr_with(der: &[u8], expected: &SpiffeId, rule: CsrIdRule) -> Result<VerifiedCsr> {
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| Error::InvalidCsr(format!("not a DER PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::InvalidCsr("trailing bytes after the request".into()));
    }
    let info = &csr.certification_request_info;
    match info.subject_pki.parsed() {
        Ok(PublicKey::EC(point)) => {
            // Uncompressed P-256 or P-384 points only.
            if !matches!(point.data().len(), 65 | 97) {
                return Err(Error::InvalidCsr("EC keys must be P-256 or P-384".into()));
            }
        }
        Ok(PublicKey::RSA(rsa)) => {
            if rsa.key_size() < 2048 {
                return Err(Error::InvalidCsr(format!(
                    "RSA key of {} bits is too small; at least 2048 are required",
                    rsa.key_size()
                )));
            }
        }
        _ => {
            return Err(Error::InvalidCsr(
                "key type must be EC P-256/P-384 or RSA".into(),
            ));
        }
    }
    csr.verify_signature()
        .map_err(|_| Error::InvalidCsr("signature does not verify".into()))?;
    let mut uris = Vec::new();
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        uris.push((*uri).to_owned());
                    }
                }
            }
        }
    }
    match uris.as_slice() {
        [only] if only == expected.as_str() => {}
        [] if rule == CsrIdRule::ExactOrNone => {}
        [] => {
            return Err(Error::CsrIdMismatch {
                expected: expected.to_string(),
                detail: "the CSR has no URI SAN".into(),
            });
        }
        other => {
            return Err(Error::CsrIdMismatch {
                expected: expected.to_string(),
                detail: format!("the CSR asks for {other:?}"),
            });
        }
    }
    Ok(VerifiedCsr {
        spki_der: info.subject_pki.raw.to_vec(),
    })
}
