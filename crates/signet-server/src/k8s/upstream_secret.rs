//! The upstream CA from a Kubernetes TLS Secret (`tls.crt`, `tls.key`, `ca.crt`): the format
//! cert-manager writes for a `Certificate` with `isCA: true`. Every replica watches it; when
//! cert-manager renews it, the leader re-issues our intermediate under the new material (see
//! `CertificateAuthority::set_upstream`) and the others take the material and adopt the
//! leader's intermediate from the CA Secret.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use signet_ca::UpstreamCa;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::KubernetesOptions;
use crate::authority::AuthorityService;
use crate::error::ServerError;

/// The upstream material in `secret`.
fn parse(name: &str, secret: &Secret) -> Result<UpstreamCa, ServerError> {
    let data = secret.data.clone().unwrap_or_default();
    let field = |key: &str| data.get(key).map(|bytes| bytes.0.clone());
    let missing = |key: &str| {
        ServerError::InvalidArgument(format!(
            "upstream CA Secret {name} has no {key} (a kubernetes.io/tls Secret as cert-manager writes it)"
        ))
    };
    let cert = field("tls.crt").ok_or_else(|| missing("tls.crt"))?;
    let key = zeroize::Zeroizing::new(field("tls.key").ok_or_else(|| missing("tls.key"))?);
    let roots = field("ca.crt").filter(|roots| !roots.is_empty());
    UpstreamCa::from_pem(&cert, &key, roots.as_deref())
        .map_err(|e| ServerError::InvalidArgument(format!("upstream CA Secret {name}: {e}")))
}

/// Reads the Secret at start: without it there is nothing to sign our intermediate with.
pub(crate) async fn read(
    options: &KubernetesOptions,
    name: &str,
) -> Result<UpstreamCa, ServerError> {
    let api: Api<Secret> = Api::namespaced(options.client.clone(), &options.namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| ServerError::Kubernetes {
            what: format!("reading the upstream CA Secret {name}"),
            source,
        })?;
    let Some(secret) = secret else {
        return Err(ServerError::InvalidArgument(format!(
            "the upstream CA Secret {}/{name} does not exist (has cert-manager issued the Certificate?)",
            options.namespace
        )));
    };
    parse(name, &secret)
}

/// Follows the Secret and hands renewed material to the CA.
pub(crate) fn spawn_watch(
    options: &KubernetesOptions,
    name: String,
    authority: Arc<AuthorityService>,
    leader: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let secret_name = name.clone();
    super::secret_watch::spawn(
        Api::namespaced(options.client.clone(), &options.namespace),
        name,
        "upstream-secret-watch",
        move |secret| {
            let upstream = match parse(&secret_name, secret) {
                Ok(upstream) => upstream,
                Err(error) => {
                    warn!(%error, "the upstream CA Secret changed but is unusable; keeping the current material");
                    return;
                }
            };
            let leading = *leader.borrow();
            match authority.set_upstream(upstream, leading) {
                Ok(events) if events.is_empty() => {}
                Ok(events) => {
                    info!(?events, secret = %secret_name, "the upstream CA was renewed; intermediate re-issued")
                }
                Err(error) => {
                    warn!(%error, secret = %secret_name, "the renewed upstream CA was not adopted; keeping the current material")
                }
            }
        },
    )
}
