//! JWT-SVIDs: compact JWS parsing and validation exactly as the JWT-SVID spec requires.
//!
//! Validation order: structure → `alg` allow-list (before anything else is trusted) → header
//! members → claims shape → `sub` → key by (trust domain of `sub`, `kid`) → signature → `exp` →
//! `aud`.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::bundle::BundleSet;
use crate::id::{IdError, SpiffeId};
use crate::jwk::{EcCurve, JwtPublicKey};

/// Most audiences one JWT-SVID may carry, and the longest audience: every signer (agent and
/// server) enforces them, so a token stays small (at most about 33 KB of audiences).
pub const MAX_AUDIENCES: usize = 32;
/// Longest audience accepted, in bytes.
pub const MAX_AUDIENCE_BYTES: usize = 1024;

/// Checks an audience list against the JWT-SVID bounds.
pub fn check_audiences(audience: &[String]) -> Result<(), String> {
    if audience.is_empty() || audience.iter().any(String::is_empty) {
        return Err("audience must be specified".into());
    }
    if audience.len() > MAX_AUDIENCES {
        return Err(format!(
            "{} audiences; at most {MAX_AUDIENCES} are accepted",
            audience.len()
        ));
    }
    if audience.iter().any(|a| a.len() > MAX_AUDIENCE_BYTES) {
        return Err(format!(
            "an audience is longer than {MAX_AUDIENCE_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Signature algorithms a JWT-SVID may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// ECDSA P-521 with SHA-512.
    Es512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
}

impl JwtAlgorithm {
    /// Parses an `alg` header value; anything outside the SPIFFE list (`none`, `HS256`, ...) is
    /// refused.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "ES512" => Self::Es512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            _ => return None,
        })
    }

    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
        }
    }
}

/// Why a JWT-SVID is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// Not three base64url parts separated by dots (JSON serialization and JWE are refused).
    #[error("token is not a compact JWS (three base64url parts)")]
    Malformed,
    /// The header is not a JSON object with string members, or repeats a member.
    #[error("token header is invalid: {0}")]
    BadHeader(String),
    /// `alg` is absent or not one of the algorithms the SPIFFE spec allows.
    #[error("algorithm {0:?} is not allowed for JWT-SVIDs")]
    DisallowedAlgorithm(String),
    /// The header carries a member other than `alg`, `kid` and `typ`.
    #[error("header member {0:?} is not allowed in a JWT-SVID")]
    DisallowedHeader(String),
    /// `typ` is present but neither `JWT` nor `JOSE`.
    #[error("header typ {0:?} must be \"JWT\" or \"JOSE\"")]
    BadType(String),
    /// `kid` is missing, so the signing key cannot be selected.
    #[error("header has no kid")]
    MissingKeyId,
    /// The claims are not a JSON object of the expected shape.
    #[error("token claims are invalid: {0}")]
    BadClaims(String),
    /// `sub` is absent.
    #[error("token has no sub claim")]
    MissingSubject,
    /// `sub` is not a valid SPIFFE ID.
    #[error("sub claim is not a SPIFFE ID: {0}")]
    BadSubject(IdError),
    /// `aud` is absent or empty.
    #[error("token has no aud claim")]
    MissingAudience,
    /// `exp` is absent.
    #[error("token has no exp claim")]
    MissingExpiry,
    /// No bundle for the trust domain of `sub`.
    #[error("no bundle for trust domain {0}")]
    NoBundle(String),
    /// No JWT authority with this `kid` in the bundle of `sub`'s trust domain.
    #[error("no JWT authority with kid {kid:?} in trust domain {trust_domain}")]
    UnknownKey {
        /// The requested key id.
        kid: String,
        /// The trust domain searched.
        trust_domain: String,
    },
    /// The key type does not fit the algorithm (e.g. an RSA key for ES256).
    #[error("algorithm {0} does not fit the authority's key")]
    KeyAlgorithmMismatch(&'static str),
    /// The signature does not verify.
    #[error("signature is invalid")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `aud` does not contain the expected audience.
    #[error("audience {0:?} is not in the token's aud claim")]
    AudienceMismatch(String),
}

