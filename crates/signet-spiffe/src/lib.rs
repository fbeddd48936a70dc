//! SPIFFE primitives for Signet: IDs and trust domains, X509-SVIDs, JWT-SVIDs and trust bundles,
//! validated exactly as the SPIFFE specifications require. Pure: no I/O, no clock reads (callers
//! pass the time in).

pub mod bundle;
mod dns;
mod encoding;
mod id;
mod jwk;
pub mod jwt;
pub mod x509;

pub use bundle::{Bundle, BundleError, BundleSet};
pub use dns::{DnsName, DnsNameError};
pub use encoding::pem_encode;
pub use id::{IdError, SpiffeId, TrustDomain};
pub use jwk::{EcCurve, JwkError, JwtPublicKey};
pub use jwt::{JwtAlgorithm, JwtSvid, JwtSvidError, JwtValidation};
pub use x509::{X509Svid, X509SvidError, verify_chain};
