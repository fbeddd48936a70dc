//! `signet server` and `signet agent`: options merged from flags, environment and config file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use signet_agent::{AgentConfig, UnixAttestorConfig};
use signet_server::ServerConfig;
use signet_spiffe::TrustDomain;

use crate::cli::{AgentArgs, AgentKubernetesArgs, CsiArgs, ServerArgs, ServerKubernetesArgs};
use crate::commands::kube_client;

fn read_config<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

fn trust_domain(value: Option<String>) -> anyhow::Result<TrustDomain> {
    let Some(name) = value else {
        bail!(
            "the trust domain is required: --trust-domain, SIGNET_TRUST_DOMAIN or trust_domain in the config file"
        )
    };
    TrustDomain::new(&name).with_context(|| format!("invalid trust domain {name:?}"))
}

fn is_kubernetes(mode: Option<String>) -> anyhow::Result<bool> {
    match mode.as_deref() {
        None | Some("standalone") => Ok(false),
        Some("kubernetes") => Ok(true),
        Some(other) => bail!("--mode must be standalone or kubernetes, not {other:?}"),
    }
}

/// `namespace:serviceaccount` pairs, each part non-empty.
fn service_account_pairs(pairs: Vec<String>) -> anyhow::Result<BTreeSet<String>> {
    for pair in &pairs {
        anyhow::ensure!(
            pair.split_once(':')
                .is_some_and(|(ns, sa)| { !ns.is_empty() && !sa.is_empty() && !sa.contains(':') }),
            "--agent-service-accounts takes namespace:serviceaccount pairs, got {pair:?}"
        );
    }
    Ok(pairs.into_iter().collect())
}

async fn server_kubernetes(
    flags: ServerKubernetesArgs,
    file: ServerKubernetesArgs,
) -> anyhow::Result<Option<signet_server::k8s::KubernetesOptions>> {
    if !is_kubernetes(flags.mode.or(file.mode))? {
        return Ok(None);
    }
    let ServerKubernetesArgs {
        mode: _,
        kubeconfig,
        namespace,
        pod_name,
        cluster_name,
        cluster_domain,
        ca_secret,
        bundle_configmap,
        agent_state_configmap,
        federated_bundles_configmap,
        lease_name,
        psat_audience,
        agent_service_accounts,
        node_label_keys,
        ignore_namespaces,
        class_name,
        default_identity_template,
        default_identity_name,
    } = flags;
    // Checked before contacting the API server, so a typo is reported as such.
    let agent_service_accounts = agent_service_accounts
        .or(file.agent_service_accounts)
        .map(service_account_pairs)
        .transpose()?;
    let class_name = class_name.or(file.class_name);
    let default_identity = default_identity_template
        .or(file.default_identity_template)
        .map(|template| {
            default_identity(
                template,
                default_identity_name.or(file.default_identity_name),
                class_name.clone(),
            )
        })
        .transpose()?;
    let (client, default_namespace) =
        kube_client::client(kubeconfig.or(file.kubeconfig).as_deref()).await?;
    let namespace = namespace.or(file.namespace).unwrap_or(default_namespace);
    let replica_name = pod_name
        .or(file.pod_name)
        .unwrap_or_else(kube_client::host_name);
    let cluster = cluster_name
        .or(file.cluster_name)
        .unwrap_or_else(|| "cluster".to_owned());
    let mut options =
        signet_server::k8s::KubernetesOptions::new(client, &namespace, &replica_name, &cluster);
    if let Some(v) = cluster_domain.or(file.cluster_domain) {
        options.cluster_domain = v;
    }
    if let Some(v) = ca_secret.or(file.ca_secret) {
        options.ca_secret = v;
    }
    if let Some(v) = bundle_configmap.or(file.bundle_configmap) {
        options.bundle_configmap = v;
    }
    if let Some(v) = agent_state_configmap.or(file.agent_state_configmap) {
        options.agent_state_configmap = v;
    }
    if let Some(v) = federated_bundles_configmap.or(file.federated_bundles_configmap) {
        options.federated_bundles_configmap = v;
    }
    if let Some(v) = lease_name.or(file.lease_name) {
        options.lease_name = v;
    }
    if let Some(v) = psat_audience.or(file.psat_audience) {
        options.psat_audience = v;
    }
    if let Some(v) = agent_service_accounts {
        options.agent_service_accounts = v;
    }
    if let Some(v) = node_label_keys.or(file.node_label_keys) {
        options.node_label_keys = v.into_iter().collect();
    }
    if let Some(v) = ignore_namespaces.or(file.ignore_namespaces) {
        options.ignore_namespaces = v;
    }
    options.class_name = class_name;
    options.default_identity = default_identity;
    Ok(Some(options))
}

