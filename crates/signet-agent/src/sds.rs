//! Envoy SDS v3 (`envoy.service.secret.v3.SecretDiscoveryService`) on the Workload API socket,
//! as SPIRE serves it, so Envoy and Istio proxies take their certificates from the agent.
//!
//! The caller is attested exactly like a Workload API caller, without the `workload.spiffe.io`
//! header (Envoy sends none). Resource names: each of the caller's SPIFFE IDs (a
//! `tls_certificate`), the default SVID name (`default`: the first SVID), the own-root name
//! (`ROOTCA`: the trust domain's roots as `trusted_ca`), `spiffe://<trust domain>` for the own or a
//! federated trust domain (`trusted_ca`), and the all-bundles name (`ALL`: every trust domain
//! through Envoy's SPIFFE certificate validator, `envoy.tls.cert_validator.spiffe`, unless
//! disabled). No names: everything. A name that is not the caller's is refused.
//!
//! StreamSecrets follows the xDS state-of-the-world protocol: a response to every new
//! subscription; an ACK (the last nonce, no error) or a request with a stale nonce changes
//! nothing; a NACK (the last nonce with `error_detail`) is logged and the same content is not sent
//! again; rotation and bundle changes are pushed. DeltaSecrets is unimplemented (as in SPIRE).

use envoy_types::pb::envoy::config::core::v3::{DataSource, TypedExtensionConfig, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
    spiffe_cert_validator_config,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use envoy_types::pb::google::protobuf::Any;
use prost::Message as _;
use signet_core::SelectorSet;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::cache::Identities;
use crate::peer::PeerInfo;
use crate::pushed::{ResponseStream, check_caller};
use crate::workload_api::{WorkloadApi, no_identity};

/// The type of every SDS resource.
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";
const SPIFFE_VALIDATOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";

/// The configurable SDS resource names (SPIRE's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsConfig {
    /// The name of the default (first) X509-SVID.
    pub default_svid_name: String,
    /// The name of the own trust domain's roots.
    pub root_ca_name: String,
    /// The name of every bundle, through the SPIFFE validator.
    pub all_bundles_name: String,
    /// Serve `ALL` as plain `trusted_ca` (every root concatenated) instead of the SPIFFE
    /// validator, for Envoy builds without it.
    pub disable_spiffe_cert_validation: bool,
}

impl Default for SdsConfig {
    fn default() -> Self {
        Self {
            default_svid_name: "default".into(),
            root_ca_name: "ROOTCA".into(),
            all_bundles_name: "ALL".into(),
            disable_spiffe_cert_validation: false,
        }
    }
}

/// The SDS service.
#[derive(Debug, Clone)]
pub struct SdsApi {
    workload: WorkloadApi,
    config: SdsConfig,
}

impl SdsApi {
    /// SDS over `workload`'s attestation and cache.
    pub(crate) fn new(workload: WorkloadApi, config: SdsConfig) -> Self {
        Self { workload, config }
    }

    /// The caller's secrets named `names` (all when empty), in a stable order.
    fn secrets(&self, identities: &Identities, names: &[String]) -> Result<Vec<Secret>, Status> {
        if identities.ready.is_empty() {
            return Err(no_identity(identities, self.workload.cache().is_synced()));
        }
        let bundles = self.bundles(identities);
        // Only what is asked for is built (a key PEM per stream and change adds up).
        let wanted: Vec<String> = if names.is_empty() {
            self.names(identities, &bundles)
        } else {
            names.to_vec()
        };
        let mut secrets = Vec::with_capacity(wanted.len());
        let mut unknown = Vec::new();
        for name in &wanted {
            match self.secret_named(name, identities, &bundles) {
                Some(secret) => secrets.push(secret),
                None => unknown.push(name.as_str()),
            }
        }
        if !unknown.is_empty() {
            return Err(Status::invalid_argument(format!(
                "unknown SDS resource names for this workload: {}",
                bounded_list(&unknown)
            )));
        }
        Ok(secrets)
    }

    /// Every name the caller may ask for, in a stable order.
    fn names(&self, identities: &Identities, bundles: &[(String, Vec<Vec<u8>>)]) -> Vec<String> {
        let mut names = std::collections::BTreeSet::new();
        names.insert(self.config.default_svid_name.clone());
        names.insert(self.config.all_bundles_name.clone());
        if !bundles.is_empty() {
            names.insert(self.config.root_ca_name.clone());
        }
        for (_, cached) in &identities.ready {
            names.insert(cached.svid.spiffe_id().to_string());
        }
        for (td, _) in bundles {
            names.insert(format!("spiffe://{td}"));
        }
        names.into_iter().collect()
    }

