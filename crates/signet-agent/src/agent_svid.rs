//! The agent's own identity: bootstrap trust, join-token attestation, persistence of the agent
//! SVID and latest bundle in the data directory, and renewal.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rcgen::KeyPair;
use signet_proto::agent::{
    AttestAgentRequest, RenewAgentRequest, attest_agent_request::Attestation,
};
use signet_spiffe::{Bundle, BundleSet, SpiffeId, TrustDomain, X509Svid};
use signet_tls::SharedBundles;

use crate::error::AgentError;

const SVID_FILE: &str = "agent-svid.der";
const KEY_FILE: &str = "agent-key.der";
const BUNDLE_FILE: &str = "bundle.json";

/// Reads a trust bundle file: SPIFFE bundle JSON or PEM certificates.
pub fn read_bundle_file(path: &Path, trust_domain: &TrustDomain) -> Result<Bundle, AgentError> {
    let bytes = std::fs::read(path)
        .map_err(|e| AgentError::io(format!("reading trust bundle {}", path.display()), e))?;
    Bundle::from_json_or_pem(trust_domain.clone(), &bytes).map_err(|source| {
        AgentError::TrustBundle {
            path: path.to_owned(),
            source,
        }
    })
}

/// A bundle set holding one bundle.
pub fn single(bundle: Bundle) -> BundleSet {
    let mut set = BundleSet::new();
    set.insert(bundle);
    set
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| AgentError::io(format!("writing {}", path.display()), e))
}

/// The agent's persisted state.
#[derive(Debug, Clone)]
pub struct PersistedIdentity {
    /// The agent SVID.
    pub svid: X509Svid,
    /// The latest bundle.
    pub bundle: Bundle,
}

/// Where the agent keeps its identity.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    dir: PathBuf,
    trust_domain: TrustDomain,
}

impl IdentityStore {
    /// A store in `dir`.
    pub fn new(dir: PathBuf, trust_domain: TrustDomain) -> Self {
        Self { dir, trust_domain }
    }

    /// Loads the persisted SVID and bundle, if both exist and the SVID has not expired.
    pub fn load(&self, now: SystemTime) -> Option<PersistedIdentity> {
        self.load_even_expired()
            .filter(|identity| identity.svid.not_after() > now)
    }

    /// The persisted identity even when its SVID expired: its key proves who the agent was, for
    /// re-attestation after a long server outage.
    pub fn load_even_expired(&self) -> Option<PersistedIdentity> {
        let chain = std::fs::read(self.dir.join(SVID_FILE)).ok()?;
        let key = std::fs::read(self.dir.join(KEY_FILE)).ok()?;
        let bundle_json = std::fs::read(self.dir.join(BUNDLE_FILE)).ok()?;
        let svid = X509Svid::parse(&chain, &key).ok()?;
        if !svid.spiffe_id().is_member_of(&self.trust_domain) {
            return None;
        }
        let bundle = Bundle::from_spiffe_json(self.trust_domain.clone(), &bundle_json).ok()?;
        Some(PersistedIdentity { svid, bundle })
    }

    /// Persists the agent SVID (key mode 0600).
    pub fn save_svid(&self, svid: &X509Svid) -> Result<(), AgentError> {
        write_private(&self.dir.join(KEY_FILE), svid.private_key_pkcs8())?;
        write_private(&self.dir.join(SVID_FILE), &svid.chain_der())
    }

    /// Persists the bundle.
    /// The last bundle saved, for re-attestation.
    pub fn load_bundle(&self) -> Result<Bundle, AgentError> {
        read_bundle_file(&self.dir.join(BUNDLE_FILE), &self.trust_domain)
    }

    pub fn save_bundle(&self, bundle: &Bundle) -> Result<(), AgentError> {
        write_private(
            &self.dir.join(BUNDLE_FILE),
            bundle.to_spiffe_json().as_bytes(),
        )
    }
}

/// A new P-256 key and a CSR for it, naming `id` if given.
pub fn key_and_csr(id: Option<&SpiffeId>) -> Result<(KeyPair, Vec<u8>), AgentError> {
    signet_ca::csr::new_key_and_csr(id).map_err(|e| AgentError::crypto("making a key and CSR", e))
}

/// What the agent proves its node with.
#[derive(Debug, Clone)]
pub enum NodeCredential {
    /// A single-use join token.
    JoinToken(String),
    /// A projected service-account token file, re-read at every attestation (the kubelet
    /// rotates it).
    PsatTokenFile(PathBuf),
}

