//! The admin API (`signet.admin.v1.Admin`) on the local Unix socket: entries, join tokens,
//! agents, bundle, AuthorizationPolicies.

use std::time::Duration;

use signet_core::{EntryId, RegistrationEntry};
use signet_proto::admin::{
    self as pb, CreateEntryRequest, CreateJoinTokenRequest, CreateJoinTokenResponse,
    DeleteEntryRequest, DeleteEntryResponse, GetBundleRequest, GetEntryRequest, ListAgentsRequest,
    ListAgentsResponse, ListEntriesRequest, ListEntriesResponse, UpdateEntryRequest,
    admin_server::Admin,
};
use signet_proto::agent::{Bundle as BundleMessage, Entry};
use signet_spiffe::{SpiffeId, TrustDomain};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::agent_api::AgentApi;
use crate::datastore::AgentRecord;
use crate::error::ServerError;
use crate::join_token::{agent_id_for, generate_token, hash_token};
use crate::policy_admin;

/// Default lifetime of a join token.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Longest join token lifetime accepted.
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The admin service.
#[derive(Clone)]
pub struct AdminApi {
    pub(crate) api: AgentApi,
    pub(crate) trust_domain: TrustDomain,
    pub(crate) default_x509_ttl: Duration,
    pub(crate) default_jwt_ttl: Duration,
    /// Kubernetes mode: policies are resources there, not admin API objects.
    pub(crate) kubernetes: bool,
    /// Kubernetes mode: to resolve `namespace/pod` targets of `CheckAuthorization`.
    pub(crate) kube_client: Option<kube::Client>,
    /// Kubernetes mode: agent bans and evictions, shared by every replica.
    pub(crate) agent_state: Option<crate::k8s::agent_state::ClusterAgentState>,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("trust_domain", &self.trust_domain)
            .field("kubernetes", &self.kubernetes)
            .finish_non_exhaustive()
    }
}

use crate::unix_seconds as unix;

fn agent_message(record: &AgentRecord) -> pb::Agent {
    pb::Agent {
        spiffe_id: record.spiffe_id.to_string(),
        attestation_type: record.attestation_type.clone(),
        attested_at: unix(record.attested_at),
        svid_expires_at: unix(record.svid_expires_at),
        banned: record.banned,
        selectors: record.selectors.clone(),
    }
}

/// An agent known by its ID only (Kubernetes mode keeps no attestation records).
fn id_only(id: &SpiffeId, banned: bool) -> pb::Agent {
    pb::Agent {
        spiffe_id: id.to_string(),
        attestation_type: "k8s_psat".into(),
        banned,
        ..pb::Agent::default()
    }
}