    /// The secret `name` for this caller, if it may have it.
    fn secret_named(
        &self,
        name: &str,
        identities: &Identities,
        bundles: &[(String, Vec<Vec<u8>>)],
    ) -> Option<Secret> {
        let svid = |cached: &crate::cache::CachedSvid| {
            tls_certificate(cached.svid.chain(), cached.svid.private_key_pkcs8())
        };
        if name == self.config.default_svid_name {
            let (_, first) = identities.ready.first()?;
            return Some(named(name, svid(first)));
        }
        if name == self.config.root_ca_name {
            let (_, roots) = bundles.first()?;
            return Some(validation(name, trusted_ca(roots)));
        }
        if name == self.config.all_bundles_name {
            let all = if self.config.disable_spiffe_cert_validation {
                let every: Vec<Vec<u8>> = bundles.iter().flat_map(|(_, r)| r.clone()).collect();
                trusted_ca(&every)
            } else {
                spiffe_validator(bundles)
            };
            return Some(validation(name, all));
        }
        if let Some((_, cached)) = identities
            .ready
            .iter()
            .find(|(_, cached)| cached.svid.spiffe_id().as_str() == name)
        {
            return Some(named(name, svid(cached)));
        }
        let td = name.strip_prefix("spiffe://")?;
        let (_, roots) = bundles.iter().find(|(t, _)| t == td)?;
        Some(validation(name, trusted_ca(roots)))
    }

    /// Trust domain names and their root certificates (DER), own first.
    /// This trust domain's bundle and those the caller's entries federate with: (trust domain,
    /// CA certificates).
    fn bundles(&self, identities: &Identities) -> Vec<(String, Vec<Vec<u8>>)> {
        self.workload
            .cache()
            .bundle()
            .iter()
            .chain(&identities.federated)
            .map(|b| {
                (
                    b.trust_domain().to_string(),
                    b.x509_authorities()
                        .iter()
                        .map(|c| c.as_ref().to_vec())
                        .collect(),
                )
            })
            .collect()
    }

    async fn attested(&self, request: &Request<impl Sized>) -> Result<SelectorSet, Status> {
        let selectors = self.workload.attest_caller(request).await?;
        let identities = self.workload.identities_when_ready(&selectors).await;
        if identities.ready.is_empty() {
            return Err(no_identity(&identities, self.workload.cache().is_synced()));
        }
        Ok(selectors)
    }
}

fn bounded_list(names: &[&str]) -> String {
    let mut listed: Vec<String> = names
        .iter()
        .take(8)
        .map(|n| format!("{:?}", n.chars().take(128).collect::<String>()))
        .collect();
    if names.len() > 8 {
        listed.push(format!("and {} more", names.len() - 8));
    }
    listed.join(", ")
}

fn pem(der: &[u8]) -> String {
    signet_spiffe::pem_encode("CERTIFICATE", der)
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..DataSource::default()
    })
}

fn tls_certificate(
    chain: &[rustls::pki_types::CertificateDer<'static>],
    key_pkcs8: &[u8],
) -> secret::Type {
    let chain_pem: String = chain.iter().map(|c| pem(c.as_ref())).collect();
    let key_pem = signet_spiffe::pem_encode("PRIVATE KEY", key_pkcs8);
    secret::Type::TlsCertificate(TlsCertificate {
        certificate_chain: inline(chain_pem.into_bytes()),
        private_key: inline(key_pem.into_bytes()),
        ..TlsCertificate::default()
    })
}

fn trusted_ca(roots: &[Vec<u8>]) -> CertificateValidationContext {
    let pems: String = roots.iter().map(|r| pem(r)).collect();
    CertificateValidationContext {
        trusted_ca: inline(pems.into_bytes()),
        ..CertificateValidationContext::default()
    }
}

fn spiffe_validator(bundles: &[(String, Vec<Vec<u8>>)]) -> CertificateValidationContext {
    let config = SpiffeCertValidatorConfig {
        trust_domains: bundles
            .iter()
            .map(|(td, roots)| spiffe_cert_validator_config::TrustDomain {
                name: td.clone(),
                trust_bundle: inline(
                    roots
                        .iter()
                        .map(|r| pem(r))
                        .collect::<String>()
                        .into_bytes(),
                ),
                ..spiffe_cert_validator_config::TrustDomain::default()
            })
            .collect(),
        trust_bundles: None,
    };
    CertificateValidationContext {
        custom_validator_config: Some(TypedExtensionConfig {
            name: SPIFFE_VALIDATOR.into(),
            typed_config: Some(Any {
                type_url: SPIFFE_VALIDATOR_TYPE.into(),
                value: config.encode_to_vec(),
            }),
        }),
        ..CertificateValidationContext::default()
    }
}

fn named(name: &str, kind: secret::Type) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(kind),
    }
}

