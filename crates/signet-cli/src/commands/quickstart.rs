//! `signet quickstart`: a server and an agent in one process on this machine, a join token, and
//! an entry for the invoking user, until Ctrl-C.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{
    CreateEntryRequest, CreateJoinTokenRequest, ListEntriesRequest, UpdateEntryRequest,
};
use signet_proto::agent::Entry;
use signet_server::ServerConfig;
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::cli::QuickstartArgs;
use crate::commands::daemons::shutdown_signal;

/// The invoking user's uid and name.
fn current_user() -> anyhow::Result<(u32, String)> {
    // /proc/self is owned by the process's effective uid.
    let uid = std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid();
    let from_passwd = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?;
                let _ = f.next()?;
                (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        });
    let name = from_passwd.unwrap_or_else(|| format!("uid-{uid}"));
    Ok((uid, name))
}

fn sanitize(segment: &str) -> String {
    segment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn ensure_entry(
    admin: &mut AdminClient<tonic::transport::Channel>,
    entry: Entry,
) -> anyhow::Result<Entry> {
    let existing = admin
        .list_entries(ListEntriesRequest {
            spiffe_id: entry.spiffe_id.clone(),
            parent_id: String::new(),
        })
        .await?
        .into_inner()
        .entries
        .into_iter()
        .find(|e| e.selectors == entry.selectors);
    let saved = match existing {
        Some(old)
            if old.parent_id == entry.parent_id
                && old.x509_svid_ttl_seconds == entry.x509_svid_ttl_seconds =>
        {
            old
        }
        Some(old) => admin
            .update_entry(UpdateEntryRequest {
                entry: Some(Entry {
                    id: old.id,
                    ..entry
                }),
            })
            .await?
            .into_inner(),
        None => admin
            .create_entry(CreateEntryRequest { entry: Some(entry) })
            .await?
            .into_inner(),
    };
    Ok(saved)
}

fn default_dir(uid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("signet-quickstart-{uid}"))
}

/// Runs the quickstart.
pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let (uid, user) = current_user()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| default_dir(uid));
    let trust_domain = TrustDomain::new(&args.trust_domain).context("--trust-domain")?;
    let spiffe_id = match &args.spiffe_id {
        Some(id) => SpiffeId::new(id).context("--spiffe-id")?,
        None => trust_domain.id_from_segments(&["quickstart", &sanitize(&user)])?,
    };
    eprintln!("[1/4] starting the server (data in {})", dir.display());
    let mut server_config = ServerConfig::new(trust_domain.clone(), dir.join("server"));
    server_config.bind_address = args.bind_address;
    server_config.health_address = None;
    let server = signet_server::start(server_config)
        .await
        .context("starting the server")?;

    let mut admin = AdminClient::new(crate::uds::channel(&server.admin_socket).await?);
    eprintln!("[2/4] creating a join token and starting the agent");
    let agent_dir = dir.join("agent");
    let token = admin
        .create_join_token(CreateJoinTokenRequest { ttl_seconds: 600 })
        .await?
        .into_inner();
    let socket_path = dir.join("sockets").join("api.sock");
    let agent_config = signet_agent::AgentConfig {
        workload: signet_agent::WorkloadEndpoint {
            idle_connection_timeout: args.idle_connection_timeout,
            ..signet_agent::WorkloadEndpoint::new(socket_path.clone())
        },
        trust_domain: trust_domain.clone(),
        server_address: server.agent_address.to_string(),
        trust_bundle_path: server.bundle_pem.clone(),
        join_token: Some(token.token),
        data_dir: agent_dir,
        unix_attestor: signet_agent::UnixAttestorConfig::default(),
        health_address: None,
        taint_resign_window: signet_agent::DEFAULT_TAINT_RESIGN_WINDOW,
        availability_target: std::time::Duration::ZERO,
        persist_svids: true,
        kubernetes: None,
    };
    let agent = signet_agent::start(agent_config)
        .await
        .context("starting the agent")?;

    eprintln!("[3/4] registering {spiffe_id} for uid {uid} ({user})");
    let entry = ensure_entry(
        &mut admin,
        Entry {
            spiffe_id: spiffe_id.to_string(),
            parent_id: agent.agent_id.to_string(),
            selectors: vec![format!("unix:uid:{uid}")],
            x509_svid_ttl_seconds: u32::try_from(args.svid_ttl.as_secs()).unwrap_or(3600),
            ..Entry::default()
        },
    )
    .await
    .context("creating the quickstart entry")?;

    eprintln!("[4/4] ready\n");
    print_next_steps(&socket_path, &server.admin_socket, &entry);
    shutdown_signal().await;
    eprintln!(
        "\nshutting down (state kept in {}; run quickstart again to resume)",
        dir.display()
    );
    agent.shutdown();
    server.shutdown();
    Ok(())
}

fn print_next_steps(socket: &Path, admin_socket: &Path, entry: &Entry) {
    let socket = socket.display();
    let admin = admin_socket.display();
    println!(
        "Signet is running. Workload API socket:\n\n    export SPIFFE_ENDPOINT_SOCKET=unix://{socket}\n"
    );
    println!("Your identity: {} (entry {})\n", entry.spiffe_id, entry.id);
    println!("Try, in another terminal (with SPIFFE_ENDPOINT_SOCKET exported):");
    println!("    signet svid fetch                       # your X509-SVID");
    println!("    signet svid fetch --write ./svid        # as PEM files, e.g. for openssl");
    println!("    signet svid watch                       # see rotations as they happen");
    println!("    signet jwt fetch --audience demo        # a JWT-SVID");
    println!("    signet jwt validate --audience demo <TOKEN>");
    println!("    signet entry list --admin-socket {admin}");
    println!("    signet agent list --admin-socket {admin}\n");
    println!("Any SPIFFE client library works with the same socket. Press Ctrl-C to stop.");
}
