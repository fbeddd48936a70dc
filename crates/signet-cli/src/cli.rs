//! Command-line definitions. Server and agent options exist three ways, in priority order: a
//! flag, its environment variable, and the TOML config file (same names, snake_case).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::output::OutputFormat;

/// Signet: SPIFFE workload identity for Kubernetes and standalone hosts.
///
/// Signet gives every workload a short-lived, automatically rotated SPIFFE identity (X509-SVID
/// or JWT-SVID) over the standard SPIFFE Workload API. One binary runs the signing server, the
/// node agent and the admin commands. New here? Run `signet quickstart`.
#[derive(Debug, Parser)]
#[command(name = "signet", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Logging options.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,signet_agent=debug`).
    #[arg(long, global = true, env = "SIGNET_LOG", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, env = "SIGNET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the signing server (CA, node attestation, agent API, admin API).
    Server(Box<ServerArgs>),
    /// Run the node agent (serves the Workload API), or manage agents with a subcommand.
    #[command(args_conflicts_with_subcommands = true)]
    Agent(AgentCommand),
    /// Run the CSI node plugin that mounts the agent's Workload API socket into pods (Kubernetes).
    Csi(CsiArgs),
    /// Start a server and an agent on this machine with an identity for you, until Ctrl-C.
    Quickstart(QuickstartArgs),
    /// Manage registration entries (admin API).
    #[command(subcommand)]
    Entry(EntryCommand),
    /// Manage join tokens (admin API).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the trust bundle (admin API).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Fetch or watch your X509-SVIDs (Workload API).
    #[command(subcommand)]
    Svid(SvidCommand),
    /// Fetch or validate JWT-SVIDs (Workload API).
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// Manage AuthorizationPolicies in standalone mode (admin API).
    #[command(subcommand)]
    Policy(crate::commands::policy::PolicyCommand),
    /// Show the CA's authorities and rotate, taint or revoke them (admin API).
    #[command(subcommand)]
    Ca(crate::commands::ca::CaCommand),
    /// Move a standalone server's data to PostgreSQL (several servers).
    #[command(subcommand)]
    Datastore(crate::commands::datastore::DatastoreCommand),
    /// Federate with other trust domains (standalone mode).
    #[command(subcommand)]
    Federation(crate::commands::federation::FederationCommand),
    /// Explain authorization decisions from the server's live policies (admin API).
    #[command(subcommand)]
    Authz(crate::commands::policy::AuthzCommand),
    /// Run the mTLS sidecar proxy enforcing AuthorizationPolicy for a local application.
    Proxy(crate::commands::proxy::ProxyArgs),
    /// Check that an agent (Workload API) or a server (admin API) answers.
    Healthcheck(HealthcheckArgs),
    /// Keep the SVID, key and bundle (and JWT-SVIDs) current as files for programs that only
    /// read files (nginx, PostgreSQL, Java), and reload them after each rotation.
    Helper(crate::commands::helper::HelperArgs),
}

