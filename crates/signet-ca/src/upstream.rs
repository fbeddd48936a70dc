//! An upstream CA (cert-manager, a corporate PKI...) that signs Signet's intermediate.

use std::fmt;

use rustls_pki_types::CertificateDer;
use signet_spiffe::bundle::split_der_certificates;

use crate::error::{Error, Result};
use crate::key::{AuthorityKey, der_tagged};

/// Upstream signing material: its certificate chain (signing certificate first), its key, and
/// the root certificates that make up the trust bundle.
#[derive(Clone)]
pub struct UpstreamCa {
    /// The certificate that signs our intermediates.
    pub(crate) signing_cert: CertificateDer<'static>,
    /// Certificates from the signing certificate up to, not including, the roots.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: AuthorityKey,
    pub(crate) roots: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for UpstreamCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamCa")
            .field("chain_len", &self.chain.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

fn pem_certificates(pem_text: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let blocks = pem::parse_many(pem_text).map_err(|e| Error::Upstream(format!("{what}: {e}")))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(Error::Upstream(format!(
            "{what} holds no CERTIFICATE block"
        )));
    }
    for cert in &certs {
        split_der_certificates(cert).map_err(|e| Error::Upstream(format!("{what}: {e}")))?;
    }
    Ok(certs)
}

fn is_self_signed(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .is_some_and(|(_, c)| c.subject() == c.issuer() && c.verify_signature(None).is_ok())
}

impl UpstreamCa {
    /// Loads PEM material. `cert_chain_pem` holds the upstream signing certificate first, then
    /// any intermediates; `key_pem` its PKCS#8 key; `bundle_pem` the roots, optional when the
    /// signing certificate is itself a self-signed root.
    pub fn from_pem(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        bundle_pem: Option<&[u8]>,
    ) -> Result<Self> {
        let chain = pem_certificates(cert_chain_pem, "upstream certificate")?;
        let key = upstream_key(key_pem)?;
        let signing = chain[0].clone();
        let (_, parsed) = x509_parser::parse_x509_certificate(&signing)
            .map_err(|e| Error::Upstream(format!("certificate: {e}")))?;
        let is_ca = parsed
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        let can_sign = matches!(parsed.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
        if !is_ca || !can_sign {
            return Err(Error::Upstream(
                "certificate is not a CA with keyCertSign".into(),
            ));
        }
        if parsed.tbs_certificate.subject_pki.raw != key.public_key_der().as_slice() {
            return Err(Error::Upstream("key does not match the certificate".into()));
        }
        let roots = match bundle_pem {
            Some(pem_text) => pem_certificates(pem_text, "upstream bundle")?,
            None if is_self_signed(&signing) => vec![signing.clone()],
            None => {
                return Err(Error::Upstream(
                    "the upstream certificate is not a self-signed root; give the upstream bundle too".into(),
                ));
            }
        };
        // Roots go in the bundle, not in the chain handed to workloads.
        let chain = chain
            .into_iter()
            .filter(|c| !roots.contains(c))
            .collect::<Vec<_>>();
        Ok(Self {
            signing_cert: signing,
            chain,
            key,
            roots,
        })
    }

    /// The upstream roots, which form the trust bundle.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The certificate that signs our intermediates.
    pub fn signing_certificate(&self) -> &CertificateDer<'static> {
        &self.signing_cert
    }

    /// Whether `other` is the same material (a re-read that changed nothing).
    pub fn same_as(&self, other: &Self) -> bool {
        self.signing_cert == other.signing_cert
            && self.chain == other.chain
            && self.roots == other.roots
            && self.key.public_key_der() == other.key.public_key_der()
    }

    /// The root of ours that signed `cert` (the top of a chain below the roots).
    pub(crate) fn anchor_of(&self, cert: &CertificateDer<'_>) -> Option<&CertificateDer<'static>> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
        self.roots.iter().find(|root| {
            x509_parser::parse_x509_certificate(root).is_ok_and(|(_, root)| {
                root.subject() == parsed.issuer()
                    && parsed.verify_signature(Some(root.public_key())).is_ok()
            })
        })
    }

    /// The root our intermediates chain to under this material.
    pub(crate) fn issuing_root(&self) -> Option<&CertificateDer<'static>> {
        match self.chain.last() {
            Some(top) => self.anchor_of(top),
            // The signing certificate is itself a root.
            None => self.roots.iter().find(|root| **root == self.signing_cert),
        }
    }
}

/// The upstream key in the encodings cert-manager and OpenSSL write: PKCS#8 (`PRIVATE KEY`),
/// SEC1 (`EC PRIVATE KEY`, cert-manager's default for ECDSA) or PKCS#1 (`RSA PRIVATE KEY`).
fn upstream_key(key_pem: &[u8]) -> Result<AuthorityKey> {
    let block = pem::parse(key_pem).map_err(|e| Error::Upstream(format!("key: {e}")))?;
    let der = zeroize::Zeroizing::new(block.contents().to_vec());
    match block.tag() {
        "PRIVATE KEY" => AuthorityKey::from_pkcs8_any(&der),
        "EC PRIVATE KEY" => {
            // The curve is inside the SEC1 structure; the wrapper names it too, so try both.
            for curve in [P256_OID, P384_OID] {
                let pkcs8 =
                    zeroize::Zeroizing::new(pkcs8_wrap(&[EC_PUBLIC_KEY_OID, curve].concat(), &der));
                if let Ok(key) = AuthorityKey::from_pkcs8_any(&pkcs8) {
                    return Ok(key);
                }
            }
            Err(Error::Upstream(
                "the EC PRIVATE KEY is not a P-256 or P-384 key".into(),
            ))
        }
        "RSA PRIVATE KEY" => {
            let pkcs8 =
                zeroize::Zeroizing::new(pkcs8_wrap(&[RSA_ENCRYPTION_OID, DER_NULL].concat(), &der));
            AuthorityKey::from_pkcs8_any(&pkcs8)
        }
        other => Err(Error::Upstream(format!(
            "key is a {other:?} block; a PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY is required"
        ))),
    }
}

const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const DER_NULL: &[u8] = &[0x05, 0x00];

/// `PrivateKeyInfo { version 0, algorithm, privateKey OCTET STRING }` around a legacy key.
fn pkcs8_wrap(algorithm: &[u8], legacy_der: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend(der_tagged(0x30, algorithm));
    body.extend(der_tagged(0x04, legacy_der));
    der_tagged(0x30, &body)
}
