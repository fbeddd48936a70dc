//! `signet helper`: for programs that only read files (nginx, PostgreSQL, Java keystores). Writes
//! the workload's X509-SVID, key and bundle (and JWT-SVIDs for given audiences) into a
//! directory, atomically and with safe modes, keeps them current on every rotation, and after
//! each write runs a command or signals a process. `--once` writes once and exits (init
//! containers).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use signet_proto::workload::{JwtsvidRequest, X509svidRequest, X509svidResponse};
use tonic::transport::Channel;

use crate::commands::workload::{pem, request, status};

/// `signet helper` options.
#[derive(Debug, Clone, Args)]
pub struct HelperArgs {
    /// Workload API endpoint (unix:///path or a path).
    #[arg(
        long,
        env = "SPIFFE_ENDPOINT_SOCKET",
        default_value = "unix:///run/signet/sockets/api.sock"
    )]
    pub socket: String,
    /// Directory the files are written to (created 0755 if missing).
    #[arg(long, env = "SIGNET_HELPER_DIR")]
    pub dir: PathBuf,
    /// File name of the certificate chain (leaf first).
    #[arg(long, default_value = "svid.pem")]
    pub cert_file: String,
    /// File name of the private key (PKCS#8 PEM).
    #[arg(long, default_value = "svid_key.pem")]
    pub key_file: String,
    /// File name of the trust bundle (PEM roots of the SVID's trust domain).
    #[arg(long, default_value = "svid_bundle.pem")]
    pub bundle_file: String,
    /// Also append the bundles of federated trust domains to the bundle file.
    #[arg(long)]
    pub include_federated: bool,
    /// Mode of the certificate and bundle files (octal).
    #[arg(long, default_value = "644", value_parser = parse_mode)]
    pub cert_mode: u32,
    /// Mode of the key file (octal); 640 lets a reader in the file's group (e.g. ssl-cert) in.
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    pub key_mode: u32,
    /// A JWT-SVID to keep current: AUDIENCE=FILE_NAME (repeatable; several audiences as
    /// AUD1,AUD2=FILE_NAME). Refreshed at half its lifetime.
    #[arg(long = "jwt-svid", value_parser = parse_jwt_target)]
    pub jwt_svids: Vec<JwtTarget>,
    /// After each write, run this command (with `sh -c`), e.g. "nginx -s reload".
    #[arg(long)]
    pub cmd: Option<String>,
    /// After each write, send this signal (HUP, USR1, USR2, INT, TERM, QUIT, WINCH) to the
    /// process whose pid --pid-file holds, e.g. nginx's master.
    #[arg(long, requires = "pid_file", value_parser = parse_signal)]
    pub signal: Option<NamedSignal>,
    /// The pid file for --signal (read at every write, so a restarted process is found).
    #[arg(long, requires = "signal")]
    pub pid_file: Option<PathBuf>,
    /// Write once and exit: 0 when the files are written (and the command succeeded), 1 when
    /// no SVID arrived within --once-timeout.
    #[arg(long)]
    pub once: bool,
    /// How long --once waits for an SVID.
    #[arg(long, default_value = "60s", value_parser = crate::cli::parse_duration)]
    pub once_timeout: Duration,
    /// Serve /livez and /readyz (ready while the files hold an unexpired SVID) here.
    #[arg(long, env = "SIGNET_HELPER_HEALTH_ADDRESS")]
    pub health_address: Option<std::net::SocketAddr>,
}

/// One `--jwt-svid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtTarget {
    /// The audiences asked for.
    pub audiences: Vec<String>,
    /// The file name in --dir.
    pub file: String,
}

fn parse_jwt_target(text: &str) -> Result<JwtTarget, String> {
    let (audiences, file) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?}: expected AUDIENCE=FILE_NAME"))?;
    let audiences: Vec<String> = audiences
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if audiences.is_empty() {
        return Err(format!("{text:?}: no audience"));
    }
    check_file_name(file)?;
    Ok(JwtTarget {
        audiences,
        file: file.to_owned(),
    })
}