/// Parses a Go duration (`90s`, `1h30m`), whole days (`7d`) or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    signet_core::parse_duration(text.trim()).map_err(|e| e.to_string())
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// `signet server` options (also the keys of `server.toml`).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerArgs {
    /// TOML config file with the same options (flags and env override it).
    #[arg(long, env = "SIGNET_SERVER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Trust domain, e.g. example.org.
    #[arg(long, env = "SIGNET_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// Directory for the database, CA keys and bundle files [default: /var/lib/signet/server].
    #[arg(long, env = "SIGNET_SERVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Agent API address [default: 0.0.0.0:8081].
    #[arg(long, env = "SIGNET_BIND_ADDRESS")]
    pub bind_address: Option<SocketAddr>,
    /// Admin API socket [default: <data-dir>/admin.sock].
    #[arg(long, env = "SIGNET_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// Health and metrics address [default: 127.0.0.1:8082].
    #[arg(long, env = "SIGNET_HEALTH_ADDRESS")]
    pub health_address: Option<SocketAddr>,
    /// CA key type: ec-p256, ec-p384 or rsa-2048 [default: ec-p256].
    #[arg(long, env = "SIGNET_CA_KEY_TYPE")]
    pub ca_key_type: Option<String>,
    /// CA lifetime [default: 24h].
    #[arg(long, env = "SIGNET_CA_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub ca_ttl: Option<Duration>,
    /// X509-SVID lifetime of entries that set none [default: 1h].
    #[arg(long, env = "SIGNET_X509_SVID_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub default_x509_svid_ttl: Option<Duration>,
    /// JWT-SVID lifetime of entries that set none [default: 5m].
    #[arg(long, env = "SIGNET_JWT_SVID_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub default_jwt_svid_ttl: Option<Duration>,
    /// Agent SVID lifetime [default: 1h].
    #[arg(long, env = "SIGNET_AGENT_SVID_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub agent_svid_ttl: Option<Duration>,
    /// How long after its expiry an agent SVID still re-attests (the agent proves it holds the
    /// SVID's key): a server outage up to this long needs no new join token [default: 7d; 0s
    /// turns it off].
    #[arg(long, env = "SIGNET_AGENT_REATTEST_GRACE", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub agent_reattest_grace: Option<Duration>,
    /// What requests to a workload no enforced ALLOW AuthorizationPolicy targets get:
    /// allow-trust-domain (SVIDs of this or a federated trust domain), allow-authenticated or
    /// deny [default: allow-trust-domain].
    #[arg(long, env = "SIGNET_DEFAULT_POLICY")]
    pub default_policy: Option<String>,
    /// How long a connection to the agent API without an agent SVID (it can only attest) may
    /// stay open [default: 60s].
    #[arg(long, env = "SIGNET_ATTESTATION_CONNECTION_LIFETIME", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub attestation_connection_lifetime: Option<Duration>,
    /// Most agent API connections open at once; lowered to fit the descriptor limit
    /// [default: 16384].
    #[arg(long, env = "SIGNET_MAX_AGENT_CONNECTIONS")]
    pub max_agent_connections: Option<usize>,
    /// Most agent API connections one source address may hold while they are in the TLS
    /// handshake or carry no agent SVID (attestation) [default: 128].
    #[arg(long, env = "SIGNET_MAX_UNAUTHENTICATED_CONNECTIONS_PER_SOURCE")]
    pub max_unauthenticated_connections_per_source: Option<usize>,
    /// Most agent API connections in the TLS handshake or without an agent SVID in total; when
    /// full, the oldest is closed to admit a new one [default: 4096].
    #[arg(long, env = "SIGNET_MAX_UNAUTHENTICATED_CONNECTIONS")]
    pub max_unauthenticated_connections: Option<usize>,
    /// Each agent's sustained X509/JWT-SVID signing rate, SVIDs per second; above it (after the
    /// burst) the agent is told to retry later. 0 = unlimited [default: 5000].
    #[arg(long, env = "SIGNET_AGENT_SIGN_RATE")]
    pub agent_sign_rate: Option<f64>,
    /// How many SVIDs an agent may have signed at once before its rate applies (a restarted
    /// agent re-signing everything) [default: 20000].
    #[arg(long, env = "SIGNET_AGENT_SIGN_BURST")]
    pub agent_sign_burst: Option<f64>,
    /// Longest TLS handshake on the agent API [default: 10s].
    #[arg(long, env = "SIGNET_TLS_HANDSHAKE_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub tls_handshake_timeout: Option<Duration>,
    /// Standalone: start a new CA although the CA journal records one whose ca-keys.json is
    /// missing (lost keys). Every agent then needs the new bundle.pem. Without it, refused.
    #[arg(long, env = "SIGNET_NEW_CA")]
    #[serde(default)]
    pub new_ca: bool,
    /// Serve a database that holds fewer committed changes than recorded in
    /// signet.db.generation (a lost WAL, an older copy restored): entries, agents, policies or
    /// tokens written since are gone. Without it, refused.
    #[arg(long, env = "SIGNET_ACCEPT_DATA_LOSS")]
    #[serde(default)]
    pub accept_data_loss: bool,
    #[command(flatten, next_help_heading = "Shared datastore (several servers)")]
    #[serde(default)]
    pub datastore: ServerDatastoreArgs,
    #[command(flatten, next_help_heading = "CA keys and upstream CA")]
    #[serde(default)]
    pub ca: ServerCaArgs,
    #[command(flatten, next_help_heading = "Federation")]
    #[serde(default)]
    pub federation: ServerFederationArgs,
    #[command(flatten, next_help_heading = "OIDC discovery")]
    #[serde(default)]
    pub oidc: ServerOidcArgs,
    #[command(flatten, next_help_heading = "Kubernetes mode")]
    #[serde(default)]
    pub kubernetes: ServerKubernetesArgs,
}

