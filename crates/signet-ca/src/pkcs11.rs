//! Authority keys in a PKCS#11 token (an HSM, or SoftHSM2): generated there as sensitive,
//! non-extractable key pairs and used there for every signature. The CA state stores only the
//! key's `CKA_ID`.
//!
//! One logged-in session per token serves every signature under a lock: PKCS#11 sessions are
//! not to be used from two threads at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::key::{
    AuthorityKey, DeviceKey, KeyAlgorithm, KeyReference, der_tagged, der_unsigned_integer,
};
use crate::key_manager::KeyManager;

/// How to reach the token.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`, a vendor's library).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN. Never logged, never in an error.
    pub pin: Zeroizing<String>,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

fn device(what: &str, error: CkError) -> Error {
    Error::Device(format!("{what}: {error}"))
}

/// A module is initialized once per process and stays loaded: finalizing it under another
/// user of the same module would pull the token out from under that user.
fn module(path: &Path) -> Result<Pkcs11> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES.get_or_init(|| Mutex::new(HashMap::new())).lock();
    if let Some(loaded) = modules.get(path) {
        return Ok(loaded.clone());
    }
    let context = Pkcs11::new(path)
        .map_err(|e| device(&format!("loading the module {}", path.display()), e))?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(device("initializing the module", e)),
    }
    modules.insert(path.to_owned(), context.clone());
    Ok(context)
}

/// Keys in one PKCS#11 token.
pub struct Pkcs11Keys {
    session: Arc<Mutex<Session>>,
    token_label: String,
}

impl std::fmt::Debug for Pkcs11Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Keys")
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

impl Pkcs11Keys {
    /// Loads the module, finds the token by label and logs in.
    pub fn open(config: &Pkcs11Config) -> Result<Self> {
        let context = module(&config.module)?;
        let slots = context
            .get_slots_with_token()
            .map_err(|e| device("listing slots", e))?;
        let mut found = None;
        for slot in slots {
            let info = context
                .get_token_info(slot)
                .map_err(|e| device("reading a token", e))?;
            if info.label().trim_end() == config.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            Error::Device(format!(
                "no token labelled {:?} in {} (softhsm2-util --show-slots lists them)",
                config.token_label,
                config.module.display()
            ))
        })?;
        let session = context
            .open_rw_session(slot)
            .map_err(|e| device("opening a session", e))?;
        let pin = AuthPin::new(config.pin.as_str().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(Error::Device(format!(
                    "the PIN of token {:?} is incorrect",
                    config.token_label
                )));
            }
            Err(e) => return Err(device("logging in", e)),
        }
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
            token_label: config.token_label.clone(),
        })
    }

    /// Runs `f` on the logged-in session, under the signing lock: for inspection by operators'
    /// tools and tests.
    pub fn with_session<T>(&self, f: impl FnOnce(&Session) -> T) -> T {
        f(&self.session.lock())
    }

    fn find(&self, class: ObjectClass, id: &[u8]) -> Result<ObjectHandle> {
        let found = self
            .session
            .lock()
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
            .map_err(|e| device("finding a key", e))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::Device(format!(
                "token {:?} holds no key with id {} (was the token re-initialized?)",
                self.token_label,
                hex(id)
            ))),
            _ => Err(Error::Device(format!(
                "token {:?} holds several keys with id {}",
                self.token_label,
                hex(id)
            ))),
        }
    }

    fn public_key(&self, algorithm: KeyAlgorithm, public: ObjectHandle) -> Result<Vec<u8>> {
        let session = self.session.lock();
        match algorithm {
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
                let attributes = session
                    .get_attributes(public, &[AttributeType::EcPoint])
                    .map_err(|e| device("reading the public key", e))?;
                let Some(Attribute::EcPoint(point)) = attributes.into_iter().next() else {
                    return Err(Error::Device("the token returned no EC point".into()));
                };
                ec_point(algorithm, &point)
            }
            KeyAlgorithm::Rsa2048 => {
                let attributes = session
                    .get_attributes(
                        public,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .map_err(|e| device("reading the public key", e))?;
                let (mut modulus, mut exponent) = (None, None);
                for attribute in attributes {
                    match attribute {
                        Attribute::Modulus(n) => modulus = Some(n),
                        Attribute::PublicExponent(e) => exponent = Some(e),
                        _ => {}
                    }
                }
                let (Some(n), Some(e)) = (modulus, exponent) else {
                    return Err(Error::Device("the token returned no RSA public key".into()));
                };
                let mut body = der_unsigned_integer(&n);
                body.extend(der_unsigned_integer(&e));
                Ok(der_tagged(0x30, &body))
            }
        }
    }

    fn key(&self, algorithm: KeyAlgorithm, id: Vec<u8>) -> Result<AuthorityKey> {
        let private = self.find(ObjectClass::PRIVATE_KEY, &id)?;
        let public = self.find(ObjectClass::PUBLIC_KEY, &id)?;
        let public_key = self.public_key(algorithm, public)?;
        let key = TokenKey {
            session: self.session.clone(),
            private,
            id,
            algorithm,
        };
        Ok(AuthorityKey::from_device(
            algorithm,
            public_key,
            Arc::new(key),
        ))
    }
}

