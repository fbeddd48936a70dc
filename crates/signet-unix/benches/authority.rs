//! What the `:authority` normalizer costs per request: `cargo bench -p signet-unix`.
//!
//! 1. Header processing alone: C-core-shaped requests (HEADERS with a socket-path authority, then
//!    a small DATA frame) pushed through the normalizer in memory, against the same bytes copied
//!    through unchanged.
//! 2. End to end: sequential unary HTTP/2 requests from hyper's client to hyper's server over a
//!    real Unix socket, with and without the normalizer in front of the server.
//!    `SIGNET_BENCH_REQUESTS` sets the count (default 20,000).

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "bench binary")]

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use signet_test_support::percentile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = len[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

fn c_core_requests(count: u32) -> Vec<u8> {
    let mut encoder = httlib_hpack::Encoder::with_dynamic_size(4096);
    let flags = httlib_hpack::Encoder::HUFFMAN_NAME
        | httlib_hpack::Encoder::HUFFMAN_VALUE
        | httlib_hpack::Encoder::WITH_INDEXING
        | httlib_hpack::Encoder::BEST_FORMAT;
    let mut bytes = PREFACE.to_vec();
    for i in 0..count {
        let stream = 2 * i + 1;
        let headers: [(&[u8], &[u8]); 8] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/SpiffeWorkloadAPI/FetchJWTSVID"),
            (b":authority", b"run%2Fsignet%2Fsockets%2Fapi.sock"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"workload.spiffe.io", b"true"),
            (
                b"user-agent",
                b"grpc-python/1.76.0 grpc-c/51.0.0 (linux; chttp2)",
            ),
        ];
        let mut block = Vec::new();
        for (name, value) in headers {
            encoder
                .encode((name.to_vec(), value.to_vec(), flags), &mut block)
                .unwrap();
        }
        bytes.extend(frame(0x1, 0x4, stream, &block));
        bytes.extend(frame(0x0, 0x1, stream, b"\0\0\0\0\x0e\n\x0cinterop-test"));
    }
    bytes
}

async fn drain(input: Vec<u8>, normalize: bool) -> Duration {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let writer = tokio::spawn(async move {
        client.write_all(&input).await.unwrap();
        client.shutdown().await.unwrap();
    });
    let start = Instant::now();
    let mut sink = Vec::with_capacity(1 << 24);
    if normalize {
        signet_unix::normalize_authority(server)
            .read_to_end(&mut sink)
            .await
            .unwrap();
    } else {
        let mut server = server;
        server.read_to_end(&mut sink).await.unwrap();
    }
    let elapsed = start.elapsed();
    writer.await.unwrap();
    elapsed
}

async fn serve(listener: tokio::net::UnixListener, normalize: bool) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |request: http::Request<hyper::body::Incoming>| async move {
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
                },
            );
            let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            if normalize {
                let io = TokioIo::new(signet_unix::normalize_authority(stream));
                let _ = builder.serve_connection(io, service).await;
            } else {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
    }
}

async fn end_to_end(requests: usize, normalize: bool) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(serve(listener, normalize));
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let request = http::Request::post("http://localhost/SpiffeWorkloadAPI/FetchJWTSVID")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("workload.spiffe.io", "true")
            .body(Full::new(bytes::Bytes::from_static(
                b"\0\0\0\0\x0e\n\x0cinterop-test",
            )))
            .unwrap();
        let start = Instant::now();
        let response = sender.send_request(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        samples.push(start.elapsed());
    }
    server.abort();
    samples
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let requests: usize = std::env::var("SIGNET_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    runtime.block_on(async {
        let input = c_core_requests(u32::try_from(requests).unwrap());
        let (mut raw, mut normalized) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            raw = raw.min(drain(input.clone(), false).await);
            normalized = normalized.min(drain(input.clone(), true).await);
        }
        let per = |d: Duration| d.as_secs_f64() * 1e9 / requests as f64;
        println!(
            "header processing ({requests} C-core requests, best of 5): copy {:.0} ns/request, normalizer {:.0} ns/request (+{:.0} ns)",
            per(raw),
            per(normalized),
            per(normalized) - per(raw)
        );
        for round in 1..=2 {
            for normalize in [false, true] {
                let mut samples = end_to_end(requests, normalize).await;
                let total: Duration = samples.iter().sum();
                samples.sort();
                println!(
                    "round {round} {:<17} {requests} sequential requests over a Unix socket: {:>7.0} req/s p50={:>6.1?} p99={:>6.1?}",
                    if normalize { "with normalizer:" } else { "without:" },
                    requests as f64 / total.as_secs_f64(),
                    percentile(&mut samples, 0.5),
                    percentile(&mut samples, 0.99),
                );
            }
        }
    });
}
