//! The `:authority` normalizer, fed the bytes a gRPC C-core client sends over a Unix socket, and
//! put in front of a real `h2` server (hyper) that resets such streams on its own.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::time::Duration;

use signet_unix::{MAX_HEADER_BLOCK, normalize_authority};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// What grpcio 1.8x sends for `unix:///run/signet/sockets/api.sock` (captured on a real cluster).
const C_CORE_AUTHORITY: &str = "run%2Fsignet%2Fsockets%2Fapi.sock";

#[derive(Debug, Clone, PartialEq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = len[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

fn parse(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        frames.push(Frame {
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes(bytes[5..9].try_into().unwrap()),
            payload: bytes[9..9 + len].to_vec(),
        });
        bytes = &bytes[9 + len..];
    }
    frames
}

fn request_headers(authority: &str, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("workload.spiffe.io", "true"),
        (
            "user-agent",
            "grpc-python/1.80.0 grpc-c/52.0.0 (linux; chttp2)",
        ),
    ]
    .into_iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

/// Encodes as gRPC clients do: Huffman-coded strings, indexed in the dynamic table.
fn encode(encoder: &mut httlib_hpack::Encoder<'_>, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    use httlib_hpack::Encoder;
    let flags = Encoder::HUFFMAN_NAME
        | Encoder::HUFFMAN_VALUE
        | Encoder::WITH_INDEXING
        | Encoder::BEST_FORMAT;
    let mut out = Vec::new();
    for (name, value) in fields {
        encoder
            .encode((name.clone(), value.clone(), flags), &mut out)
            .unwrap();
    }
    out
}

fn client_encoder() -> httlib_hpack::Encoder<'static> {
    httlib_hpack::Encoder::with_dynamic_size(4096)
}

/// Runs `input` through the normalizer and returns what the server would read.
async fn normalized(input: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let writer = tokio::spawn(async move {
        // In small pieces, so frames arrive split at every possible place.
        for piece in input.chunks(7) {
            client.write_all(piece).await.unwrap();
        }
        client.shutdown().await.unwrap();
    });
    let mut normalizer = normalize_authority(server);
    let mut out = Vec::new();
    let result = normalizer.read_to_end(&mut out).await;
    writer.await.unwrap();
    result.map(|_| out)
}

fn decode_blocks(frames: &[Frame]) -> Vec<(u32, Vec<(String, String)>)> {
    let mut decoder = httlib_hpack::Decoder::with_dynamic_size(4096);
    let mut blocks = Vec::new();
    let mut current: Option<(u32, Vec<u8>)> = None;
    for f in frames.iter().filter(|f| f.kind == 0x1 || f.kind == 0x9) {
        let mut payload = f.payload.as_slice();
        if f.kind == 0x1 {
            assert_eq!(f.flags & 0x8, 0, "no padding is emitted");
            if f.flags & 0x20 != 0 {
                payload = &payload[5..];
            }
            current = Some((f.stream, payload.to_vec()));
        } else {
            current.as_mut().unwrap().1.extend(payload);
        }
        if f.flags & 0x4 != 0 {
            let (stream, mut block) = current.take().unwrap();
            let mut decoded = Vec::new();
            decoder.decode(&mut block, &mut decoded).unwrap();
            let fields = decoded
                .into_iter()
                .map(|(n, v, _)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                .collect();
            blocks.push((stream, fields));
        }
    }
    blocks
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields.iter().find(|(n, _)| n == name).unwrap().1
}

#[tokio::test]
async fn a_socket_path_authority_becomes_localhost_and_everything_else_is_kept() {
    let mut client = client_encoder();
    let mut input = PREFACE.to_vec();
    let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    input.extend(&settings);
    let data = frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]);
    for (stream, authority) in [
        (1u32, C_CORE_AUTHORITY),
        (3, "/tmp/x/api.sock"),
        (5, "localhost:8080"),
    ] {
        let block = encode(
            &mut client,
            &request_headers(authority, "/SpiffeWorkloadAPI/FetchX509SVID"),
        );
        input.extend(frame(0x1, 0x4, stream, &block));
        input.extend(frame(0x0, 0x1, stream, &[0, 0, 0, 0, 0]));
    }
    let output = normalized(input).await.unwrap();
    assert!(output.starts_with(PREFACE));
    let frames = parse(&output[PREFACE.len()..]);
    assert_eq!(frames[0], parse(&settings)[0], "SETTINGS untouched");
    assert_eq!(
        frames[2],
        Frame {
            stream: 1,
            ..parse(&data)[0].clone()
        },
        "DATA untouched"
    );
    let blocks = decode_blocks(&frames);
    let authorities: Vec<_> = blocks
        .iter()
        .map(|(s, f)| (*s, field(f, ":authority").to_owned()))
        .collect();
    assert_eq!(
        authorities,
        [
            (1, "localhost".into()),
            (3, "localhost".into()),
            (5, "localhost:8080".into())
        ],
        "invalid authorities replaced, valid ones kept"
    );
    for (_, fields) in &blocks {
        assert_eq!(fields.len(), 8, "no field lost or added");
        assert_eq!(field(fields, ":path"), "/SpiffeWorkloadAPI/FetchX509SVID");
        assert_eq!(field(fields, "workload.spiffe.io"), "true");
        assert_eq!(field(fields, ":method"), "POST");
    }
}