/// The default identity from its flags, its template checked the way the controller parses it.
fn default_identity(
    template: String,
    name: Option<String>,
    class_name: Option<String>,
) -> anyhow::Result<signet_server::k8s::default_identity::DefaultIdentity> {
    signet_core::Template::parse(&template)
        .map_err(|e| anyhow::anyhow!("--default-identity-template {template:?}: {e}"))?;
    anyhow::ensure!(
        template.starts_with("spiffe://"),
        "--default-identity-template must render a SPIFFE ID (start with spiffe://), got {template:?}"
    );
    let name = name.unwrap_or_else(|| "signet-default".to_owned());
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
        "--default-identity-name must be a Kubernetes object name, got {name:?}"
    );
    Ok(signet_server::k8s::default_identity::DefaultIdentity {
        name,
        spiffe_id_template: template,
        class_name,
    })
}

/// Resolves `signet server` options.
pub async fn server_config(args: ServerArgs) -> anyhow::Result<ServerConfig> {
    let file: ServerArgs = read_config(args.config.as_deref())?;
    let ServerArgs {
        config: _,
        trust_domain: td,
        data_dir,
        bind_address,
        admin_socket,
        health_address,
        ca_key_type,
        ca_ttl,
        default_x509_svid_ttl,
        default_jwt_svid_ttl,
        agent_svid_ttl,
        agent_reattest_grace,
        default_policy,
        attestation_connection_lifetime,
        max_agent_connections,
        max_unauthenticated_connections_per_source,
        max_unauthenticated_connections,
        agent_sign_rate,
        agent_sign_burst,
        tls_handshake_timeout,
        new_ca,
        accept_data_loss,
        datastore,
        ca,
        federation,
        oidc,
        kubernetes,
    } = args;
    let kubernetes = server_kubernetes(kubernetes, file.kubernetes.clone()).await?;
    let data_dir = data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("/var/lib/signet/server"));
    let mut config = ServerConfig::new(trust_domain(td.or(file.trust_domain))?, data_dir);
    if let Some(address) = bind_address.or(file.bind_address) {
        config.bind_address = address;
    }
    if let Some(socket) = admin_socket.or(file.admin_socket) {
        config.admin_socket = socket;
    }
    if let Some(address) = health_address.or(file.health_address) {
        config.health_address = Some(address);
    }
    if let Some(kind) = ca_key_type.or(file.ca_key_type) {
        config.ca_key_algorithm = kind.parse().context("--ca-key-type")?;
    }
    let pick = |flag: Option<Duration>, file: Option<Duration>, default: Duration| {
        flag.or(file).unwrap_or(default)
    };
    config.ca_ttl = pick(ca_ttl, file.ca_ttl, config.ca_ttl);
    config.default_x509_svid_ttl = pick(
        default_x509_svid_ttl,
        file.default_x509_svid_ttl,
        config.default_x509_svid_ttl,
    );
    config.default_jwt_svid_ttl = pick(
        default_jwt_svid_ttl,
        file.default_jwt_svid_ttl,
        config.default_jwt_svid_ttl,
    );
    config.agent_svid_ttl = pick(agent_svid_ttl, file.agent_svid_ttl, config.agent_svid_ttl);
    config.agent_reattest_grace = pick(
        agent_reattest_grace,
        file.agent_reattest_grace,
        config.agent_reattest_grace,
    );
    anyhow::ensure!(
        config.ca_ttl >= Duration::from_secs(600),
        "--ca-ttl must be at least 10m"
    );
    if let Some(policy) = default_policy.or(file.default_policy) {
        config.default_policy = policy
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--default-policy: {e}"))?;
    }
    config.kubernetes = kubernetes;
    config.federation = federation_config(federation, file.federation)?;
    (config.pkcs11, config.upstream) = ca_config(ca, file.ca, config.kubernetes.is_some())?;
    (config.datastore, config.ca_state_protection) =
        datastore_config(datastore, file.datastore, config.kubernetes.is_some())?;
    (config.jwt_issuer, config.oidc) = oidc_config(oidc, file.oidc)?;
    config.new_ca = new_ca || file.new_ca;
    config.accept_data_loss = accept_data_loss || file.accept_data_loss;
    let bounds = &mut config.agent_api_bounds;
    bounds.unauthenticated_lifetime = pick(
        attestation_connection_lifetime,
        file.attestation_connection_lifetime,
        bounds.unauthenticated_lifetime,
    );
    bounds.handshake_timeout = pick(
        tls_handshake_timeout,
        file.tls_handshake_timeout,
        bounds.handshake_timeout,
    );
    bounds.max_connections = max_agent_connections
        .or(file.max_agent_connections)
        .unwrap_or(bounds.max_connections);
    bounds.unauthenticated_per_source = max_unauthenticated_connections_per_source
        .or(file.max_unauthenticated_connections_per_source)
        .unwrap_or(bounds.unauthenticated_per_source);
    anyhow::ensure!(
        bounds.unauthenticated_lifetime >= Duration::from_secs(1),
        "--attestation-connection-lifetime must be at least 1s"
    );
    anyhow::ensure!(
        bounds.handshake_timeout >= Duration::from_millis(100),
        "--tls-handshake-timeout must be at least 100ms"
    );
    bounds.max_unauthenticated = max_unauthenticated_connections
        .or(file.max_unauthenticated_connections)
        .unwrap_or(bounds.max_unauthenticated);
    anyhow::ensure!(
        bounds.max_connections > 0
            && bounds.unauthenticated_per_source > 0
            && bounds.max_unauthenticated > 0,
        "--max-agent-connections, --max-unauthenticated-connections and \
         --max-unauthenticated-connections-per-source must be positive"
    );
    config.admission = agent_signing_budget(
        agent_sign_rate.or(file.agent_sign_rate),
        agent_sign_burst.or(file.agent_sign_burst),
        config.admission,
    )?;
    Ok(config)
}

