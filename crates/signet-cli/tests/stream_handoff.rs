//! A Workload API stream handed to another process: the process that connected opens
//! FetchX509SVID, passes the connection on (SCM_RIGHTS) and exits. The stream must not deliver
//! what comes next (rotated private keys) to whoever holds the connection now.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Deployment, TD, my_uid, wait_for};
use hyper_util::rt::TokioIo;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
use signet_proto::workload::X509svidRequest;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;

/// Connects to the socket, sends the connection to its stdin's peer, and exits when told.
const CONNECT_AND_PASS: &str = r#"
import socket, sys
channel = socket.socket(fileno=0)
workload = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
workload.connect(sys.argv[1])
socket.send_fds(channel, [b"x"], [workload.fileno()])
channel.recv(1)
"#;

fn receive_fd(channel: &std::os::unix::net::UnixStream) -> OwnedFd {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    recvmsg(
        channel,
        &mut [IoSliceMut::new(&mut byte)],
        &mut ancillary,
        RecvFlags::empty(),
    )
    .unwrap();
    let received: Vec<OwnedFd> = ancillary
        .drain()
        .filter_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds.collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    received.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_the_process_that_opened_it_is_gone() {
    let d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/first"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });

    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut opener = Command::new("python3")
        .args(["-c", CONNECT_AND_PASS])
        .arg(d.socket())
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .unwrap();
    let connection = receive_fd(&ours);
    let connection = std::os::unix::net::UnixStream::from(connection);
    connection.set_nonblocking(true).unwrap();
    let connection = std::sync::Mutex::new(Some(connection));
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let stream = connection.lock().unwrap().take();
            async move {
                let stream = stream.ok_or_else(|| std::io::Error::other("used"))?;
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::from_std(stream)?))
            }
        }))
        .await
        .unwrap();
    let mut request = tonic::Request::new(X509svidRequest {});
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    // While the opener lives, the stream is served (attested as the opener).
    let mut stream = SpiffeWorkloadApiClient::new(channel)
        .fetch_x509svid(request)
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);

    // The opener exits; the connection lives on in this process.
    std::io::Write::write_all(&mut &ours, b"x").unwrap();
    assert!(opener.wait().unwrap().success());
    // A new identity for the same uid would be pushed with its private key: it must not be.
    d.create_entry(
        &format!("spiffe://{TD}/second"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    let next = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap();
    match next {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}"),
        Ok(Some(update)) => panic!(
            "pushed to a stream whose opener is gone: {} SVIDs",
            update.svids.len()
        ),
        Ok(None) => {}
    }
}
