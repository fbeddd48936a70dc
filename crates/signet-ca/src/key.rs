//! Authority key pairs: generation, PKCS#8 round trips, and raw signing for JWTs.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature as sig;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, RsaKeySize};
use serde::{Deserialize, Serialize};
use signet_spiffe::{JwtAlgorithm, JwtPublicKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Key algorithm of an authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (the default).
    #[default]
    EcP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcP384,
    /// RSA 2048-bit, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
}

impl KeyAlgorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcP256 => &PKCS_ECDSA_P256_SHA256,
            Self::EcP384 => &PKCS_ECDSA_P384_SHA384,
            Self::Rsa2048 => &PKCS_RSA_SHA256,
        }
    }

    /// The JWS algorithm this key signs JWTs with.
    pub fn jwt_algorithm(self) -> JwtAlgorithm {
        match self {
            Self::EcP256 => JwtAlgorithm::Es256,
            Self::EcP384 => JwtAlgorithm::Es384,
            Self::Rsa2048 => JwtAlgorithm::Rs256,
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ec-p256" | "p256" | "P-256" => Ok(Self::EcP256),
            "ec-p384" | "p384" | "P-384" => Ok(Self::EcP384),
            "rsa-2048" | "rsa2048" => Ok(Self::Rsa2048),
            other => Err(Error::UnsupportedKey(format!(
                "unknown key algorithm {other:?}; use ec-p256, ec-p384 or rsa-2048"
            ))),
        }
    }
}

/// A private key held by the signing authority: in memory (file and Secret key stores), or in
/// a device that signs and never exports it (PKCS#11). Clones share the key. `Debug` never shows
/// key material.
#[derive(Clone)]
pub struct AuthorityKey {
    algorithm: KeyAlgorithm,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Memory {
        pair: Arc<KeyPair>,
        /// The same key parsed once for JWS signing (JOSE wants fixed-size ECDSA signatures,
        /// which rcgen's X.509-oriented key does not produce).
        jws: Arc<JwsKey>,
    },
    Device {
        key: Arc<dyn DeviceKey>,
        /// The public key as rcgen wants it: the EC point, or the DER RSAPublicKey.
        public: Arc<[u8]>,
    },
}

/// A private key that lives in a device (an HSM through PKCS#11) and signs there.
pub trait DeviceKey: Send + Sync {
    /// How to find the key again after a restart; stored in the CA state in place of the key.
    fn reference(&self) -> KeyReference;
    /// Signs `message`: ECDSA over SHA-256 (P-256) or SHA-384 (P-384) as fixed-size `r || s`,
    /// RSA as PKCS#1 v1.5 with SHA-256.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
}

/// Where a device key is found again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeyReference {
    /// A key pair in a PKCS#11 token, by its `CKA_ID` (hex).
    Pkcs11 {
        /// `CKA_ID` of the private and public key objects, hex.
        id: String,
    },
}

enum JwsKey {
    Ec(sig::EcdsaKeyPair),
    Rsa(sig::RsaKeyPair),
}

impl JwsKey {
    fn from_pkcs8(algorithm: KeyAlgorithm, der: &[u8]) -> Result<Self> {
        let bad = |_| Error::UnsupportedKey("key does not load for JWS signing".into());
        Ok(match algorithm {
            KeyAlgorithm::EcP256 => Self::Ec(
                sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(bad)?,
            ),
            KeyAlgorithm::EcP384 => Self::Ec(
                sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, der)
                    .map_err(bad)?,
            ),
            KeyAlgorithm::Rsa2048 => Self::Rsa(sig::RsaKeyPair::from_pkcs8(der).map_err(bad)?),
        })
    }
}

impl fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityKey")
            .field("algorithm", &self.algorithm)
            .field("reference", &self.reference())
            .finish_non_exhaustive()
    }
}

