//! The authorizer every enforcement point shares, and the tower layer: decisions, counters for
//! denials (real and DryRun), hostile paths, and a denied request never reaching the service.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use signet_core::policy::{
    Action, DefaultPolicy, Enforcement, IdPattern, Operation, PathPattern, Policy, PolicyRef, Rule,
    Source, TrustContext,
};
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_tls::authz::{Access, Authorizer, AuthzMetrics, EffectivePolicy};
use signet_tls::http::{AuthorizeLayer, PeerIdentity};
use tower::{Layer, ServiceExt};

fn id(path: &str) -> SpiffeId {
    SpiffeId::new(&format!("spiffe://example.org{path}")).unwrap()
}

fn policy(name: &str, action: Action, enforcement: Enforcement, rule: Rule) -> Policy {
    Policy {
        id: PolicyRef {
            namespace: "default".into(),
            name: name.into(),
        },
        action,
        enforcement,
        rules: vec![rule],
    }
}

fn from(pattern: &str) -> Source {
    Source {
        spiffe_ids: vec![IdPattern::parse(pattern).unwrap()],
        ..Source::default()
    }
}

fn trust() -> TrustContext {
    TrustContext {
        local: TrustDomain::new("example.org").unwrap(),
        federated: vec![],
    }
}

fn authorizer(policies: Vec<Policy>, default_policy: DefaultPolicy) -> Authorizer {
    Authorizer::new(
        EffectivePolicy {
            spiffe_ids: vec![id("/api")],
            policies,
            default_policy,
            trust: trust(),
        },
        AuthzMetrics::default(),
    )
}

fn metrics_text(authorizer: &Authorizer) -> String {
    let mut registry = Registry::default();
    authorizer.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// DENY of `/admin/*` to anyone, and ALLOW for `spiffe://example.org/web/*`.
fn deny_admin_allow_web() -> [Policy; 2] {
    let deny = policy(
        "no-admin",
        Action::Deny,
        Enforcement::Enforce,
        Rule {
            from: vec![],
            to: vec![Operation {
                paths: vec![PathPattern::parse("/admin/*").unwrap()],
                ..Operation::default()
            }],
        },
    );
    let allow = policy(
        "web",
        Action::Allow,
        Enforcement::Enforce,
        Rule {
            from: vec![from("spiffe://example.org/web/*")],
            to: vec![],
        },
    );
    [deny, allow]
}

#[test]
fn decisions_follow_the_policies_and_denials_are_counted_by_what_denied() {
    let [deny, allow] = deny_admin_allow_web();
    let authz = authorizer(vec![deny, allow], DefaultPolicy::AllowTrustDomain);
    let web = id("/web/1");
    let other = id("/batch");
    let check = |peer: Option<&SpiffeId>, path: &str| {
        authz.check(&Access {
            peer,
            port: 443,
            http: Some(("GET", path)),
        })
    };
    assert!(check(Some(&web), "/items").allowed);
    let denied = check(Some(&web), "/admin/users");
    assert!(!denied.allowed);
    assert_eq!(denied.deciding_policy.as_deref(), Some("default/no-admin"));
    // Dot segments cannot walk around the DENY.
    assert!(!check(Some(&web), "/items/../admin/users").allowed);
    // ALLOW policies target the workload: anything they do not admit is denied.
    assert!(!check(Some(&other), "/items").allowed);
    assert!(!check(None, "/items").allowed);
    // A DENY with an HTTP condition applies to a TCP connection too (fail closed).
    let tcp = authz.check(&Access {
        peer: Some(&web),
        port: 443,
        http: None,
    });
    assert!(!tcp.allowed);
    let text = metrics_text(&authz);
    assert!(
        text.contains(
            "signet_authz_denied_total{policy=\"default/no-admin\",action=\"DENY\",enforcement=\"Enforce\"} 3"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "signet_authz_denied_total{policy=\"\",action=\"ALLOW\",enforcement=\"Enforce\"} 2"
        ),
        "{text}"
    );
    assert!(text.contains("signet_authz_allowed_total 1"), "{text}");
}

#[test]
fn hostile_paths_are_denied_before_any_policy_is_consulted() {
    let authz = authorizer(vec![], DefaultPolicy::AllowAuthenticated);
    let peer = id("/web");
    for path in ["/a%2Fb", "/a%5cb", "/a\\b", "/a;b", "/a%00", "relative", ""] {
        let verdict = authz.check(&Access {
            peer: Some(&peer),
            port: 443,
            http: Some(("GET", path)),
        });
        assert!(!verdict.allowed, "{path:?} was allowed");
        assert!(
            verdict.reason.starts_with("request path refused"),
            "{path:?}: {}",
            verdict.reason
        );
    }
}

#[test]
fn methods_that_are_not_upper_case_are_refused_and_counted_as_such() {
    let authz = authorizer(vec![], DefaultPolicy::AllowAuthenticated);
    let peer = id("/web");
    for method in ["delete", "Get", "", "GET "] {
        let verdict = authz.check(&Access {
            peer: Some(&peer),
            port: 443,
            http: Some((method, "/")),
        });
        assert!(!verdict.allowed, "{method:?} was allowed");
    }
    let text = metrics_text(&authz);
    assert!(
        text.contains(
            "signet_authz_denied_total{policy=\"\",action=\"REFUSED\",enforcement=\"Enforce\"} 4"
        ),
        "{text}"
    );
}

#[test]
fn servers_never_resume_sessions_and_clients_never_try() {
    let bundles: Arc<dyn signet_tls::BundleSource> = Arc::new(signet_tls::SharedBundles::default());
    let server = signet_tls::config::server_config(
        Arc::new(signet_tls::RotatingSvid::new()),
        bundles.clone(),
        signet_tls::config::any_authenticated(),
        signet_tls::config::ClientAuth::Required,
        &[b"h2"],
    )
    .unwrap();
    assert_eq!(server.send_tls13_tickets, 0);
    assert!(!server.session_storage.can_cache());
    let client = signet_tls::config::client_config(
        Arc::new(signet_tls::RotatingSvid::new()),
        bundles,
        signet_tls::config::any_authenticated(),
        &[],
    )
    .unwrap();
    assert!(
        format!("{:?}", client.resumption).contains("Disabled")
            || format!("{:?}", client.resumption).contains("disabled"),
        "{:?}",
        client.resumption
    );
}

#[test]
fn dry_run_denials_are_counted_and_never_applied() {
    let dry = policy(
        "lockdown",
        Action::Deny,
        Enforcement::DryRun,
        Rule::default(),
    );
    let authz = authorizer(vec![dry], DefaultPolicy::AllowTrustDomain);
    let verdict = authz.check(&Access {
        peer: Some(&id("/web")),
        port: 443,
        http: None,
    });
    assert!(verdict.allowed);
    assert!(!verdict.dry_run_allowed);
    let text = metrics_text(&authz);
    assert!(text.contains("enforcement=\"DryRun\"} 1"), "{text}");
}

#[test]
fn the_policy_can_be_replaced_and_deny_all_denies() {
    let authz = authorizer(vec![], DefaultPolicy::AllowTrustDomain);
    let peer = id("/web");
    let access = Access {
        peer: Some(&peer),
        port: 443,
        http: None,
    };
    assert!(authz.check(&access).allowed);
    authz.set_policy(EffectivePolicy::deny_all(trust()));
    assert!(!authz.check(&access).allowed);
}

#[tokio::test]
async fn the_layer_answers_403_without_calling_the_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |_request: Request<String>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, std::convert::Infallible>(Response::new(String::from("hello"))) }
    });
    let allow = policy(
        "web",
        Action::Allow,
        Enforcement::Enforce,
        Rule {
            from: vec![from("spiffe://example.org/web")],
            to: vec![Operation {
                methods: vec!["GET".into()],
                ..Operation::default()
            }],
        },
    );
    let layer = AuthorizeLayer::new(Arc::new(authorizer(vec![allow], DefaultPolicy::Deny)), 443);
    let service = layer.layer(inner);
    let request = |method: &str, peer: Option<SpiffeId>| {
        let mut request = Request::builder()
            .method(method)
            .uri("/items")
            .body(String::new())
            .unwrap();
        if let Some(peer) = peer {
            request.extensions_mut().insert(PeerIdentity(Some(peer)));
        }
        request
    };
    let ok = service
        .clone()
        .oneshot(request("GET", Some(id("/web"))))
        .await
        .unwrap();
    assert_eq!((ok.status(), ok.body().as_str()), (StatusCode::OK, "hello"));
    for denied in [
        request("POST", Some(id("/web"))),
        request("GET", Some(id("/other"))),
        request("GET", None),
    ] {
        let response = service.clone().oneshot(denied).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.body().is_empty());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A peer and, for HTTP, a method and path.
