//! PEM text of DER blocks, as written to files and handed to proxies (LF line endings, 64
//! characters a line).

/// One PEM block of `der` labelled `tag` (`CERTIFICATE`, `PRIVATE KEY`).
pub fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_with_unix_line_endings() {
        let der: Vec<u8> = (0..=255u8).collect();
        let text = pem_encode("CERTIFICATE", &der);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
        assert!(!text.contains('\r'));
        assert!(text.lines().all(|line| line.len() <= 64));
        let parsed = pem::parse(&text).unwrap();
        assert_eq!(parsed.tag(), "CERTIFICATE");
        assert_eq!(parsed.contents(), der.as_slice());
    }
}
