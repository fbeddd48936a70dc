//! `signet federation create|update|list|show|delete`: standalone federation relationships with
//! other trust domains, live (the peer's bundle is fetched at once and then at its refresh hint).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{
    self as pb, DeleteFederationRequest, GetFederationRequest, ListFederationsRequest,
    SetFederationRequest, SetMode,
};

use crate::cli::AdminArgs;
use crate::output;

/// How the peer's bundle endpoint is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// A Web PKI certificate for the endpoint's host (system roots).
    #[value(name = "https_web")]
    HttpsWeb,
    /// An X509-SVID of the peer trust domain with --endpoint-spiffe-id, checked with the peer's
    /// own bundle (--trust-domain-bundle to start from).
    #[value(name = "https_spiffe")]
    HttpsSpiffe,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Self::HttpsWeb => "https_web",
            Self::HttpsSpiffe => "https_spiffe",
        }
    }
}

/// What a relationship is.
#[derive(Debug, Args)]
pub struct RelationshipArgs {
    /// The federated trust domain (e.g. `partner.example`).
    #[arg(long)]
    pub trust_domain: String,
    /// Its bundle endpoint, `https://host[:port][/path]`.
    #[arg(long)]
    pub bundle_endpoint_url: String,
    /// How the endpoint is authenticated.
    #[arg(long, value_enum)]
    pub profile: Profile,
    /// https_spiffe: the SPIFFE ID of the endpoint's server (a Signet server's is
    /// `spiffe://<trust domain>/signet/server`).
    #[arg(long)]
    pub endpoint_spiffe_id: Option<String>,
    /// The peer's bundle to start from (SPIFFE bundle JSON or PEM; `-` for standard input),
    /// obtained out of band. Needed for https_spiffe; afterwards each fetched bundle
    /// authenticates the next fetch.
    #[arg(long)]
    pub trust_domain_bundle: Option<PathBuf>,
}

/// `signet federation …`
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Federate with another trust domain: its bundle is fetched now and at its refresh hint,
    /// and entries with --federates-with it give workloads its bundle.
    Create {
        #[command(flatten)]
        relationship: RelationshipArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change a relationship (all fields are replaced; the bundle held so far is kept unless
    /// --trust-domain-bundle is given).
    Update {
        #[command(flatten)]
        relationship: RelationshipArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the relationships with the state of their bundles.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// One relationship, with its bundle and last refresh.
    Show {
        /// The federated trust domain.
        trust_domain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// End a relationship: its bundle is forgotten and new handshakes with its workloads fail.
    Delete {
        /// The federated trust domain.
        trust_domain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Serialize)]
struct FederationView {
    trust_domain: String,
    bundle_endpoint_url: String,
    profile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    endpoint_spiffe_id: String,
    /// `ready`, or the reason of the last failure.
    state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    last_refresh: Option<String>,
    next_refresh: Option<String>,
    bundle_sequence: Option<u64>,
    /// SPIFFE bundle JSON of the peer (show only).
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<serde_json::Value>,
}

fn view(federation: pb::Federation, with_bundle: bool) -> FederationView {
    let status = federation.status.unwrap_or_default();
    let at = |unix: i64| (unix > 0).then(|| output::time(unix));
    let state = if !status.error_reason.is_empty() {
        status.error_reason.clone()
    } else if status.last_success > 0 {
        "ready".to_owned()
    } else {
        "pending".to_owned()
    };
    FederationView {
        trust_domain: federation.trust_domain,
        bundle_endpoint_url: federation.bundle_endpoint_url,
        profile: federation.profile,
        endpoint_spiffe_id: federation.endpoint_spiffe_id,
        state,
        error: status.error_message,
        last_refresh: at(status.last_success),
        next_refresh: at(status.next_refresh),
        bundle_sequence: federation.bundle.as_ref().map(|b| b.sequence),
        bundle: federation
            .bundle
            .filter(|_| with_bundle)
            .and_then(|b| serde_json::from_slice(&b.spiffe_json).ok()),
    }
}

fn human(v: &FederationView) -> String {
    let mut out = format!(
        "{}  {}  {}  {}\n",
        v.trust_domain, v.profile, v.bundle_endpoint_url, v.state
    );
    if !v.endpoint_spiffe_id.is_empty() {
        out.push_str(&format!("  endpoint SPIFFE ID: {}\n", v.endpoint_spiffe_id));
    }
    if !v.error.is_empty() {
        out.push_str(&format!("  last error: {}\n", v.error));
    }
    if let Some(at) = &v.last_refresh {
        out.push_str(&format!("  last refresh: {at}\n"));
    }
    if let Some(at) = &v.next_refresh {
        out.push_str(&format!("  next refresh: {at}\n"));
    }
    match v.bundle_sequence {
        Some(sequence) => out.push_str(&format!("  bundle sequence: {sequence}\n")),
        None => out.push_str("  no bundle yet\n"),
    }
    out
}

async fn client(admin: &AdminArgs) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    Ok(AdminClient::new(
        crate::uds::channel(&admin.admin_socket).await?,
    ))
}

fn status(err: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", err.message())
}

fn request(relationship: RelationshipArgs, mode: SetMode) -> anyhow::Result<SetFederationRequest> {
    let trust_domain_bundle = match &relationship.trust_domain_bundle {
        None => Vec::new(),
        Some(path) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .context("reading standard input")?;
            bytes
        }
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    };
    Ok(SetFederationRequest {
        trust_domain: relationship.trust_domain,
        bundle_endpoint_url: relationship.bundle_endpoint_url,
        profile: relationship.profile.name().to_owned(),
        endpoint_spiffe_id: relationship.endpoint_spiffe_id.unwrap_or_default(),
        trust_domain_bundle,
        mode: mode as i32,
    })
}

/// Runs a `signet federation` command.
pub async fn federation(command: FederationCommand) -> anyhow::Result<()> {
    match command {
        FederationCommand::Create {
            relationship,
            admin,
        } => set(relationship, SetMode::Create, admin).await,
        FederationCommand::Update {
            relationship,
            admin,
        } => set(relationship, SetMode::Update, admin).await,
        FederationCommand::List { admin } => {
            let list = client(&admin)
                .await?
                .list_federations(ListFederationsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let views: Vec<FederationView> = list
                .federations
                .into_iter()
                .map(|f| view(f, false))
                .collect();
            output::print(admin.output, &views, |views| {
                if views.is_empty() {
                    return "no federation relationships\n".to_owned();
                }
                views.iter().map(human).collect()
            })
        }
        FederationCommand::Show {
            trust_domain,
            admin,
        } => {
            let federation = client(&admin)
                .await?
                .get_federation(GetFederationRequest { trust_domain })
                .await
                .map_err(status)?
                .into_inner();
            let view = view(federation, true);
            output::print(admin.output, &view, human)
        }
        FederationCommand::Delete {
            trust_domain,
            admin,
        } => {
            client(&admin)
                .await?
                .delete_federation(DeleteFederationRequest {
                    trust_domain: trust_domain.clone(),
                })
                .await
                .map_err(status)?;
            println!("federation with {trust_domain} deleted");
            Ok(())
        }
    }
}

async fn set(
    relationship: RelationshipArgs,
    mode: SetMode,
    admin: AdminArgs,
) -> anyhow::Result<()> {
    let federation = client(&admin)
        .await?
        .set_federation(request(relationship, mode)?)
        .await
        .map_err(status)?
        .into_inner();
    let view = view(federation, false);
    output::print(admin.output, &view, human)
}
