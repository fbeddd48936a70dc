//! Every gRPC client's `:authority`, accepted.
//!
//! gRPC C-core (Python, C++, Ruby, PHP, C#) and grpc-java send the socket path of a Unix-socket
//! target as the HTTP/2 `:authority` (`run%2Fsignet%2Fsockets%2Fapi.sock`), which is not a valid
//! URI authority. The `h2` server under tonic resets every such stream (`RST_STREAM`
//! PROTOCOL_ERROR; hyperium/h2 pull request 487), so py-spiffe and java-spiffe could not talk to
//! the Workload API at all. grpc-go and grpc-js send `localhost` and never hit this.
//!
//! [`AuthorityNormalizer`] sits between the socket and the HTTP/2 server. It reads the client's
//! frames, decodes each header block with HPACK, replaces an `:authority` that is not a valid URI
//! authority by `localhost`, and re-encodes the block with an encoder of its own (so the server's
//! HPACK table mirrors ours, not the client's). Every other frame passes through untouched, byte
//! for byte, and the server's answers are not looked at. The authority never decides anything in
//! Signet (callers are attested from kernel credentials), so normalising it changes no decision.
//!
//! To drop this layer once `h2` accepts such authorities: remove the wrapping at the listeners
//! (`normalize_authority`), and keep the interoperability tests (they must still pass).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may announce: frames we emit never exceed it.
const MAX_EMITTED_FRAME: usize = 16_384;
/// The header table size the server decodes with (HTTP/2's default, which `h2` keeps).
const HEADER_TABLE_SIZE: u32 = 4_096;
/// The largest header block (HEADERS and its CONTINUATIONs) accepted, and the largest header
/// list it may decode to (counted as HTTP/2 does: name + value + 32 per field): twice the 16 KiB
/// that hyper's server accepts, so only blocks the server would refuse anyway are cut off.
pub const MAX_HEADER_BLOCK: usize = 32 * 1024;
/// What replaces an unusable authority.
const REPLACEMENT: &[u8] = b"localhost";

/// Where the reader is in the client's byte stream.
#[derive(Debug)]
enum Phase {
    /// Waiting for the connection preface.
    Preface,
    /// At a frame boundary.
    FrameHeader,
    /// Inside a frame that passes through unchanged: this many payload bytes remain.
    PassThrough(usize),
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    HeaderPayload {
        kind: u8,
        flags: u8,
        stream: u32,
        len: usize,
    },
    /// Not HTTP/2 with prior knowledge: everything passes through.
    Transparent,
}

/// A header block being collected across HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    /// END_STREAM and the priority fields of the HEADERS frame.
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// A connection whose client header blocks are rewritten so that `h2` accepts any
/// `:authority` (see the module documentation). Writes pass through.
pub struct AuthorityNormalizer<S> {
    inner: S,
    phase: Phase,
    /// Bytes read from the client and not yet processed.
    input: BytesMut,
    /// Bytes ready for the server.
    output: BytesMut,
    pending: Option<PendingBlock>,
    decoder: httlib_hpack::Decoder<'static>,
    encoder: httlib_hpack::Encoder<'static>,
    rewritten: u64,
}

impl<S> std::fmt::Debug for AuthorityNormalizer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityNormalizer")
            .field("phase", &self.phase)
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

/// Wraps an accepted connection.
pub fn normalize_authority<S>(inner: S) -> AuthorityNormalizer<S> {
    // A client may not grow our table beyond what the HTTP/2 default allows it; our encoder's
    // table matches what the server's decoder expects.
    let decoder = httlib_hpack::Decoder::with_dynamic_size(HEADER_TABLE_SIZE);
    let encoder = httlib_hpack::Encoder::with_dynamic_size(HEADER_TABLE_SIZE);
    AuthorityNormalizer {
        inner,
        phase: Phase::Preface,
        input: BytesMut::with_capacity(8 * 1024),
        output: BytesMut::new(),
        pending: None,
        decoder,
        encoder,
        rewritten: 0,
    }
}

