//! Signet's signing authority (DESIGN §5): authority keys, the CA hierarchy (self-signed root or
//! an intermediate under an upstream CA), the rotation state machine, X509-SVID minting from
//! verified CSRs, JWT-SVID minting, the trust bundle, and key persistence (in memory with the CA
//! state, or in a PKCS#11 token).

mod authority;
pub mod ca;
mod clock;
pub mod csr;
mod error;
mod key;
mod key_manager;
pub mod keystore;
mod mint;
pub mod pkcs11;
pub mod profile;
mod rotation;
mod upstream;

pub use authority::{Authority, JwtAuthority, X509Authority};
pub use ca::{AuthorityInfo, AuthorityKind, CaConfig, CertificateAuthority};
pub use clock::{Clock, ManualClock, SystemClock};
pub use csr::CsrIdRule;
pub use error::{Error, KeyStoreError, Result};
pub use key::{AuthorityKey, DeviceKey, KeyAlgorithm, KeyReference};
pub use key_manager::{KeyManager, MemoryKeys};
pub use keystore::{FileKeyStore, KeyStore, PersistedState};
pub use mint::{JwtSvidRequest, MintedX509Svid, X509SvidRequest};
pub use rotation::{AuthorityStatus, RotationEvent};
pub use upstream::UpstreamCa;
