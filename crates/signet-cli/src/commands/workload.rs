//! Workload commands: talk to the agent's Workload API like any workload would.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use signet_proto::workload::{
    JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest, X509svidResponse,
};
use tonic::transport::Channel;

use crate::cli::{HealthcheckArgs, JwtCommand, SvidCommand, WorkloadArgs};
use crate::output;

async fn client(args: &WorkloadArgs) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    let path = crate::uds::endpoint_path(&args.socket)?;
    Ok(SpiffeWorkloadApiClient::new(
        crate::uds::channel(&path).await?,
    ))
}

pub(crate) fn request<T>(body: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

pub(crate) fn status(err: tonic::Status) -> anyhow::Error {
    match err.code() {
        tonic::Code::PermissionDenied => anyhow::anyhow!(
            "the agent has no identity for this process ({}); is there an entry whose selectors match you?",
            err.message()
        ),
        _ => anyhow::anyhow!("{} ({:?})", err.message(), err.code()),
    }
}

#[derive(Debug, Serialize)]
struct SvidView {
    spiffe_id: String,
    hint: String,
    not_after: String,
    serial: String,
    chain_length: usize,
    /// DNS SANs of the leaf (from dnsNameTemplates, autoPopulateDNSNames or --dns-name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dns_names: Vec<String>,
}

fn views(response: &X509svidResponse) -> Vec<SvidView> {
    response
        .svids
        .iter()
        .map(|s| {
            let certs =
                signet_spiffe::bundle::split_der_certificates(&s.x509_svid).unwrap_or_default();
            let not_after = certs
                .first()
                .and_then(|c| signet_spiffe::x509::not_after_of(c))
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| output::time(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
                .unwrap_or_default();
            let serial = certs
                .first()
                .and_then(|c| signet_spiffe::x509::serial_of(c))
                .unwrap_or_default();
            SvidView {
                spiffe_id: s.spiffe_id.clone(),
                hint: s.hint.clone(),
                not_after,
                serial,
                chain_length: certs.len(),
                dns_names: certs
                    .first()
                    .and_then(|c| signet_spiffe::x509::dns_names_of(c))
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn human(views: &[SvidView]) -> String {
    let mut out = String::new();
    for (i, v) in views.iter().enumerate() {
        out.push_str(&format!(
            "SVID #{i}{}\n  SPIFFE ID : {}\n  Expires   : {}\n  Serial    : {}\n  Chain     : {} certificate(s)\n",
            if i == 0 { " (default)" } else { "" },
            v.spiffe_id,
            v.not_after,
            v.serial,
            v.chain_length
        ));
        if !v.hint.is_empty() {
            out.push_str(&format!("  Hint      : {}\n", v.hint));
        }
        if !v.dns_names.is_empty() {
            out.push_str(&format!("  DNS names : {}\n", v.dns_names.join(", ")));
        }
    }
    out
}

pub(crate) fn pem(tag: &str, der: &[u8]) -> String {
    signet_spiffe::pem_encode(tag, der)
}

fn write_files(dir: &Path, response: &X509svidResponse) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, svid) in response.svids.iter().enumerate() {
        let certs = signet_spiffe::bundle::split_der_certificates(&svid.x509_svid)?;
        let chain: String = certs.iter().map(|c| pem("CERTIFICATE", c)).collect();
        std::fs::write(dir.join(format!("svid.{i}.pem")), chain)?;
        let key_path = dir.join(format!("svid.{i}.key"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)?;
        std::io::Write::write_all(
            &mut file,
            pem("PRIVATE KEY", &svid.x509_svid_key).as_bytes(),
        )?;
        let bundle: String = signet_spiffe::bundle::split_der_certificates(&svid.bundle)?
            .iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect();
        std::fs::write(dir.join(format!("bundle.{i}.pem")), bundle)?;
    }
    eprintln!(
        "wrote {} SVID(s) to {}",
        response.svids.len(),
        dir.display()
    );
    Ok(())
}

/// `signet svid ...`
pub async fn svid(command: SvidCommand) -> anyhow::Result<()> {
    match command {
        SvidCommand::Fetch { write, workload } => {
            let mut stream = client(&workload)
                .await?
                .fetch_x509svid(request(X509svidRequest {}))
                .await
                .map_err(status)?
                .into_inner();
            let response = stream
                .message()
                .await
                .map_err(status)?
                .context("the agent closed the stream")?;
            if let Some(dir) = write {
                write_files(&dir, &response)?;
            }
            output::print(workload.output, &views(&response), |v| human(v))
        }
        SvidCommand::Watch { workload } => {
            // An agent restart (upgrade, node maintenance) must not end the watch: reconnect
            // with jittered backoff and go on numbering updates.
            let mut watch = Watch {
                update: 0,
                backoff: signet_core::Backoff::new(
                    std::time::Duration::from_millis(200),
                    std::time::Duration::from_secs(10),
                ),
            };
            loop {
                tokio::select! {
                    ended = watch.follow(&workload) => {
                        let error = match ended {
                            // The agent answered: no identity is a configuration error (exit, so
                            // a pod restarts and shows it), not an outage.
                            Ended::Refused(error) => return Err(error),
                            Ended::Interrupted(error) => error,
                        };
                        let delay = watch.backoff.next_delay();
                        eprintln!("--- {error:#}; reconnecting in {delay:.1?}");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = crate::commands::daemons::shutdown_signal() => return Ok(()),
                        }
                    }
                    () = crate::commands::daemons::shutdown_signal() => return Ok(()),
                }
            }
        }
    }
}

/// `signet svid watch`: one stream at a time, numbering updates across reconnections.
struct Watch {
    update: u64,
    backoff: signet_core::Backoff,
}

/// Why a watched stream ended.
enum Ended {
    /// The agent refused this process an identity (PermissionDenied), or output failed.
    Refused(anyhow::Error),
    /// The agent went away, restarted or is not reachable yet: worth reconnecting.
    Interrupted(anyhow::Error),
}

impl Watch {
    /// Prints every update of one stream; returns why it ended.
    async fn follow(&mut self, workload: &WorkloadArgs) -> Ended {
        let classify = |error: tonic::Status| match error.code() {
            tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => {
                Ended::Refused(status(error))
            }
            _ => Ended::Interrupted(status(error)),
        };
        let mut api = match client(workload).await {
            Ok(api) => api,
            Err(error) => return Ended::Interrupted(error),
        };
        let mut stream = match api.fetch_x509svid(request(X509svidRequest {})).await {
            Ok(stream) => stream.into_inner(),
            Err(error) => return classify(error),
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Ended::Interrupted(anyhow::anyhow!("the agent closed the stream"));
                }
                Err(error) => return classify(error),
            };
            self.backoff.reset();
            self.update += 1;
            eprintln!("--- update {}", self.update);
            if let Err(error) = output::print(workload.output, &views(&response), |v| human(v)) {
                return Ended::Refused(error);
            }
        }
    }
}

/// `signet jwt ...`
pub async fn jwt(mut command: JwtCommand) -> anyhow::Result<()> {
    if let JwtCommand::Validate { token, .. } = &mut command
        && token == "-"
    {
        let mut input = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
            .map_err(|e| anyhow::anyhow!("reading the token from standard input: {e}"))?;
        *token = input.trim().to_owned();
    }
    match command {
        JwtCommand::Fetch {
            audience,
            spiffe_id,
            workload,
        } => {
            let response = client(&workload)
                .await?
                .fetch_jwtsvid(request(JwtsvidRequest {
                    audience,
                    spiffe_id: spiffe_id.unwrap_or_default(),
                }))
                .await
                .map_err(status)?
                .into_inner();
            let view: Vec<_> = response.svids.iter().map(|s| serde_json::json!({"spiffe_id": s.spiffe_id, "token": s.svid, "hint": s.hint})).collect();
            output::print(workload.output, &view, |_| {
                response
                    .svids
                    .iter()
                    .map(|s| format!("{}\n{}\n", s.spiffe_id, s.svid))
                    .collect()
            })
        }
        JwtCommand::Validate {
            audience,
            token,
            oidc_issuer: Some(issuer),
            workload,
            ..
        } => {
            let svid = crate::commands::oidc_client::validate(&token, &audience, &issuer).await?;
            let spiffe_id = svid.spiffe_id().to_string();
            let view = serde_json::json!({"valid": true, "spiffe_id": spiffe_id, "issuer": issuer});
            output::print(workload.output, &view, |_| {
                format!("Valid JWT-SVID for {spiffe_id} (issuer {issuer})\n")
            })?;
            Ok(())
        }
        JwtCommand::Validate {
            audience,
            token,
            bundle: Some(bundle),
            trust_domain,
            workload,
            ..
        } => {
            let svid = validate_offline(&token, &audience, &bundle, trust_domain.as_deref())?;
            let spiffe_id = svid.spiffe_id().to_string();
            let view = serde_json::json!({"valid": true, "spiffe_id": spiffe_id});
            output::print(workload.output, &view, |_| {
                format!("Valid JWT-SVID for {spiffe_id}\n")
            })?;
            Ok(())
        }
        JwtCommand::Validate {
            audience,
            token,
            bundle: None,
            workload,
            ..
        } => {
            let response = client(&workload)
                .await?
                .validate_jwtsvid(request(ValidateJwtsvidRequest {
                    audience,
                    svid: token,
                }))
                .await
                .map_err(status)?
                .into_inner();
            let claims = response
                .claims
                .map(|c| format!("{c:?}"))
                .unwrap_or_default();
            let view = serde_json::json!({"valid": true, "spiffe_id": response.spiffe_id});
            output::print(workload.output, &view, |_| {
                format!("Valid JWT-SVID for {}\n", response.spiffe_id)
            })?;
            tracing::debug!(%claims, "claims");
            Ok(())
        }
    }
}

/// Validates a JWT-SVID against a SPIFFE bundle file of one trust domain, without an agent.
fn validate_offline(
    token: &str,
    audience: &str,
    bundle_path: &std::path::Path,
    trust_domain: Option<&str>,
) -> anyhow::Result<signet_spiffe::JwtSvid> {
    let trust_domain = trust_domain
        .ok_or_else(|| anyhow::anyhow!("--bundle needs --trust-domain"))
        .and_then(|name| {
            signet_spiffe::TrustDomain::from_name_or_id(name)
                .map_err(|e| anyhow::anyhow!("--trust-domain {name:?}: {e}"))
        })?;
    let json = std::fs::read(bundle_path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", bundle_path.display()))?;
    let bundle = signet_spiffe::Bundle::from_spiffe_json(trust_domain, &json)
        .map_err(|e| anyhow::anyhow!("{} is not a SPIFFE bundle: {e}", bundle_path.display()))?;
    let mut bundles = signet_spiffe::BundleSet::new();
    bundles.insert(bundle);
    let options = signet_spiffe::JwtValidation::at(std::time::SystemTime::now());
    signet_spiffe::JwtSvid::validate(token, &bundles, audience, options)
        .map_err(|e| anyhow::anyhow!("invalid JWT-SVID: {e}"))
}

/// `signet healthcheck`
pub async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    if let Some(socket) = args.admin_socket {
        let channel = crate::uds::channel(&socket).await?;
        signet_proto::admin::admin_client::AdminClient::new(channel)
            .get_bundle(signet_proto::admin::GetBundleRequest {})
            .await
            .map_err(|e| anyhow::anyhow!("server unhealthy: {}", e.message()))?;
        println!("server is healthy");
        return Ok(());
    }
    let workload = WorkloadArgs {
        socket: args.socket,
        output: output::OutputFormat::Human,
    };
    let result = client(&workload)
        .await?
        .fetch_x509_bundles(request(X509BundlesRequest {}))
        .await;
    // Any answer from the Workload API, including "no identity for you", means the agent works.
    match result {
        Ok(_) => {}
        Err(e) if e.code() == tonic::Code::PermissionDenied => {}
        Err(e) => anyhow::bail!("agent unhealthy: {} ({:?})", e.message(), e.code()),
    }
    println!("agent is healthy");
    Ok(())
}
