//! Evaluator cost per decision with 1,000 policies targeting one workload (the worst case: a
//! real workload has a handful). `cargo bench -p signet-core --bench policy`.

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "bench binary")]

use std::hint::black_box;
use std::time::Instant;

use signet_core::policy::{
    Action, DefaultPolicy, Enforcement, HttpRequest, IdPattern, Operation, PathPattern, Policy,
    PolicyRef, Request, Rule, Source, TrustContext, evaluate, normalize_path,
};
use signet_spiffe::{SpiffeId, TrustDomain};

fn policies(count: usize) -> Vec<Policy> {
    (0..count)
        .map(|i| Policy {
            id: PolicyRef {
                namespace: "shop".into(),
                name: format!("policy-{i}"),
            },
            // One DENY in ten, like a real mix; none of them matches the benchmark request.
            action: if i % 10 == 0 {
                Action::Deny
            } else {
                Action::Allow
            },
            enforcement: Enforcement::Enforce,
            rules: vec![Rule {
                from: vec![Source {
                    spiffe_ids: vec![
                        IdPattern::parse(&format!("spiffe://td/ns/team-{i}/sa/*")).unwrap(),
                        IdPattern::parse(&format!("spiffe://td/ns/team-{i}-jobs/**")).unwrap(),
                    ],
                    ..Source::default()
                }],
                to: vec![Operation {
                    ports: vec![8443],
                    methods: vec!["GET".into(), "POST".into()],
                    paths: vec![PathPattern::parse(&format!("/api/v{i}/*")).unwrap()],
                    ..Operation::default()
                }],
            }],
        })
        .collect()
}

fn measure(name: &str, policies: &[&Policy], request: &Request<'_>, trust: &TrustContext) {
    let iterations = 20_000;
    let start = Instant::now();
    let mut allowed = 0usize;
    for _ in 0..iterations {
        let decision = evaluate(
            black_box(policies),
            DefaultPolicy::Deny,
            trust,
            black_box(request),
        );
        allowed += usize::from(decision.allowed);
    }
    let per = start.elapsed() / iterations;
    println!("{name:<44} {per:>10.2?}/decision (allowed {allowed}/{iterations})");
}

fn main() {
    let trust = TrustContext {
        local: TrustDomain::new("td").unwrap(),
        federated: vec![],
    };
    let all = policies(1000);
    let refs: Vec<&Policy> = all.iter().collect();
    // Matches the last ALLOW policy: every policy is evaluated.
    let last = SpiffeId::new("spiffe://td/ns/team-999/sa/web").unwrap();
    let path = normalize_path("/api/v999/items?x=1").unwrap();
    let matching = Request {
        peer: Some(&last),
        port: 8443,
        http: Some(HttpRequest {
            method: "GET",
            path: &path,
        }),
    };
    let stranger = SpiffeId::new("spiffe://td/ns/nobody/sa/x").unwrap();
    let denied = Request {
        peer: Some(&stranger),
        port: 8443,
        http: None,
    };
    println!("policy evaluator, 1,000 policies targeting one workload");
    measure(
        "HTTP request allowed by the last policy",
        &refs,
        &matching,
        &trust,
    );
    measure(
        "TCP connection matching no policy (denied)",
        &refs,
        &denied,
        &trust,
    );
    let few: Vec<&Policy> = refs.iter().rev().take(5).copied().collect();
    measure(
        "HTTP request, 5 policies (typical)",
        &few,
        &matching,
        &trust,
    );
    let start = Instant::now();
    for _ in 0..100_000 {
        black_box(normalize_path(black_box("/api/v1/../v2/%61/items//x?q=1")).ok());
    }
    println!(
        "{:<44} {:>10.2?}/path",
        "normalize_path",
        start.elapsed() / 100_000
    );
}