/// The uncompressed point from `CKA_EC_POINT`: DER OCTET STRING-wrapped as the standard says,
/// or raw as some tokens return it.
fn ec_point(algorithm: KeyAlgorithm, attribute: &[u8]) -> Result<Vec<u8>> {
    let size = if algorithm == KeyAlgorithm::EcP256 {
        65
    } else {
        97
    };
    let point = match attribute {
        [0x04, len, rest @ ..] if usize::from(*len) == size && rest.len() == size => rest,
        raw if raw.len() == size => raw,
        _ => {
            return Err(Error::Device(format!(
                "the token returned an EC point of {} bytes, not a {algorithm:?} point",
                attribute.len()
            )));
        }
    };
    if point.first() != Some(&0x04) {
        return Err(Error::Device(
            "the token returned a compressed EC point".into(),
        ));
    }
    Ok(point.to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>> {
    let bad = || Error::Device(format!("malformed PKCS#11 key id {text:?}"));
    if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 128 {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

impl KeyManager for Pkcs11Keys {
    fn generate(&self, algorithm: KeyAlgorithm) -> Result<AuthorityKey> {
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| Error::KeyGeneration("no randomness".into()))?;
        let label = format!("signet-ca-{}", hex(&id[..4])).into_bytes();
        let common = [
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label),
        ];
        let private_template = [
            &common[..],
            &[
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
            ],
        ]
        .concat();
        let (mechanism, public_template) = match algorithm {
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
                let oid = if algorithm == KeyAlgorithm::EcP256 {
                    P256_OID.to_vec()
                } else {
                    P384_OID.to_vec()
                };
                (
                    Mechanism::EccKeyPairGen,
                    [
                        &common[..],
                        &[Attribute::Verify(true), Attribute::EcParams(oid)],
                    ]
                    .concat(),
                )
            }
            KeyAlgorithm::Rsa2048 => (
                Mechanism::RsaPkcsKeyPairGen,
                [
                    &common[..],
                    &[
                        Attribute::Verify(true),
                        Attribute::ModulusBits(2048.into()),
                        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    ],
                ]
                .concat(),
            ),
        };
        self.session
            .lock()
            .generate_key_pair(&mechanism, &public_template, &private_template)
            .map_err(|e| device("generating a key pair", e))?;
        self.key(algorithm, id.to_vec())
    }

    fn open(&self, algorithm: KeyAlgorithm, reference: &KeyReference) -> Result<AuthorityKey> {
        let KeyReference::Pkcs11 { id } = reference;
        self.key(algorithm, unhex(id)?)
    }

    fn destroy(&self, reference: &KeyReference) -> Result<()> {
        let KeyReference::Pkcs11 { id } = reference;
        let id = unhex(id)?;
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            let handle = self.find(class, &id)?;
            self.session
                .lock()
                .destroy_object(handle)
                .map_err(|e| device("destroying a key", e))?;
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "pkcs11"
    }
}

/// One key pair in the token.
struct TokenKey {
    session: Arc<Mutex<Session>>,
    private: ObjectHandle,
    id: Vec<u8>,
    algorithm: KeyAlgorithm,
}

impl DeviceKey for TokenKey {
    fn reference(&self) -> KeyReference {
        KeyReference::Pkcs11 { id: hex(&self.id) }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let session = self.session.lock();
        let signed = match self.algorithm {
            KeyAlgorithm::EcP256 => {
                let hash = digest::digest(&digest::SHA256, message);
                session.sign(&Mechanism::Ecdsa, self.private, hash.as_ref())
            }
            KeyAlgorithm::EcP384 => {
                let hash = digest::digest(&digest::SHA384, message);
                session.sign(&Mechanism::Ecdsa, self.private, hash.as_ref())
            }
            KeyAlgorithm::Rsa2048 => session.sign(&Mechanism::Sha256RsaPkcs, self.private, message),
        };
        signed.map_err(|e| device("signing", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_round_trip_and_hostile_ones_are_refused() {
        assert_eq!(unhex(&hex(&[0, 0xab, 0xff])).unwrap(), vec![0, 0xab, 0xff]);
        for hostile in ["", "abc", "zz", "0g", &"ab".repeat(65), "é1"] {
            assert!(unhex(hostile).is_err(), "{hostile:?}");
        }
    }

    #[test]
    fn ec_points_are_read_wrapped_or_raw_and_checked() {
        let mut raw = vec![0x04];
        raw.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&raw);
        assert_eq!(ec_point(KeyAlgorithm::EcP256, &wrapped).unwrap(), raw);
        assert_eq!(ec_point(KeyAlgorithm::EcP256, &raw).unwrap(), raw);
        assert!(
            ec_point(KeyAlgorithm::EcP384, &raw).is_err(),
            "wrong curve size"
        );
        let mut compressed = raw.clone();
        compressed[0] = 0x02;
        assert!(ec_point(KeyAlgorithm::EcP256, &compressed).is_err());
        assert!(ec_point(KeyAlgorithm::EcP256, &[]).is_err());
    }
}
