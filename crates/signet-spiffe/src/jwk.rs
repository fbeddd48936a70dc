//! Public keys of JWT authorities as they travel in JWK form.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// An elliptic curve usable for JWT-SVID signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// NIST P-256 (ES256).
    P256,
    /// NIST P-384 (ES384).
    P384,
    /// NIST P-521 (ES512).
    P521,
}

impl EcCurve {
    /// The JWK `crv` name.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// Length in bytes of one affine coordinate.
    pub fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    fn from_jwk_name(name: &str) -> Option<Self> {
        match name {
            "P-256" => Some(Self::P256),
            "P-384" => Some(Self::P384),
            "P-521" => Some(Self::P521),
            _ => None,
        }
    }
}

/// A public key that can verify JWT-SVID signatures.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwtPublicKey {
    /// An EC key: the uncompressed SEC1 point (`04 || x || y`).
    Ec {
        /// The curve the point lies on.
        curve: EcCurve,
        /// Uncompressed SEC1 encoding of the point.
        point: Vec<u8>,
    },
    /// An RSA key as big-endian modulus and exponent.
    Rsa {
        /// Modulus, big-endian, no leading zeros.
        n: Vec<u8>,
        /// Public exponent, big-endian.
        e: Vec<u8>,
    },
}

/// Why a JWK could not be turned into a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    /// A parameter the key type requires is absent.
    #[error("JWK is missing the {0:?} parameter")]
    MissingParameter(&'static str),
    /// A parameter is not valid unpadded base64url.
    #[error("JWK parameter {0:?} is not valid base64url")]
    BadBase64(&'static str),
    /// The curve is not P-256, P-384 or P-521.
    #[error("JWK curve {0:?} is not supported")]
    UnsupportedCurve(String),
    /// A coordinate has the wrong length for its curve.
    #[error("JWK coordinate {0:?} has the wrong length for its curve")]
    BadCoordinateLength(&'static str),
    /// The RSA modulus is shorter than 2048 bits.
    #[error("RSA modulus of {0} bits is too small; at least 2048 are required")]
    RsaTooSmall(usize),
}

/// A JWK as it appears in a SPIFFE bundle; every field optional so that unknown or incomplete
/// keys can be classified rather than failing the whole document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RawJwk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

fn decode_param(value: Option<&String>, name: &'static str) -> Result<Vec<u8>, JwkError> {
    let value = value.ok_or(JwkError::MissingParameter(name))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| JwkError::BadBase64(name))
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

impl JwtPublicKey {
    /// The JWS `alg` JWT-SVIDs signed by this key carry (ES256/384/512, RS256 for RSA).
    pub fn algorithm_name(&self) -> &'static str {
        match self {
            Self::Ec {
                curve: EcCurve::P256,
                ..
            } => "ES256",
            Self::Ec {
                curve: EcCurve::P384,
                ..
            } => "ES384",
            Self::Ec {
                curve: EcCurve::P521,
                ..
            } => "ES512",
            Self::Rsa { .. } => "RS256",
        }
    }

    /// Builds an EC key from its uncompressed point, checking the encoding length.
    pub fn ec(curve: EcCurve, point: Vec<u8>) -> Result<Self, JwkError> {
        if point.len() != 1 + 2 * curve.coordinate_len() || point.first() != Some(&0x04) {
            return Err(JwkError::BadCoordinateLength("x"));
        }
        Ok(Self::Ec { curve, point })
    }

    /// Parses the key material of a JWK whose `kty` is `EC` or `RSA`; `Ok(None)` for other types.
    pub(crate) fn from_raw(raw: &RawJwk) -> Result<Option<Self>, JwkError> {
        match raw.kty.as_deref() {
            Some("EC") => {
                let crv = raw
                    .crv
                    .as_deref()
                    .ok_or(JwkError::MissingParameter("crv"))?;
                let curve = EcCurve::from_jwk_name(crv)
                    .ok_or_else(|| JwkError::UnsupportedCurve(crv.to_owned()))?;
                let x = decode_param(raw.x.as_ref(), "x")?;
                let y = decode_param(raw.y.as_ref(), "y")?;
                if x.len() != curve.coordinate_len() {
                    return Err(JwkError::BadCoordinateLength("x"));
                }
                if y.len() != curve.coordinate_len() {
                    return Err(JwkError::BadCoordinateLength("y"));
                }
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(Some(Self::Ec { curve, point }))
            }
            Some("RSA") => {
                let n = strip_leading_zeros(&decode_param(raw.n.as_ref(), "n")?);
                let e = strip_leading_zeros(&decode_param(raw.e.as_ref(), "e")?);
                if e.is_empty() {
                    return Err(JwkError::MissingParameter("e"));
                }
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if bits < 2048 {
                    return Err(JwkError::RsaTooSmall(bits));
                }
                Ok(Some(Self::Rsa { n, e }))
            }
            _ => Ok(None),
        }
    }

    /// Writes the key material into a JWK.
    pub(crate) fn to_raw(&self) -> RawJwk {
        match self {
            Self::Ec { curve, point } => {
                let len = curve.coordinate_len();
                let coordinates = point.get(1..).unwrap_or_default();
                let (x, y) = coordinates.split_at(len.min(coordinates.len()));
                RawJwk {
                    kty: Some("EC".into()),
                    crv: Some(curve.jwk_name().into()),
                    x: Some(URL_SAFE_NO_PAD.encode(x)),
                    y: Some(URL_SAFE_NO_PAD.encode(y)),
                    ..RawJwk::default()
                }
            }
            Self::Rsa { n, e } => RawJwk {
                kty: Some("RSA".into()),
                n: Some(URL_SAFE_NO_PAD.encode(n)),
                e: Some(URL_SAFE_NO_PAD.encode(e)),
                ..RawJwk::default()
            },
        }
    }

    /// Reads the public key of a DER SubjectPublicKeyInfo (EC P-256/P-384/P-521 or RSA).
    pub fn from_spki_der(spki_der: &[u8]) -> Result<Self, JwkError> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey;
        use x509_parser::x509::SubjectPublicKeyInfo;
        let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|_| JwkError::MissingParameter("subjectPublicKeyInfo"))?;
        match spki.parsed() {
            Ok(PublicKey::EC(point)) => {
                let curve = match point.data().len() {
                    65 => EcCurve::P256,
                    97 => EcCurve::P384,
                    133 => EcCurve::P521,
                    other => return Err(JwkError::UnsupportedCurve(format!("{other}-byte point"))),
                };
                Self::ec(curve, point.data().to_vec())
            }
            Ok(PublicKey::RSA(rsa)) => {
                let n = strip_leading_zeros(rsa.modulus);
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if bits < 2048 {
                    return Err(JwkError::RsaTooSmall(bits));
                }
                Ok(Self::Rsa {
                    n,
                    e: strip_leading_zeros(rsa.exponent),
                })
            }
            _ => Err(JwkError::MissingParameter("kty")),
        }
    }
}