/// A file name inside --dir: no directories, no hidden names (temporary files are hidden).
fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!(
            "{name:?}: a file name inside --dir, without '/' and not starting with '.'"
        ));
    }
    Ok(())
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode such as 644"))
}

/// A signal --signal may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedSignal(rustix::process::Signal, &'static str);

fn parse_signal(text: &str) -> Result<NamedSignal, String> {
    use rustix::process::Signal;
    let name = text.trim_start_matches("SIG").to_ascii_uppercase();
    let signal = match name.as_str() {
        "HUP" => Signal::HUP,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "INT" => Signal::INT,
        "TERM" => Signal::TERM,
        "QUIT" => Signal::QUIT,
        "WINCH" => Signal::WINCH,
        _ => {
            return Err(format!(
                "{text:?}: use HUP, USR1, USR2, INT, TERM, QUIT or WINCH"
            ));
        }
    };
    let name = match name.as_str() {
        "HUP" => "SIGHUP",
        "USR1" => "SIGUSR1",
        "USR2" => "SIGUSR2",
        "INT" => "SIGINT",
        "TERM" => "SIGTERM",
        "QUIT" => "SIGQUIT",
        _ => "SIGWINCH",
    };
    Ok(NamedSignal(signal, name))
}

/// What the health endpoint reports.
#[derive(Debug, Default)]
struct Health {
    /// Unix seconds the written SVID expires at; 0 before the first write.
    expires_at: AtomicU64,
}

impl Health {
    fn ready(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.expires_at.load(Ordering::Acquire) > now
    }
}

