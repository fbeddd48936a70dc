//! Admin commands: entries, join tokens, agents, bundle — over the server's admin socket.

use anyhow::Context;
use serde::Serialize;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{
    AgentRequest, CreateEntryRequest, CreateJoinTokenRequest, DeleteEntryRequest, GetBundleRequest,
    GetEntryRequest, ListAgentsRequest, ListEntriesRequest, UpdateEntryRequest,
};
use signet_proto::agent::Entry;
use tonic::transport::Channel;

use crate::cli::{
    AdminArgs, AgentAction, AgentTarget, BundleCommand, BundleFormat, EntryCommand, EntryFields,
    TokenCommand,
};
use crate::output::{self, OutputFormat};

async fn client(admin: &AdminArgs) -> anyhow::Result<AdminClient<Channel>> {
    Ok(AdminClient::new(
        crate::uds::channel(&admin.admin_socket).await?,
    ))
}

fn status(err: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", err.message(), err.code())
}

/// JSON shape of an entry.
#[derive(Debug, Serialize)]
struct EntryView {
    id: String,
    spiffe_id: String,
    parent_id: String,
    selectors: Vec<String>,
    x509_svid_ttl_seconds: u32,
    jwt_svid_ttl_seconds: u32,
    dns_names: Vec<String>,
    federates_with: Vec<String>,
    admin: bool,
    downstream: bool,
    hint: String,
    revision: u64,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        Self {
            id: e.id,
            spiffe_id: e.spiffe_id,
            parent_id: e.parent_id,
            selectors: e.selectors,
            x509_svid_ttl_seconds: e.x509_svid_ttl_seconds,
            jwt_svid_ttl_seconds: e.jwt_svid_ttl_seconds,
            dns_names: e.dns_names,
            federates_with: e.federates_with,
            admin: e.admin,
            downstream: e.downstream,
            hint: e.hint,
            revision: e.revision,
        }
    }
}

fn human_entry(e: &EntryView) -> String {
    let mut out = format!(
        "Entry ID      : {}\nSPIFFE ID     : {}\nParent ID     : {}\nRevision      : {}\nX509-SVID TTL : {}s\nJWT-SVID TTL  : {}s\n",
        e.id, e.spiffe_id, e.parent_id, e.revision, e.x509_svid_ttl_seconds, e.jwt_svid_ttl_seconds
    );
    for s in &e.selectors {
        out.push_str(&format!("Selector      : {s}\n"));
    }
    for d in &e.dns_names {
        out.push_str(&format!("DNS name      : {d}\n"));
    }
    for f in &e.federates_with {
        out.push_str(&format!("FederatesWith : {f}\n"));
    }
    if !e.hint.is_empty() {
        out.push_str(&format!("Hint          : {}\n", e.hint));
    }
    if e.admin {
        out.push_str("Admin         : true\n");
    }
    if e.downstream {
        out.push_str("Downstream    : true\n");
    }
    out
}

fn wire_entry(id: String, f: EntryFields) -> Entry {
    let secs = |d: Option<std::time::Duration>| {
        d.map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
    };
    Entry {
        id,
        spiffe_id: f.spiffe_id,
        parent_id: f.parent_id,
        selectors: f.selectors,
        x509_svid_ttl_seconds: secs(f.x509_svid_ttl),
        jwt_svid_ttl_seconds: secs(f.jwt_svid_ttl),
        dns_names: f.dns_names,
        federates_with: f.federates_with,
        admin: f.admin,
        downstream: f.downstream,
        hint: f.hint,
        revision: 0,
    }
}

fn print_entry(format: OutputFormat, entry: Entry) -> anyhow::Result<()> {
    output::print(format, &EntryView::from(entry), human_entry)
}