/// Applies `--agent-sign-rate` and `--agent-sign-burst` to `limits`, refusing values that would
/// make the budget meaningless (negative, NaN or infinite rates, a burst below one SVID).
fn agent_signing_budget(
    rate: Option<f64>,
    burst: Option<f64>,
    mut limits: signet_server::admission::AdmissionLimits,
) -> anyhow::Result<signet_server::admission::AdmissionLimits> {
    limits.agent_sign_rate = rate.unwrap_or(limits.agent_sign_rate);
    limits.agent_sign_burst = burst.unwrap_or(limits.agent_sign_burst);
    anyhow::ensure!(
        limits.agent_sign_rate >= 0.0
            && limits.agent_sign_rate.is_finite()
            && limits.agent_sign_burst >= 1.0
            && limits.agent_sign_burst.is_finite(),
        "--agent-sign-rate must be 0 (unlimited) or positive and --agent-sign-burst at least 1"
    );
    Ok(limits)
}

async fn agent_kubernetes(
    flags: AgentKubernetesArgs,
    file: AgentKubernetesArgs,
    proc_root: PathBuf,
) -> anyhow::Result<Option<signet_agent::AgentKubernetes>> {
    if !is_kubernetes(flags.mode.or(file.mode))? {
        return Ok(None);
    }
    let AgentKubernetesArgs {
        mode: _,
        kubeconfig,
        node_name,
        token_path,
        container_wait,
    } = flags;
    let Some(node_name) = node_name.or(file.node_name) else {
        bail!(
            "Kubernetes mode needs the node name: --node-name or NODE_NAME (downward API spec.nodeName)"
        )
    };
    let (client, _) = kube_client::client(kubeconfig.or(file.kubeconfig).as_deref()).await?;
    Ok(Some(signet_agent::AgentKubernetes {
        client,
        node_name,
        token_path: token_path
            .or(file.token_path)
            .unwrap_or_else(|| PathBuf::from("/var/run/secrets/tokens/signet-agent")),
        attestor: signet_agent::attestor::k8s::K8sAttestorConfig {
            proc_root,
            container_wait: container_wait
                .or(file.container_wait)
                .unwrap_or(Duration::from_secs(10)),
        },
    }))
}