impl AuthorityKey {
    /// Generates a new key in memory.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self> {
        let pair = match algorithm {
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(algorithm.rcgen(), RsaKeySize::_2048)
            }
            _ => KeyPair::generate_for(algorithm.rcgen()),
        }
        .map_err(|e| Error::KeyGeneration(e.to_string()))?;
        Self::assemble(algorithm, pair)
    }

    /// Loads a PKCS#8 DER key of a known algorithm.
    pub fn from_pkcs8(algorithm: KeyAlgorithm, der: &[u8]) -> Result<Self> {
        let key = rustls_pki_types_der(der);
        let pair = KeyPair::from_pkcs8_der_and_sign_algo(&key, algorithm.rcgen())
            .map_err(|e| Error::UnsupportedKey(format!("PKCS#8 key does not load: {e}")))?;
        Self::assemble(algorithm, pair)
    }

    /// A key held by a device, with its public key (the EC point `04 || x || y`, or the DER
    /// RSAPublicKey).
    pub fn from_device(
        algorithm: KeyAlgorithm,
        public_key: Vec<u8>,
        key: Arc<dyn DeviceKey>,
    ) -> Self {
        Self {
            algorithm,
            backend: Backend::Device {
                key,
                public: public_key.into(),
            },
        }
    }

    fn assemble(algorithm: KeyAlgorithm, pair: KeyPair) -> Result<Self> {
        let der = Zeroizing::new(pair.serialize_der());
        let jws = JwsKey::from_pkcs8(algorithm, &der)?;
        Ok(Self {
            algorithm,
            backend: Backend::Memory {
                pair: Arc::new(pair),
                jws: Arc::new(jws),
            },
        })
    }

    /// Loads a PKCS#8 DER key, detecting its algorithm.
    pub fn from_pkcs8_any(der: &[u8]) -> Result<Self> {
        if sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, der).is_ok() {
            return Self::from_pkcs8(KeyAlgorithm::EcP256, der);
        }
        if sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_ASN1_SIGNING, der).is_ok() {
            return Self::from_pkcs8(KeyAlgorithm::EcP384, der);
        }
        if let Ok(rsa) = sig::RsaKeyPair::from_pkcs8(der) {
            if rsa.public_modulus_len() * 8 < 2048 {
                return Err(Error::UnsupportedKey(
                    "RSA keys must have at least 2048 bits".into(),
                ));
            }
            return Self::from_pkcs8(KeyAlgorithm::Rsa2048, der);
        }
        Err(Error::UnsupportedKey(
            "key is not a PKCS#8 EC P-256, EC P-384 or RSA key (convert with `openssl pkcs8 -topk8 -nocrypt`)".into(),
        ))
    }

    /// The key algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The PKCS#8 DER encoding, wiped from memory when dropped; `None` for a device key, which
    /// never leaves its device.
    pub fn pkcs8_der(&self) -> Option<Zeroizing<Vec<u8>>> {
        match &self.backend {
            Backend::Memory { pair, .. } => Some(Zeroizing::new(pair.serialize_der())),
            Backend::Device { .. } => None,
        }
    }

    /// Where a device key is found again; `None` for a key in memory.
    pub fn reference(&self) -> Option<KeyReference> {
        match &self.backend {
            Backend::Memory { .. } => None,
            Backend::Device { key, .. } => Some(key.reference()),
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(self)
    }

    /// The public key as a JWT authority key.
    pub fn jwt_public_key(&self) -> Result<JwtPublicKey> {
        JwtPublicKey::from_spki_der(&self.public_key_der())
            .map_err(|e| Error::UnsupportedKey(e.to_string()))
    }

    /// Signs a JWS signing input, producing the JOSE signature encoding (fixed-size `r || s` for
    /// ECDSA).
    pub(crate) fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        let failed = |_| Error::Signing("JWT signature failed".into());
        match &self.backend {
            Backend::Memory { jws, .. } => match jws.as_ref() {
                JwsKey::Ec(pair) => Ok(pair.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
                JwsKey::Rsa(pair) => {
                    let mut signature = vec![0; pair.public_modulus_len()];
                    pair.sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut signature)
                        .map_err(failed)?;
                    Ok(signature)
                }
            },
            Backend::Device { key, .. } => key.sign(message),
        }
    }
}

/// DER encoding of an ECDSA signature (`SEQUENCE { INTEGER r, INTEGER s }`) from the fixed-size
/// `r || s` a device returns: X.509 wants the former.
pub(crate) fn ecdsa_fixed_to_der(fixed: &[u8]) -> Result<Vec<u8>> {
    if fixed.is_empty() || !fixed.len().is_multiple_of(2) || fixed.len() > 132 {
        return Err(Error::Signing(format!(
            "the device returned a malformed ECDSA signature ({} bytes)",
            fixed.len()
        )));
    }
    let (r, s) = fixed.split_at(fixed.len() / 2);
    let mut body = der_unsigned_integer(r);
    body.extend(der_unsigned_integer(s));
    Ok(der_tagged(0x30, &body))
}

/// A DER INTEGER of an unsigned big-endian number.
pub(crate) fn der_unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let mut value = bytes[first..].to_vec();
    if value.first().is_none_or(|b| b & 0x80 != 0) {
        value.insert(0, 0);
    }
    der_tagged(0x02, &value)
}

/// A DER TLV.
pub(crate) fn der_tagged(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).unwrap_or(0));
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

fn rustls_pki_types_der(der: &[u8]) -> rustls_pki_types::PrivatePkcs8KeyDer<'_> {
    rustls_pki_types::PrivatePkcs8KeyDer::from(der)
}

impl rcgen::PublicKeyData for AuthorityKey {
    fn der_bytes(&self) -> &[u8] {
        match &self.backend {
            Backend::Memory { pair, .. } => pair.der_bytes(),
            Backend::Device { public, .. } => public,
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm.rcgen()
    }
}

impl rcgen::SigningKey for AuthorityKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        match &self.backend {
            Backend::Memory { pair, .. } => pair.sign(msg),
            Backend::Device { key, .. } => {
                let signature = key.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)?;
                match self.algorithm {
                    KeyAlgorithm::Rsa2048 => Ok(signature),
                    KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
                        ecdsa_fixed_to_der(&signature).map_err(|_| rcgen::Error::RemoteKeyError)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ecdsa_signatures_become_der_with_minimal_integers() {
        let mut fixed = vec![0u8; 64];
        fixed[0] = 0x80; // r has its high bit set: a leading zero keeps it positive
        fixed[63] = 0x01; // s is 1: leading zeros are stripped
        let der = ecdsa_fixed_to_der(&fixed).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 3, 0x02, 33]);
        assert_eq!(der[4], 0);
        assert_eq!(der[5], 0x80);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        for malformed in [&[][..], &[1, 2, 3][..], &[0u8; 134][..]] {
            assert!(ecdsa_fixed_to_der(malformed).is_err());
        }
    }

    #[test]
    fn long_der_lengths_use_the_long_form() {
        let value = vec![7u8; 300];
        let tlv = der_tagged(0x04, &value);
        assert_eq!(&tlv[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(tlv.len(), 304);
        assert_eq!(der_unsigned_integer(&[0, 0, 0]), vec![0x02, 0x01, 0x00]);
    }
}