fn parse_id(field: &str, raw: &str) -> Result<SpiffeId, Status> {
    SpiffeId::new(raw).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

impl AdminApi {
    fn new_entry_id() -> Result<EntryId, ServerError> {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| ServerError::crypto("drawing a random value", "no randomness"))?;
        Ok(EntryId::new(
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        ))
    }

    fn typed_entry(&self, wire: Option<Entry>) -> Result<RegistrationEntry, Status> {
        let wire = wire.ok_or_else(|| Status::invalid_argument("entry is required"))?;
        let mut entry = RegistrationEntry::try_from(&wire)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if entry.x509_svid_ttl.is_zero() {
            entry.x509_svid_ttl = self.default_x509_ttl;
        }
        if entry.jwt_svid_ttl.is_zero() {
            entry.jwt_svid_ttl = self.default_jwt_ttl;
        }
        entry
            .validate(&self.trust_domain)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        for name in &entry.dns_names {
            signet_ca::profile::validate_dns_name(name)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        // Standalone entries are matched by the unix attestor under an agent: anything else
        // would be stored and never serve anyone.
        let under_agents = signet_core::AgentId::parse(&entry.parent_id).is_some();
        if !entry.parent_id.is_member_of(&self.trust_domain) || !under_agents {
            return Err(Status::invalid_argument(format!(
                "parent_id {} must be an agent of this trust domain \
                 (spiffe://{}/signet/agent/...; see signet agent list)",
                entry.parent_id, self.trust_domain
            )));
        }
        for selector in entry.selectors.iter() {
            selector.check_unix().map_err(Status::invalid_argument)?;
        }
        Ok(entry)
    }

    async fn store(&self, entry: RegistrationEntry) -> Result<Entry, Status> {
        self.datastore()?
            .put_entry(entry.clone())
            .await
            .map_err(ServerError::from)?;
        let wire = Entry::from(&entry);
        self.api.index.upsert(entry);
        self.api
            .metrics
            .entries
            .set(i64::try_from(self.api.index.len()).unwrap_or(i64::MAX));
        Ok(wire)
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn create_entry(
        &self,
        request: Request<CreateEntryRequest>,
    ) -> Result<Response<Entry>, Status> {
        let mut entry = self.typed_entry(request.into_inner().entry)?;
        entry.id = Self::new_entry_id()?;
        entry.revision = 1;
        info!(entry = %entry.id, spiffe_id = %entry.spiffe_id, "entry created");
        Ok(Response::new(self.store(entry).await?))
    }

    async fn update_entry(
        &self,
        request: Request<UpdateEntryRequest>,
    ) -> Result<Response<Entry>, Status> {
        let mut entry = self.typed_entry(request.into_inner().entry)?;
        let old = self
            .api
            .index
            .get(&entry.id)
            .ok_or_else(|| Status::not_found(format!("no entry {}", entry.id)))?;
        entry.revision = old.revision + 1;
        info!(entry = %entry.id, "entry updated");
        Ok(Response::new(self.store(entry).await?))
    }

    async fn delete_entry(
        &self,
        request: Request<DeleteEntryRequest>,
    ) -> Result<Response<DeleteEntryResponse>, Status> {
        let id = EntryId::new(request.into_inner().id);
        if !self
            .datastore()?
            .delete_entry(id.clone())
            .await
            .map_err(ServerError::from)?
        {
            return Err(Status::not_found(format!("no entry {id}")));
        }
        self.api.index.remove(&id);
        self.api
            .metrics
            .entries
            .set(i64::try_from(self.api.index.len()).unwrap_or(i64::MAX));
        info!(entry = %id, "entry deleted");
        Ok(Response::new(DeleteEntryResponse {}))
    }

    async fn get_entry(
        &self,
        request: Request<GetEntryRequest>,
    ) -> Result<Response<Entry>, Status> {
        let id = EntryId::new(request.into_inner().id);
        let entry = self
            .api
            .index
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("no entry {id}")))?;
        Ok(Response::new(Entry::from(entry.as_ref())))
    }

    async fn list_entries(
        &self,
        request: Request<ListEntriesRequest>,
    ) -> Result<Response<ListEntriesResponse>, Status> {
        let filter = request.into_inner();
        let parent = (!filter.parent_id.is_empty())
            .then(|| parse_id("parent_id", &filter.parent_id))
            .transpose()?;
        let spiffe = (!filter.spiffe_id.is_empty())
            .then(|| parse_id("spiffe_id", &filter.spiffe_id))
            .transpose()?;
        let entries = self
            .api
            .index
            .all()
            .iter()
            .filter(|e| parent.as_ref().is_none_or(|p| &e.parent_id == p))
            .filter(|e| spiffe.as_ref().is_none_or(|s| &e.spiffe_id == s))
            .map(|e| Entry::from(e.as_ref()))
            .collect();
        Ok(Response::new(ListEntriesResponse { entries }))
    }

    async fn create_join_token(
        &self,
        request: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<CreateJoinTokenResponse>, Status> {
        let ttl = match request.into_inner().ttl_seconds {
            0 => DEFAULT_JOIN_TOKEN_TTL,
            secs => Duration::from_secs(secs.into()),
        };
        if ttl > MAX_JOIN_TOKEN_TTL {
            return Err(Status::invalid_argument(
                "join tokens may live at most 7 days",
            ));
        }
        let token = generate_token()?;
        let agent_id = agent_id_for(&self.trust_domain, &token)?;
        let expires_at = self.api.clock.now() + ttl;
        self.datastore()?
            .create_join_token(hash_token(&token), agent_id.clone(), expires_at)
            .await
            .map_err(ServerError::from)?;
        info!(agent = %agent_id, "join token created");
        Ok(Response::new(CreateJoinTokenResponse {
            token,
            agent_id: agent_id.to_string(),
            expires_at: unix(expires_at),
        }))
    }

    async fn list_agents(
        &self,
        _request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        if let Some(state) = &self.agent_state {
            return Ok(Response::new(ListAgentsResponse {
                agents: self.cluster_agents(state).await?,
            }));
        }
        let agents = self
            .datastore()?
            .list_agents()
            .await
            .map_err(ServerError::from)?;
        Ok(Response::new(ListAgentsResponse {
            agents: agents.iter().map(agent_message).collect(),
        }))
    }

    async fn evict_agent(
        &self,
        request: Request<pb::AgentRequest>,
    ) -> Result<Response<pb::AgentResponse>, Status> {
        let id = parse_id("spiffe_id", &request.into_inner().spiffe_id)?;
        let agent = if let Some(state) = &self.agent_state {
            // Every replica refuses the SVIDs it holds now; a PSAT agent attests again.
            state.evict(&id).await?;
            self.api.agents.set_shared(state.read().await?);
            id_only(&id, false)
        } else {
            let record = self.find_agent(&id).await?;
            self.datastore()?
                .delete_agent(id.clone())
                .await
                .map_err(ServerError::from)?;
            self.api.agents.evict(&id);
            agent_message(&record)
        };
        self.api.reports.forget(&id);
        info!(agent = %id, "agent evicted");
        Ok(Response::new(pb::AgentResponse { agent: Some(agent) }))
    }

    async fn ban_agent(
        &self,
        request: Request<pb::AgentRequest>,
    ) -> Result<Response<pb::AgentResponse>, Status> {
        let id = parse_id("spiffe_id", &request.into_inner().spiffe_id)?;
        // In Kubernetes mode the ban is the cluster's (every replica follows the object); this
        // replica applies what it wrote at once instead of waiting for its watch.
        let agent = if let Some(state) = &self.agent_state {
            state.ban(&id).await?;
            self.api.agents.set_shared(state.read().await?);
            id_only(&id, true)
        } else {
            let mut record = self.find_agent(&id).await?;
            self.datastore()?
                .ban_agent(id.clone())
                .await
                .map_err(ServerError::from)?;
            self.api.agents.ban(id.clone());
            record.banned = true;
            agent_message(&record)
        };
        self.api.reports.forget(&id);
        info!(agent = %id, "agent banned");
        Ok(Response::new(pb::AgentResponse { agent: Some(agent) }))
    }

    async fn unban_agent(
        &self,
        request: Request<pb::AgentRequest>,
    ) -> Result<Response<pb::AgentResponse>, Status> {
        let id = parse_id("spiffe_id", &request.into_inner().spiffe_id)?;
        let agent = if let Some(state) = &self.agent_state {
            state.unban(&id).await?;
            self.api.agents.set_shared(state.read().await?);
            id_only(&id, false)
        } else {
            let mut record = self.find_agent(&id).await?;
            self.datastore()?
                .unban_agent(id.clone())
                .await
                .map_err(ServerError::from)?;
            self.api.agents.unban(&id);
            record.banned = false;
            agent_message(&record)
        };
        info!(agent = %id, "agent unbanned");
        Ok(Response::new(pb::AgentResponse { agent: Some(agent) }))
    }

    async fn get_bundle(
        &self,
        _request: Request<GetBundleRequest>,
    ) -> Result<Response<BundleMessage>, Status> {
        let bundle = self.api.authority.bundle();
        Ok(Response::new(BundleMessage {
            trust_domain: bundle.trust_domain().to_string(),
            spiffe_json: bundle.to_spiffe_json().into_bytes(),
            sequence: bundle.sequence().unwrap_or(0),
        }))
    }

    async fn apply_policies(
        &self,
        request: Request<pb::ApplyPoliciesRequest>,
    ) -> Result<Response<pb::ApplyPoliciesResponse>, Status> {
        policy_admin::apply(
            self.kubernetes,
            self.api.datastore.as_ref(),
            &self.api.policies,
            &self.trust_domain,
            request.into_inner(),
        )
        .await
        .map(Response::new)
    }

    async fn list_policies(
        &self,
        _request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        policy_admin::list(&self.api.policies).map(Response::new)
    }

    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        policy_admin::delete(
            self.kubernetes,
            self.api.datastore.as_ref(),
            &self.api.policies,
            request.into_inner(),
        )
        .await
        .map(Response::new)
    }

    async fn set_federation(
        &self,
        request: Request<pb::SetFederationRequest>,
    ) -> Result<Response<pb::Federation>, Status> {
        let federation = &self.api.federation;
        let set = crate::federation_admin::set(self.kubernetes, federation, request.into_inner());
        set.await.map(Response::new)
    }

    async fn list_federations(
        &self,
        _request: Request<pb::ListFederationsRequest>,
    ) -> Result<Response<pb::ListFederationsResponse>, Status> {
        Ok(Response::new(pb::ListFederationsResponse {
            federations: self
                .api
                .federation
                .list()
                .iter()
                .map(crate::federation_admin::message)
                .collect(),
        }))
    }

    async fn get_federation(
        &self,
        request: Request<pb::GetFederationRequest>,
    ) -> Result<Response<pb::Federation>, Status> {
        crate::federation_admin::get(&self.api.federation, &request.into_inner().trust_domain)
            .map(Response::new)
    }

    async fn delete_federation(
        &self,
        request: Request<pb::DeleteFederationRequest>,
    ) -> Result<Response<pb::DeleteFederationResponse>, Status> {
        let name = request.into_inner().trust_domain;
        crate::federation_admin::delete(self.kubernetes, &self.api.federation, &name)
            .await
            .map(Response::new)
    }

    async fn list_authorities(
        &self,
        _request: Request<pb::ListAuthoritiesRequest>,
    ) -> Result<Response<pb::ListAuthoritiesResponse>, Status> {
        Ok(Response::new(crate::ca_admin::list(
            &self.api.authority,
            &self.api.reports,
        )))
    }

    async fn change_authority(
        &self,
        request: Request<pb::ChangeAuthorityRequest>,
    ) -> Result<Response<pb::ListAuthoritiesResponse>, Status> {
        crate::ca_admin::change(&self.api.authority, &self.api.reports, request.get_ref())
            .map(Response::new)
    }

    async fn check_authorization(
        &self,
        request: Request<pb::CheckAuthorizationRequest>,
    ) -> Result<Response<pb::CheckAuthorizationResponse>, Status> {
        let check = request.into_inner();
        let targets = match (&self.kube_client, check.to.starts_with("spiffe://")) {
            (Some(client), false) => {
                policy_admin::pod_identities(client, &self.api.index, &check.to).await?
            }
            _ => vec![
                SpiffeId::new(&check.to)
                    .map_err(|e| Status::invalid_argument(format!("to: {e}")))?,
            ],
        };
        let set = self.api.policies.current().ok_or_else(|| {
            Status::unavailable("the AuthorizationPolicies are not loaded yet; retry")
        })?;
        policy_admin::check(&set, &self.trust_domain, &targets, &check).map(Response::new)
    }
}

