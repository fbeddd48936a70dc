//! Re-attestation with an expired agent SVID: what the agent signs with the SVID's key and what
//! the server accepts. A join-token agent has no other credential once its SVID expired while
//! the server was unreachable; the proof of the key it was issued for stands in for it, for a
//! bounded time and only while the agent is neither evicted nor banned.

use std::time::Duration;

/// Domain separation of the signed message.
pub const CONTEXT: &[u8] = b"signet agent re-attestation v1\0";
/// How long after its expiry an agent SVID still re-attests, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Clock skew tolerated on `signed_at`.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// The bytes the agent signs: context, `signed_at` (Unix seconds, big-endian), the new CSR.
pub fn message(signed_at: i64, csr: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CONTEXT.len() + 8 + csr.len());
    message.extend_from_slice(CONTEXT);
    message.extend_from_slice(&signed_at.to_be_bytes());
    message.extend_from_slice(csr);
    message
}
