//! rustls configurations for SPIFFE mTLS: TLS 1.3 preferred, TLS 1.2 the minimum, peers
//! authenticated by X509-SVID against the bundle of their own trust domain (federated ones
//! included), the local SVID served from a rotating resolver.

use std::sync::Arc;

use crate::{BundleSource, IdPolicy, RotatingSvid, SpiffeClientVerifier, SpiffeServerVerifier};

/// Whether a server requires client SVIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents an SVID (STRICT).
    Required,
    /// Clients may connect without a certificate; those that present one are verified (for
    /// PERMISSIVE migration).
    Optional,
}

static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    VERSIONS
}

/// A server configuration: our SVID, client SVIDs verified and passed through `accept` (the
/// identity hook: return false to refuse an authenticated peer at the handshake).
pub fn server_config(
    svid: Arc<RotatingSvid>,
    bundles: Arc<dyn BundleSource>,
    accept: IdPolicy,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, rustls::Error> {
    let verifier = Arc::new(SpiffeClientVerifier::new(
        bundles,
        accept,
        client_auth == ClientAuth::Required,
    ));
    let mut config = rustls::ServerConfig::builder_with_protocol_versions(versions())
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(svid);
    // A resumed session skips client certificate verification: a peer whose SVID expired or
    // whose authority was removed could go on authenticating as its old ID. Every connection
    // does a full handshake.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration: our SVID as client certificate, the server's SVID verified and its
/// ID accepted only if `expected` says so.
pub fn client_config(
    svid: Arc<RotatingSvid>,
    bundles: Arc<dyn BundleSource>,
    expected: IdPolicy,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut config = rustls::ClientConfig::builder_with_protocol_versions(versions())
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(bundles, expected)))
        .with_client_cert_resolver(svid);
    // Full handshakes only, so the server's SVID is verified on every connection.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// An identity hook that accepts every authenticated peer (authorization happens later, per
/// connection or request, by the [`Authorizer`](crate::authz::Authorizer)).
pub fn any_authenticated() -> IdPolicy {
    Arc::new(|_| true)
}
