//! The PID-reuse attack of the adversarial review, forced for real: a caller connects and exits
//! before the agent accepts, and a process of another group takes its PID. The agent must not
//! attest the newcomer. PID reuse is forced with `/proc/sys/kernel/ns_last_pid` inside a PID
//! namespace made for the test (`unshare --pid --fork --mount-proc`; needs root, as in CI).

use std::os::unix::process::CommandExt;
use std::process::Command;

use signet_agent::peer::PeerInfo;

const SCENARIO: &str = "SIGNET_PID_REUSE_SCENARIO";
const CONNECT_TO: &str = "SIGNET_PID_REUSE_CONNECT_TO";

#[test]
fn a_caller_whose_pid_was_reused_is_not_attested() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: needs root to make a PID namespace");
        return;
    }
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "scenario_in_a_pid_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO, "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("scenario done"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs inside the PID namespace (started by the test above).
#[test]
fn scenario_in_a_pid_namespace() {
    if std::env::var_os(SCENARIO).is_none() {
        return;
    }
    // Threads take PIDs too: make every thread before the PID is handed over.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();

    // The caller connects and exits; its connection waits in the accept queue.
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "connect_and_exit", "--test-threads=1"])
        .env(CONNECT_TO, &socket)
        .status()
        .unwrap();
    assert!(status.success());
    let (stream, _) = listener.accept().unwrap();
    let caller_pid = rustix::net::sockopt::socket_peercred(&stream)
        .unwrap()
        .pid
        .as_raw_pid();

    // Another process, of group 4242, takes the caller's PID.
    std::fs::write("/proc/sys/kernel/ns_last_pid", (caller_pid - 1).to_string()).unwrap();
    let mut impostor = Command::new("sleep").arg("30").gid(4242).spawn().unwrap();
    assert_eq!(
        i32::try_from(impostor.id()).unwrap(),
        caller_pid,
        "the impostor took the caller's PID"
    );

    stream.set_nonblocking(true).unwrap();
    let info = runtime.block_on(async {
        let stream = tokio::net::UnixStream::from_std(stream).unwrap();
        PeerInfo::from_stream(&stream).unwrap()
    });
    assert_eq!(info.pid, Some(caller_pid), "SO_PEERCRED names the caller");
    assert!(info.pinned(), "this kernel gives the connect-time pidfd");
    assert!(
        !info.still_alive(),
        "the pidfd is the caller's, which is gone: attestation is refused"
    );
    // What a pidfd opened at accept (the old way) would have pinned: the impostor, alive.
    let accept_time = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(caller_pid).unwrap(),
        rustix::process::PidfdFlags::empty(),
    );
    assert!(accept_time.is_ok(), "the old way pins the impostor");
    let status = std::fs::read_to_string(format!("/proc/{caller_pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Gid:") && l.contains("4242")),
        "/proc/<pid> now describes the impostor"
    );
    impostor.kill().unwrap();
    let _ = impostor.wait();
    println!("scenario done");
}

/// The caller of the scenario: connects, then exits at once.
#[test]
fn connect_and_exit() {
    let Some(path) = std::env::var_os(CONNECT_TO) else {
        return;
    };
    let stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    std::mem::forget(stream);
}
