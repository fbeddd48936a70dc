//! SPIFFE trust bundles: one per trust domain, in SPIFFE JSON (a JWK Set), PEM and concatenated
//! DER forms, and the bundle map that carries several of them without ever merging them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::id::{IdError, TrustDomain};
use crate::jwk::{JwkError, JwtPublicKey, RawJwk};

const USE_X509_SVID: &str = "x509-svid";
const USE_JWT_SVID: &str = "jwt-svid";

/// Why a bundle could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The document is not valid JSON of the expected shape.
    #[error("bundle is not valid JSON: {0}")]
    Json(String),
    /// The mandatory `keys` member is absent.
    #[error("bundle has no \"keys\" member")]
    MissingKeys,
    /// A JWK lacks its mandatory `kty` parameter.
    #[error("key #{index} has no \"kty\" parameter")]
    MissingKeyType {
        /// Position of the key in `keys`.
        index: usize,
    },
    /// An `x509-svid` JWK holds more than one certificate in `x5c`.
    #[error("x509-svid key #{index} must hold exactly one certificate in x5c, found {count}")]
    X5cCount {
        /// Position of the key in `keys`.
        index: usize,
        /// Number of certificates found.
        count: usize,
    },
    /// A certificate does not parse as X.509 DER.
    #[error("certificate #{index} is not a valid X.509 certificate")]
    BadCertificate {
        /// Position of the certificate.
        index: usize,
    },
    /// A `jwt-svid` JWK has no `kid`.
    #[error("jwt-svid key #{index} has no \"kid\"")]
    MissingKeyId {
        /// Position of the key in `keys`.
        index: usize,
    },
    /// Two JWT authorities share a `kid`.
    #[error("two JWT authorities share the key id {0:?}")]
    DuplicateKeyId(String),
    /// The key material of a JWK is malformed.
    #[error("key #{index}: {source}")]
    BadJwk {
        /// Position of the key in `keys`.
        index: usize,
        /// What is wrong with it.
        source: JwkError,
    },
    /// A bundle map names the same trust domain twice.
    #[error("bundle map names trust domain {0:?} more than once")]
    DuplicateTrustDomain(String),
    /// A bundle map key is not a valid trust domain.
    #[error("bundle map key {name:?} is not a trust domain: {source}")]
    BadTrustDomain {
        /// The offending key.
        name: String,
        /// Why it is invalid.
        source: IdError,
    },
    /// A PEM document could not be decoded or holds something other than certificates.
    #[error("PEM bundle is invalid: {0}")]
    Pem(String),
}

/// The trust bundle of one trust domain.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<CertificateDer<'static>>,
    jwt_authorities: BTreeMap<String, JwtPublicKey>,
    sequence: Option<u64>,
    refresh_hint: Option<Duration>,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("trust_domain", &self.trust_domain)
            .field("x509_authorities", &self.x509_authorities.len())
            .field(
                "jwt_authorities",
                &self.jwt_authorities.keys().collect::<Vec<_>>(),
            )
            .field("sequence", &self.sequence)
            .field("refresh_hint", &self.refresh_hint)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawBundle {
    keys: Option<Vec<serde_json::Value>>,
    spiffe_sequence: Option<u64>,
    spiffe_refresh_hint: Option<u64>,
}