#[tokio::test]
async fn padding_priority_continuations_and_end_stream_survive() {
    let mut client = client_encoder();
    let mut fields = request_headers(C_CORE_AUTHORITY, "/SpiffeWorkloadAPI/FetchJWTSVID");
    // A block larger than one frame, so the output needs CONTINUATION frames too.
    // Huffman-coded by the client (5 bits a letter), written raw by the normalizer: more than
    // one frame on the way out.
    fields.push((b"x-big".to_vec(), vec![b'a'; 20_000]));
    let block = encode(&mut client, &fields);
    let (first, rest) = block.split_at(100);
    let (second, third) = rest.split_at(1000);
    let mut headers = vec![3u8]; // pad length
    headers.extend([0x80, 0, 0, 1, 200]); // exclusive dependency on stream 1, weight 200
    headers.extend(first);
    headers.extend([0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x1, 0x8 | 0x20 | 0x1, 7, &headers));
    input.extend(frame(0x9, 0, 7, second));
    input.extend(frame(0x9, 0x4, 7, third));
    let output = normalized(input).await.unwrap();
    let frames = parse(&output[PREFACE.len()..]);
    assert_eq!(frames[0].kind, 0x1);
    assert_eq!(
        frames[0].flags,
        0x20 | 0x1,
        "priority and END_STREAM kept, padding dropped"
    );
    assert_eq!(frames[0].payload[..5], [0x80, 0, 0, 1, 200]);
    assert!(frames.iter().all(|f| f.payload.len() <= 16_384));
    assert!(frames[1..].iter().all(|f| f.kind == 0x9 && f.stream == 7));
    assert_eq!(frames.last().unwrap().flags, 0x4);
    let blocks = decode_blocks(&frames);
    assert_eq!(field(&blocks[0].1, ":authority"), "localhost");
    assert_eq!(field(&blocks[0].1, "x-big").len(), 20_000);
}