/// JWT-SVID issuer and OIDC discovery. In `server.toml`: the `[oidc]` table.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerOidcArgs {
    /// The `iss` claim of every JWT-SVID (e.g. https://oidc.example.org), and the issuer OIDC
    /// discovery announces. Without it JWT-SVIDs carry no `iss`.
    #[arg(long, env = "SIGNET_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Serve OIDC discovery (/.well-known/openid-configuration and /keys) on this address (off
    /// unless set; needs --jwt-issuer).
    #[arg(long, env = "SIGNET_OIDC_ADDRESS")]
    pub oidc_address: Option<std::net::SocketAddr>,
    /// TLS certificate chain (PEM) of the discovery endpoint, re-read when it changes.
    #[arg(long, env = "SIGNET_OIDC_CERT_FILE")]
    pub oidc_cert_file: Option<PathBuf>,
    /// TLS private key (PEM) of the discovery endpoint.
    #[arg(long, env = "SIGNET_OIDC_KEY_FILE")]
    pub oidc_key_file: Option<PathBuf>,
    /// Serve discovery as plain HTTP (only behind a reverse proxy or ingress that terminates
    /// TLS: relying parties must reach it over HTTPS).
    #[arg(long, env = "SIGNET_OIDC_INSECURE_HTTP")]
    #[serde(default)]
    pub oidc_insecure_http: bool,
}

/// Several standalone servers sharing one PostgreSQL database. In `server.toml`: the
/// `[datastore]` table.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerDatastoreArgs {
    /// PostgreSQL shared with the other servers, e.g.
    /// postgres://signet@db.example:5432/signet?sslmode=require (put no password in it: see
    /// --datastore-password-file). Without it: SQLite in the data directory, one server.
    #[arg(long, env = "SIGNET_DATASTORE")]
    pub datastore: Option<String>,
    /// File holding the database password. Or set SIGNET_DATASTORE_PASSWORD.
    #[arg(long, env = "SIGNET_DATASTORE_PASSWORD_FILE")]
    pub datastore_password_file: Option<PathBuf>,
    /// PEM roots that sign the database's TLS certificate, besides the system's (with
    /// sslmode=require or stricter).
    #[arg(long, env = "SIGNET_DATASTORE_CA_FILE")]
    pub datastore_ca_file: Option<PathBuf>,
    /// Key that seals the CA state in the database (32 bytes: `openssl rand -base64 32`); every
    /// server gets the same file.
    #[arg(long, env = "SIGNET_DATASTORE_CA_KEY_FILE")]
    pub datastore_ca_key_file: Option<PathBuf>,
    /// Store the CA keys in the database in plain text (instead of --datastore-ca-key-file or a
    /// PKCS#11 token): anyone who can read the database can then sign SVIDs.
    #[arg(long, env = "SIGNET_DATASTORE_PLAINTEXT_CA_KEYS")]
    #[serde(default)]
    pub datastore_plaintext_ca_keys: bool,
}

/// Where the CA's keys live and who signs its intermediates. In `server.toml`: the `[ca]`
/// table.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCaArgs {
    /// Keep the CA signing keys in a PKCS#11 token through this module (e.g.
    /// /usr/lib/softhsm/libsofthsm2.so or an HSM vendor's library): generated there, never
    /// exported. Without it keys are stored with the CA state (file or Secret).
    #[arg(long, env = "SIGNET_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, env = "SIGNET_PKCS11_TOKEN_LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// File holding the token's user PIN (trailing newline ignored). Or set SIGNET_PKCS11_PIN.
    #[arg(long, env = "SIGNET_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Upstream CA certificate (PEM, signing certificate first): our intermediates are signed
    /// by it instead of being self-signed roots.
    #[arg(long, env = "SIGNET_UPSTREAM_CA_CERT")]
    pub upstream_ca_cert: Option<PathBuf>,
    /// The upstream CA's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, env = "SIGNET_UPSTREAM_CA_KEY")]
    pub upstream_ca_key: Option<PathBuf>,
    /// The upstream roots, which become the trust bundle (optional when the upstream
    /// certificate is itself a root).
    #[arg(long, env = "SIGNET_UPSTREAM_CA_BUNDLE")]
    pub upstream_ca_bundle: Option<PathBuf>,
    /// Kubernetes mode: a TLS Secret in the server's namespace holding the upstream CA
    /// (tls.crt, tls.key, ca.crt: a cert-manager Certificate with isCA). Watched: a renewal
    /// re-issues the intermediate with no outage.
    #[arg(long, env = "SIGNET_UPSTREAM_CA_SECRET")]
    pub upstream_ca_secret: Option<String>,
}