/// Resolves `signet agent` options.
pub async fn agent_config(args: AgentArgs) -> anyhow::Result<AgentConfig> {
    let file: AgentArgs = read_config(args.config.as_deref())?;
    let AgentArgs {
        config: _,
        trust_domain: td,
        server_address,
        trust_bundle,
        join_token,
        data_dir,
        socket_path,
        hash_workload_binary,
        proc_root,
        health_address,
        max_connections,
        max_connections_per_uid,
        idle_connection_timeout,
        taint_resign_window,
        availability_target,
        persist_svids,
        max_streams_per_connection,
        sds_default_svid_name,
        sds_root_ca_name,
        sds_all_bundles_name,
        sds_disable_spiffe_cert_validation,
        kubernetes,
    } = args;
    let sds_defaults = signet_agent::sds::SdsConfig::default();
    let sds = signet_agent::sds::SdsConfig {
        default_svid_name: sds_default_svid_name
            .or(file.sds_default_svid_name)
            .unwrap_or(sds_defaults.default_svid_name),
        root_ca_name: sds_root_ca_name
            .or(file.sds_root_ca_name)
            .unwrap_or(sds_defaults.root_ca_name),
        all_bundles_name: sds_all_bundles_name
            .or(file.sds_all_bundles_name)
            .unwrap_or(sds_defaults.all_bundles_name),
        disable_spiffe_cert_validation: sds_disable_spiffe_cert_validation
            || file.sds_disable_spiffe_cert_validation,
    };
    anyhow::ensure!(
        [
            &sds.default_svid_name,
            &sds.root_ca_name,
            &sds.all_bundles_name
        ]
        .iter()
        .all(|n| !n.is_empty() && !n.starts_with("spiffe://")),
        "SDS resource names must be non-empty and must not look like SPIFFE IDs"
    );
    let max_streams_per_connection = max_streams_per_connection
        .or(file.max_streams_per_connection)
        .unwrap_or(signet_agent::MAX_STREAMS_PER_CONNECTION);
    anyhow::ensure!(
        max_streams_per_connection > 0,
        "--max-streams-per-connection must be at least 1"
    );
    let idle_connection_timeout = idle_connection_timeout
        .or(file.idle_connection_timeout)
        .unwrap_or(signet_agent::DEFAULT_IDLE_CONNECTION_TIMEOUT);
    anyhow::ensure!(
        idle_connection_timeout >= Duration::from_millis(100),
        "--idle-connection-timeout must be at least 100ms"
    );
    let connection_limits = signet_unix::ConnectionLimits {
        total: max_connections
            .or(file.max_connections)
            .unwrap_or(signet_agent::DEFAULT_CONNECTION_LIMITS.total),
        per_peer: max_connections_per_uid
            .or(file.max_connections_per_uid)
            .unwrap_or(signet_agent::DEFAULT_CONNECTION_LIMITS.per_peer),
    };
    anyhow::ensure!(
        connection_limits.total > 0 && connection_limits.per_peer > 0,
        "--max-connections and --max-connections-per-uid must be at least 1"
    );
    let defaults = UnixAttestorConfig::default();
    let unix = UnixAttestorConfig {
        hash_binary: hash_workload_binary
            .or(file.hash_workload_binary)
            .unwrap_or(false),
        proc_root: proc_root
            .or(file.proc_root)
            .unwrap_or_else(|| defaults.proc_root.clone()),
        ..defaults
    };
    let kubernetes =
        agent_kubernetes(kubernetes, file.kubernetes.clone(), unix.proc_root.clone()).await?;
    Ok(AgentConfig {
        trust_domain: trust_domain(td.or(file.trust_domain))?,
        server_address: server_address
            .or(file.server_address)
            .unwrap_or_else(|| "127.0.0.1:8081".into()),
        trust_bundle_path: trust_bundle
            .or(file.trust_bundle)
            .unwrap_or_else(|| PathBuf::from("/var/lib/signet/server/bundle.pem")),
        join_token: join_token.or(file.join_token),
        data_dir: data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/signet/agent")),
        workload: signet_agent::WorkloadEndpoint {
            socket_path: socket_path
                .or(file.socket_path)
                .unwrap_or_else(|| PathBuf::from("/run/signet/sockets/api.sock")),
            connection_limits,
            idle_connection_timeout,
            max_streams_per_connection,
            sds,
        },
        unix_attestor: unix,
        health_address: health_address.or(file.health_address),
        taint_resign_window: taint_resign_window
            .or(file.taint_resign_window)
            .unwrap_or(signet_agent::DEFAULT_TAINT_RESIGN_WINDOW),
        availability_target: availability_target
            .or(file.availability_target)
            .unwrap_or_default(),
        persist_svids: persist_svids.or(file.persist_svids).unwrap_or(true),
        kubernetes,
    })
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Runs the server until a signal.
pub async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let config = server_config(args).await?;
    let server = signet_server::start(config).await?;
    eprintln!(
        "signet server listening on {} (admin socket {})",
        server.agent_address,
        server.admin_socket.display()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown();
    Ok(())
}

/// The shared PostgreSQL datastore from flags, file and environment.
pub(crate) fn datastore_config(
    flags: crate::cli::ServerDatastoreArgs,
    file: crate::cli::ServerDatastoreArgs,
    kubernetes: bool,
) -> anyhow::Result<(
    Option<signet_server::datastore::postgres::PostgresConfig>,
    Option<signet_server::CaStateProtection>,
)> {
    let password_file = flags
        .datastore_password_file
        .or(file.datastore_password_file);
    let ca_file = flags.datastore_ca_file.or(file.datastore_ca_file);
    let key_file = flags.datastore_ca_key_file.or(file.datastore_ca_key_file);
    let plaintext = flags.datastore_plaintext_ca_keys || file.datastore_plaintext_ca_keys;
    let Some(url) = flags.datastore.or(file.datastore) else {
        anyhow::ensure!(
            password_file.is_none() && ca_file.is_none() && key_file.is_none() && !plaintext,
            "the --datastore-* options need --datastore"
        );
        return Ok((None, None));
    };
    anyhow::ensure!(
        !kubernetes,
        "--datastore is for standalone mode; Kubernetes mode keeps its state in the cluster"
    );
    anyhow::ensure!(
        url.starts_with("postgres://") || url.starts_with("postgresql://"),
        "--datastore takes a postgres:// URL (SQLite needs no option)"
    );
    let password = match (password_file, std::env::var("SIGNET_DATASTORE_PASSWORD")) {
        (Some(path), _) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the password file {}", path.display()))?,
            );
            Some(zeroize::Zeroizing::new(
                text.trim_end_matches(['\n', '\r']).to_owned(),
            ))
        }
        (None, Ok(password)) => Some(zeroize::Zeroizing::new(password)),
        (None, Err(_)) => None,
    };
    let extra_roots = match ca_file {
        None => Vec::new(),
        Some(path) => {
            let pem =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            signet_spiffe::Bundle::from_json_or_pem(
                signet_spiffe::TrustDomain::new("datastore.invalid")?,
                &pem,
            )
            .map(|bundle| bundle.x509_authorities().to_vec())
            .with_context(|| format!("{} holds no PEM certificates", path.display()))?
        }
    };
    let protection = match (key_file, plaintext) {
        (Some(_), true) => {
            bail!("--datastore-ca-key-file and --datastore-plaintext-ca-keys exclude each other")
        }
        (Some(path), false) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
            Some(
                signet_server::CaStateProtection::from_key_file(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            )
        }
        (None, true) => Some(signet_server::CaStateProtection::Plain),
        (None, false) => None,
    };
    Ok((
        Some(signet_server::datastore::postgres::PostgresConfig {
            url,
            password,
            extra_roots,
        }),
        protection,
    ))
}