impl JwtSvidError {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Malformed | Self::BadHeader(_) | Self::BadClaims(_) => "malformed",
            Self::DisallowedAlgorithm(_) | Self::KeyAlgorithmMismatch(_) => "bad_algorithm",
            Self::DisallowedHeader(_) | Self::BadType(_) | Self::MissingKeyId => "bad_header",
            Self::MissingSubject | Self::BadSubject(_) => "bad_subject",
            Self::MissingAudience | Self::AudienceMismatch(_) => "bad_audience",
            Self::MissingExpiry | Self::Expired => "expired",
            Self::NoBundle(_) | Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// Options for [`JwtSvid::validate`].
#[derive(Debug, Clone, Copy)]
pub struct JwtValidation {
    /// The current time.
    pub now: SystemTime,
    /// Tolerated clock skew on `exp`.
    pub leeway: Duration,
}

impl JwtValidation {
    /// Validation at `now` with the default 30 s leeway.
    pub fn at(now: SystemTime) -> Self {
        Self {
            now,
            leeway: Duration::from_secs(30),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
}

/// A parsed (and, from [`JwtSvid::validate`], verified) JWT-SVID.
#[derive(Clone, PartialEq)]
pub struct JwtSvid {
    token: String,
    spiffe_id: SpiffeId,
    audience: Vec<String>,
    expiry: SystemTime,
    algorithm: JwtAlgorithm,
    kid: String,
    claims: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token itself is a bearer credential: never print it.
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("audience", &self.audience)
            .field("expiry", &self.expiry)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

struct Parts<'a> {
    signing_input: &'a str,
    algorithm: JwtAlgorithm,
    kid: String,
    claims: serde_json::Map<String, serde_json::Value>,
    signature: Vec<u8>,
}

fn decode_part(part: &str) -> Result<Vec<u8>, JwtSvidError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtSvidError::Malformed)
}

fn split(token: &str) -> Result<Parts<'_>, JwtSvidError> {
    let mut pieces = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(JwtSvidError::Malformed);
    };
    let header_json = decode_part(h)?;
    let header_value: serde_json::Value =
        serde_json::from_slice(&header_json).map_err(|e| JwtSvidError::BadHeader(e.to_string()))?;
    // Check alg before anything else in the header is trusted.
    let alg = header_value
        .get("alg")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let algorithm = JwtAlgorithm::from_name(alg)
        .ok_or_else(|| JwtSvidError::DisallowedAlgorithm(alg.into()))?;
    if let Some(extra) = header_value.as_object().and_then(|m| {
        m.keys()
            .find(|k| !matches!(k.as_str(), "alg" | "kid" | "typ"))
    }) {
        return Err(JwtSvidError::DisallowedHeader(extra.clone()));
    }
    // Re-read the raw bytes strictly: rejects duplicate members and non-string values.
    let header: RawHeader =
        serde_json::from_slice(&header_json).map_err(|e| JwtSvidError::BadHeader(e.to_string()))?;
    if header.alg != algorithm.name() {
        return Err(JwtSvidError::BadHeader("alg changed between reads".into()));
    }
    if let Some(typ) = header.typ.as_ref().filter(|t| *t != "JWT" && *t != "JOSE") {
        return Err(JwtSvidError::BadType(typ.clone()));
    }
    let kid = header
        .kid
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or(JwtSvidError::MissingKeyId)?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&decode_part(c)?)
            .map_err(|e| JwtSvidError::BadClaims(e.to_string()))?;
    let signature = decode_part(s)?;
    let signing_input = &token[..h.len() + 1 + c.len()];
    Ok(Parts {
        signing_input,
        algorithm,
        kid,
        claims,
        signature,
    })
}

fn subject(claims: &serde_json::Map<String, serde_json::Value>) -> Result<SpiffeId, JwtSvidError> {
    let sub = claims.get("sub").ok_or(JwtSvidError::MissingSubject)?;
    let sub = sub
        .as_str()
        .ok_or_else(|| JwtSvidError::BadClaims("sub is not a string".into()))?;
    SpiffeId::new(sub).map_err(JwtSvidError::BadSubject)
}

fn audience(
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<String>, JwtSvidError> {
    let audience = match claims.get("aud") {
        None | Some(serde_json::Value::Null) => return Err(JwtSvidError::MissingAudience),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        Some(serde_json::Value::Array(many)) => many
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| JwtSvidError::BadClaims("aud holds a non-string".into()))?,
        Some(_) => {
            return Err(JwtSvidError::BadClaims(
                "aud is not a string or array".into(),
            ));
        }
    };
    if audience.is_empty() {
        return Err(JwtSvidError::MissingAudience);
    }
    Ok(audience)
}

fn expiry(claims: &serde_json::Map<String, serde_json::Value>) -> Result<SystemTime, JwtSvidError> {
    let exp = claims.get("exp").ok_or(JwtSvidError::MissingExpiry)?;
    let secs = exp
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| JwtSvidError::BadClaims("exp is not a non-negative number".into()))?;
    // NumericDate may carry fractions; whole seconds are enough and avoid float overflow panics.
    let secs = if secs > 1e15 { 1e15 } else { secs };
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64))
}