/// This trust domain's bundle endpoint and how federated bundles are fetched. In `server.toml`:
/// the `[federation]` table.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFederationArgs {
    /// Serve this trust domain's bundle to federated trust domains on this address (off
    /// unless set), e.g. 0.0.0.0:8443.
    #[arg(long, env = "SIGNET_BUNDLE_ENDPOINT_ADDRESS")]
    pub bundle_endpoint_address: Option<std::net::SocketAddr>,
    /// How the bundle endpoint authenticates itself: https_spiffe (the server's SVID,
    /// spiffe://<td>/signet/server) or https_web (--bundle-endpoint-cert-file and -key-file).
    #[arg(long, env = "SIGNET_BUNDLE_ENDPOINT_PROFILE")]
    pub bundle_endpoint_profile: Option<String>,
    /// https_web: the certificate chain (PEM, leaf first), re-read when it changes.
    #[arg(long, env = "SIGNET_BUNDLE_ENDPOINT_CERT_FILE")]
    pub bundle_endpoint_cert_file: Option<PathBuf>,
    /// https_web: the private key (PEM), re-read when it changes.
    #[arg(long, env = "SIGNET_BUNDLE_ENDPOINT_KEY_FILE")]
    pub bundle_endpoint_key_file: Option<PathBuf>,
    /// The refresh hint served with the bundle: how often peers fetch it [default: 5m].
    #[arg(long, env = "SIGNET_BUNDLE_ENDPOINT_REFRESH_HINT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub bundle_endpoint_refresh_hint: Option<Duration>,
    /// Extra root certificates (PEM) trusted for https_web bundle endpoints of federated trust
    /// domains, besides the system's.
    #[arg(long, env = "SIGNET_FEDERATION_CA_FILE")]
    pub federation_ca_file: Option<PathBuf>,
    /// Never fetch a federated bundle sooner than this after the last, whatever its hint
    /// [default: 5s].
    #[arg(long, env = "SIGNET_FEDERATION_MIN_REFRESH", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub federation_min_refresh: Option<Duration>,
    /// Never wait longer than this between fetches of a federated bundle [default: 1h].
    #[arg(long, env = "SIGNET_FEDERATION_MAX_REFRESH", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub federation_max_refresh: Option<Duration>,
}

/// Kubernetes mode of `signet server` (every in-cluster input is a flag, so the server also runs
/// as a plain process against any API server). In `server.toml`: the `[kubernetes]` table.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerKubernetesArgs {
    /// standalone (SQLite entries, join tokens) or kubernetes (CRDs, PSAT) [default: standalone].
    #[arg(long, env = "SIGNET_MODE")]
    pub mode: Option<String>,
    /// Kubeconfig to use [default: $KUBECONFIG, ~/.kube/config, then in-cluster].
    #[arg(long, env = "SIGNET_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the CA Secret, bundle ConfigMap and Lease [default: the kubeconfig's or the pod's].
    #[arg(long, env = "SIGNET_NAMESPACE")]
    pub namespace: Option<String>,
    /// This replica's name for leader election [default: $POD_NAME, else the host name].
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Cluster name used in agent IDs and `.ClusterName` [default: cluster].
    #[arg(long, env = "SIGNET_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// `.ClusterDomain` for templates [default: cluster.local].
    #[arg(long, env = "SIGNET_CLUSTER_DOMAIN")]
    pub cluster_domain: Option<String>,
    /// Secret holding the CA keys [default: signet-ca].
    #[arg(long, env = "SIGNET_CA_SECRET")]
    pub ca_secret: Option<String>,
    /// ConfigMap the bundle is published to [default: signet-bundle].
    #[arg(long, env = "SIGNET_BUNDLE_CONFIGMAP")]
    pub bundle_configmap: Option<String>,
    /// ConfigMap holding agent bans and evictions, shared by every replica [default: signet-agents].
    #[arg(long, env = "SIGNET_AGENT_STATE_CONFIGMAP")]
    pub agent_state_configmap: Option<String>,
    /// ConfigMap keeping the federated trust domains' bundles across restarts
    /// [default: signet-federated-bundles].
    #[arg(long, env = "SIGNET_FEDERATED_BUNDLES_CONFIGMAP")]
    pub federated_bundles_configmap: Option<String>,
    /// Lease used for leader election [default: signet-server].
    #[arg(long, env = "SIGNET_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Audience agent tokens must carry [default: signet-server].
    #[arg(long, env = "SIGNET_PSAT_AUDIENCE")]
    pub psat_audience: Option<String>,
    /// namespace:serviceaccount pairs agents run as, comma-separated [default: <namespace>:signet-agent].
    #[arg(long, env = "SIGNET_AGENT_SERVICE_ACCOUNTS", value_delimiter = ',')]
    pub agent_service_accounts: Option<Vec<String>>,
    /// Node label keys reported as agent selectors, comma-separated.
    #[arg(long, env = "SIGNET_NODE_LABEL_KEYS", value_delimiter = ',')]
    pub node_label_keys: Option<Vec<String>>,
    /// Namespaces whose pods get no identity (anchored regexes, comma-separated)
    /// [default: kube-system,kube-public,<namespace>].
    #[arg(long, env = "SIGNET_IGNORE_NAMESPACES", value_delimiter = ',')]
    pub ignore_namespaces: Option<Vec<String>>,
    /// Only reconcile resources with this className (class-less ones too).
    #[arg(long, env = "SIGNET_CLASS_NAME")]
    pub class_name: Option<String>,
    /// Keep a fallback ClusterSPIFFEID with this spiffeIDTemplate applied (e.g.
    /// `spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}`):
    /// pods no other ClusterSPIFFEID matches get it [default: none].
    #[arg(long, env = "SIGNET_DEFAULT_IDENTITY_TEMPLATE")]
    pub default_identity_template: Option<String>,
    /// Name of that ClusterSPIFFEID [default: signet-default].
    #[arg(long, env = "SIGNET_DEFAULT_IDENTITY_NAME")]
    pub default_identity_name: Option<String>,
}

