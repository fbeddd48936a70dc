//! `signet policy apply|list|delete` (standalone AuthorizationPolicies) and `signet authz check`
//! (a decision explained from the server's live policy set), over the admin socket.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{
    ApplyPoliciesRequest, CheckAuthorizationRequest, DeletePolicyRequest, ListPoliciesRequest,
};
use signet_proto::authz;

use crate::cli::AdminArgs;
use crate::output;

/// `signet policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create or update the AuthorizationPolicies of a YAML file (several documents allowed;
    /// all are applied or none). Standalone policies target workloads by spec.targetSPIFFEIDs.
    Apply {
        /// The file, or - for standard input.
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Validate only; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the policies in force, with the default policy.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete one policy by name, or every policy of a YAML file.
    Delete {
        /// Name of the policy.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        name: Option<String>,
        /// Namespace of the policy.
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        /// Delete the policies this file names.
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `signet authz …`
#[derive(Debug, Subcommand)]
pub enum AuthzCommand {
    /// Print the decision for one request and every policy that contributed.
    Check(CheckArgs),
}

/// A request to decide.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The caller's SPIFFE ID (omit for a caller without an SVID).
    #[arg(long)]
    pub from: Option<String>,
    /// The target workload: a SPIFFE ID, or in Kubernetes mode a pod as NAMESPACE/POD.
    #[arg(long)]
    pub to: String,
    /// Destination port on the target.
    #[arg(long, default_value_t = 443)]
    pub port: u16,
    /// HTTP method (with --path; omit both for a TCP connection).
    #[arg(long, requires = "path")]
    pub method: Option<String>,
    /// HTTP path (with --method).
    #[arg(long, requires = "method")]
    pub path: Option<String>,
    /// Exit with status 1 when the request is denied (for scripts).
    #[arg(long)]
    pub exit_code: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

async fn client(admin: &AdminArgs) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    Ok(AdminClient::new(
        crate::uds::channel(&admin.admin_socket).await?,
    ))
}

fn status(err: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", err.message())
}

fn read_file(path: &PathBuf) -> anyhow::Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(text)
}

fn default_name(value: i32) -> &'static str {
    signet_proto::policy::default_policy_from(value).as_str()
}

fn action_name(value: i32) -> &'static str {
    match authz::Action::try_from(value) {
        Ok(authz::Action::Allow) => "ALLOW",
        Ok(authz::Action::Deny) => "DENY",
        Ok(authz::Action::Audit) => "AUDIT",
        _ => "?",
    }
}

fn enforcement_name(value: i32) -> &'static str {
    match authz::Enforcement::try_from(value) {
        Ok(authz::Enforcement::DryRun) => "DryRun",
        _ => "Enforce",
    }
}

#[derive(Debug, Serialize)]
struct AppliedView {
    policy: String,
    outcome: String,
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PolicyView {
    policy: String,
    action: &'static str,
    enforcement: &'static str,
    targets: Vec<String>,
    rules: usize,
}

#[derive(Debug, Serialize)]
struct ListView {
    default_policy: &'static str,
    policies: Vec<PolicyView>,
}

/// `signet policy`
pub async fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Apply {
            file,
            dry_run,
            admin,
        } => {
            let document = read_file(&file)?;
            let applied = client(&admin)
                .await?
                .apply_policies(ApplyPoliciesRequest { document, dry_run })
                .await
                .map_err(status)?
                .into_inner()
                .applied;
            let views: Vec<AppliedView> = applied
                .into_iter()
                .map(|a| AppliedView {
                    policy: format!("{}/{}", a.namespace, a.name),
                    outcome: a.outcome,
                    warnings: a.warnings,
                })
                .collect();
            output::print(admin.output, &views, |views| {
                let mut out = String::new();
                for v in views {
                    out.push_str(&format!("authorizationpolicy {} {}\n", v.policy, v.outcome));
                    for w in &v.warnings {
                        out.push_str(&format!("  warning: {w}\n"));
                    }
                }
                out
            })
        }
        PolicyCommand::List { admin } => {
            let list = client(&admin)
                .await?
                .list_policies(ListPoliciesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let view = ListView {
                default_policy: default_name(list.default_policy),
                policies: list
                    .policies
                    .iter()
                    .filter_map(|b| {
                        let p = b.policy.as_ref()?;
                        Some(PolicyView {
                            policy: format!("{}/{}", p.namespace, p.name),
                            action: action_name(p.action),
                            enforcement: enforcement_name(p.enforcement),
                            targets: b.targets.clone(),
                            rules: p.rules.len(),
                        })
                    })
                    .collect(),
            };
            output::print(admin.output, &view, |view| {
                let mut out = format!(
                    "Default policy: {}\n{} polic{}\n",
                    view.default_policy,
                    view.policies.len(),
                    if view.policies.len() == 1 { "y" } else { "ies" }
                );
                for p in &view.policies {
                    out.push_str(&format!(
                        "\nPolicy      : {}\nAction      : {} ({})\nTargets     : {}\nRules       : {}\n",
                        p.policy,
                        p.action,
                        p.enforcement,
                        p.targets.join(", "),
                        p.rules
                    ));
                }
                out
            })
        }
        PolicyCommand::Delete {
            name,
            namespace,
            file,
            admin,
        } => {
            let targets: Vec<(String, String)> = match (name, file) {
                (Some(name), _) => vec![(namespace, name)],
                (None, Some(file)) => names_in(&read_file(&file)?)?,
                (None, None) => anyhow::bail!("give a policy name or -f FILE"),
            };
            let mut client = client(&admin).await?;
            for (namespace, name) in targets {
                client
                    .delete_policy(DeletePolicyRequest {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    })
                    .await
                    .map_err(status)?;
                println!("authorizationpolicy {namespace}/{name} deleted");
            }
            Ok(())
        }
    }
}