fn validation(name: &str, context: CertificateValidationContext) -> Secret {
    named(name, secret::Type::ValidationContext(context))
}

/// One response; `version` and `nonce` distinguish it within its stream.
fn response(secrets: &[Secret], version: u64, nonce: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.to_string(),
        resources: secrets
            .iter()
            .map(|s| Any {
                type_url: SECRET_TYPE.into(),
                value: s.encode_to_vec(),
            })
            .collect(),
        type_url: SECRET_TYPE.into(),
        nonce: nonce.to_string(),
        ..DiscoveryResponse::default()
    }
}

fn check_type(request: &DiscoveryRequest) -> Result<(), Status> {
    if request.type_url.is_empty() || request.type_url == SECRET_TYPE {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "this server serves {SECRET_TYPE} only"
        )))
    }
}

/// What woke a StreamSecrets stream.
enum Event {
    Request(Result<Option<Box<DiscoveryRequest>>, Status>),
    Changed(bool),
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsApi {
    type DeltaSecretsStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "DeltaSecrets is not implemented; use StreamSecrets",
        ))
    }

    type StreamSecretsStream = ResponseStream<DiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let result = async {
            let selectors = self.attested(&request).await?;
            let peer = request.extensions().get::<PeerInfo>().cloned();
            let mut requests = request.into_inner();
            let this = self.clone();
            let mut changes = self.workload.cache().subscribe();
            let stream = async_stream::try_stream! {
                // None until the first request names what it subscribes to.
                let mut names: Option<Vec<String>> = None;
                let mut last_sent: Option<Vec<Secret>> = None;
                let mut sent = 0u64;
                loop {
                    let event = tokio::select! {
                        request = requests.message() => Event::Request(request.map(|r| r.map(Box::new))),
                        changed = changes.changed() => Event::Changed(changed.is_ok()),
                    };
                    let resend = match event {
                        Event::Request(request) => {
                            let Some(request) = request? else { break };
                            check_type(&request)?;
                            let current_nonce = sent.to_string();
                            // A client reconnecting may send the nonce of its previous stream
                            // on the first request: nothing sent yet means a new subscription.
                            let answers_last = sent > 0 && !request.response_nonce.is_empty();
                            if answers_last && request.response_nonce != current_nonce {
                                // A reply to a response we have since replaced.
                                continue;
                            }
                            let same_names = names.as_ref() == Some(&request.resource_names);
                            if let Some(error) = &request.error_detail {
                                warn!(message = %error.message, "Envoy rejected the SDS response (NACK); not resending it");
                                if same_names {
                                    continue;
                                }
                            } else if answers_last && same_names {
                                // ACK.
                                continue;
                            }
                            names = Some(request.resource_names.clone());
                            true
                        }
                        Event::Changed(false) => break,
                        Event::Changed(true) => false,
                    };
                    let Some(wanted) = &names else { continue };
                    check_caller(peer.as_ref())?;
                    let identities = this.workload.cache().identities(&selectors);
                    let secrets = this.secrets(&identities, wanted)?;
                    if !resend && last_sent.as_ref() == Some(&secrets) {
                        continue;
                    }
                    sent += 1;
                    debug!(resources = secrets.len(), version = sent, "SDS response");
                    let next = response(&secrets, sent, sent);
                    last_sent = Some(secrets);
                    yield next;
                }
            };
            Ok(Response::new(Box::pin(stream) as ResponseStream<_>))
        }
        .await;
        self.workload.record("StreamSecrets", result)
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let result = async {
            let selectors = self.attested(&request).await?;
            let body = request.into_inner();
            check_type(&body)?;
            let identities = self.workload.cache().identities(&selectors);
            let secrets = self.secrets(&identities, &body.resource_names)?;
            Ok(Response::new(response(&secrets, 1, 1)))
        }
        .await;
        self.workload.record("FetchSecrets", result)
    }
}