/// `signet agent`: run, or an admin subcommand.
#[derive(Debug, Args)]
pub struct AgentCommand {
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    #[command(flatten)]
    pub run: Box<AgentArgs>,
}

#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// List attested agents.
    List(AdminArgs),
    /// Evict an agent: its SVID stops working and it must attest again.
    Evict(AgentTarget),
    /// Ban an agent: evicted for good, even with a new join token for the same ID. In
    /// Kubernetes mode the ban holds on every server replica and across restarts.
    Ban(AgentTarget),
    /// Lift a ban: the agent may attest again.
    Unban(AgentTarget),
}

#[derive(Debug, Args)]
pub struct AgentTarget {
    /// The agent's SPIFFE ID.
    pub spiffe_id: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `signet agent` options (also the keys of `agent.toml`).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentArgs {
    /// TOML config file with the same options (flags and env override it).
    #[arg(long, env = "SIGNET_AGENT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Trust domain, e.g. example.org.
    #[arg(long, env = "SIGNET_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// Server agent API address [default: 127.0.0.1:8081]; several servers sharing a datastore
    /// as a comma-separated list (the agent fails over to the next when its server dies).
    #[arg(long, env = "SIGNET_SERVER_ADDRESS")]
    pub server_address: Option<String>,
    /// Bootstrap trust bundle (the server's bundle.pem) [default: /var/lib/signet/server/bundle.pem].
    #[arg(long, env = "SIGNET_TRUST_BUNDLE")]
    pub trust_bundle: Option<PathBuf>,
    /// Join token for the first attestation (from `signet token create`).
    #[arg(long, env = "SIGNET_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Directory for the agent's identity [default: /var/lib/signet/agent].
    #[arg(long, env = "SIGNET_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Workload API socket [default: /run/signet/sockets/api.sock].
    #[arg(long, env = "SIGNET_SOCKET_PATH")]
    pub socket_path: Option<PathBuf>,
    /// Also report unix:sha256 of each workload's binary.
    #[arg(long, env = "SIGNET_HASH_WORKLOAD_BINARY")]
    pub hash_workload_binary: Option<bool>,
    /// The /proc to read workloads from [default: /proc].
    #[arg(long, env = "SIGNET_PROC_ROOT")]
    pub proc_root: Option<PathBuf>,
    /// Health and metrics address (/livez, /readyz, /metrics) [default: off].
    #[arg(long, env = "SIGNET_AGENT_HEALTH_ADDRESS")]
    pub health_address: Option<SocketAddr>,
    /// Most Workload API connections open at once; lowered to fit the descriptor limit
    /// [default: 8192].
    #[arg(long, env = "SIGNET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most Workload API connections one uid may hold open [default: 1024].
    #[arg(long, env = "SIGNET_MAX_CONNECTIONS_PER_UID")]
    pub max_connections_per_uid: Option<usize>,
    /// Close a Workload API connection that has carried no request for this long; clients
    /// reconnect on their next call. Open streams keep a connection in use [default: 5m].
    #[arg(long, env = "SIGNET_IDLE_CONNECTION_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub idle_connection_timeout: Option<Duration>,
    /// When the server taints a CA authority, re-sign the SVIDs it signed at random times within
    /// this window, so that a fleet of agents does not flood the server [default: 30s].
    #[arg(long, env = "SIGNET_TAINT_RESIGN_WINDOW", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub taint_resign_window: Option<Duration>,
    /// Re-sign SVIDs (the agent's own included) early enough that a server outage this long
    /// cannot expire any: each is re-signed at the latest this long before it expires. Needs
    /// SVID TTLs longer than the target (the agent warns otherwise); e.g. 24h with 48h TTLs
    /// [default: 0 = at half-life only].
    #[arg(long, env = "SIGNET_AVAILABILITY_TARGET", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub availability_target: Option<Duration>,
    /// Keep this node's SVIDs and their keys in the data directory (mode 0600), so that an
    /// agent restarted while the server is unreachable serves them [default: true].
    #[arg(long, env = "SIGNET_PERSIST_SVIDS")]
    pub persist_svids: Option<bool>,
    /// Most Workload API streams (e.g. FetchX509SVID watches) one connection may hold open;
    /// clients queue the rest [default: 128].
    #[arg(long, env = "SIGNET_MAX_STREAMS_PER_CONNECTION")]
    pub max_streams_per_connection: Option<u32>,
    /// Envoy SDS resource name of the default (first) X509-SVID [default: default].
    #[arg(long, env = "SIGNET_SDS_DEFAULT_SVID_NAME")]
    pub sds_default_svid_name: Option<String>,
    /// Envoy SDS resource name of the trust domain's roots [default: ROOTCA].
    #[arg(long, env = "SIGNET_SDS_ROOT_CA_NAME")]
    pub sds_root_ca_name: Option<String>,
    /// Envoy SDS resource name of every trust bundle (own and federated) [default: ALL].
    #[arg(long, env = "SIGNET_SDS_ALL_BUNDLES_NAME")]
    pub sds_all_bundles_name: Option<String>,
    /// Serve the all-bundles resource as plain trusted CAs instead of Envoy's SPIFFE certificate
    /// validator (for Envoy builds without it).
    #[arg(long, env = "SIGNET_SDS_DISABLE_SPIFFE_CERT_VALIDATION")]
    #[serde(default)]
    pub sds_disable_spiffe_cert_validation: bool,
    #[command(flatten, next_help_heading = "Kubernetes mode")]
    #[serde(default)]
    pub kubernetes: AgentKubernetesArgs,
}

/// Kubernetes mode of `signet agent`. In `agent.toml`: the `[kubernetes]` table.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentKubernetesArgs {
    /// standalone (join token, unix attestor) or kubernetes (PSAT, k8s attestor) [default: standalone].
    #[arg(long, env = "SIGNET_MODE")]
    pub mode: Option<String>,
    /// Kubeconfig to use [default: $KUBECONFIG, ~/.kube/config, then in-cluster].
    #[arg(long, env = "SIGNET_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (pods are watched with spec.nodeName=<node>) [default: $NODE_NAME].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Projected service account token (audience signet-server) [default: /var/run/secrets/tokens/signet-agent].
    #[arg(long, env = "SIGNET_TOKEN_PATH")]
    pub token_path: Option<PathBuf>,
    /// How long to wait for a new container to appear in its pod's status [default: 10s].
    #[arg(long, env = "SIGNET_CONTAINER_WAIT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub container_wait: Option<Duration>,
}

