//! Long-lived clients survive an agent restart: `signet svid watch` and `signet-tls`'s Workload
//! API source (under `signet proxy`) reconnect with jittered backoff and carry on, instead of
//! exiting (the chart's example workload restarted with every agent restart). `signet proxy` runs on
//! the same source and is checked too. (`signet helper` does not exist yet.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Deployment, TD, my_uid, signet_bin, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_watch_and_the_tls_source_carry_on_across_an_agent_restart() {
    let mut d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/watcher"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    let log_path = d.dir.path().join("watch.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut watch = Command::new(signet_bin())
        .args(["svid", "watch", "--socket"])
        .arg(d.endpoint())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let watched = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("the first update", Duration::from_secs(10), || {
        watched().contains("--- update 1")
    });

    let source = signet_tls::source::WorkloadSource::start(signet_tls::source::SourceOptions {
        watch_policy: false,
        ..signet_tls::source::SourceOptions::new(d.socket())
    })
    .await
    .unwrap();
    let (_, serial_before) = source.identity().unwrap();

    d.kill_agent();
    // While the agent is away, the watch keeps trying instead of exiting.
    wait_for("a reconnect attempt", Duration::from_secs(10), || {
        watched().contains("reconnecting in")
    });
    assert!(
        watch.try_wait().unwrap().is_none(),
        "svid watch exited:\n{}",
        watched()
    );
    d.start_agent(None);

    // The restarted agent signs new SVIDs: both clients receive them on their new streams.
    wait_for("the watch's next update", Duration::from_secs(30), || {
        watched().contains("--- update 2")
    });
    assert!(
        watch.try_wait().unwrap().is_none(),
        "svid watch exited:\n{}",
        watched()
    );
    let mut changes = source.identity_changes();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if changes
                .borrow_and_update()
                .as_ref()
                .is_some_and(|(_, s)| *s != serial_before)
            {
                break;
            }
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the TLS source kept the old SVID:\n{}", d.logs()));

    let _ = watch.kill();
    let _ = watch.wait();

    // A refusal is not an outage: a process without an identity is told so and exits 1 (a pod
    // restarts and shows why) instead of retrying forever.
    if my_uid() == 0 {
        use std::os::unix::process::CommandExt;
        let out = Command::new(signet_bin())
            .args(["svid", "watch", "--socket"])
            .arg(d.endpoint())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no identity"));
    }
}

/// `signet proxy` (on the same Workload API source) keeps running across an agent restart and
/// installs the SVID the restarted agent signs.
#[test]
fn the_proxy_carries_on_across_an_agent_restart() {
    let mut d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/proxied"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    let (listen, metrics) = (common::free_port(), common::free_port());
    let log_path = d.dir.path().join("proxy.log");
    let mut proxy = Command::new(signet_bin())
        .arg("proxy")
        .args(["--workload-api", &d.endpoint()])
        .arg(format!("--inbound-listen=127.0.0.1:{listen}"))
        .arg("--inbound-forward=127.0.0.1:9")
        .arg("--inbound-protocol=tcp")
        .arg(format!("--metrics-address=127.0.0.1:{metrics}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let logged = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let ready = || common::http_get(metrics, "/readyz").0 == 200;
    wait_for("the proxy to be ready", Duration::from_secs(30), ready);
    assert_eq!(logged().matches("X509-SVID installed").count(), 1);

    d.kill_agent();
    d.start_agent(None);
    wait_for(
        "the proxy to install the new SVID",
        Duration::from_secs(30),
        || logged().matches("X509-SVID installed").count() >= 2,
    );
    assert!(
        proxy.try_wait().unwrap().is_none(),
        "the proxy exited:\n{}",
        logged()
    );
    wait_for("the proxy to stay ready", Duration::from_secs(10), ready);
    let _ = proxy.kill();
    let _ = proxy.wait();
}