/// `signet entry ...`
pub async fn entry(command: EntryCommand) -> anyhow::Result<()> {
    match command {
        EntryCommand::Create { fields, admin } => {
            let entry = client(&admin)
                .await?
                .create_entry(CreateEntryRequest {
                    entry: Some(wire_entry(String::new(), fields)),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_entry(admin.output, entry)
        }
        EntryCommand::Update { id, fields, admin } => {
            let entry = client(&admin)
                .await?
                .update_entry(UpdateEntryRequest {
                    entry: Some(wire_entry(id, fields)),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_entry(admin.output, entry)
        }
        EntryCommand::Show { id, admin } => {
            let entry = client(&admin)
                .await?
                .get_entry(GetEntryRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            print_entry(admin.output, entry)
        }
        EntryCommand::Delete { id, admin } => {
            client(&admin)
                .await?
                .delete_entry(DeleteEntryRequest { id: id.clone() })
                .await
                .map_err(status)?;
            output::print(admin.output, &serde_json::json!({ "deleted": id }), |_| {
                format!("Deleted entry {id}\n")
            })
        }
        EntryCommand::List {
            parent_id,
            spiffe_id,
            admin,
        } => {
            let entries = client(&admin)
                .await?
                .list_entries(ListEntriesRequest {
                    parent_id: parent_id.unwrap_or_default(),
                    spiffe_id: spiffe_id.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .entries;
            let views: Vec<EntryView> = entries.into_iter().map(Into::into).collect();
            output::print(admin.output, &views, |views| {
                let mut out = format!(
                    "Found {} entr{}\n",
                    views.len(),
                    if views.len() == 1 { "y" } else { "ies" }
                );
                for v in views {
                    out.push('\n');
                    out.push_str(&human_entry(v));
                }
                out
            })
        }
    }
}

/// `signet token create`
pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create { ttl, admin } = command;
    let ttl_seconds = u32::try_from(ttl.as_secs()).context("--ttl is too long")?;
    let response = client(&admin)
        .await?
        .create_join_token(CreateJoinTokenRequest { ttl_seconds })
        .await
        .map_err(status)?
        .into_inner();
    let view = serde_json::json!({
        "token": response.token,
        "agent_id": response.agent_id,
        "expires_at": output::time(response.expires_at),
    });
    output::print(admin.output, &view, |_| {
        format!(
            "Token     : {}\nAgent ID  : {}\nExpires   : {}\n\nStart the agent with --join-token {} (single use).\n",
            response.token,
            response.agent_id,
            output::time(response.expires_at),
            response.token
        )
    })
}

/// What to do to one agent.
#[derive(Debug, Clone, Copy)]
enum Change {
    Evict,
    Ban,
    Unban,
}

/// Evicts, bans or unbans one agent; returns its record.
async fn change_agent(
    target: AgentTarget,
    change: Change,
) -> anyhow::Result<Vec<signet_proto::admin::Agent>> {
    let mut admin = client(&target.admin).await?;
    let request = AgentRequest {
        spiffe_id: target.spiffe_id,
    };
    let response = match change {
        Change::Evict => admin.evict_agent(request).await,
        Change::Ban => admin.ban_agent(request).await,
        Change::Unban => admin.unban_agent(request).await,
    };
    Ok(response
        .map_err(status)?
        .into_inner()
        .agent
        .into_iter()
        .collect())
}

/// `signet agent list|evict|ban|unban`
pub async fn agent(action: AgentAction) -> anyhow::Result<()> {
    let (admin, agents) = match action {
        AgentAction::List(admin) => {
            let agents = client(&admin)
                .await?
                .list_agents(ListAgentsRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .agents;
            (admin, agents)
        }
        AgentAction::Evict(target) => (
            target.admin.clone(),
            change_agent(target, Change::Evict).await?,
        ),
        AgentAction::Ban(target) => (
            target.admin.clone(),
            change_agent(target, Change::Ban).await?,
        ),
        AgentAction::Unban(target) => (
            target.admin.clone(),
            change_agent(target, Change::Unban).await?,
        ),
    };
    let views: Vec<serde_json::Value> = agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "spiffe_id": a.spiffe_id,
                "attestation_type": a.attestation_type,
                "attested_at": output::time(a.attested_at),
                "svid_expires_at": output::time(a.svid_expires_at),
                "banned": a.banned,
            })
        })
        .collect();
    output::print(admin.output, &views, |_| {
        let mut out = format!("{} agent(s)\n", agents.len());
        for a in &agents {
            out.push_str(&format!(
                "\nAgent ID     : {}\nAttestation  : {}\nAttested at  : {}\nSVID expires : {}\nBanned       : {}\n",
                a.spiffe_id,
                a.attestation_type,
                output::time(a.attested_at),
                output::time(a.svid_expires_at),
                a.banned
            ));
        }
        out
    })
}

/// `signet bundle show`
pub async fn bundle(command: BundleCommand) -> anyhow::Result<()> {
    let BundleCommand::Show { format, admin } = command;
    let message = client(&admin)
        .await?
        .get_bundle(GetBundleRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let trust_domain = signet_spiffe::TrustDomain::new(&message.trust_domain)?;
    let bundle = signet_spiffe::Bundle::from_spiffe_json(trust_domain, &message.spiffe_json)?;
    match format {
        BundleFormat::Pem => print!("{}", bundle.to_pem()),
        BundleFormat::Spiffe => {
            let value: serde_json::Value = serde_json::from_slice(&message.spiffe_json)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}