/// `signet quickstart` options.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Directory for all quickstart state [default: <tmp>/signet-quickstart-<uid>].
    #[arg(long, env = "SIGNET_QUICKSTART_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Trust domain.
    #[arg(long, default_value = "example.org")]
    pub trust_domain: String,
    /// SPIFFE ID for you [default: spiffe://<trust-domain>/quickstart/<user>].
    #[arg(long)]
    pub spiffe_id: Option<String>,
    /// X509-SVID lifetime of your identity (short to watch rotation).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub svid_ttl: Duration,
    /// Agent API address of the embedded server.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub bind_address: SocketAddr,
    /// Close a Workload API connection that has carried no request for this long.
    #[arg(long, env = "SIGNET_IDLE_CONNECTION_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_connection_timeout: Duration,
}

/// Where the admin API is.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Admin API socket of the server.
    #[arg(
        long,
        env = "SIGNET_ADMIN_SOCKET",
        default_value = "/var/lib/signet/server/admin.sock"
    )]
    pub admin_socket: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// Fields of an entry.
#[derive(Debug, Clone, Args)]
pub struct EntryFields {
    /// The SPIFFE ID to grant.
    #[arg(long)]
    pub spiffe_id: String,
    /// The agent that serves it (see `signet agent list`).
    #[arg(long)]
    pub parent_id: String,
    /// A selector the workload must have, e.g. unix:uid:1000 (repeatable; all must match).
    #[arg(long = "selector", required = true)]
    pub selectors: Vec<String>,
    /// X509-SVID lifetime [default: server's].
    #[arg(long, value_parser = parse_duration)]
    pub x509_svid_ttl: Option<Duration>,
    /// JWT-SVID lifetime [default: server's].
    #[arg(long, value_parser = parse_duration)]
    pub jwt_svid_ttl: Option<Duration>,
    /// DNS SAN (repeatable).
    #[arg(long = "dns-name")]
    pub dns_names: Vec<String>,
    /// Trust domain whose bundle the workload receives (repeatable).
    #[arg(long = "federates-with")]
    pub federates_with: Vec<String>,
    /// Hint shown to workloads holding several identities.
    #[arg(long, default_value = "")]
    pub hint: String,
    /// Admin workload.
    #[arg(long)]
    pub admin: bool,
    /// Downstream workload.
    #[arg(long)]
    pub downstream: bool,
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Create an entry.
    Create {
        #[command(flatten)]
        fields: EntryFields,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace an entry's fields.
    Update {
        /// Entry id.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        fields: EntryFields,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List entries.
    List {
        /// Only entries of this agent.
        #[arg(long)]
        parent_id: Option<String>,
        /// Only entries granting this ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one entry.
    Show {
        /// Entry id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an entry.
    Delete {
        /// Entry id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a single-use join token for a new agent.
    Create {
        /// Lifetime.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Bundle output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BundleFormat {
    /// PEM certificates.
    Pem,
    /// SPIFFE bundle JSON.
    Spiffe,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Print this trust domain's bundle.
    Show {
        /// Format.
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the Workload API is.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Workload API endpoint (unix:///path or a path).
    #[arg(
        long,
        env = "SPIFFE_ENDPOINT_SOCKET",
        default_value = "unix:///run/signet/sockets/api.sock"
    )]
    pub socket: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum SvidCommand {
    /// Fetch your X509-SVIDs once.
    Fetch {
        /// Write svid.N.pem (chain), svid.N.key (PKCS#8, mode 0600) and bundle.N.pem (the trust
        /// bundle of SVID N) into this directory, N = 0, 1, ... per SVID.
        #[arg(long)]
        write: Option<PathBuf>,
        #[command(flatten)]
        workload: WorkloadArgs,
    },
    /// Print every X509-SVID update as it arrives (rotation, bundle changes), until Ctrl-C.
    /// Reconnects with backoff when the agent restarts or is unreachable; exits with status 1
    /// when the agent refuses this process an identity.
    Watch {
        #[command(flatten)]
        workload: WorkloadArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum JwtCommand {
    /// Fetch a JWT-SVID for an audience.
    Fetch {
        /// Audience (repeatable).
        #[arg(long = "audience", required = true)]
        audience: Vec<String>,
        /// Only this identity.
        #[arg(long)]
        spiffe_id: Option<String>,
        #[command(flatten)]
        workload: WorkloadArgs,
    },
    /// Validate a JWT-SVID through the agent, or offline against a bundle file (`--bundle`).
    Validate {
        /// Expected audience.
        #[arg(long)]
        audience: String,
        /// The token, or `-` to read it from standard input (keeps it out of the process list).
        token: String,
        /// Validate offline against this SPIFFE bundle (JWK Set JSON, e.g. the `bundle.spiffe`
        /// key of the signet-bundle ConfigMap) instead of asking the agent.
        #[arg(long, requires = "trust_domain")]
        bundle: Option<PathBuf>,
        /// Trust domain the `--bundle` file belongs to; the token must be from it.
        #[arg(long, requires = "bundle")]
        trust_domain: Option<String>,
        /// Validate as an OIDC relying party would: with the keys this issuer publishes through
        /// OIDC discovery (`<issuer>/.well-known/openid-configuration`); `iss` must match.
        #[arg(long, conflicts_with = "bundle")]
        oidc_issuer: Option<String>,
        #[command(flatten)]
        workload: WorkloadArgs,
    },
}

/// The CSI node plugin: runs next to the agent in its DaemonSet, privileged, with the kubelet's
/// pods directory mounted at the same path with `mountPropagation: Bidirectional`.
///
/// Pods declare `volumes: [{name: spiffe-workload-api, csi: {driver: csi.signet.dev, readOnly: true}}]`
/// and get the agent's socket directory, read-only, at their mount path.
#[derive(Debug, Args)]
pub struct CsiArgs {
    /// Socket the kubelet and node-driver-registrar call (the registrar's --csi-address).
    #[arg(long, env = "SIGNET_CSI_SOCKET", default_value = "/csi/csi.sock")]
    pub csi_socket: PathBuf,
    /// The agent's Workload API socket directory, bind-mounted into pods.
    #[arg(
        long,
        env = "SIGNET_WORKLOAD_SOCKET_DIR",
        default_value = "/run/signet/sockets"
    )]
    pub workload_socket_dir: PathBuf,
    /// The kubelet's pods directory, as the kubelet names it (`<kubelet root>/pods`).
    #[arg(
        long,
        env = "SIGNET_KUBELET_PODS_DIR",
        default_value = "/var/lib/kubelet/pods"
    )]
    pub kubelet_pods_dir: PathBuf,
    /// CSI driver name; must equal the CSIDriver object's name.
    #[arg(long, env = "SIGNET_CSI_DRIVER_NAME", default_value = signet_csi::DEFAULT_DRIVER_NAME)]
    pub driver_name: String,
    /// This node's name, reported to the kubelet [default: $NODE_NAME].
    #[arg(long, env = "NODE_NAME")]
    pub node_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Check a server through its admin socket instead of an agent.
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Workload API endpoint of the agent.
    #[arg(
        long,
        env = "SPIFFE_ENDPOINT_SOCKET",
        default_value = "unix:///run/signet/sockets/api.sock"
    )]
    pub socket: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn server_config_file_keys_match_flags() {
        let file: ServerArgs =
            toml::from_str("trust_domain = \"example.org\"\nca_ttl = \"12h\"\n").unwrap();
        assert_eq!(file.ca_ttl, Some(Duration::from_secs(43200)));
        assert!(toml::from_str::<ServerArgs>("no_such_option = 1").is_err());
        let agent: AgentArgs =
            toml::from_str("server_address = \"10.0.0.1:8081\"\nhash_workload_binary = true\n")
                .unwrap();
        assert_eq!(agent.hash_workload_binary, Some(true));
    }

    /// The example files parse as they are and with their `[kubernetes]` table uncommented.
    #[test]
    fn example_config_files_parse_including_the_kubernetes_table() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let uncomment = |text: &str| -> String {
            let mut inside = false;
            text.lines()
                .map(|line| {
                    if line.starts_with("# [kubernetes]") {
                        inside = true;
                    }
                    match line.strip_prefix("# ") {
                        Some(rest) if inside => rest.to_owned(),
                        _ => line.to_owned(),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let server = std::fs::read_to_string(root.join("server.toml")).unwrap();
        toml::from_str::<ServerArgs>(&server).unwrap();
        let server: ServerArgs = toml::from_str(&uncomment(&server)).unwrap();
        assert_eq!(server.kubernetes.mode.as_deref(), Some("kubernetes"));
        assert_eq!(
            server.kubernetes.agent_service_accounts,
            Some(vec!["signet:signet-agent".to_owned()])
        );
        let agent = std::fs::read_to_string(root.join("agent.toml")).unwrap();
        toml::from_str::<AgentArgs>(&agent).unwrap();
        let agent: AgentArgs = toml::from_str(&uncomment(&agent)).unwrap();
        assert_eq!(
            agent.kubernetes.container_wait,
            Some(Duration::from_secs(10))
        );
        assert!(toml::from_str::<AgentArgs>("[kubernetes]\nno_such = 1\n").is_err());
    }
}
