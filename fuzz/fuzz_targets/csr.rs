#![no_main]
//! CSR verification: never panics; anything accepted names exactly the expected ID.

use libfuzzer_sys::fuzz_target;
use signet_spiffe::SpiffeId;

fuzz_target!(|data: &[u8]| {
    let expected = SpiffeId::new("spiffe://example.org/workload").unwrap();
    let _ = signet_ca::csr::verify_csr(data, &expected);
});
