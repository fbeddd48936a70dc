//! Minting X509-SVIDs from CSRs and JWT-SVIDs (DESIGN §5).

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use signet_spiffe::SpiffeId;

use crate::authority::{Authority, JwtAuthority, X509Authority};
use crate::csr::{CsrIdRule, verify_csr_with};
use crate::error::{Error, Result};
use crate::profile::{NOT_BEFORE_CUSHION, leaf_params};

/// What to put in an X509-SVID. The caller has already authorised `spiffe_id` for the requester.
#[derive(Debug, Clone)]
pub struct X509SvidRequest<'a> {
    /// DER PKCS#10 request; its only URI SAN must be `spiffe_id`.
    pub csr_der: &'a [u8],
    /// The identity to certify.
    pub spiffe_id: &'a SpiffeId,
    /// Requested lifetime; capped at the authority's expiry.
    pub ttl: Duration,
    /// DNS SANs; the first also becomes the subject CN.
    pub dns_names: &'a [String],
    /// Which URI SANs the CSR may carry.
    pub csr_id_rule: CsrIdRule,
}

/// A freshly signed X509-SVID.
#[derive(Debug, Clone)]
pub struct MintedX509Svid {
    /// Leaf first, then intermediates up to (not including) the bundle roots.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
    /// Id of the authority that signed it (to find SVIDs to re-sign after a taint).
    pub authority_id: String,
}

fn check_workload_id(authority_td: &str, spiffe_id: &SpiffeId) -> Result<()> {
    if spiffe_id.trust_domain_name() != authority_td {
        return Err(Error::InvalidRequest(format!(
            "{spiffe_id} is not in trust domain {authority_td}"
        )));
    }
    if spiffe_id.is_trust_domain_id() {
        return Err(Error::InvalidRequest(format!("{spiffe_id} has no path")));
    }
    Ok(())
}

/// Signs an X509-SVID for a verified CSR.
pub fn mint_x509_svid(
    authority: &X509Authority,
    trust_domain: &str,
    request: &X509SvidRequest<'_>,
    now: SystemTime,
) -> Result<MintedX509Svid> {
    check_workload_id(trust_domain, request.spiffe_id)?;
    if request.ttl.is_zero() {
        return Err(Error::InvalidRequest("TTL must be positive".into()));
    }
    if authority.not_after() <= now {
        return Err(Error::NoActiveAuthority("unexpired X.509"));
    }
    let csr = verify_csr_with(request.csr_der, request.spiffe_id, request.csr_id_rule)?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(csr.public_key_der())
        .map_err(|e| Error::InvalidCsr(format!("public key: {e}")))?;
    let not_after = (now + request.ttl).min(authority.not_after());
    let not_before = now.checked_sub(NOT_BEFORE_CUSHION).unwrap_or(now);
    let params = leaf_params(request.spiffe_id, request.dns_names, not_before, not_after)?;
    let leaf = params
        .signed_by(&public_key, authority.issuer())
        .map_err(|e| Error::Signing(e.to_string()))?;
    let mut chain = Vec::with_capacity(2 + authority.upstream_chain().len());
    chain.push(leaf.der().clone());
    if !authority.is_self_signed() {
        chain.push(authority.certificate().clone());
        chain.extend(authority.upstream_chain().iter().cloned());
    }
    Ok(MintedX509Svid {
        chain,
        not_after,
        authority_id: authority.id().to_owned(),
    })
}

/// What to put in a JWT-SVID.
#[derive(Debug, Clone)]
pub struct JwtSvidRequest<'a> {
    /// The `sub` claim.
    pub spiffe_id: &'a SpiffeId,
    /// The `aud` claim: at least one value.
    pub audience: &'a [String],
    /// Requested lifetime; capped at the authority's expiry.
    pub ttl: Duration,
    /// Optional `iss` claim (for OIDC).
    pub issuer: Option<&'a str>,
}

/// Signs a JWT-SVID: header `alg`, `kid`, `typ: JWT`; claims `sub`, `aud`, `exp`, `iat`
/// (and `iss` when configured).
pub fn mint_jwt_svid(
    authority: &JwtAuthority,
    trust_domain: &str,
    request: &JwtSvidRequest<'_>,
    now: SystemTime,
) -> Result<String> {
    check_workload_id(trust_domain, request.spiffe_id)?;
    if request.audience.is_empty() || request.audience.iter().any(String::is_empty) {
        return Err(Error::InvalidRequest(
            "at least one non-empty audience is required".into(),
        ));
    }
    if authority.not_after() <= now {
        return Err(Error::NoActiveAuthority("unexpired JWT"));
    }
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let expiry = (now + request.ttl).min(authority.not_after());
    let header = serde_json::json!({
        "alg": authority.key().algorithm().jwt_algorithm().name(),
        "kid": authority.id(),
        "typ": "JWT",
    });
    let mut claims = serde_json::json!({
        "sub": request.spiffe_id.as_str(),
        "aud": request.audience,
        "exp": unix(expiry),
        "iat": unix(now),
    });
    if let (Some(issuer), Some(map)) = (request.issuer, claims.as_object_mut()) {
        map.insert("iss".into(), issuer.into());
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = authority.key().sign_jws(signing_input.as_bytes())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}