/// The PKCS#11 token and the upstream CA from flags, file and environment.
fn ca_config(
    flags: crate::cli::ServerCaArgs,
    file: crate::cli::ServerCaArgs,
    kubernetes: bool,
) -> anyhow::Result<(
    Option<signet_ca::pkcs11::Pkcs11Config>,
    Option<signet_server::UpstreamSource>,
)> {
    let module = flags.pkcs11_module.or(file.pkcs11_module);
    let label = flags.pkcs11_token_label.or(file.pkcs11_token_label);
    let pin_file = flags.pkcs11_pin_file.or(file.pkcs11_pin_file);
    let pkcs11 = match (module, label) {
        (None, None) => {
            anyhow::ensure!(
                pin_file.is_none(),
                "--pkcs11-pin-file needs --pkcs11-module"
            );
            None
        }
        (Some(module), Some(token_label)) => {
            let pin = match (pin_file, std::env::var("SIGNET_PKCS11_PIN")) {
                (Some(path), _) => {
                    let text = zeroize::Zeroizing::new(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading the PIN file {}", path.display()))?,
                    );
                    zeroize::Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned())
                }
                (None, Ok(pin)) => zeroize::Zeroizing::new(pin),
                (None, Err(_)) => {
                    bail!("the PKCS#11 token needs its PIN: --pkcs11-pin-file or SIGNET_PKCS11_PIN")
                }
            };
            Some(signet_ca::pkcs11::Pkcs11Config {
                module,
                token_label,
                pin,
            })
        }
        _ => bail!("--pkcs11-module and --pkcs11-token-label go together"),
    };
    let cert = flags.upstream_ca_cert.or(file.upstream_ca_cert);
    let key = flags.upstream_ca_key.or(file.upstream_ca_key);
    let bundle = flags.upstream_ca_bundle.or(file.upstream_ca_bundle);
    let secret = flags.upstream_ca_secret.or(file.upstream_ca_secret);
    let upstream = match (cert, key, secret) {
        (None, None, None) => {
            anyhow::ensure!(
                bundle.is_none(),
                "--upstream-ca-bundle needs --upstream-ca-cert"
            );
            None
        }
        (Some(cert), Some(key), None) => {
            Some(signet_server::UpstreamSource::Files { cert, key, bundle })
        }
        (None, None, Some(name)) => {
            anyhow::ensure!(
                kubernetes,
                "--upstream-ca-secret is for Kubernetes mode; standalone reads --upstream-ca-cert and --upstream-ca-key"
            );
            anyhow::ensure!(
                bundle.is_none(),
                "--upstream-ca-bundle does not go with --upstream-ca-secret (its ca.crt is the bundle)"
            );
            Some(signet_server::UpstreamSource::Secret { name })
        }
        (_, _, Some(_)) => {
            bail!("--upstream-ca-secret does not go with --upstream-ca-cert/--upstream-ca-key")
        }
        _ => bail!("--upstream-ca-cert and --upstream-ca-key go together"),
    };
    Ok((pkcs11, upstream))
}