fn verify_signature(
    algorithm: JwtAlgorithm,
    key: &JwtPublicKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), JwtSvidError> {
    use aws_lc_rs::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};
    let mismatch = || JwtSvidError::KeyAlgorithmMismatch(algorithm.name());
    match key {
        JwtPublicKey::Ec { curve, point } => {
            let alg: &'static sig::EcdsaVerificationAlgorithm = match (algorithm, curve) {
                (JwtAlgorithm::Es256, EcCurve::P256) => &sig::ECDSA_P256_SHA256_FIXED,
                (JwtAlgorithm::Es384, EcCurve::P384) => &sig::ECDSA_P384_SHA384_FIXED,
                (JwtAlgorithm::Es512, EcCurve::P521) => &sig::ECDSA_P521_SHA512_FIXED,
                _ => return Err(mismatch()),
            };
            UnparsedPublicKey::new(alg, point)
                .verify(message, signature)
                .map_err(|_| JwtSvidError::BadSignature)
        }
        JwtPublicKey::Rsa { n, e } => {
            let alg: &'static sig::RsaParameters = match algorithm {
                JwtAlgorithm::Rs256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                JwtAlgorithm::Rs384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                JwtAlgorithm::Rs512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                JwtAlgorithm::Ps256 => &sig::RSA_PSS_2048_8192_SHA256,
                JwtAlgorithm::Ps384 => &sig::RSA_PSS_2048_8192_SHA384,
                JwtAlgorithm::Ps512 => &sig::RSA_PSS_2048_8192_SHA512,
                _ => return Err(mismatch()),
            };
            RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(alg, message, signature)
            .map_err(|_| JwtSvidError::BadSignature)
        }
    }
}

impl JwtSvid {
    /// Validates a token against the bundles, for one expected audience.
    pub fn validate(
        token: &str,
        bundles: &BundleSet,
        expected_audience: &str,
        options: JwtValidation,
    ) -> Result<Self, JwtSvidError> {
        let parts = split(token)?;
        let spiffe_id = subject(&parts.claims)?;
        let audience = audience(&parts.claims)?;
        let expiry = expiry(&parts.claims)?;
        let trust_domain = spiffe_id.trust_domain();
        let bundle = bundles
            .get(&trust_domain)
            .ok_or_else(|| JwtSvidError::NoBundle(trust_domain.to_string()))?;
        let key = bundle
            .jwt_authority(&parts.kid)
            .ok_or_else(|| JwtSvidError::UnknownKey {
                kid: parts.kid.clone(),
                trust_domain: trust_domain.to_string(),
            })?;
        verify_signature(
            parts.algorithm,
            key,
            parts.signing_input.as_bytes(),
            &parts.signature,
        )?;
        if expiry + options.leeway <= options.now {
            return Err(JwtSvidError::Expired);
        }
        if !audience.iter().any(|a| a == expected_audience) {
            return Err(JwtSvidError::AudienceMismatch(expected_audience.to_owned()));
        }
        Ok(Self {
            token: token.to_owned(),
            spiffe_id,
            audience,
            expiry,
            algorithm: parts.algorithm,
            kid: parts.kid,
            claims: parts.claims,
        })
    }

    /// Parses a token without verifying its signature, expiry or audience: for display and for
    /// caching tokens this process minted itself. Never use the result to authenticate anyone.
    pub fn parse_insecure(token: &str) -> Result<Self, JwtSvidError> {
        let parts = split(token)?;
        Ok(Self {
            token: token.to_owned(),
            spiffe_id: subject(&parts.claims)?,
            audience: audience(&parts.claims)?,
            expiry: expiry(&parts.claims)?,
            algorithm: parts.algorithm,
            kid: parts.kid,
            claims: parts.claims,
        })
    }

    /// The compact token. It is a bearer credential: never log it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The `sub` SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The `aud` values.
    pub fn audience(&self) -> &[String] {
        &self.audience
    }

    /// The `exp` time.
    pub fn expiry(&self) -> SystemTime {
        self.expiry
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// The `kid` header.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// All claims.
    pub fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.claims
    }
}

#[cfg(test)]
mod audience_bounds {
    use super::*;

    #[test]
    fn audiences_are_bounded_in_number_and_length() {
        let one = |s: &str| vec![s.to_owned()];
        assert_eq!(check_audiences(&one("spiffe://example.org/db")), Ok(()));
        assert!(check_audiences(&[]).is_err());
        assert!(check_audiences(&one("")).is_err());
        assert_eq!(
            check_audiences(&one(&"a".repeat(MAX_AUDIENCE_BYTES))),
            Ok(())
        );
        assert!(check_audiences(&one(&"a".repeat(MAX_AUDIENCE_BYTES + 1))).is_err());
        let many: Vec<String> = (0..=MAX_AUDIENCES).map(|i| format!("aud-{i}")).collect();
        assert!(check_audiences(&many).is_err());
        assert_eq!(check_audiences(&many[..MAX_AUDIENCES]), Ok(()));
    }
}
