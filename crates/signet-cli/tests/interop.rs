//! Third-party SPIFFE clients against a real agent: Python's grpcio (gRPC C-core, the transport
//! of py-spiffe, which sends the socket path as `:authority`) and grpc-js (Node.js). Each fetches
//! X509-SVIDs, bundles and a JWT-SVID, validates it, and gets the right status codes for hostile
//! calls. The Rust `spiffe` crate makes the same checks in `standalone.rs`. `.ci/run` installs the
//! clients: `pip install grpcio grpcio-tools` and `npm ci` in `tests/interop`.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::{Deployment, TD, my_uid, wait_for};
use serde_json::Value;

const AUDIENCE: &str = "interop-test";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

/// Runs one client in one mode and returns its JSON report.
fn run_client(client: &str, d: &Deployment, mode: &str) -> Value {
    run_client_on(client, &d.socket(), AUDIENCE, mode)
}

fn run_client_on(client: &str, socket: &Path, argument: &str, mode: &str) -> Value {
    let (program, script) = match client {
        "grpcio" => ("python3", interop_dir().join("grpcio_client.py")),
        "grpc-js" => ("node", interop_dir().join("grpc_js_client.js")),
        other => panic!("unknown client {other}"),
    };
    let out = Command::new(program)
        .arg(&script)
        .arg(socket)
        .args([argument, mode])
        .env("SIGNET_PROTO_DIR", proto_dir())
        .env("NODE_PATH", interop_dir().join("node_modules"))
        .current_dir(interop_dir())
        .output()
        .unwrap_or_else(|e| panic!("{program} is not installed ({e}): see .ci/run"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{client} ({mode}) failed (are its packages installed? see .ci/run):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{client}: {e}: {stdout}"))
}

/// Splits concatenated DER certificates (the Workload API's wire form) and writes them as PEM.
fn der_certs_to_pem(der: &[u8]) -> String {
    let mut rest = der;
    let mut pem = String::new();
    while !rest.is_empty() {
        assert_eq!(rest[0], 0x30, "a certificate is a DER SEQUENCE");
        let (len, header) = match rest[1] {
            short if short < 0x80 => (usize::from(short), 2),
            long => {
                let n = usize::from(long & 0x7f);
                let len = rest[2..2 + n]
                    .iter()
                    .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
                (len, 2 + n)
            }
        };
        let (cert, after) = rest.split_at(header + len);
        let body = base64::engine::general_purpose::STANDARD.encode(cert);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        rest = after;
    }
    pem
}

/// OpenSSL, a third verifier, checks the SVID chain against the bundle the client received.
fn openssl_verifies(report: &Value, dir: &Path) {
    let decode = |field: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(report["x509"][field].as_str().unwrap())
            .unwrap()
    };
    let chain = der_certs_to_pem(&decode("cert_chain_der"));
    let leaf_end = chain.find("-----END CERTIFICATE-----\n").unwrap() + 26;
    std::fs::write(dir.join("leaf.pem"), &chain[..leaf_end]).unwrap();
    std::fs::write(dir.join("chain.pem"), &chain).unwrap();
    std::fs::write(
        dir.join("bundle.pem"),
        der_certs_to_pem(&decode("bundle_der")),
    )
    .unwrap();
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("bundle.pem"))
        .arg("-untrusted")
        .arg(dir.join("chain.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn grpcio_and_grpc_js_clients_fetch_validate_and_get_the_right_errors() {
    let d = Deployment::start();
    let clients = ["grpcio", "grpc-js"];
    // Before any entry selects this user: refused, for every client.
    for client in clients {
        let report = run_client(client, &d, "unregistered");
        assert_eq!(
            report["fetch_x509_svid"], "PERMISSION_DENIED",
            "{client}: {report}"
        );
        assert_eq!(
            report["fetch_jwt_svid"], "PERMISSION_DENIED",
            "{client}: {report}"
        );
    }
    let spiffe_id = format!("spiffe://{TD}/interop");
    d.create_entry(&spiffe_id, &format!("unix:uid:{}", my_uid()), &[]);
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    for client in clients {
        let report = run_client(client, &d, "registered");
        eprintln!("{client}: {}", report["client"]);
        assert_eq!(report["x509"]["spiffe_id"], spiffe_id.as_str(), "{client}");
        assert!(
            report["x509"]["key_der_len"].as_u64().unwrap() > 0,
            "{client}"
        );
        let chain = base64::engine::general_purpose::STANDARD
            .decode(report["x509"]["cert_chain_der"].as_str().unwrap())
            .unwrap();
        let leaf_pem = der_certs_to_pem(&chain);
        assert!(leaf_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = tempfile::tempdir().unwrap();
        openssl_verifies(&report, dir.path());
        // Bundles are keyed by trust domain ID (SPIFFE Workload API spec).
        let td_id = format!("spiffe://{TD}");
        assert_eq!(
            report["x509_bundles"],
            serde_json::json!([td_id]),
            "{client}"
        );
        assert_eq!(
            report["jwt_bundles"][&td_id], true,
            "{client}: JWT keys in the bundle"
        );
        assert_eq!(report["jwt"]["spiffe_id"], spiffe_id.as_str(), "{client}");
        assert_eq!(
            report["validated"]["spiffe_id"],
            spiffe_id.as_str(),
            "{client}"
        );
        let claims = &report["validated"]["claims"];
        assert_eq!(claims["sub"], spiffe_id.as_str(), "{client}: {claims}");
        assert_eq!(
            claims["aud"],
            serde_json::json!([AUDIENCE]),
            "{client}: {claims}"
        );
        assert!(claims["exp"].as_f64().is_some(), "{client}: {claims}");
        for (check, code) in [
            ("validate_wrong_audience", "INVALID_ARGUMENT"),
            ("no_header", "INVALID_ARGUMENT"),
            ("no_header_unary", "INVALID_ARGUMENT"),
            ("unknown_method", "UNIMPLEMENTED"),
        ] {
            assert_eq!(report[check], code, "{client}: {check}: {report}");
        }
    }
}

/// The admin socket and the CSI socket answer a C-core client too (the kubelet is grpc-go, but
/// tools and tests reach these sockets with whatever client they have).
#[test]
fn grpcio_reaches_the_admin_and_csi_sockets() {
    let d = Deployment::start();
    let report = run_client_on(
        "grpcio",
        &d.admin_socket(),
        "/signet.admin.v1.Admin/GetBundle",
        "raw",
    );
    assert_eq!(report["code"], "OK", "admin: {report}");
    assert!(report["len"].as_u64().unwrap() > 0, "admin: {report}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pods")).unwrap();
    std::fs::create_dir_all(dir.path().join("sockets")).unwrap();
    let csi_socket = dir.path().join("csi.sock");
    let mut csi = Command::new(common::signet_bin())
        .arg("csi")
        .arg("--csi-socket")
        .arg(&csi_socket)
        .arg("--workload-socket-dir")
        .arg(dir.path().join("sockets"))
        .arg("--kubelet-pods-dir")
        .arg(dir.path().join("pods"))
        .env("NODE_NAME", "worker-1")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the CSI socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&csi_socket).is_ok()
    });
    let report = run_client_on(
        "grpcio",
        &csi_socket,
        "/csi.v1.Identity/GetPluginInfo",
        "raw",
    );
    let _ = csi.kill();
    let _ = csi.wait();
    assert_eq!(report["code"], "OK", "csi: {report}");
}