impl<S> AuthorityNormalizer<S> {
    /// How many header blocks had their `:authority` replaced.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves what can be processed from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.phase {
                Phase::Transparent => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return Ok(());
                }
                Phase::Preface => {
                    let seen = self.input.len().min(PREFACE.len());
                    if self.input[..seen] != PREFACE[..seen] {
                        self.phase = Phase::Transparent;
                        continue;
                    }
                    if seen < PREFACE.len() {
                        return Ok(());
                    }
                    let preface = self.input.split_to(PREFACE.len());
                    self.output.unsplit(preface);
                    self.phase = Phase::FrameHeader;
                }
                Phase::PassThrough(0) => self.phase = Phase::FrameHeader,
                Phase::PassThrough(remaining) => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let take = remaining.min(self.input.len());
                    let bytes = self.input.split_to(take);
                    self.output.unsplit(bytes);
                    self.phase = Phase::PassThrough(remaining - take);
                }
                Phase::FrameHeader => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let header = &self.input[..FRAME_HEADER_LEN];
                    let len = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    let (kind, flags) = (header[3], header[4]);
                    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]])
                        & 0x7fff_ffff;
                    let in_block = self.pending.is_some();
                    if kind == FRAME_HEADERS || kind == FRAME_CONTINUATION || in_block {
                        // A header block is contiguous (RFC 9113 §4.3).
                        if (kind == FRAME_CONTINUATION) != in_block {
                            return Err(protocol_error(
                                "a header block was interleaved with other frames",
                            ));
                        }
                        let collected = self.pending.as_ref().map_or(0, |p| p.fragment.len());
                        if collected + len > MAX_HEADER_BLOCK {
                            return Err(protocol_error("a header block is too large"));
                        }
                        self.input.advance(FRAME_HEADER_LEN);
                        self.phase = Phase::HeaderPayload {
                            kind,
                            flags,
                            stream,
                            len,
                        };
                    } else {
                        let header = self.input.split_to(FRAME_HEADER_LEN);
                        self.output.unsplit(header);
                        self.phase = Phase::PassThrough(len);
                    }
                }
                Phase::HeaderPayload {
                    kind,
                    flags,
                    stream,
                    len,
                } => {
                    if self.input.len() < len {
                        self.input.reserve(len - self.input.len());
                        return Ok(());
                    }
                    let payload = self.input.split_to(len);
                    self.header_frame(kind, flags, stream, &payload)?;
                    self.phase = Phase::FrameHeader;
                }
            }
        }
    }

    fn header_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        if kind == FRAME_HEADERS {
            let mut fragment = payload;
            let mut padding = 0;
            if flags & FLAG_PADDED != 0 {
                let (&pad, rest) = fragment
                    .split_first()
                    .ok_or_else(|| protocol_error("a padded HEADERS frame is empty"))?;
                padding = usize::from(pad);
                fragment = rest;
            }
            let mut priority = None;
            if flags & FLAG_PRIORITY != 0 {
                let (fields, rest) = fragment
                    .split_first_chunk::<5>()
                    .ok_or_else(|| protocol_error("a HEADERS frame lacks its priority"))?;
                priority = Some(*fields);
                fragment = rest;
            }
            let fragment = fragment
                .get(..fragment.len().checked_sub(padding).unwrap_or(usize::MAX))
                .ok_or_else(|| protocol_error("HEADERS padding exceeds the frame"))?;
            self.pending = Some(PendingBlock {
                stream,
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
                fragment: fragment.to_vec(),
            });
        } else {
            let pending = self
                .pending
                .as_mut()
                .filter(|p| p.stream == stream)
                .ok_or_else(|| protocol_error("a CONTINUATION frame for another stream"))?;
            pending.fragment.extend_from_slice(payload);
        }
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.pending.take()
        {
            self.emit(block)?;
        }
        Ok(())
    }

    fn emit(&mut self, block: PendingBlock) -> io::Result<()> {
        let mut remaining = block.fragment;
        let mut encoded = Vec::with_capacity(remaining.len() + 16);
        let mut list_size = 0;
        let mut size_updates = 0;
        let mut fields_seen = false;
        while let Some(&first) = remaining.first() {
            // RFC 7541 §4.2: at most two table size updates, and only before the first field
            // (each one otherwise costs a shift of the whole block and decodes to nothing).
            if first & 0xE0 == 0x20 {
                size_updates += 1;
                if fields_seen || size_updates > 2 {
                    return Err(protocol_error("misplaced HPACK table size update"));
                }
            } else {
                fields_seen = true;
            }
            // One field at a time, so an oversized list is refused before it is all decoded.
            // The decoder indexes past the end of some truncated inputs: a panic there is a
            // malformed block, never a dead task.
            let mut decoded = Vec::with_capacity(1);
            let decoder = &mut self.decoder;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decoder.decode_exact(&mut remaining, &mut decoded)
            }));
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(protocol_error(&format!("undecodable header block: {e:?}")));
                }
                Err(_) => return Err(protocol_error("truncated header block")),
            }
            for (name, mut value, flags) in decoded {
                list_size += name.len() + value.len() + 32;
                if list_size > MAX_HEADER_BLOCK {
                    return Err(protocol_error("a header list is too large"));
                }
                if name.as_slice() == b":authority" && !valid_authority(&value) {
                    value = REPLACEMENT.to_vec();
                    self.rewritten += 1;
                }
                // Fields the client marked never-indexed stay so; the rest may be indexed in
                // the table our encoder shares with the server's decoder.
                let flags = if flags & httlib_hpack::Decoder::NEVER_INDEXED != 0 {
                    httlib_hpack::Encoder::NEVER_INDEXED
                } else {
                    httlib_hpack::Encoder::BEST_FORMAT | httlib_hpack::Encoder::WITH_INDEXING
                };
                self.encoder
                    .encode((name, value, flags), &mut encoded)
                    .map_err(|e| protocol_error(&format!("unencodable header: {e:?}")))?;
            }
        }
        let first_room = MAX_EMITTED_FRAME - block.priority.map_or(0, |p| p.len());
        let (first, mut rest) = encoded.split_at(first_room.min(encoded.len()));
        let mut flags = 0;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if block.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        let priority_len = block.priority.map_or(0, |p| p.len());
        self.frame_header(
            first.len() + priority_len,
            FRAME_HEADERS,
            flags,
            block.stream,
        );
        if let Some(fields) = block.priority {
            self.output.put_slice(&fields);
        }
        self.output.put_slice(first);
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(MAX_EMITTED_FRAME.min(rest.len()));
            let flags = if after.is_empty() {
                FLAG_END_HEADERS
            } else {
                0
            };
            self.frame_header(chunk.len(), FRAME_CONTINUATION, flags, block.stream);
            self.output.put_slice(chunk);
            rest = after;
        }
        Ok(())
    }

    fn frame_header(&mut self, len: usize, kind: u8, flags: u8, stream: u32) {
        let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        self.output.put_slice(&len[1..]);
        self.output.put_u8(kind);
        self.output.put_u8(flags);
        self.output.put_u32(stream);
    }
}

/// Whether `h2` accepts the value as a URI authority.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "HTTP/2: the connection ended inside a frame",
    )
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2: {what}"))
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityNormalizer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Read straight into the reader's buffer when nothing needs a look.
            if this.input.is_empty() {
                match this.phase {
                    Phase::Transparent => return Pin::new(&mut this.inner).poll_read(cx, buf),
                    Phase::PassThrough(remaining) if remaining > 0 => {
                        let room = buf.initialize_unfilled_to(remaining.min(buf.remaining()));
                        let mut direct = ReadBuf::new(room);
                        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut direct))?;
                        let n = direct.filled().len();
                        if n == 0 {
                            return Poll::Ready(Err(truncated()));
                        }
                        buf.advance(n);
                        this.phase = Phase::PassThrough(remaining - n);
                        return Poll::Ready(Ok(()));
                    }
                    _ => {}
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                if this.input.is_empty() && this.pending.is_none() {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(truncated()));
            }
            this.input.extend_from_slice(read.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityNormalizer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityNormalizer<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