impl Bundle {
    /// An empty bundle: a trust domain with no usable keys, whose SVIDs are all untrusted.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: BTreeMap::new(),
            sequence: None,
            refresh_hint: None,
        }
    }

    /// The trust domain this bundle belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The X.509 authorities (root CA certificates), DER.
    pub fn x509_authorities(&self) -> &[CertificateDer<'static>] {
        &self.x509_authorities
    }

    /// The JWT authorities by key id.
    pub fn jwt_authorities(&self) -> &BTreeMap<String, JwtPublicKey> {
        &self.jwt_authorities
    }

    /// The JWT authority with this key id.
    pub fn jwt_authority(&self, kid: &str) -> Option<&JwtPublicKey> {
        self.jwt_authorities.get(kid)
    }

    /// `spiffe_sequence`, when known.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// `spiffe_refresh_hint`, when known.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// Sets `spiffe_sequence`.
    pub fn set_sequence(&mut self, sequence: u64) {
        self.sequence = Some(sequence);
    }

    /// Sets `spiffe_refresh_hint` (whole seconds are kept).
    pub fn set_refresh_hint(&mut self, hint: Duration) {
        self.refresh_hint = Some(Duration::from_secs(hint.as_secs()));
    }

    /// Adds an X.509 authority, checking that it parses; a certificate already present is ignored.
    pub fn add_x509_authority(&mut self, der: &[u8]) -> Result<(), BundleError> {
        let index = self.x509_authorities.len();
        parse_certificate(der, index)?;
        if !self.x509_authorities.iter().any(|c| c.as_ref() == der) {
            self.x509_authorities
                .push(CertificateDer::from(der.to_vec()));
        }
        Ok(())
    }

    /// Adds a JWT authority; its key id must be new in this bundle.
    pub fn add_jwt_authority(&mut self, kid: &str, key: JwtPublicKey) -> Result<(), BundleError> {
        if self.jwt_authorities.contains_key(kid) {
            return Err(BundleError::DuplicateKeyId(kid.to_owned()));
        }
        self.jwt_authorities.insert(kid.to_owned(), key);
        Ok(())
    }

    /// Whether the bundle has no usable key at all.
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }

    /// Parses a SPIFFE bundle (JWK Set) document for the given trust domain.
    ///
    /// Keys of unknown `kty` or `use`, and `x509-svid` keys without certificates, are ignored as
    /// the spec requires; malformed keys of a known kind are an error.
    pub fn from_spiffe_json(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| BundleError::Json(e.to_string()))?;
        Self::from_json_value(trust_domain, value)
    }

    /// A bundle file as operators have it: SPIFFE bundle JSON (a JWK Set, recognised by its
    /// leading `{`) or PEM certificates.
    pub fn from_json_or_pem(trust_domain: TrustDomain, bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            Self::from_spiffe_json(trust_domain, bytes)
        } else {
            Self::from_pem(trust_domain, bytes)
        }
    }

    /// The JWT authorities of an OIDC JWK Set (RFC 7517, as published by OIDC discovery) as a
    /// bundle of `trust_domain`: keys with `use: sig` or no `use`, with a `kid`; other keys are
    /// skipped, a malformed signing key is an error.
    pub fn from_oidc_jwks(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| BundleError::Json(e.to_string()))?;
        let keys = value
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or(BundleError::MissingKeys)?;
        let mut bundle = Self::new(trust_domain);
        for (index, key) in keys.iter().enumerate() {
            let jwk: RawJwk = serde_json::from_value(key.clone())
                .map_err(|e| BundleError::Json(format!("key #{index}: {e}")))?;
            if !matches!(jwk.key_use.as_deref(), None | Some("sig")) {
                continue;
            }
            let Some(key) = JwtPublicKey::from_raw(&jwk)
                .map_err(|source| BundleError::BadJwk { index, source })?
            else {
                continue;
            };
            let kid = jwk.kid.as_deref().filter(|k| !k.is_empty());
            bundle.add_jwt_authority(kid.ok_or(BundleError::MissingKeyId { index })?, key)?;
        }
        Ok(bundle)
    }

    fn from_json_value(
        trust_domain: TrustDomain,
        value: serde_json::Value,
    ) -> Result<Self, BundleError> {
        let raw: RawBundle =
            serde_json::from_value(value).map_err(|e| BundleError::Json(e.to_string()))?;
        let keys = raw.keys.ok_or(BundleError::MissingKeys)?;
        let mut bundle = Self::new(trust_domain);
        bundle.sequence = raw.spiffe_sequence;
        bundle.refresh_hint = raw.spiffe_refresh_hint.map(Duration::from_secs);
        for (index, key) in keys.into_iter().enumerate() {
            let jwk: RawJwk = serde_json::from_value(key)
                .map_err(|e| BundleError::Json(format!("key #{index}: {e}")))?;
            bundle.add_raw_jwk(index, &jwk)?;
        }
        Ok(bundle)
    }

    fn add_raw_jwk(&mut self, index: usize, jwk: &RawJwk) -> Result<(), BundleError> {
        if jwk.kty.is_none() {
            return Err(BundleError::MissingKeyType { index });
        }
        match jwk.key_use.as_deref() {
            Some(USE_X509_SVID) => {
                let certs = jwk.x5c.as_deref().unwrap_or_default();
                match certs {
                    [] => Ok(()),
                    [cert] => {
                        let der = STANDARD
                            .decode(cert)
                            .map_err(|_| BundleError::BadCertificate { index })?;
                        parse_certificate(&der, index)?;
                        if !self
                            .x509_authorities
                            .iter()
                            .any(|c| c.as_ref() == der.as_slice())
                        {
                            self.x509_authorities.push(CertificateDer::from(der));
                        }
                        Ok(())
                    }
                    more => Err(BundleError::X5cCount {
                        index,
                        count: more.len(),
                    }),
                }
            }
            Some(USE_JWT_SVID) => {
                let Some(key) = JwtPublicKey::from_raw(jwk)
                    .map_err(|source| BundleError::BadJwk { index, source })?
                else {
                    return Ok(());
                };
                let kid = jwk.kid.as_deref().filter(|k| !k.is_empty());
                let kid = kid.ok_or(BundleError::MissingKeyId { index })?;
                self.add_jwt_authority(kid, key)
            }
            _ => Ok(()),
        }
    }

    fn keys_json(&self, include_x509: bool) -> Vec<RawJwk> {
        let mut keys = Vec::new();
        if include_x509 {
            for cert in &self.x509_authorities {
                let mut jwk = spki_of(cert)
                    .and_then(|spki| JwtPublicKey::from_spki_der(&spki).ok())
                    .map(|k| k.to_raw())
                    .unwrap_or_default();
                if jwk.kty.is_none() {
                    // Unusual key types still need a kty; consumers use x5c only.
                    jwk.kty = Some("EC".into());
                }
                jwk.key_use = Some(USE_X509_SVID.into());
                jwk.x5c = Some(vec![STANDARD.encode(cert.as_ref())]);
                keys.push(jwk);
            }
        }
        for (kid, key) in &self.jwt_authorities {
            let mut jwk = key.to_raw();
            jwk.key_use = Some(USE_JWT_SVID.into());
            jwk.kid = Some(kid.clone());
            keys.push(jwk);
        }
        keys
    }

    /// Serialises the bundle as a SPIFFE bundle document.
    pub fn to_spiffe_json(&self) -> String {
        let mut doc = serde_json::Map::new();
        doc.insert(
            "keys".into(),
            serde_json::to_value(self.keys_json(true)).unwrap_or_default(),
        );
        if let Some(sequence) = self.sequence {
            doc.insert("spiffe_sequence".into(), sequence.into());
        }
        if let Some(hint) = self.refresh_hint {
            doc.insert("spiffe_refresh_hint".into(), hint.as_secs().into());
        }
        serde_json::Value::Object(doc).to_string()
    }

    /// The JWT authorities as a standard RFC 7517 JWK Set, as `FetchJWTBundles` serves them: no
    /// X.509 keys and no SPIFFE parameters.
    pub fn to_jwks_json(&self) -> String {
        let keys = serde_json::to_value(self.keys_json(false)).unwrap_or_default();
        serde_json::json!({ "keys": keys }).to_string()
    }

    /// The JWT authorities as an OIDC JWK Set (RFC 7517): `use: sig` and the `alg` each key
    /// signs with, for relying parties that verify JWT-SVIDs through OIDC discovery. X.509
    /// authorities are not included.
    pub fn to_oidc_jwks_json(&self) -> String {
        let keys: Vec<serde_json::Value> = self
            .jwt_authorities
            .iter()
            .map(|(kid, key)| {
                let mut jwk = key.to_raw();
                jwk.key_use = Some("sig".into());
                jwk.kid = Some(kid.clone());
                let mut value = serde_json::to_value(jwk).unwrap_or_default();
                value["alg"] = serde_json::Value::from(key.algorithm_name());
                value
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    /// Parses a PEM document holding only `CERTIFICATE` blocks.
    pub fn from_pem(trust_domain: TrustDomain, pem_text: &[u8]) -> Result<Self, BundleError> {
        let blocks = pem::parse_many(pem_text).map_err(|e| BundleError::Pem(e.to_string()))?;
        if blocks.is_empty() {
            return Err(BundleError::Pem("no CERTIFICATE block found".into()));
        }
        let mut bundle = Self::new(trust_domain);
        for block in blocks {
            if block.tag() != "CERTIFICATE" {
                return Err(BundleError::Pem(format!(
                    "unexpected {:?} block",
                    block.tag()
                )));
            }
            bundle.add_x509_authority(block.contents())?;
        }
        Ok(bundle)
    }

    /// The X.509 authorities as PEM.
    pub fn to_pem(&self) -> String {
        self.x509_authorities
            .iter()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_ref().to_vec())))
            .collect()
    }

    /// Parses concatenated DER certificates (the Workload API's bundle encoding).
    pub fn from_der_concat(trust_domain: TrustDomain, der: &[u8]) -> Result<Self, BundleError> {
        let mut bundle = Self::new(trust_domain);
        for cert in split_der_certificates(der)? {
            bundle.add_x509_authority(&cert)?;
        }
        Ok(bundle)
    }

    /// The X.509 authorities as concatenated DER.
    pub fn to_der_concat(&self) -> Vec<u8> {
        self.x509_authorities
            .iter()
            .flat_map(|c| c.as_ref().iter().copied())
            .collect()
    }
}

