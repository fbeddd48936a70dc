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
    /// Remove a tainted authority from the bundle at once: SVIDs it signed stop being trusted.
    /// Only a tainted authority can be revoked.
    Revoke {
        #[arg(long, value_enum)]
        kind: Kind,
        /// The authority's id (from `signet ca show`).
        #[arg(long)]
        id: String,
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
}

fn views(list: pb::ListAuthoritiesResponse) -> Vec<AuthorityView> {
    list.authorities
        .into_iter()
        .map(|a| AuthorityView {
            kind: a.kind,
            id: a.id,
            status: a.status,
            tainted: a.tainted,
            not_before: output::time(a.not_before),
            not_after: output::time(a.not_after),
        })
        .collect()
}

fn human(views: &Vec<AuthorityView>) -> String {
    let mut out = String::from("KIND  STATUS    TAINTED  NOT AFTER             ID\n");
    for v in views {
        out.push_str(&format!(
            "{:<5} {:<9} {:<8} {:<21} {}\n",
            v.kind,
            v.status,
            if v.tainted { "yes" } else { "no" },
            v.not_after,
            v.id
        ));
    }
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
        CaCommand::Prepare { kind, admin } => (admin, Some((kind, "prepare", String::new()))),
        CaCommand::Activate { kind, admin } => (admin, Some((kind, "activate", String::new()))),
        CaCommand::Taint { kind, id, admin } => (admin, Some((kind, "taint", id))),
        CaCommand::Revoke { kind, id, admin } => (admin, Some((kind, "revoke", id))),
    };
    let mut client = client(&admin).await?;
    let list = match change {
        None => client.list_authorities(ListAuthoritiesRequest {}).await,
        Some((kind, action, id)) => {
            client
                .change_authority(ChangeAuthorityRequest {
                    kind: kind.name().to_owned(),
                    action: action.to_owned(),
                    id,
                })
                .await
        }
    }
    .map_err(|e| anyhow::anyhow!("{}", e.message()))?
    .into_inner();
    output::print(admin.output, &views(list), human)
}