type Case<'a> = (Option<&'a SpiffeId>, Option<(&'a str, &'a str)>);

#[test]
fn the_fast_path_agrees_with_the_full_verdict_and_still_reports() {
    let [deny, allow] = deny_admin_allow_web();
    let dry = policy(
        "lockdown-later",
        Action::Deny,
        Enforcement::DryRun,
        Rule {
            from: vec![],
            to: vec![Operation {
                paths: vec![PathPattern::parse("/beta/*").unwrap()],
                ..Operation::default()
            }],
        },
    );
    let fast = authorizer(
        vec![deny.clone(), allow.clone(), dry.clone()],
        DefaultPolicy::AllowTrustDomain,
    );
    let full = authorizer(vec![deny, allow, dry], DefaultPolicy::AllowTrustDomain);
    let web = id("/web/1");
    let other = id("/batch");
    let cases: Vec<Case<'_>> = vec![
        (Some(&web), Some(("GET", "/items/1"))),
        (Some(&web), Some(("GET", "/admin/x"))),
        (Some(&web), Some(("GET", "/beta/x"))),
        (Some(&web), Some(("get", "/items/1"))),
        (Some(&web), Some(("GET", "/a/../admin/x"))),
        (Some(&web), Some(("GET", "/%2e%2e/admin"))),
        (Some(&other), Some(("GET", "/items/1"))),
        (None, Some(("GET", "/items/1"))),
        (Some(&web), None),
        (None, None),
    ];
    for (peer, http) in cases {
        let access = Access {
            peer,
            port: 443,
            http,
        };
        assert_eq!(
            fast.allows(&access),
            full.check(&access).allowed,
            "{peer:?} {http:?}"
        );
    }
    // Same counters either way, DryRun differences included (label sets in any order).
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(metrics_text(&fast)), sorted(metrics_text(&full)));
}
