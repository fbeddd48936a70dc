//! `signet ca show|prepare|activate|taint|revoke`: the CA's authorities and the operator's
//! rotation steps, over the admin socket.

use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{self as pb, ChangeAuthorityRequest, ListAuthoritiesRequest};

use crate::cli::AdminArgs;
use crate::output;

/// Which authorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// X.509 authorities (sign X509-SVIDs).
    X509,
    /// JWT authorities (sign JWT-SVIDs).
    Jwt,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
        }
    }
}

/// `signet ca …`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// List the authorities: kind, id, state (prepared / active / old), taint, validity.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Create a new authority now and publish it in the bundle (not signing yet), replacing a
    /// prepared one. Let the bundle reach every workload before `activate`.
    Prepare {
        #[arg(long, value_enum)]
        kind: Kind,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the prepared authority the one that signs; the active one becomes old.
    Activate {
        #[arg(long, value_enum)]
        kind: Kind,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Mark an old authority as compromised: agents re-sign every SVID it signed. Only an old
    /// authority can be tainted (prepare and activate a successor first).
    Taint {
        #[arg(long, value_enum)]
        kind: Kind,
        /// The authority's id (from `signet ca show`).
        #[arg(long)]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a tainted authority from every bundle. Only a tainted authority can be revoked,
    /// and only once the agents report no live SVID signed by it (`signet ca show` counts 0).
    Revoke {
        #[arg(long, value_enum)]
        kind: Kind,
        /// The authority's id (from `signet ca show`).
        #[arg(long)]
        id: String,
        /// Revoke even though live SVIDs still depend on it: their workloads fail to
        /// authenticate to anyone holding the new bundle until their agent re-signs them.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Serialize)]
struct AuthorityView {
    kind: String,
    id: String,
    status: String,
    tainted: bool,
    not_before: String,
    not_after: String,
    /// Live SVIDs it signed, as the agents report them.
    svids: u64,
    /// Agents holding them.
    agents: u32,
}

#[derive(Debug, Serialize)]
struct AuthoritiesView {
    authorities: Vec<AuthorityView>,
    /// Agents whose report is current on the server answering: the counts cover these.
    reporting_agents: u32,
}

fn view(list: pb::ListAuthoritiesResponse) -> AuthoritiesView {
    let authorities = list
        .authorities
        .into_iter()
        .map(|a| AuthorityView {
            kind: a.kind,
            id: a.id,
            status: a.status,
            tainted: a.tainted,
            not_before: output::time(a.not_before),
            not_after: output::time(a.not_after),
            svids: a.svids,
            agents: a.agents,
        })
        .collect();
    AuthoritiesView {
        authorities,
        reporting_agents: list.reporting_agents,
    }
}

fn human(view: &AuthoritiesView) -> String {
    let mut out = String::from("KIND  STATUS    TAINTED  NOT AFTER             SVIDS    ID\n");
    for v in &view.authorities {
        out.push_str(&format!(
            "{:<5} {:<9} {:<8} {:<21} {:<8} {}\n",
            v.kind,
            v.status,
            if v.tainted { "yes" } else { "no" },
            v.not_after,
            v.svids,
            v.id
        ));
    }
    out.push_str(&format!(
        "SVIDs as reported by {} agent(s) connected to this server.\n",
        view.reporting_agents
    ));
    out
}

async fn client(admin: &AdminArgs) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    Ok(AdminClient::new(
        crate::uds::channel(&admin.admin_socket).await?,
    ))
}

/// Runs a `signet ca` command.
pub async fn ca(command: CaCommand) -> anyhow::Result<()> {
    let (admin, change) = match command {
        CaCommand::Show { admin } => (admin, None),
        CaCommand::Prepare { kind, admin } => {
            (admin, Some((kind, "prepare", String::new(), false)))
        }
        CaCommand::Activate { kind, admin } => {
            (admin, Some((kind, "activate", String::new(), false)))
        }
        CaCommand::Taint { kind, id, admin } => (admin, Some((kind, "taint", id, false))),
        CaCommand::Revoke {
            kind,
            id,
            force,
            admin,
        } => (admin, Some((kind, "revoke", id, force))),
    };
    let mut client = client(&admin).await?;
    let list = match change {
        None => client.list_authorities(ListAuthoritiesRequest {}).await,
        Some((kind, action, id, force)) => {
            client
                .change_authority(ChangeAuthorityRequest {
                    kind: kind.name().to_owned(),
                    action: action.to_owned(),
                    id,
                    force,
                })
                .await
        }
    }
    .map_err(|e| anyhow::anyhow!("{}", e.message()))?
    .into_inner();
    output::print(admin.output, &view(list), human)
}
