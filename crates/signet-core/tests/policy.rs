//! The evaluator over a table of cases (DESIGN §10).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use signet_core::policy::{
    Action, DefaultPolicy, Enforcement, HttpRequest, IdPattern, Operation, Outcome, PathPattern,
    Policy, PolicyRef, Reason, Request, Rule, Source, TrustContext, evaluate,
};
use signet_spiffe::{SpiffeId, TrustDomain};

fn policy(name: &str, action: Action, rules: Vec<Rule>) -> Policy {
    Policy {
        id: PolicyRef {
            namespace: "shop".into(),
            name: name.into(),
        },
        action,
        enforcement: Enforcement::Enforce,
        rules,
    }
}

fn dry_run(mut policy: Policy) -> Policy {
    policy.enforcement = Enforcement::DryRun;
    policy
}

fn from_ids(patterns: &[&str]) -> Rule {
    Rule {
        from: vec![Source {
            spiffe_ids: patterns
                .iter()
                .map(|p| IdPattern::parse(p).unwrap())
                .collect(),
            ..Source::default()
        }],
        to: vec![],
    }
}

fn to(op: Operation) -> Rule {
    Rule {
        from: vec![],
        to: vec![op],
    }
}

fn trust() -> TrustContext {
    TrustContext {
        local: TrustDomain::new("td").unwrap(),
        federated: vec![TrustDomain::new("partner.example").unwrap()],
    }
}

fn id(value: &str) -> SpiffeId {
    SpiffeId::new(value).unwrap()
}

fn tcp(peer: Option<&SpiffeId>) -> Request<'_> {
    Request {
        peer,
        port: 8443,
        http: None,
    }
}

fn http<'a>(peer: &'a SpiffeId, method: &'a str, path: &'a str) -> Request<'a> {
    Request {
        peer: Some(peer),
        port: 8443,
        http: Some(HttpRequest { method, path }),
    }
}

fn decide<'a>(
    policies: &'a [Policy],
    default: DefaultPolicy,
    request: &Request<'_>,
) -> (bool, Reason<'a>) {
    let refs: Vec<&Policy> = policies.iter().collect();
    let decision = evaluate(&refs, default, &trust(), request);
    (decision.allowed, decision.reason)
}

const FRONTEND: &str = "spiffe://td/ns/frontend/sa/web";

#[test]
fn deny_wins_over_allow() {
    let peer = id(FRONTEND);
    let policies = [
        policy(
            "allow-frontend",
            Action::Allow,
            vec![from_ids(&["spiffe://td/ns/frontend/**"])],
        ),
        policy("deny-web", Action::Deny, vec![from_ids(&[FRONTEND])]),
    ];
    let (allowed, reason) = decide(
        &policies,
        DefaultPolicy::AllowTrustDomain,
        &tcp(Some(&peer)),
    );
    assert!(!allowed);
    assert!(
        matches!(reason, Reason::DeniedByPolicy { policy, rule: 0 } if policy.name == "deny-web")
    );
}

#[test]
fn dry_run_and_audit_never_change_the_decision() {
    let peer = id(FRONTEND);
    let policies = [
        dry_run(policy("would-deny", Action::Deny, vec![Rule::default()])),
        policy("audit-all", Action::Audit, vec![Rule::default()]),
    ];
    let refs: Vec<&Policy> = policies.iter().collect();
    let decision = evaluate(
        &refs,
        DefaultPolicy::AllowTrustDomain,
        &trust(),
        &tcp(Some(&peer)),
    );
    assert!(decision.allowed);
    assert!(
        !decision.dry_run_allowed,
        "DryRun reports what enforcing would do"
    );
    assert_eq!(decision.contributions.len(), 2);
    assert!(
        decision
            .contributions
            .iter()
            .all(|c| c.outcome == Outcome::Matched { rule: 0 })
    );

    // A DryRun ALLOW does not turn the workload into "has ALLOW policies".
    let policies = [dry_run(policy("would-allow-nobody", Action::Allow, vec![]))];
    let (allowed, reason) = decide(
        &policies,
        DefaultPolicy::AllowTrustDomain,
        &tcp(Some(&peer)),
    );
    assert!(allowed);
    assert_eq!(
        reason,
        Reason::Default {
            policy: DefaultPolicy::AllowTrustDomain
        }
    );
}

#[test]
fn default_policies() {
    let local = id(FRONTEND);
    let federated = id("spiffe://partner.example/billing");
    let foreign = id("spiffe://evil.example/x");
    let cases = [
        (DefaultPolicy::AllowTrustDomain, Some(&local), true),
        (DefaultPolicy::AllowTrustDomain, Some(&federated), true),
        (DefaultPolicy::AllowTrustDomain, Some(&foreign), false),
        (DefaultPolicy::AllowTrustDomain, None, false),
        (DefaultPolicy::AllowAuthenticated, Some(&foreign), true),
        (DefaultPolicy::AllowAuthenticated, None, false),
        (DefaultPolicy::Deny, Some(&local), false),
    ];
    for (default, peer, expected) in cases {
        let (allowed, reason) = decide(&[], default, &tcp(peer));
        assert_eq!(allowed, expected, "{default:?} {peer:?}");
        assert_eq!(reason, Reason::Default { policy: default });
    }
}

