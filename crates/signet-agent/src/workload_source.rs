//! What the Workload API, SDS and the authorization service serve from: the SVID cache, the
//! trust bundles, the trust domain's policies, and a way to mint JWT-SVIDs. The running agent
//! fills it from the server; tests fill it by hand.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signet_core::EntryId;
use signet_core::policy::PolicySet;
use signet_proto::agent::MintJwtSvidRequest;
use signet_proto::agent::agent_service_client::AgentServiceClient;
use signet_spiffe::TrustDomain;
use signet_tls::SharedBundles;
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::Channel;

use crate::cache::SvidCache;

/// A JWT-SVID as minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedJwt {
    /// The compact JWS.
    pub token: String,
    /// Its `exp`.
    pub expires_at: SystemTime,
}

/// Mints JWT-SVIDs for entries of this node (the server signs them).
#[tonic::async_trait]
pub trait JwtMinter: Send + Sync + 'static {
    /// A JWT-SVID of `entry` for `audience`.
    async fn mint(&self, entry: &EntryId, audience: &[String]) -> Result<MintedJwt, Status>;
}

#[tonic::async_trait]
impl JwtMinter for AgentServiceClient<Channel> {
    async fn mint(&self, entry: &EntryId, audience: &[String]) -> Result<MintedJwt, Status> {
        let minted = self
            .clone()
            .mint_jwt_svid(MintJwtSvidRequest {
                entry_id: entry.to_string(),
                audience: audience.to_vec(),
            })
            .await?
            .into_inner();
        Ok(MintedJwt {
            token: minted.token,
            expires_at: SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(minted.expires_at).unwrap_or(0)),
        })
    }
}

/// The state the workload-facing services read.
#[derive(Clone)]
pub struct WorkloadSource {
    trust_domain: TrustDomain,
    cache: Arc<SvidCache>,
    bundles: Arc<SharedBundles>,
    policies: watch::Receiver<Option<Arc<PolicySet>>>,
    minter: Arc<dyn JwtMinter>,
}

impl std::fmt::Debug for WorkloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadSource")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl WorkloadSource {
    /// A source over `cache` (entries, SVIDs, the bundle workloads receive), `bundles` (what
    /// JWT-SVIDs are validated against), `policies` (`None` until the server sent them) and
    /// `minter`.
    pub fn new(
        trust_domain: TrustDomain,
        cache: Arc<SvidCache>,
        bundles: Arc<SharedBundles>,
        policies: watch::Receiver<Option<Arc<PolicySet>>>,
        minter: Arc<dyn JwtMinter>,
    ) -> Self {
        Self {
            trust_domain,
            cache,
            bundles,
            policies,
            minter,
        }
    }

    pub(crate) fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub(crate) fn cache(&self) -> &Arc<SvidCache> {
        &self.cache
    }

    pub(crate) fn bundles(&self) -> &SharedBundles {
        &self.bundles
    }

    pub(crate) fn policies(&self) -> watch::Receiver<Option<Arc<PolicySet>>> {
        self.policies.clone()
    }

    pub(crate) fn minter(&self) -> &dyn JwtMinter {
        self.minter.as_ref()
    }
}