/// Runs the helper.
pub async fn run(args: HelperArgs) -> anyhow::Result<()> {
    for name in [&args.cert_file, &args.key_file, &args.bundle_file] {
        check_file_name(name).map_err(|e| anyhow::anyhow!(e))?;
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let health = Arc::new(Health::default());
    if let Some(address) = args.health_address {
        serve_health(address, health.clone()).await?;
    }
    let path = crate::uds::endpoint_path(&args.socket)?;
    if args.once {
        let written = tokio::time::timeout(args.once_timeout, async {
            let mut backoff = backoff();
            loop {
                match write_once(&path, &args, &health).await {
                    Ok(()) => return Ok::<_, anyhow::Error>(()),
                    Err(error) => {
                        let delay = backoff.next_delay();
                        eprintln!("signet helper: {error:#}; retrying in {delay:.1?}");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        })
        .await;
        return match written {
            // The files are written; a failing reload fails the init container at once.
            Ok(Ok(())) => reload(&args).await,
            Ok(Err(error)) => Err(error),
            Err(_) => anyhow::bail!(
                "no SVID within {:?} (--once-timeout): is the agent running, and is there an \
                 entry for this workload?",
                args.once_timeout
            ),
        };
    }
    let mut backoff = backoff();
    loop {
        tokio::select! {
            ended = follow(&path, &args, &health, &mut backoff) => {
                let delay = backoff.next_delay();
                eprintln!("signet helper: {ended:#}; reconnecting in {delay:.1?}");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = crate::commands::daemons::shutdown_signal() => return Ok(()),
                }
            }
            () = crate::commands::daemons::shutdown_signal() => return Ok(()),
        }
    }
}

fn backoff() -> signet_core::Backoff {
    signet_core::Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
}

async fn client(path: &Path) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    Ok(SpiffeWorkloadApiClient::new(
        crate::uds::channel(path).await?,
    ))
}

/// `--once`: the first X509-SVID and every JWT-SVID, written.
async fn write_once(path: &Path, args: &HelperArgs, health: &Health) -> anyhow::Result<()> {
    let mut api = client(path).await?;
    let response = api
        .fetch_x509svid(request(X509svidRequest {}))
        .await
        .map_err(status)?
        .into_inner()
        .message()
        .await
        .map_err(status)?
        .context("the agent closed the stream")?;
    write_x509(args, &response, health)?;
    for target in &args.jwt_svids {
        refresh_jwt(&mut api, args, target).await?;
    }
    Ok(())
}

/// Follows one FetchX509SVID stream, writing every update and refreshing JWT-SVIDs; returns why
/// the stream ended.
async fn follow(
    path: &Path,
    args: &HelperArgs,
    health: &Health,
    backoff: &mut signet_core::Backoff,
) -> anyhow::Error {
    let mut api = match client(path).await {
        Ok(api) => api,
        Err(error) => return error,
    };
    let mut stream = match api.fetch_x509svid(request(X509svidRequest {})).await {
        Ok(stream) => stream.into_inner(),
        Err(error) => return status(error),
    };
    // When each JWT-SVID is due again.
    let mut jwt_due: BTreeMap<usize, tokio::time::Instant> = (0..args.jwt_svids.len())
        .map(|i| (i, tokio::time::Instant::now()))
        .collect();
    loop {
        let next_jwt = jwt_due.values().min().copied();
        tokio::select! {
            message = stream.message() => {
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return anyhow::anyhow!("the agent closed the stream"),
                    Err(error) => return status(error),
                };
                backoff.reset();
                if let Err(error) = write_x509(args, &response, health) {
                    eprintln!("signet helper: writing the SVID failed: {error:#}");
                    continue;
                }
                if let Err(error) = reload(args).await {
                    eprintln!("signet helper: {error:#}");
                }
            }
            () = sleep_until(next_jwt) => {
                let now = tokio::time::Instant::now();
                let due: Vec<usize> = jwt_due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(i, _)| *i)
                    .collect();
                for i in due {
                    let target = &args.jwt_svids[i];
                    let next = match refresh_jwt(&mut api, args, target).await {
                        Ok(lifetime) => lifetime / 2,
                        Err(error) => {
                            eprintln!("signet helper: JWT-SVID for {:?}: {error:#}", target.audiences);
                            Duration::from_secs(5)
                        }
                    };
                    jwt_due.insert(i, now + next.max(Duration::from_secs(1)));
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes one JWT-SVID; returns its remaining lifetime.
async fn refresh_jwt(
    api: &mut SpiffeWorkloadApiClient<Channel>,
    args: &HelperArgs,
    target: &JwtTarget,
) -> anyhow::Result<Duration> {
    let response = api
        .fetch_jwtsvid(request(JwtsvidRequest {
            audience: target.audiences.clone(),
            spiffe_id: String::new(),
        }))
        .await
        .map_err(status)?
        .into_inner();
    let svid = response
        .svids
        .first()
        .context("the agent returned no JWT-SVID")?;
    write_atomically(&args.dir, &target.file, svid.svid.as_bytes(), args.key_mode)?;
    let expiry = jwt_expiry(&svid.svid).context("the JWT-SVID has no readable exp claim")?;
    Ok(expiry
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO))
}

/// The `exp` of a compact JWT (not verified: it came from our own agent over its socket).
fn jwt_expiry(token: &str) -> Option<SystemTime> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
}

/// Writes the default X509-SVID (the first), its key and the bundle.
fn write_x509(
    args: &HelperArgs,
    response: &X509svidResponse,
    health: &Health,
) -> anyhow::Result<()> {
    let svid = response
        .svids
        .first()
        .context("the agent sent no X509-SVID")?;
    let certs = signet_spiffe::bundle::split_der_certificates(&svid.x509_svid)?;
    let chain: String = certs.iter().map(|c| pem("CERTIFICATE", c)).collect();
    let mut bundle: String = signet_spiffe::bundle::split_der_certificates(&svid.bundle)?
        .iter()
        .map(|c| pem("CERTIFICATE", c))
        .collect();
    if args.include_federated {
        for der in response.federated_bundles.values() {
            for cert in signet_spiffe::bundle::split_der_certificates(der)? {
                bundle.push_str(&pem("CERTIFICATE", &cert));
            }
        }
    }
    // Checked before anything is replaced: the chain parses and the key is the leaf's.
    let leaf = signet_spiffe::X509Svid::parse(&svid.x509_svid, &svid.x509_svid_key)
        .map_err(|e| anyhow::anyhow!("the agent sent an unusable SVID: {e}"))?;
    // Key first: a reader that sees the new certificate also finds its key.
    write_atomically(
        &args.dir,
        &args.key_file,
        pem("PRIVATE KEY", &svid.x509_svid_key).as_bytes(),
        args.key_mode,
    )?;
    write_atomically(
        &args.dir,
        &args.bundle_file,
        bundle.as_bytes(),
        args.cert_mode,
    )?;
    write_atomically(&args.dir, &args.cert_file, chain.as_bytes(), args.cert_mode)?;
    let expires = leaf
        .not_after()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    health.expires_at.store(expires, Ordering::Release);
    eprintln!(
        "signet helper: wrote {} (expires in {:?}) to {}",
        svid.spiffe_id,
        leaf.not_after()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
        args.dir.display()
    );
    Ok(())
}

/// Replaces `dir/name` atomically: a hidden temporary file with `mode` from its creation,
/// synced, renamed over the old one, and the directory synced.
fn write_atomically(dir: &Path, name: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let target = dir.join(name);
    let staging = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&staging)?;
        // The umask may have taken bits away; the file gets exactly `mode`.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&staging, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    result.with_context(|| format!("writing {}", target.display()))
}

/// Runs --cmd and sends --signal, as configured.
async fn reload(args: &HelperArgs) -> anyhow::Result<()> {
    if let Some(command) = &args.cmd {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .status()
            .await
            .with_context(|| format!("running {command:?}"))?;
        if !status.success() {
            anyhow::bail!("{command:?} exited with {status}");
        }
    }
    if let (Some(NamedSignal(signal, name)), Some(pid_file)) = (args.signal, &args.pid_file) {
        let text = match std::fs::read_to_string(pid_file) {
            Ok(text) => text,
            // Not started yet (a sidecar writes before its neighbour runs): it will read the
            // files when it starts.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "signet helper: {} does not exist yet; no process to signal",
                    pid_file.display()
                );
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", pid_file.display())),
        };
        let pid = text
            .trim()
            .parse::<i32>()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .with_context(|| format!("{} does not hold a pid", pid_file.display()))?;
        rustix::process::kill_process(pid, signal)
            .with_context(|| format!("sending {name} to {}", pid.as_raw_nonzero()))?;
        eprintln!("signet helper: sent {name} to {}", pid.as_raw_nonzero());
    }
    Ok(())
}

impl signet_unix::Probes for Health {
    fn readiness(&self) -> Result<(), &'static str> {
        if self.ready() {
            Ok(())
        } else {
            Err("no unexpired SVID written yet")
        }
    }

    fn metrics(&self) -> Option<Result<String, std::fmt::Error>> {
        None
    }
}

async fn serve_health(address: std::net::SocketAddr, health: Arc<Health>) -> anyhow::Result<()> {
    signet_unix::serve_probes(address, health, "helper health")
        .await
        .with_context(|| format!("binding the health endpoint on {address}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked() {
        assert_eq!(
            parse_jwt_target("a,b=token.jwt").unwrap(),
            JwtTarget {
                audiences: vec!["a".into(), "b".into()],
                file: "token.jwt".into()
            }
        );
        for bad in [
            "token.jwt",
            "=token",
            "aud=",
            "aud=../x",
            "aud=.hidden",
            "aud=a/b",
        ] {
            assert!(parse_jwt_target(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mode("640").unwrap(), 0o640);
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("1777").is_err());
        assert_eq!(parse_signal("SIGHUP").unwrap().1, "SIGHUP");
        assert_eq!(parse_signal("usr1").unwrap().1, "SIGUSR1");
        assert!(parse_signal("KILL").is_err());
    }

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "key.pem", b"one", 0o600).unwrap();
        write_atomically(dir.path(), "key.pem", b"two", 0o600).unwrap();
        let path = dir.path().join("key.pem");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }
}