/// The JWT-SVID issuer and the OIDC discovery endpoint from flags and file.
fn oidc_config(
    flags: crate::cli::ServerOidcArgs,
    file: crate::cli::ServerOidcArgs,
) -> anyhow::Result<(Option<String>, Option<signet_server::oidc::OidcConfig>)> {
    use signet_server::oidc::{OidcConfig, OidcTransport, check_issuer};
    let issuer = flags.jwt_issuer.or(file.jwt_issuer);
    if let Some(issuer) = &issuer {
        check_issuer(issuer).map_err(|e| anyhow::anyhow!("--jwt-issuer: {e}"))?;
    }
    let cert = flags.oidc_cert_file.or(file.oidc_cert_file);
    let key = flags.oidc_key_file.or(file.oidc_key_file);
    let insecure = flags.oidc_insecure_http || file.oidc_insecure_http;
    let Some(address) = flags.oidc_address.or(file.oidc_address) else {
        anyhow::ensure!(
            cert.is_none() && key.is_none() && !insecure,
            "the --oidc-* options need --oidc-address"
        );
        return Ok((issuer, None));
    };
    let Some(issuer) = issuer else {
        bail!("--oidc-address needs --jwt-issuer: the issuer relying parties are configured with")
    };
    let transport = match (cert, key, insecure) {
        (Some(cert_file), Some(key_file), false) => OidcTransport::Https {
            cert_file,
            key_file,
        },
        (None, None, true) => OidcTransport::InsecureHttp,
        (None, None, false) => bail!(
            "--oidc-address needs --oidc-cert-file and --oidc-key-file, or --oidc-insecure-http behind a TLS-terminating proxy"
        ),
        _ => bail!(
            "--oidc-cert-file and --oidc-key-file go together, and not with --oidc-insecure-http"
        ),
    };
    let discovery = OidcConfig {
        address,
        issuer: issuer.clone(),
        transport,
        max_age: Duration::from_secs(300),
    };
    Ok((Some(issuer), Some(discovery)))
}

/// The federation settings from flags and file.
fn federation_config(
    flags: crate::cli::ServerFederationArgs,
    file: crate::cli::ServerFederationArgs,
) -> anyhow::Result<signet_server::FederationConfig> {
    use signet_server::federation::endpoint::{BundleEndpointConfig, EndpointTls};
    let mut config = signet_server::FederationConfig::default();
    let cert = flags
        .bundle_endpoint_cert_file
        .or(file.bundle_endpoint_cert_file);
    let key = flags
        .bundle_endpoint_key_file
        .or(file.bundle_endpoint_key_file);
    let profile = flags
        .bundle_endpoint_profile
        .or(file.bundle_endpoint_profile);
    if let Some(address) = flags
        .bundle_endpoint_address
        .or(file.bundle_endpoint_address)
    {
        let tls = match (profile.as_deref().unwrap_or("https_spiffe"), cert, key) {
            ("https_spiffe", None, None) => EndpointTls::Spiffe,
            ("https_spiffe", _, _) => bail!(
                "--bundle-endpoint-cert-file and --bundle-endpoint-key-file are for --bundle-endpoint-profile https_web; https_spiffe serves the server's own SVID"
            ),
            ("https_web", Some(cert_file), Some(key_file)) => EndpointTls::Web {
                cert_file,
                key_file,
            },
            ("https_web", _, _) => bail!(
                "--bundle-endpoint-profile https_web needs --bundle-endpoint-cert-file and --bundle-endpoint-key-file"
            ),
            (other, _, _) => {
                bail!("--bundle-endpoint-profile must be https_spiffe or https_web, not {other:?}")
            }
        };
        let refresh_hint = flags
            .bundle_endpoint_refresh_hint
            .or(file.bundle_endpoint_refresh_hint)
            .unwrap_or(Duration::from_secs(300));
        anyhow::ensure!(
            refresh_hint >= Duration::from_secs(1),
            "--bundle-endpoint-refresh-hint must be at least 1s"
        );
        config.bundle_endpoint = Some(BundleEndpointConfig {
            address,
            tls,
            refresh_hint,
        });
    } else if profile.is_some() || cert.is_some() || key.is_some() {
        bail!("the --bundle-endpoint-* options need --bundle-endpoint-address");
    }
    if let Some(path) = flags.federation_ca_file.or(file.federation_ca_file) {
        use rustls_pki_types::pem::PemObject;
        config.extra_web_roots = rustls_pki_types::CertificateDer::pem_file_iter(&path)
            .and_then(Iterator::collect)
            .with_context(|| format!("--federation-ca-file {}", path.display()))?;
        anyhow::ensure!(
            !config.extra_web_roots.is_empty(),
            "--federation-ca-file {} holds no certificate",
            path.display()
        );
    }
    let refresh = &mut config.refresh;
    if let Some(min) = flags.federation_min_refresh.or(file.federation_min_refresh) {
        refresh.min = min;
    }
    if let Some(max) = flags.federation_max_refresh.or(file.federation_max_refresh) {
        refresh.max = max;
    }
    anyhow::ensure!(
        refresh.min >= Duration::from_secs(1) && refresh.min <= refresh.max,
        "--federation-min-refresh must be at least 1s and at most --federation-max-refresh"
    );
    Ok(config)
}

/// Runs the agent until a signal.
pub async fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let config = agent_config(args).await?;
    let agent = signet_agent::start(config).await?;
    eprintln!(
        "signet agent {} serving the Workload API on {}",
        agent.agent_id,
        agent.socket_path.display()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    agent.shutdown();
    Ok(())
}