fn parse_certificate(der: &[u8], index: usize) -> Result<(), BundleError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], _)) => Ok(()),
        _ => Err(BundleError::BadCertificate { index }),
    }
}

fn spki_of(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.tbs_certificate.subject_pki.raw.to_vec())
}

/// Splits concatenated DER certificates, rejecting trailing garbage.
pub fn split_der_certificates(der: &[u8]) -> Result<Vec<Vec<u8>>, BundleError> {
    let mut certs = Vec::new();
    let mut rest = der;
    while !rest.is_empty() {
        let index = certs.len();
        let (after, _) = x509_parser::parse_x509_certificate(rest)
            .map_err(|_| BundleError::BadCertificate { index })?;
        let consumed = rest.len() - after.len();
        certs.push(rest[..consumed].to_vec());
        rest = after;
    }
    Ok(certs)
}

/// Bundles of several trust domains, one each, never merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleSet {
    bundles: BTreeMap<TrustDomain, Bundle>,
}

/// A JSON object read as an ordered list of members, so that duplicate keys can be detected.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping trust domain names to bundles")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

#[derive(Deserialize)]
struct RawBundleMap {
    trust_domains: Option<Members>,
}

impl BundleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a bundle, replacing any earlier bundle of the same trust domain.
    pub fn insert(&mut self, bundle: Bundle) {
        self.bundles.insert(bundle.trust_domain.clone(), bundle);
    }

    /// Removes the bundle of a trust domain.
    pub fn remove(&mut self, trust_domain: &TrustDomain) -> Option<Bundle> {
        self.bundles.remove(trust_domain)
    }

    /// The bundle of a trust domain.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.bundles.get(trust_domain)
    }

    /// The bundle of a trust domain, looked up by name.
    pub fn get_by_name(&self, name: &str) -> Option<&Bundle> {
        self.bundles
            .values()
            .find(|b| b.trust_domain.as_str() == name)
    }

    /// All bundles, ordered by trust domain.
    pub fn iter(&self) -> impl Iterator<Item = &Bundle> {
        self.bundles.values()
    }

    /// Number of trust domains.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// Whether the set holds no bundle.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }

    /// Parses a SPIFFE bundle map (`{"trust_domains": {"td": bundle, ...}}`), rejecting duplicate
    /// trust domain keys.
    pub fn from_bundle_map_json(json: &[u8]) -> Result<Self, BundleError> {
        let raw: RawBundleMap =
            serde_json::from_slice(json).map_err(|e| BundleError::Json(e.to_string()))?;
        let members = raw
            .trust_domains
            .ok_or_else(|| BundleError::Json("missing \"trust_domains\" member".into()))?;
        let mut set = Self::new();
        for (name, value) in members.0 {
            let trust_domain = TrustDomain::from_name_or_id(&name).map_err(|source| {
                BundleError::BadTrustDomain {
                    name: name.clone(),
                    source,
                }
            })?;
            if set.bundles.contains_key(&trust_domain) {
                return Err(BundleError::DuplicateTrustDomain(name));
            }
            set.insert(Bundle::from_json_value(trust_domain, value)?);
        }
        Ok(set)
    }

    /// Serialises the set as a SPIFFE bundle map; per-bundle refresh hints are omitted as the
    /// spec recommends.
    pub fn to_bundle_map_json(&self) -> String {
        let mut domains = serde_json::Map::new();
        for bundle in self.bundles.values() {
            let mut without_hint = bundle.clone();
            without_hint.refresh_hint = None;
            let value = serde_json::from_str(&without_hint.to_spiffe_json()).unwrap_or_default();
            domains.insert(bundle.trust_domain.as_str().to_owned(), value);
        }
        serde_json::json!({ "trust_domains": domains }).to_string()
    }
}
