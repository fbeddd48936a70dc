//! rustls integration for SPIFFE: verifiers that authenticate peers by X509-SVID against the
//! bundle of the peer's trust domain and authorise them by SPIFFE ID, and resolvers that serve a
//! rotating SVID; and the enforcement side of AuthorizationPolicy for Rust workloads.

pub mod authz;
pub mod config;
pub mod http;
pub mod log_budget;
pub mod source;

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use signet_spiffe::{BundleSet, SpiffeId, verify_chain};

/// Where verifiers read the current trust bundles from; changes apply to the next handshake.
pub trait BundleSource: Send + Sync + fmt::Debug {
    /// The bundles to trust right now.
    fn bundles(&self) -> Arc<BundleSet>;
}

/// A bundle source updated by its owner.
#[derive(Debug, Default)]
pub struct SharedBundles(RwLock<Arc<BundleSet>>);

impl SharedBundles {
    /// A source holding `bundles`.
    pub fn new(bundles: BundleSet) -> Self {
        Self(RwLock::new(Arc::new(bundles)))
    }

    /// Replaces the bundles.
    pub fn set(&self, bundles: BundleSet) {
        *self.0.write() = Arc::new(bundles);
    }
}

impl BundleSource for SharedBundles {
    fn bundles(&self) -> Arc<BundleSet> {
        self.0.read().clone()
    }
}

/// Decides whether an authenticated peer ID is acceptable.
pub type IdPolicy = Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>;

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

fn tls12_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
}

fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
}

fn verify_peer(
    bundles: &dyn BundleSource,
    policy: &IdPolicy,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<SpiffeId, rustls::Error> {
    let mut chain = Vec::with_capacity(1 + intermediates.len());
    chain.push(end_entity.clone());
    chain.extend(intermediates.iter().cloned());
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
    let id = verify_chain(&chain, &bundles.bundles(), at)
        .map_err(|e| rustls::Error::General(format!("peer X509-SVID rejected: {e}")))?;
    if !policy(&id) {
        return Err(rustls::Error::General(format!(
            "peer {id} is not authorised"
        )));
    }
    Ok(id)
}

/// Verifies a server's X509-SVID (client side).
pub struct SpiffeServerVerifier {
    bundles: Arc<dyn BundleSource>,
    policy: IdPolicy,
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .finish_non_exhaustive()
    }
}

impl SpiffeServerVerifier {
    /// Accepts servers whose SVID verifies against `bundles` and whose ID passes `policy`.
    pub fn new(bundles: Arc<dyn BundleSource>, policy: IdPolicy) -> Self {
        Self { bundles, policy }
    }

