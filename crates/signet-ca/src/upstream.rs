//! An upstream CA (cert-manager, a corporate PKI...) that signs Signet's intermediate.

use std::fmt;

use rustls_pki_types::CertificateDer;
use signet_spiffe::bundle::split_der_certificates;

use crate::error::{Error, Result};
use crate::key::AuthorityKey;

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
        let key_block = pem::parse(key_pem).map_err(|e| Error::Upstream(format!("key: {e}")))?;
        if key_block.tag() != "PRIVATE KEY" {
            return Err(Error::Upstream(format!(
                "key is a {:?} block; a PKCS#8 \"PRIVATE KEY\" is required (convert with `openssl pkcs8 -topk8 -nocrypt`)",
                key_block.tag()
            )));
        }
        let key = AuthorityKey::from_pkcs8_any(key_block.contents())?;
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
}