#[test]
fn allow_policies_make_the_workload_deny_by_default() {
    let other = id("spiffe://td/ns/backend/sa/batch");
    let policies = [policy(
        "frontend-only",
        Action::Allow,
        vec![from_ids(&["spiffe://td/ns/frontend/sa/*"])],
    )];
    let (allowed, reason) = decide(
        &policies,
        DefaultPolicy::AllowTrustDomain,
        &tcp(Some(&other)),
    );
    assert!(!allowed);
    assert_eq!(reason, Reason::NoAllowPolicyMatched);
    let frontend = id(FRONTEND);
    assert!(decide(&policies, DefaultPolicy::Deny, &tcp(Some(&frontend))).0);
}

#[test]
fn one_star_and_two_stars() {
    let policies = [policy(
        "sa-star",
        Action::Allow,
        vec![from_ids(&["spiffe://td/ns/frontend/sa/*"])],
    )];
    let nested = id("spiffe://td/ns/frontend/sa/web/v2");
    assert!(!decide(&policies, DefaultPolicy::Deny, &tcp(Some(&nested))).0);
    let policies = [policy(
        "ns-rest",
        Action::Allow,
        vec![from_ids(&["spiffe://td/ns/frontend/**"])],
    )];
    assert!(decide(&policies, DefaultPolicy::Deny, &tcp(Some(&nested))).0);
    let sibling = id("spiffe://td/ns/frontend2/sa/web");
    assert!(!decide(&policies, DefaultPolicy::Deny, &tcp(Some(&sibling))).0);
}

#[test]
fn trust_domains_must_match() {
    let impostor = id("spiffe://partner.example/ns/frontend/sa/web");
    let policies = [policy("local", Action::Allow, vec![from_ids(&[FRONTEND])])];
    assert!(
        !decide(
            &policies,
            DefaultPolicy::AllowTrustDomain,
            &tcp(Some(&impostor))
        )
        .0
    );

    let by_domain = Rule {
        from: vec![Source {
            trust_domains: vec![TrustDomain::new("partner.example").unwrap()],
            ..Source::default()
        }],
        to: vec![],
    };
    let policies = [policy("partner", Action::Allow, vec![by_domain])];
    assert!(decide(&policies, DefaultPolicy::Deny, &tcp(Some(&impostor))).0);
    assert!(!decide(&policies, DefaultPolicy::Deny, &tcp(Some(&id(FRONTEND)))).0);
}

#[test]
fn not_spiffe_ids_and_namespaces() {
    let rule = Rule {
        from: vec![Source {
            namespaces: vec!["frontend".into()],
            not_spiffe_ids: vec![IdPattern::parse("spiffe://td/ns/frontend/sa/debug").unwrap()],
            ..Source::default()
        }],
        to: vec![],
    };
    let policies = [policy("frontend-but-debug", Action::Allow, vec![rule])];
    assert!(decide(&policies, DefaultPolicy::Deny, &tcp(Some(&id(FRONTEND)))).0);
    let debug = id("spiffe://td/ns/frontend/sa/debug");
    assert!(!decide(&policies, DefaultPolicy::Deny, &tcp(Some(&debug))).0);
    // IDs not shaped /ns/<namespace>/… never match a namespace condition.
    let flat = id("spiffe://td/frontend/web");
    assert!(!decide(&policies, DefaultPolicy::Deny, &tcp(Some(&flat))).0);
}

#[test]
fn http_fields_on_tcp_requests_never_allow_but_always_deny() {
    let peer = id(FRONTEND);
    let get_only = Operation {
        methods: vec!["GET".into()],
        ..Operation::default()
    };
    let allow = [policy("get", Action::Allow, vec![to(get_only)])];
    assert!(!decide(&allow, DefaultPolicy::AllowTrustDomain, &tcp(Some(&peer))).0);
    assert!(decide(&allow, DefaultPolicy::Deny, &http(&peer, "GET", "/")).0);
    assert!(!decide(&allow, DefaultPolicy::Deny, &http(&peer, "POST", "/")).0);

    let admin = Operation {
        paths: vec![PathPattern::parse("/admin/*").unwrap()],
        ..Operation::default()
    };
    let deny = [policy("no-admin", Action::Deny, vec![to(admin)])];
    assert!(
        !decide(&deny, DefaultPolicy::AllowTrustDomain, &tcp(Some(&peer))).0,
        "fails closed"
    );
    assert!(
        decide(
            &deny,
            DefaultPolicy::AllowTrustDomain,
            &http(&peer, "GET", "/public")
        )
        .0
    );
    assert!(
        !decide(
            &deny,
            DefaultPolicy::AllowTrustDomain,
            &http(&peer, "GET", "/admin/users")
        )
        .0
    );
}