    /// Accepts exactly one server ID.
    pub fn for_id(bundles: Arc<dyn BundleSource>, expected: SpiffeId) -> Self {
        Self::new(bundles, Arc::new(move |id| *id == expected))
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_peer(
            self.bundles.as_ref(),
            &self.policy,
            end_entity,
            intermediates,
            now,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// Verifies clients' X509-SVIDs (server side). Client certificates are optional at the TLS
/// layer when `mandatory` is false, so that an unauthenticated call (node attestation) can
/// share the port; handlers then require a peer certificate themselves.
pub struct SpiffeClientVerifier {
    bundles: Arc<dyn BundleSource>,
    policy: IdPolicy,
    mandatory: bool,
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("mandatory", &self.mandatory)
            .finish_non_exhaustive()
    }
}

impl SpiffeClientVerifier {
    /// Accepts clients whose SVID verifies against `bundles` and whose ID passes `policy`.
    pub fn new(bundles: Arc<dyn BundleSource>, policy: IdPolicy, mandatory: bool) -> Self {
        Self {
            bundles,
            policy,
            mandatory,
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_peer(
            self.bundles.as_ref(),
            &self.policy,
            end_entity,
            intermediates,
            now,
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// Builds a rustls certified key from a DER chain (leaf first) and a PKCS#8 key.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    pkcs8: &[u8],
) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let signing_key = provider().key_provider.load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

/// Serves whatever SVID was set last, for both server and client roles.
#[derive(Debug, Default)]
pub struct RotatingSvid(RwLock<Option<Arc<CertifiedKey>>>);

impl RotatingSvid {
    /// An empty resolver (no certificate until `set`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the SVID.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write() = Some(key);
    }

    /// The current SVID.
    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().clone()
    }
}

impl rustls::server::ResolvesServerCert for RotatingSvid {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl rustls::client::ResolvesClientCert for RotatingSvid {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.get().is_some()
    }
}

/// The SPIFFE ID in a peer's leaf certificate (already verified by the TLS layer).
pub fn peer_id(peer_certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    peer_certs
        .first()
        .and_then(|leaf| signet_spiffe::x509::validate_leaf(leaf).ok())
}

#[cfg(test)]
mod tests {
    use signet_spiffe::{Bundle, TrustDomain};
    use signet_test_support::{LeafSpec, TestCa, fixed_now};

    use super::*;

    fn bundles(ca: &TestCa) -> Arc<dyn BundleSource> {
        let mut set = BundleSet::new();
        set.insert(
            Bundle::from_der_concat(TrustDomain::new("example.org").unwrap(), &ca.cert_der)
                .unwrap(),
        );
        Arc::new(SharedBundles::new(set))
    }

    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(fixed_now().duration_since(SystemTime::UNIX_EPOCH).unwrap())
    }

    #[test]
    fn server_verifier_accepts_only_the_expected_id_from_the_trusted_ca() {
        let ca = TestCa::new("example.org");
        let expected = SpiffeId::new("spiffe://example.org/signet/server").unwrap();
        let verifier = SpiffeServerVerifier::for_id(bundles(&ca), expected);
        let name = ServerName::try_from("signet-server").unwrap();
        let check = |der: Vec<u8>| {
            verifier.verify_server_cert(&CertificateDer::from(der), &[], &name, &[], now())
        };
        let (good, _) = ca.issue(&LeafSpec::svid("spiffe://example.org/signet/server"));
        assert!(check(good).is_ok());
        let (other_id, _) = ca.issue(&LeafSpec::svid("spiffe://example.org/workload"));
        assert!(check(other_id).is_err());
        let rogue = TestCa::new("example.org");
        let (forged, _) = rogue.issue(&LeafSpec::svid("spiffe://example.org/signet/server"));
        assert!(check(forged).is_err());
    }

    #[test]
    fn client_verifier_applies_its_policy_and_optional_auth() {
        let ca = TestCa::new("example.org");
        let policy: IdPolicy = Arc::new(|id: &SpiffeId| id.path().starts_with("/signet/agent/"));
        let verifier = SpiffeClientVerifier::new(bundles(&ca), policy, false);
        assert!(!verifier.client_auth_mandatory());
        let (agent, _) = ca.issue(&LeafSpec::svid("spiffe://example.org/signet/agent/join/x"));
        assert!(
            verifier
                .verify_client_cert(&CertificateDer::from(agent.clone()), &[], now())
                .is_ok()
        );
        assert_eq!(
            peer_id(&[CertificateDer::from(agent)]).unwrap().as_str(),
            "spiffe://example.org/signet/agent/join/x"
        );
        let (workload, _) = ca.issue(&LeafSpec::svid("spiffe://example.org/workload"));
        assert!(
            verifier
                .verify_client_cert(&CertificateDer::from(workload), &[], now())
                .is_err()
        );
        // Expired at handshake time.
        let later = UnixTime::since_unix_epoch(Duration::from_secs(4_000_000_000));
        let (agent, _) = ca.issue(&LeafSpec::svid("spiffe://example.org/signet/agent/join/y"));
        assert!(
            verifier
                .verify_client_cert(&CertificateDer::from(agent), &[], later)
                .is_err()
        );
    }
}
