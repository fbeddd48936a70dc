//! The bounded HTTP endpoint: trickled headers are cut off, one source cannot take every
//! connection, and no connection lives forever.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use signet_unix::{ConnectionLimits, EndpointBounds, serve_http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn bounds() -> EndpointBounds {
    EndpointBounds {
        connections: ConnectionLimits {
            total: 8,
            per_peer: 2,
        },
        header_timeout: Duration::from_millis(300),
        lifetime: Duration::from_secs(2),
    }
}

async fn endpoint(bounds: EndpointBounds) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = tower::service_fn(|_request: http::Request<hyper::body::Incoming>| async {
        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"ok\n"),
        )))
    });
    tokio::spawn(serve_http(listener, service, bounds, "test"));
    address
}

async fn from(source: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the peer closes; the bytes read.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the endpoint closed the connection");
    all
}

async fn get(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_request_whose_headers_trickle_is_cut_off() {
    let address = endpoint(bounds()).await;
    let mut slow = from("127.0.0.1", address).await;
    let started = Instant::now();
    slow.write_all(b"GET /livez HTTP/1.1\r\n").await.unwrap();
    let _ = until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn one_source_gets_its_share_and_others_are_still_served() {
    let address = endpoint(bounds()).await;
    let _held: Vec<TcpStream> = hold_two_served_connections(address).await;
    // The third connection from the same source is closed at accept.
    let mut third = from("127.0.0.2", address).await;
    assert!(
        until_closed(&mut third, Duration::from_secs(5))
            .await
            .is_empty()
    );
    // Another source is served.
    let mut other = from("127.0.0.3", address).await;
    assert!(get(&mut other).await.starts_with("HTTP/1.1 200"));
}

async fn hold_two_served_connections(address: std::net::SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = from("127.0.0.2", address).await;
        assert!(get(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    held
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let address = endpoint(bounds()).await;
    let mut stream = from("127.0.0.1", address).await;
    assert!(get(&mut stream).await.starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let _ = until_closed(&mut stream, Duration::from_secs(10)).await;
    // Waiting for the next request counts as reading headers; the lifetime is the backstop.
    assert!(
        started.elapsed() <= Duration::from_secs(2) + Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}