#[test]
fn ports_paths_and_not_paths() {
    let peer = id(FRONTEND);
    let op = Operation {
        ports: vec![8443],
        paths: vec![PathPattern::parse("/inventory/*").unwrap()],
        not_paths: vec![PathPattern::parse("*.secret").unwrap()],
        ..Operation::default()
    };
    let policies = [policy("inventory", Action::Allow, vec![to(op)])];
    assert!(
        decide(
            &policies,
            DefaultPolicy::Deny,
            &http(&peer, "GET", "/inventory/items")
        )
        .0
    );
    assert!(
        !decide(
            &policies,
            DefaultPolicy::Deny,
            &http(&peer, "GET", "/inventory/keys.secret")
        )
        .0
    );
    assert!(
        !decide(
            &policies,
            DefaultPolicy::Deny,
            &http(&peer, "GET", "/orders")
        )
        .0
    );
    let other_port = Request {
        port: 9090,
        ..http(&peer, "GET", "/inventory/items")
    };
    assert!(!decide(&policies, DefaultPolicy::Deny, &other_port).0);
}

#[test]
fn no_rules_match_nothing_and_one_empty_rule_matches_everything() {
    let peer = id(FRONTEND);
    let nothing = [policy("allow-nothing", Action::Allow, vec![])];
    assert!(!decide(&nothing, DefaultPolicy::AllowTrustDomain, &tcp(Some(&peer))).0);
    let everything = [policy("allow-all", Action::Allow, vec![Rule::default()])];
    assert!(decide(&everything, DefaultPolicy::Deny, &tcp(Some(&peer))).0);
    assert!(
        decide(&everything, DefaultPolicy::Deny, &tcp(None)).0,
        "[{{}}] admits plaintext too"
    );
    let deny_nothing = [policy("deny-nothing", Action::Deny, vec![])];
    assert!(
        decide(
            &deny_nothing,
            DefaultPolicy::AllowTrustDomain,
            &tcp(Some(&peer))
        )
        .0
    );
}

#[test]
fn a_peer_without_an_svid_matches_no_positive_identity_condition() {
    let policies = [policy(
        "in-domain",
        Action::Allow,
        vec![from_ids(&["spiffe://td/**"])],
    )];
    assert!(!decide(&policies, DefaultPolicy::AllowAuthenticated, &tcp(None)).0);
}

/// "Deny everyone except partner": a plaintext caller (PERMISSIVE mode) is not the partner, so
/// the DENY applies to it even when an ALLOW would let everything through.
#[test]
fn a_deny_with_only_negative_conditions_stops_a_peer_without_an_svid() {
    let not_partner = Rule {
        from: vec![Source {
            not_spiffe_ids: vec![IdPattern::parse("spiffe://partner.example/**").unwrap()],
            ..Source::default()
        }],
        to: vec![],
    };
    let policies = [
        policy("deny-not-partner", Action::Deny, vec![not_partner.clone()]),
        policy("allow-all", Action::Allow, vec![Rule::default()]),
    ];
    let (allowed, reason) = decide(&policies, DefaultPolicy::AllowTrustDomain, &tcp(None));
    assert!(!allowed);
    assert!(
        matches!(reason, Reason::DeniedByPolicy { policy, .. } if policy.name == "deny-not-partner")
    );
    let partner = id("spiffe://partner.example/billing");
    assert!(
        decide(
            &policies,
            DefaultPolicy::AllowTrustDomain,
            &tcp(Some(&partner))
        )
        .0
    );
    // The same source in an ALLOW does not admit a caller without an SVID.
    let allow = [policy(
        "allow-not-partner",
        Action::Allow,
        vec![not_partner],
    )];
    assert!(!decide(&allow, DefaultPolicy::AllowTrustDomain, &tcp(None)).0);
}

/// A federated trust domain can mint `/ns/<anything>/…` IDs: they never satisfy `namespaces`.
#[test]
fn namespaces_are_read_from_local_ids_only() {
    let rule = Rule {
        from: vec![Source {
            namespaces: vec!["frontend".into()],
            ..Source::default()
        }],
        to: vec![],
    };
    let policies = [policy("frontend-ns", Action::Allow, vec![rule])];
    let local = id(FRONTEND);
    let federated = id("spiffe://partner.example/ns/frontend/sa/web");
    assert!(decide(&policies, DefaultPolicy::Deny, &tcp(Some(&local))).0);
    assert!(!decide(&policies, DefaultPolicy::Deny, &tcp(Some(&federated))).0);
}
