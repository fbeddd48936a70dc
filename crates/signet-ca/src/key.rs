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

/// A private key held by the signing authority; clones share the key. `Debug` never shows key
/// material.
#[derive(Clone)]
pub struct AuthorityKey {
    algorithm: KeyAlgorithm,
    pair: Arc<KeyPair>,
    /// The same key parsed once for JWS signing (JOSE wants fixed-size ECDSA signatures, which
    /// rcgen's X.509-oriented key does not produce).
    jws: Arc<JwsKey>,
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
            .finish_non_exhaustive()
    }
}

impl AuthorityKey {
    /// Generates a new key.
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

    fn assemble(algorithm: KeyAlgorithm, pair: KeyPair) -> Result<Self> {
        let der = Zeroizing::new(pair.serialize_der());
        let jws = JwsKey::from_pkcs8(algorithm, &der)?;
        Ok(Self {
            algorithm,
            pair: Arc::new(pair),
            jws: Arc::new(jws),
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

    /// The PKCS#8 DER encoding, wiped from memory when dropped.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.pair.serialize_der())
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(self.pair.as_ref())
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
        match self.jws.as_ref() {
            JwsKey::Ec(pair) => Ok(pair.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
            JwsKey::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
        }
    }
}

fn rustls_pki_types_der(der: &[u8]) -> rustls_pki_types::PrivatePkcs8KeyDer<'_> {
    rustls_pki_types::PrivatePkcs8KeyDer::from(der)
}

impl rcgen::PublicKeyData for AuthorityKey {
    fn der_bytes(&self) -> &[u8] {
        self.pair.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen::PublicKeyData::algorithm(self.pair.as_ref())
    }
}

impl rcgen::SigningKey for AuthorityKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.pair.sign(msg)
    }
}