/// Runs the CSI node plugin until a signal.
pub async fn run_csi(args: CsiArgs) -> anyhow::Result<()> {
    let plugin = signet_csi::CsiPlugin::new(signet_csi::CsiConfig {
        driver_name: args.driver_name,
        node_id: args.node_id.unwrap_or_default(),
        workload_socket_dir: args.workload_socket_dir.clone(),
        kubelet_pods_dir: args.kubelet_pods_dir.clone(),
    })?;
    let listener = signet_csi::bind_socket(&args.csi_socket)?;
    eprintln!(
        "signet csi serving {} (mounts {} into pods under {})",
        args.csi_socket.display(),
        args.workload_socket_dir.display(),
        args.kubelet_pods_dir.display()
    );
    plugin.serve(listener, shutdown_signal()).await?;
    tracing::info!("shutting down");
    let _ = std::fs::remove_file(&args.csi_socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_agent_signing_budgets_are_refused() {
        let defaults = signet_server::admission::AdmissionLimits::default();
        for (rate, burst) in [
            (Some(-1.0), None),
            (Some(f64::NAN), None),
            (Some(f64::INFINITY), None),
            (None, Some(0.5)),
            (None, Some(f64::NAN)),
        ] {
            let error = agent_signing_budget(rate, burst, defaults).unwrap_err();
            assert!(error.to_string().contains("--agent-sign-rate"), "{error}");
        }
        let unlimited = agent_signing_budget(Some(0.0), Some(1.0), defaults).unwrap();
        assert_eq!(
            (unlimited.agent_sign_rate, unlimited.agent_sign_burst),
            (0.0, 1.0)
        );
        assert_eq!(
            agent_signing_budget(None, None, defaults).unwrap(),
            defaults
        );
    }

    #[test]
    fn inconsistent_datastore_options_are_refused() {
        use crate::cli::ServerDatastoreArgs;
        let url = || Some("postgres://signet@db/signet".to_owned());
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca-state.key");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, "abcd").unwrap();
        let check = |args: ServerDatastoreArgs, kubernetes: bool, why: &str| {
            let error = datastore_config(args, ServerDatastoreArgs::default(), kubernetes)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(error.contains(why), "{why}: got {error:?}");
        };
        check(
            ServerDatastoreArgs {
                datastore_ca_key_file: Some(key.clone()),
                ..Default::default()
            },
            false,
            "need --datastore",
        );
        check(
            ServerDatastoreArgs {
                datastore: url(),
                ..Default::default()
            },
            true,
            "standalone mode",
        );
        check(
            ServerDatastoreArgs {
                datastore: Some("mysql://db/signet".into()),
                ..Default::default()
            },
            false,
            "postgres:// URL",
        );
        check(
            ServerDatastoreArgs {
                datastore: url(),
                datastore_ca_key_file: Some(key.clone()),
                datastore_plaintext_ca_keys: true,
                ..Default::default()
            },
            false,
            "exclude each other",
        );
        check(
            ServerDatastoreArgs {
                datastore: url(),
                datastore_ca_key_file: Some(short),
                ..Default::default()
            },
            false,
            "32 bytes",
        );
        check(
            ServerDatastoreArgs {
                datastore: url(),
                datastore_password_file: Some(dir.path().join("missing")),
                ..Default::default()
            },
            false,
            "reading the password file",
        );
        let (config, protection) = datastore_config(
            ServerDatastoreArgs {
                datastore: url(),
                datastore_ca_key_file: Some(key),
                ..Default::default()
            },
            ServerDatastoreArgs::default(),
            false,
        )
        .unwrap();
        assert!(config.is_some() && protection.is_some());
    }

    #[test]
    fn inconsistent_ca_key_and_upstream_options_are_refused() {
        use crate::cli::ServerCaArgs;
        let path = || Some(std::path::PathBuf::from("/nonexistent"));
        for (args, kubernetes, why) in [
            (
                ServerCaArgs {
                    pkcs11_module: path(),
                    ..Default::default()
                },
                false,
                "go together",
            ),
            (
                ServerCaArgs {
                    pkcs11_pin_file: path(),
                    ..Default::default()
                },
                false,
                "needs --pkcs11-module",
            ),
            (
                ServerCaArgs {
                    upstream_ca_cert: path(),
                    ..Default::default()
                },
                false,
                "--upstream-ca-cert and --upstream-ca-key go together",
            ),
            (
                ServerCaArgs {
                    upstream_ca_bundle: path(),
                    ..Default::default()
                },
                false,
                "needs --upstream-ca-cert",
            ),
            (
                ServerCaArgs {
                    upstream_ca_secret: Some("corp".into()),
                    ..Default::default()
                },
                false,
                "Kubernetes mode",
            ),
            (
                ServerCaArgs {
                    upstream_ca_secret: Some("corp".into()),
                    upstream_ca_cert: path(),
                    upstream_ca_key: path(),
                    ..Default::default()
                },
                true,
                "does not go with",
            ),
        ] {
            let error = ca_config(args, ServerCaArgs::default(), kubernetes)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(error.contains(why), "{why}: got {error:?}");
        }
    }

    #[test]
    fn inconsistent_federation_and_oidc_options_are_refused() {
        use crate::cli::{ServerFederationArgs, ServerOidcArgs};
        let address = Some("127.0.0.1:8443".parse().unwrap());
        let federation =
            |f: ServerFederationArgs| federation_config(f, ServerFederationArgs::default());
        for (bad, why) in [
            (
                ServerFederationArgs {
                    bundle_endpoint_profile: Some("https_web".into()),
                    ..Default::default()
                },
                "need --bundle-endpoint-address",
            ),
            (
                ServerFederationArgs {
                    bundle_endpoint_address: address,
                    bundle_endpoint_profile: Some("https_web".into()),
                    ..Default::default()
                },
                "needs --bundle-endpoint-cert-file",
            ),
            (
                ServerFederationArgs {
                    bundle_endpoint_address: address,
                    bundle_endpoint_cert_file: Some("c".into()),
                    bundle_endpoint_key_file: Some("k".into()),
                    ..Default::default()
                },
                "are for --bundle-endpoint-profile https_web",
            ),
            (
                ServerFederationArgs {
                    bundle_endpoint_address: address,
                    bundle_endpoint_profile: Some("tls".into()),
                    ..Default::default()
                },
                "must be https_spiffe or https_web",
            ),
            (
                ServerFederationArgs {
                    federation_min_refresh: Some(Duration::from_secs(7200)),
                    ..Default::default()
                },
                "at most --federation-max-refresh",
            ),
        ] {
            let error = federation(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
        let spiffe = federation(ServerFederationArgs {
            bundle_endpoint_address: address,
            ..Default::default()
        })
        .unwrap();
        assert!(spiffe.bundle_endpoint.is_some());

        let oidc = |o: ServerOidcArgs| oidc_config(o, ServerOidcArgs::default());
        for (bad, why) in [
            (
                ServerOidcArgs {
                    jwt_issuer: Some("https://oidc.example.org/".into()),
                    ..Default::default()
                },
                "drop the slash",
            ),
            (
                ServerOidcArgs {
                    oidc_address: address,
                    oidc_insecure_http: true,
                    ..Default::default()
                },
                "needs --jwt-issuer",
            ),
            (
                ServerOidcArgs {
                    jwt_issuer: Some("https://oidc.example.org".into()),
                    oidc_address: address,
                    ..Default::default()
                },
                "--oidc-insecure-http behind",
            ),
            (
                ServerOidcArgs {
                    jwt_issuer: Some("https://oidc.example.org".into()),
                    oidc_address: address,
                    oidc_insecure_http: true,
                    oidc_cert_file: Some("c".into()),
                    ..Default::default()
                },
                "go together",
            ),
            (
                ServerOidcArgs {
                    oidc_insecure_http: true,
                    ..Default::default()
                },
                "need --oidc-address",
            ),
        ] {
            let error = oidc(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
    }

    #[test]
    fn modes_and_service_account_pairs_are_checked() {
        assert!(!is_kubernetes(None).unwrap());
        assert!(!is_kubernetes(Some("standalone".into())).unwrap());
        assert!(is_kubernetes(Some("kubernetes".into())).unwrap());
        assert!(is_kubernetes(Some("k8s".into())).is_err());
        let ok = service_account_pairs(vec!["signet:signet-agent".into()]).unwrap();
        assert!(ok.contains("signet:signet-agent"));
        for bad in ["signet", ":agent", "signet:", "a:b:c", ""] {
            assert!(service_account_pairs(vec![bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_identity_flags_are_checked() {
        let template = "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}";
        let identity = default_identity(template.into(), None, Some("blue".into())).unwrap();
        assert_eq!(identity.name, "signet-default");
        assert_eq!(identity.class_name.as_deref(), Some("blue"));
        let error = |template: &str, name: Option<&str>| {
            default_identity(template.into(), name.map(Into::into), None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(error("spiffe://{{ .TrustDomain", None).contains("--default-identity-template"));
        assert!(error("{{ .TrustDomain }}/x", None).contains("spiffe://"));
        assert!(error(template, Some("Bad_Name")).contains("--default-identity-name"));
    }

    #[tokio::test]
    async fn kubernetes_mode_reports_a_missing_node_name_before_anything_else() {
        let error = agent_kubernetes(
            AgentKubernetesArgs {
                mode: Some("kubernetes".into()),
                ..AgentKubernetesArgs::default()
            },
            AgentKubernetesArgs::default(),
            PathBuf::from("/proc"),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(error.contains("node name"), "{error}");
    }
}
