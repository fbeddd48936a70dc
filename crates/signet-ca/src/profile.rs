//! Certificate profiles: what Signet puts in CA and SVID certificates (DESIGN §5).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::error::{Error, Result};

/// Backdating of leaf notBefore to tolerate clock skew between peers.
pub const NOT_BEFORE_CUSHION: Duration = Duration::from_secs(10);

/// A random, positive, 128-bit serial number.
pub(crate) fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Signing("no randomness".into()))?;
    // A zero leading byte would make the DER encoding shorter than 128 bits.
    if bytes[0] == 0 {
        bytes[0] = 1;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

/// Random hex for names and key ids.
pub(crate) fn random_hex(len_bytes: usize) -> Result<String> {
    let mut bytes = vec![0u8; len_bytes];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Signing("no randomness".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn to_offset(time: SystemTime) -> Result<time::OffsetDateTime> {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| Error::Signing("time before 1970".into()))?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|_| Error::Signing("time out of range".into()))?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| Error::Signing(e.to_string()))
}

fn uri_san(id: &SpiffeId) -> Result<SanType> {
    let uri = id
        .as_str()
        .try_into()
        .map_err(|e: rcgen::Error| Error::Signing(e.to_string()))?;
    Ok(SanType::URI(uri))
}

/// Parameters of a signing (CA) certificate for a trust domain.
pub(crate) fn ca_params(
    trust_domain: &TrustDomain,
    not_before: SystemTime,
    not_after: SystemTime,
    is_root: bool,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Signet");
    // A unique CN per authority keeps issuer names distinct across rotations, which path
    // builders (OpenSSL's in particular) rely on.
    dn.push(
        DnType::CommonName,
        format!("Signet CA {} {}", trust_domain, random_hex(4)?),
    );
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial()?);
    params.not_before = to_offset(not_before)?;
    params.not_after = to_offset(not_after)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![uri_san(&trust_domain.id())?];
    params.use_authority_key_identifier_extension = !is_root;
    Ok(params)
}

/// Parameters of an X509-SVID leaf.
pub(crate) fn leaf_params(
    spiffe_id: &SpiffeId,
    dns_names: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Signet Workload");
    if let Some(first) = dns_names.first() {
        dn.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial()?);
    params.not_before = to_offset(not_before)?;
    params.not_after = to_offset(not_after)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mut sans = vec![uri_san(spiffe_id)?];
    for name in dns_names {
        validate_dns_name(name)?;
        let dns = name
            .as_str()
            .try_into()
            .map_err(|e: rcgen::Error| Error::InvalidRequest(format!("DNS name {name:?}: {e}")))?;
        sans.push(SanType::DnsName(dns));
    }
    params.subject_alt_names = sans;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A DNS name as RFC 1123 allows it, optionally with one leading wildcard label.
pub fn validate_dns_name(name: &str) -> Result<()> {
    signet_spiffe::DnsName::new(name)
        .map(drop)
        .map_err(|e| Error::InvalidRequest(e.to_string()))
}
