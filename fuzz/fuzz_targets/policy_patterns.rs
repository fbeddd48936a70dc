#![no_main]
//! AuthorizationPolicy patterns come from namespaced resources and request paths from any
//! caller: parsing, normalizing and matching must never panic, normalization must be idempotent,
//! and a normalized path must never keep a dot segment, an empty segment or a `;`.

use libfuzzer_sys::fuzz_target;
use signet_core::policy::{IdPattern, PathPattern, normalize_path};
use signet_spiffe::SpiffeId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (left, right) = text.split_once('\n').unwrap_or((text, "/"));
    if let Ok(normal) = normalize_path(left) {
        assert_eq!(normalize_path(&normal).as_deref(), Ok(normal.as_str()), "idempotent");
        assert!(normal.starts_with('/'));
        assert!(!normal.contains(';'));
        let inner = normal.trim_end_matches('/');
        assert!(
            inner.is_empty()
                || inner
                    .split('/')
                    .skip(1)
                    .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{normal:?}"
        );
        if let Ok(pattern) = PathPattern::parse(right) {
            let _ = pattern.matches(&normal);
            assert_eq!(PathPattern::parse(&pattern.to_string()), Ok(pattern));
        }
    }
    if let Ok(pattern) = IdPattern::parse(left) {
        assert_eq!(IdPattern::parse(&pattern.to_string()), Ok(pattern.clone()));
        if let Ok(id) = SpiffeId::new(right) {
            let _ = pattern.matches(&id);
        }
    }
});
