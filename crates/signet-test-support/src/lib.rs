//! Test fixtures shared by Signet's crates: an rcgen test CA that can also issue hostile
//! certificates, CSR builders and a JWT forger. Dev-dependency only.

#![expect(clippy::unwrap_used, reason = "test fixtures fail loudly")]

pub mod apps;
pub mod fake_cluster;
pub mod k8s;
mod measure;
pub mod postgres;
pub mod softhsm;
pub mod workload_api;

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub use measure::{
    cpu_seconds, eventually, free_port, peak_rss_mib, percentile, rss_mib, wait_for,
};
pub use rcgen;

/// A fixed "now" so tests do not depend on the wall clock.
pub fn fixed_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap()
}

/// A test CA for one trust domain.
pub struct TestCa {
    /// The trust domain name.
    pub trust_domain: String,
    /// DER of the CA certificate.
    pub cert_der: Vec<u8>,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

fn ca_params(trust_domain: &str, cn: &str, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{trust_domain}").try_into().unwrap(),
    )];
    params.not_before = offset(fixed_now() - Duration::from_secs(3600));
    params.not_after = offset(not_after);
    params
}

impl TestCa {
    /// A self-signed root for `trust_domain`, valid for a day around [`fixed_now`].
    pub fn new(trust_domain: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(
            trust_domain,
            &format!("Test Root {trust_domain}"),
            fixed_now() + Duration::from_secs(86400),
        );
        let cert = params.self_signed(&key).unwrap();
        Self {
            trust_domain: trust_domain.into(),
            cert_der: cert.der().to_vec(),
            key,
        }
    }

    /// PEM of the CA certificate.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// PEM (PKCS#8) of the CA key.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_ca_cert_der(&self.cert_der.clone().into(), &self.key).unwrap()
    }

    /// An intermediate signed by this CA, optionally without keyCertSign (hostile).
    pub fn intermediate(&self, can_sign: bool) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params(
            &self.trust_domain,
            "Test Intermediate",
            fixed_now() + Duration::from_secs(86400),
        );
        if !can_sign {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        TestCa {
            trust_domain: self.trust_domain.clone(),
            cert_der: cert.der().to_vec(),
            key,
        }
    }

    /// Issues a leaf from `spec`; returns (certificate DER, PKCS#8 key DER).
    pub fn issue(&self, spec: &LeafSpec) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &spec.subject_cn {
            dn.push(DnType::CommonName, cn.as_str());
        }
        params.distinguished_name = dn;
        params.subject_alt_names = spec
            .uris
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .chain(
                spec.dns
                    .iter()
                    .map(|d| SanType::DnsName(d.as_str().try_into().unwrap())),
            )
            .collect();
        params.is_ca = if spec.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        match &spec.key_usage {
            KeyUsageSpec::Critical(usages) => params.key_usages = usages.clone(),
            KeyUsageSpec::Absent => {}
            KeyUsageSpec::NonCriticalDigitalSignature => {
                // keyUsage = digitalSignature, written by hand to make it non-critical.
                params
                    .custom_extensions
                    .push(CustomExtension::from_oid_content(
                        &[2, 5, 29, 15],
                        vec![0x03, 0x02, 0x07, 0x80],
                    ));
            }
        }
        params.extended_key_usages = spec.eku.clone();
        params.not_before = offset(spec.not_before);
        params.not_after = offset(spec.not_after);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }
}

/// How to write keyUsage into a test leaf.
#[derive(Debug, Clone)]
pub enum KeyUsageSpec {
    /// A critical keyUsage with these bits.
    Critical(Vec<KeyUsagePurpose>),
    /// No keyUsage at all.
    Absent,
    /// keyUsage digitalSignature, not critical.
    NonCriticalDigitalSignature,
}

/// What a test leaf contains; [`LeafSpec::svid`] is a valid X509-SVID.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// URI SANs.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// Subject CN (None = empty subject).
    pub subject_cn: Option<String>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// keyUsage.
    pub key_usage: KeyUsageSpec,
    /// extendedKeyUsage.
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
}

impl LeafSpec {
    /// A valid X509-SVID for `id`, valid for an hour around [`fixed_now`].
    pub fn svid(id: &str) -> Self {
        Self {
            uris: vec![id.into()],
            dns: Vec::new(),
            subject_cn: Some("workload".into()),
            is_ca: false,
            key_usage: KeyUsageSpec::Critical(vec![KeyUsagePurpose::DigitalSignature]),
            eku: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            not_before: fixed_now() - Duration::from_secs(60),
            not_after: fixed_now() + Duration::from_secs(3600),
        }
    }
}

/// PEM-encodes DER.
pub fn pem_encode(tag: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

/// A DER CSR with the given URI SANs, signed by `key`.
pub fn csr_with_uris(key: &KeyPair, uris: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.serialize_request(key).unwrap().der().to_vec()
}

/// A P-256 CSR for one SPIFFE ID, with its key.
pub fn csr_for(id: &str) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    (csr_with_uris(&key, &[id]), key)
}

/// How a forged JWT is signed.
#[derive(Debug)]
pub enum JwtSigner<'a> {
    /// ES256 with a P-256 PKCS#8 key.
    Es256(&'a [u8]),
    /// HMAC-SHA256 with this secret (must always be rejected).
    Hs256(&'a [u8]),
    /// An empty signature (for `alg: none`).
    Unsigned,
}

/// Builds a compact JWS from raw JSON header and claims.
pub fn forge_jwt(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    signer: JwtSigner<'_>,
) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match signer {
        JwtSigner::Es256(pkcs8) => {
            use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
            let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).unwrap();
            key.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec()
        }
        JwtSigner::Hs256(secret) => {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
            aws_lc_rs::hmac::sign(&key, input.as_bytes())
                .as_ref()
                .to_vec()
        }
        JwtSigner::Unsigned => Vec::new(),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An agent API client presenting `identity`'s agent SVID and trusting its bundle: what an
/// attested agent talks to its server with.
///
/// # Panics
/// When the identity does not load into TLS.
#[expect(clippy::expect_used, reason = "test fixture")]
pub fn agent_client(
    server_address: &str,
    identity: &signet_agent::agent_svid::PersistedIdentity,
) -> signet_proto::agent::agent_service_client::AgentServiceClient<tonic::transport::Channel> {
    let svid = std::sync::Arc::new(signet_tls::RotatingSvid::new());
    svid.set(
        signet_tls::certified_key(
            identity.svid.chain().to_vec(),
            identity.svid.private_key_pkcs8(),
        )
        .expect("the agent SVID loads into TLS"),
    );
    let bundles = std::sync::Arc::new(signet_tls::SharedBundles::new(
        signet_agent::agent_svid::single(identity.bundle.clone()),
    ));
    let server_id = signet_core::server_id(identity.bundle.trust_domain()).expect("server ID");
    signet_agent::client::connect(server_address, bundles, server_id, Some(svid))
        .expect("a lazily connecting client")
}
