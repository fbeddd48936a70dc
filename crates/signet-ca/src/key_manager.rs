//! Where authority keys are made and kept: in memory, persisted with the CA state by its
//! [`KeyStore`](crate::KeyStore) (the default), or in a device that never exports them
//! ([`Pkcs11Keys`](crate::pkcs11::Pkcs11Keys)).

use std::fmt;

use crate::error::Result;
use crate::key::{AuthorityKey, KeyAlgorithm, KeyReference};

/// Makes, finds again and destroys authority keys.
pub trait KeyManager: Send + Sync + fmt::Debug {
    /// A new key.
    fn generate(&self, algorithm: KeyAlgorithm) -> Result<AuthorityKey>;
    /// A device key found again by the reference stored in the CA state.
    fn open(&self, algorithm: KeyAlgorithm, reference: &KeyReference) -> Result<AuthorityKey>;
    /// Destroys a device key whose authority left the CA for good (expired or revoked).
    fn destroy(&self, reference: &KeyReference) -> Result<()>;
    /// A name for logs: `memory` or `pkcs11`.
    fn name(&self) -> &'static str;
}

/// Keys generated in memory and persisted, PKCS#8-encoded, with the CA state.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryKeys;

impl KeyManager for MemoryKeys {
    fn generate(&self, algorithm: KeyAlgorithm) -> Result<AuthorityKey> {
        AuthorityKey::generate(algorithm)
    }

    fn open(&self, _algorithm: KeyAlgorithm, reference: &KeyReference) -> Result<AuthorityKey> {
        Err(crate::Error::UnsupportedKey(format!(
            "the CA state refers to a device key ({reference:?}) but no key device is configured \
             (start the server with its --ca-keys pkcs11 options)"
        )))
    }

    fn destroy(&self, _reference: &KeyReference) -> Result<()> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
