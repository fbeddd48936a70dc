//! Join tokens: random single-use secrets; only their SHA-256 is stored, and the agent ID they
//! grant is derived from the hash so it reveals nothing of the secret.

use aws_lc_rs::digest::{SHA256, digest};
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::error::ServerError;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits, hex).
pub fn generate_token() -> Result<String, ServerError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| ServerError::crypto("drawing a join token", "no randomness"))?;
    Ok(hex(&bytes))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex(digest(&SHA256, token.as_bytes()).as_ref())
}

/// The agent ID a token grants: `spiffe://<td>/signet/agent/join/<first 16 hex of its hash>`.
pub fn agent_id_for(trust_domain: &TrustDomain, token: &str) -> Result<SpiffeId, ServerError> {
    let hash = hash_token(token);
    signet_core::AgentId::join_token(trust_domain, &hash[..16])
        .map(signet_core::AgentId::into_spiffe_id)
        .map_err(ServerError::from)
}