impl AdminApi {
    /// The database, which only standalone mode has.
    fn datastore(&self) -> Result<&crate::datastore::Datastore, Status> {
        self.api.datastore.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "Kubernetes mode keeps no database: entries come from ClusterSPIFFEID and \
                 ClusterStaticEntry resources (kubectl), and agents attest with k8s_psat",
            )
        })
    }

    /// Kubernetes mode: the agents this replica knows, and every banned or evicted one.
    async fn cluster_agents(
        &self,
        state: &crate::k8s::agent_state::ClusterAgentState,
    ) -> Result<Vec<pb::Agent>, Status> {
        let shared = state.read().await?;
        let mut agents: std::collections::BTreeMap<String, pb::Agent> = self
            .api
            .agents
            .known()
            .into_iter()
            .map(|(id, _)| (id.to_string(), id_only(&id, false)))
            .collect();
        for id in shared.evicted.keys() {
            agents
                .entry(id.to_string())
                .or_insert_with(|| id_only(id, false));
        }
        for id in &shared.banned {
            agents.insert(id.to_string(), id_only(id, true));
        }
        Ok(agents.into_values().collect())
    }

    async fn find_agent(&self, id: &SpiffeId) -> Result<AgentRecord, Status> {
        self.datastore()?
            .list_agents()
            .await
            .map_err(ServerError::from)?
            .into_iter()
            .find(|a| &a.spiffe_id == id)
            .ok_or_else(|| Status::not_found(format!("no agent {id}")))
    }
}