#[tokio::test]
async fn malformed_or_oversized_header_blocks_end_the_connection() {
    let mut client = client_encoder();
    let block = encode(&mut client, &request_headers(C_CORE_AUTHORITY, "/x"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("CONTINUATION without HEADERS", frame(0x9, 0x4, 1, &block)),
        (
            "DATA inside a header block",
            [frame(0x1, 0, 1, &block), frame(0x0, 0, 1, b"x")].concat(),
        ),
        (
            "CONTINUATION of another stream",
            [frame(0x1, 0, 1, &block), frame(0x9, 0x4, 3, b"")].concat(),
        ),
        (
            "padding longer than the frame",
            frame(0x1, 0x4 | 0x8, 1, &[200, 1, 2]),
        ),
        ("priority missing", frame(0x1, 0x4 | 0x20, 1, &[1, 2])),
        (
            "undecodable block",
            frame(0x1, 0x4, 1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ),
        ("integer cut short", frame(0x1, 0x4, 1, &[0xff])),
        ("literal without its value", frame(0x1, 0x4, 1, &[0x41])),
        (
            "table size updates everywhere",
            frame(0x1, 0x4, 1, &[0x20; 32 * 1024 - 1]),
        ),
        (
            "a block over the limit",
            (0..=MAX_HEADER_BLOCK / 16_384)
                .flat_map(|i| frame(if i == 0 { 0x1 } else { 0x9 }, 0, 1, &[0; 16_384]))
                .collect(),
        ),
        (
            "a connection cut inside a frame",
            frame(0x1, 0x4, 1, &block)[..20].to_vec(),
        ),
    ];
    for (name, frames) in cases {
        let input = [PREFACE.to_vec(), frames].concat();
        let error = normalized(input).await.expect_err(name);
        assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
            "{name}: {error}"
        );
    }
}

#[tokio::test]
async fn what_is_not_http2_passes_through_unchanged() {
    let request = b"GET /livez HTTP/1.1\r\nHost: /tmp/x.sock\r\n\r\n".to_vec();
    assert_eq!(normalized(request.clone()).await.unwrap(), request);
    let big_data = [PREFACE.to_vec(), frame(0x0, 0, 1, &vec![7; 1 << 20])].concat();
    assert_eq!(normalized(big_data.clone()).await.unwrap(), big_data);
}

/// A real `h2` server resets the stream of a C-core client; behind the normalizer it answers.
#[tokio::test]
async fn a_real_h2_server_answers_a_c_core_client_only_through_the_normalizer() {
    for through_normalizer in [false, true] {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let service = hyper::service::service_fn(
            |request: http::Request<hyper::body::Incoming>| async move {
                let authority = request
                    .uri()
                    .authority()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(authority),
                )))
            },
        );
        let executor = hyper_util::rt::TokioExecutor::new();
        tokio::spawn(async move {
            let builder = hyper::server::conn::http2::Builder::new(executor);
            if through_normalizer {
                let io = hyper_util::rt::TokioIo::new(normalize_authority(server));
                let _ = builder.serve_connection(io, service).await;
            } else {
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(server), service)
                    .await;
            }
        });
        let mut encoder = client_encoder();
        let block = encode(
            &mut encoder,
            &request_headers(C_CORE_AUTHORITY, "/SpiffeWorkloadAPI/FetchX509SVID"),
        );
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(0x1, 0x4 | 0x1, 1, &block));
        client.write_all(&input).await.unwrap();
        // Read until the server answers stream 1 with HEADERS or RST_STREAM.
        let mut received = Vec::new();
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut chunk = [0u8; 4096];
                let n = client.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the server closed without answering");
                received.extend(&chunk[..n]);
                if let Some(f) = complete_frames(&received)
                    .into_iter()
                    .find(|f| f.stream == 1 && (f.kind == 0x1 || f.kind == 0x3))
                {
                    return f;
                }
            }
        })
        .await
        .unwrap();
        if through_normalizer {
            assert_eq!(answer.kind, 0x1, "HEADERS: the request was served");
        } else {
            assert_eq!(
                answer.kind, 0x3,
                "RST_STREAM: h2 refuses the authority by itself"
            );
            assert_eq!(answer.payload, 1u32.to_be_bytes(), "PROTOCOL_ERROR");
        }
    }
}

fn complete_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + len {
            break;
        }
        frames.extend(parse(&bytes[..9 + len]));
        bytes = &bytes[9 + len..];
    }
    frames
}