impl NodeCredential {
    fn attestation(&self) -> Result<Attestation, AgentError> {
        match self {
            Self::JoinToken(token) => Ok(Attestation::JoinToken(token.clone())),
            Self::PsatTokenFile(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    AgentError::io(
                        format!("reading the service account token {}", path.display()),
                        e,
                    )
                })?;
                Ok(Attestation::K8sPsatToken(token.trim().to_owned()))
            }
        }
    }

    /// Whether it can be used again (a join token is single-use).
    pub fn is_reusable(&self) -> bool {
        matches!(self, Self::PsatTokenFile(_))
    }

    /// A name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JoinToken(_) => "join token",
            Self::PsatTokenFile(_) => "k8s_psat",
        }
    }
}

/// Attests with a join token; returns the agent SVID and the server's bundle.
pub async fn attest_with_join_token(
    server_address: &str,
    bootstrap: Bundle,
    server_id: SpiffeId,
    join_token: &str,
) -> Result<PersistedIdentity, AgentError> {
    attest(
        server_address,
        bootstrap,
        server_id,
        &NodeCredential::JoinToken(join_token.to_owned()),
    )
    .await
}

/// Attests with a node credential; returns the agent SVID and the server's bundle.
pub async fn attest(
    server_address: &str,
    bootstrap: Bundle,
    server_id: SpiffeId,
    credential: &NodeCredential,
) -> Result<PersistedIdentity, AgentError> {
    let trust_domain = bootstrap.trust_domain().clone();
    let bundles = Arc::new(SharedBundles::new(single(bootstrap)));
    let mut client = crate::client::connect(server_address, bundles, server_id, None)
        .map_err(AgentError::Connect)?;
    let (key, csr) = key_and_csr(None)?;
    let response = client
        .attest_agent(AttestAgentRequest {
            attestation: Some(credential.attestation()?),
            csr,
        })
        .await
        .map_err(AgentError::from_status)?
        .into_inner();
    identity_from(response, &key, trust_domain)
}

/// Attests again with an agent SVID that expired while the server was unreachable: the new CSR
/// and a timestamp are signed with the expired SVID's key (`signet_core::reattest`). The server
/// accepts it within its grace window unless the agent was evicted or banned.
pub async fn reattest_with_expired_svid(
    server_address: &str,
    bundle: Bundle,
    server_id: SpiffeId,
    expired: &X509Svid,
) -> Result<PersistedIdentity, AgentError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let trust_domain = bundle.trust_domain().clone();
    let bundles = Arc::new(SharedBundles::new(single(bundle)));
    let mut client = crate::client::connect(server_address, bundles, server_id, None)
        .map_err(AgentError::Connect)?;
    let (key, csr) = key_and_csr(Some(expired.spiffe_id()))?;
    let signed_at = i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    )
    .unwrap_or(i64::MAX);
    let old_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, expired.private_key_pkcs8())
            .map_err(|e| AgentError::crypto("loading the expired SVID's key", e))?;
    let signature = old_key
        .sign(
            &aws_lc_rs::rand::SystemRandom::new(),
            &signet_core::reattest::message(signed_at, &csr),
        )
        .map_err(|e| AgentError::crypto("signing the re-attestation proof", e))?;
    let response = client
        .attest_agent(AttestAgentRequest {
            attestation: Some(Attestation::ExpiredSvid(
                signet_proto::agent::ExpiredSvidProof {
                    svid_chain: expired.chain_der(),
                    signed_at,
                    signature: signature.as_ref().to_vec(),
                },
            )),
            csr,
        })
        .await
        .map_err(AgentError::from_status)?
        .into_inner();
    identity_from(response, &key, trust_domain)
}

/// The identity an attestation answered with, for the key its CSR was made with.
fn identity_from(
    response: signet_proto::agent::AttestAgentResponse,
    key: &rcgen::KeyPair,
    trust_domain: TrustDomain,
) -> Result<PersistedIdentity, AgentError> {
    let svid = X509Svid::parse(&response.svid_chain, &key.serialize_der())
        .map_err(|e| AgentError::invalid_answer("agent SVID", e))?;
    let bundle_msg = response.bundle.ok_or_else(|| {
        AgentError::invalid_answer("attestation response", "it carries no bundle")
    })?;
    let bundle = Bundle::from_spiffe_json(trust_domain, &bundle_msg.spiffe_json)
        .map_err(|e| AgentError::invalid_answer("bundle", e))?;
    Ok(PersistedIdentity { svid, bundle })
}

/// Renews the agent SVID over the authenticated channel.
pub async fn renew(
    client: &mut signet_proto::agent::agent_service_client::AgentServiceClient<
        tonic::transport::Channel,
    >,
    id: &SpiffeId,
) -> Result<X509Svid, AgentError> {
    let (key, csr) = key_and_csr(Some(id))?;
    let response = client
        .renew_agent(RenewAgentRequest { csr })
        .await
        .map_err(AgentError::from_status)?
        .into_inner();
    X509Svid::parse(&response.svid_chain, &key.serialize_der())
        .map_err(|e| AgentError::invalid_answer("agent SVID", e))
}