/// The (namespace, name) of every document of a YAML text.
fn names_in(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct Meta {
        name: String,
        namespace: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Document {
        metadata: Meta,
    }
    let mut names = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: serde_yaml::Value =
            serde::Deserialize::deserialize(document).context("reading the YAML")?;
        if value.is_null() {
            continue;
        }
        let doc: Document =
            serde_yaml::from_value(value).context("a document without metadata.name")?;
        names.push((
            doc.metadata
                .namespace
                .unwrap_or_else(|| "default".to_owned()),
            doc.metadata.name,
        ));
    }
    Ok(names)
}

#[derive(Debug, Serialize)]
struct ContributionView {
    policy: String,
    action: &'static str,
    enforcement: &'static str,
    matched: bool,
    rule: Option<u32>,
}

#[derive(Debug, Serialize)]
struct DecisionView {
    decision: &'static str,
    reason: String,
    default_policy: &'static str,
    dry_run_decision: &'static str,
    path: Option<String>,
    policies: Vec<ContributionView>,
}

fn word(allowed: bool) -> &'static str {
    if allowed { "ALLOW" } else { "DENY" }
}

/// `signet authz`
pub async fn authz(command: AuthzCommand) -> anyhow::Result<()> {
    let AuthzCommand::Check(args) = command;
    let response = client(&args.admin)
        .await?
        .check_authorization(CheckAuthorizationRequest {
            from: args.from.clone().unwrap_or_default(),
            to: args.to.clone(),
            port: u32::from(args.port),
            method: args.method.clone().unwrap_or_default(),
            path: args.path.clone().unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let view = DecisionView {
        decision: word(response.allowed),
        reason: response.reason,
        default_policy: default_name(response.default_policy),
        dry_run_decision: word(response.dry_run_allowed),
        path: (!response.path.is_empty()).then_some(response.path),
        policies: response
            .contributions
            .iter()
            .map(|c| ContributionView {
                policy: c.policy.clone(),
                action: action_name(c.action),
                enforcement: enforcement_name(c.enforcement),
                matched: c.matched,
                rule: c.matched.then_some(c.rule),
            })
            .collect(),
    };
    output::print(args.admin.output, &view, |v| {
        let mut out = format!("{}: {}\n", v.decision, v.reason);
        if v.dry_run_decision != v.decision {
            out.push_str(&format!(
                "With DryRun policies enforced: {}\n",
                v.dry_run_decision
            ));
        }
        if let Some(path) = &v.path {
            out.push_str(&format!("Normalized path: {path}\n"));
        }
        out.push_str(&format!("Default policy: {}\n", v.default_policy));
        if v.policies.is_empty() {
            out.push_str("No policy targets the workload.\n");
        }
        for c in &v.policies {
            let outcome = match c.rule {
                Some(rule) => format!("matched rule {rule}"),
                None => "no rule matched".to_owned(),
            };
            out.push_str(&format!(
                "  {} {} ({}): {outcome}\n",
                c.policy, c.action, c.enforcement
            ));
        }
        out
    })?;
    if args.exit_code && !response.allowed {
        std::process::exit(1);
    }
    Ok(())
}
