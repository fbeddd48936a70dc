#![no_main]
//! JWT-SVID parsing and validation against a fixed bundle: never panics, never accepts a token
//! not signed by the bundle's key (the fuzzer cannot forge ES256).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use signet_spiffe::{Bundle, BundleSet, JwtPublicKey, JwtSvid, JwtValidation, TrustDomain, EcCurve};

fn bundles() -> &'static BundleSet {
    static SET: OnceLock<BundleSet> = OnceLock::new();
    SET.get_or_init(|| {
        let mut point = vec![4u8];
        point.extend([1u8; 64]);
        let mut bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
        bundle.add_jwt_authority("k", JwtPublicKey::ec(EcCurve::P256, point).unwrap()).unwrap();
        let mut set = BundleSet::new();
        set.insert(bundle);
        set
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let _ = JwtSvid::parse_insecure(token);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert!(JwtSvid::validate(token, bundles(), "aud", JwtValidation::at(now)).is_err());
});
