//! `signet proxy`: the mTLS sidecar (see `signet-proxy`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use signet_core::policy::IdPattern;
use signet_proxy::{Inbound, Mode, Outbound, Protocol, ProxyConfig};

/// STRICT or PERMISSIVE.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// mTLS only.
    Strict,
    /// mTLS, and plaintext peers without an SVID (reported) while migrating.
    Permissive,
}

/// What the application speaks.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    /// HTTP/1.1 or HTTP/2: every request authorized by method and path too.
    Http,
    /// Opaque TCP: each connection authorized by peer and port.
    Tcp,
}

/// `signet proxy` flags.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Workload API endpoint.
    #[arg(
        long,
        env = "SPIFFE_ENDPOINT_SOCKET",
        default_value = "unix:///run/signet/sockets/api.sock"
    )]
    pub workload_api: String,
    /// Inbound listener for peers (mTLS), e.g. 0.0.0.0:8443.
    #[arg(long, requires = "inbound_forward")]
    pub inbound_listen: Option<SocketAddr>,
    /// The local application inbound traffic goes to, e.g. 127.0.0.1:8080.
    #[arg(long, requires = "inbound_listen")]
    pub inbound_forward: Option<SocketAddr>,
    /// What the application speaks.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Http)]
    pub inbound_protocol: ProtocolArg,
    /// The port AuthorizationPolicies name for this workload (`to.ports`) [default: the
    /// inbound listener's port].
    #[arg(long)]
    pub policy_port: Option<u16>,
    /// STRICT refuses peers without an SVID; PERMISSIVE lets them in as unauthenticated.
    #[arg(long, value_enum, default_value_t = ModeArg::Strict)]
    pub mode: ModeArg,
    /// An outbound route LISTEN,TARGET,SPIFFE_ID: plaintext from the application on LISTEN,
    /// mTLS to TARGET (host:port) whose SVID must match SPIFFE_ID (`*` one segment, a final
    /// `**` the rest). Repeatable.
    #[arg(long, value_parser = parse_route)]
    pub outbound: Vec<Outbound>,
    /// Address of /metrics, /livez and /readyz.
    #[arg(long)]
    pub metrics_address: Option<SocketAddr>,
    /// How long to wait for the workload's first SVID.
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub svid_timeout: Duration,
    /// Most connections one listener serves at once; more are closed at accept.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most inbound connections still in their TLS handshake, in total.
    #[arg(long, default_value_t = 1_024)]
    pub max_handshakes: usize,
    /// Most inbound connections one source address may hold in their TLS handshake.
    #[arg(long, default_value_t = 64)]
    pub max_handshakes_per_source: usize,
    /// Longest wait for a connection's first byte and TLS handshake together.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub handshake_timeout: std::time::Duration,
    /// Longest time an HTTP/1 client may take to send a request's headers.
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub header_read_timeout: std::time::Duration,
}

fn parse_route(text: &str) -> Result<Outbound, String> {
    let parts: Vec<&str> = text.split(',').collect();
    let [listen, target, id] = parts.as_slice() else {
        return Err(format!("{text:?}: expected LISTEN,TARGET,SPIFFE_ID"));
    };
    Ok(Outbound {
        listen: listen
            .parse()
            .map_err(|e| format!("listen address {listen:?}: {e}"))?,
        target: {
            if target
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(format!("target {target:?} must be host:port"));
            }
            (*target).to_owned()
        },
        server_id: IdPattern::parse(id).map_err(|e| format!("SPIFFE ID {id:?}: {e}"))?,
    })
}

/// Runs the proxy until SIGTERM or Ctrl-C.
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let socket = crate::uds::endpoint_path(&args.workload_api)?;
    let inbound = match (args.inbound_listen, args.inbound_forward) {
        (Some(listen), Some(forward)) => Some(Inbound {
            listen,
            forward,
            protocol: match args.inbound_protocol {
                ProtocolArg::Http => Protocol::Http,
                ProtocolArg::Tcp => Protocol::Tcp,
            },
            policy_port: args.policy_port.unwrap_or(listen.port()),
            mode: match args.mode {
                ModeArg::Strict => Mode::Strict,
                ModeArg::Permissive => Mode::Permissive,
            },
        }),
        _ => None,
    };
    anyhow::ensure!(
        inbound.is_some() || !args.outbound.is_empty(),
        "nothing to do: give --inbound-listen/--inbound-forward, --outbound, or both"
    );
    anyhow::ensure!(
        args.max_connections > 0 && args.max_handshakes > 0 && args.max_handshakes_per_source > 0,
        "--max-connections, --max-handshakes and --max-handshakes-per-source must be at least 1"
    );
    let proxy = signet_proxy::start(ProxyConfig {
        workload_socket: socket,
        inbound,
        outbound: args.outbound,
        metrics_address: args.metrics_address,
        first_svid_timeout: args.svid_timeout,
        bounds: signet_proxy::ProxyBounds {
            max_connections: args.max_connections,
            handshaking: signet_unix::ConnectionLimits {
                total: args.max_handshakes,
                per_peer: args.max_handshakes_per_source,
            },
            handshake_timeout: args.handshake_timeout,
            header_read_timeout: args.header_read_timeout,
        },
    })
    .await
    .context("starting the proxy")?;
    if let Some(address) = proxy.inbound_address {
        eprintln!("inbound: {address}");
    }
    for address in &proxy.outbound_addresses {
        eprintln!("outbound: {address}");
    }
    crate::commands::daemons::shutdown_signal().await;
    drop(proxy);
    Ok(())
}
