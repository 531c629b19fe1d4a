//! The guard under hyper that polices request heads: their framing and their deadline.
//!
//! Framing: hyper frames a request that carries both
//! `Content-Length` and `Transfer-Encoding` by `Transfer-Encoding` alone and drops
//! `Content-Length` before any service sees it (RFC 9112 §6.3 allows that); the contract
//! refuses such a request with 400 instead, since a proxy in front may have framed it the
//! other way. So each HTTP/1 connection's bytes pass through here first: request heads are
//! parsed with httparse (hyper's own parser), bodies are skipped by their framing, and a head
//! with ambiguous framing loses its framing headers in favour of one marker header, which the
//! request-context middleware answers with a 400 problem and `Connection: close`. After such a
//! head the guard stops looking: nothing more is read from that connection.
//!
//! Whatever the guard cannot follow (an HTTP/2 preface, a malformed head, a head too large)
//! it hands on untouched and stops inspecting, so hyper's own answer (400, 431) stands.
//!
//! Deadline (slowloris): once a request is read and answered, the next head must arrive whole
//! within the header timeout, or the connection is closed. hyper can do this itself, but
//! allocates, registers and cancels a timer for every request; here one timer per
//! connection is re-armed only when it fires early, which under keep-alive load is once per
//! timeout period instead of once per request.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::HeaderName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::server::MAX_HEADER_BYTES;

/// The header a neutralised head carries instead of its framing headers; its value says why.
pub const FRAMING_ERROR_HEADER: HeaderName = HeaderName::from_static("x-larder-framing-error");

/// The most headers in one head: hyper's default (a head with more is hyper's 431).
const MAX_HEADERS: usize = 100;
/// A chunk-size line longer than this is not followed (hyper decides about it).
const MAX_CHUNK_LINE: usize = 4096;

/// Where in the request stream the next byte belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Head,
    /// A `Content-Length` body: this many bytes are left.
    Body(u64),
    ChunkSize,
    /// Chunk data (this many bytes left), then its CRLF.
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers,
    /// Not inspecting any more.
    Passthrough,
}

/// What one pass over freshly read bytes found.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// Every byte may go on to hyper.
    Clear,
    /// Bytes from this offset start a head (or chunk line) that has not fully arrived.
    Incomplete(usize),
    /// The head at `start..end` must be replaced by `head`.
    Rewrite {
        start: usize,
        end: usize,
        head: Vec<u8>,
    },
}

/// The marker's values: why a head's framing was refused.
const BOTH_FRAMINGS: &str = "content-length-and-transfer-encoding";
const CONFLICTING_LENGTHS: &str = "conflicting-content-length";

/// The problem detail for a refused head, from its marker's value.
pub fn framing_error_detail(marker: &[u8]) -> &'static str {
    if marker == BOTH_FRAMINGS.as_bytes() {
        "A request may not carry both Content-Length and Transfer-Encoding"
    } else if marker == CONFLICTING_LENGTHS.as_bytes() {
        "The request carries differing Content-Length values"
    } else {
        "The request's framing is ambiguous"
    }
}

/// Why a head's framing is refused.
fn framing_error(headers: &[httparse::Header<'_>]) -> Option<&'static str> {
    let mut lengths = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let has_length = lengths.clone().next().is_some();
    let has_encoding = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    if has_length && has_encoding {
        return Some(BOTH_FRAMINGS);
    }
    if let Some(first) = lengths.next()
        && lengths.any(|other| other.value.trim_ascii() != first.value.trim_ascii())
    {
        return Some(CONFLICTING_LENGTHS);
    }
    None
}

/// The body framing of a head whose framing is not refused; `None` when the guard should
/// stop following the connection (hyper will refuse what it cannot frame).
fn body_phase(headers: &[httparse::Header<'_>]) -> Option<Phase> {
    if let Some(encoding) = headers
        .iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        let last = encoding.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
        return last
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
            .then_some(Phase::ChunkSize);
    }
    match headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        None => Some(Phase::Head),
        Some(length) => {
            let digits = length.value.trim_ascii();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let length: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            Some(if length == 0 {
                Phase::Head
            } else {
                Phase::Body(length)
            })
        }
    }
}

/// The head again, without its framing headers and with the marker.
fn neutralised_head(request: &httparse::Request<'_, '_>, reason: &str) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(request.method.unwrap_or("GET").as_bytes());
    head.push(b' ');
    head.extend_from_slice(request.path.unwrap_or("/").as_bytes());
    head.extend_from_slice(match request.version {
        Some(0) => b" HTTP/1.0\r\n",
        _ => b" HTTP/1.1\r\n",
    });
    for header in request.headers.iter() {
        let framing = header.name.eq_ignore_ascii_case("content-length")
            || header.name.eq_ignore_ascii_case("transfer-encoding");
        if !framing {
            head.extend_from_slice(header.name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(header.value);
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(FRAMING_ERROR_HEADER.as_str().as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(reason.as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// The request-stream follower: which phase the next byte is in.
#[derive(Debug)]
struct Follower {
    phase: Phase,
    /// Request heads seen whole so far.
    heads: u64,
}

impl Follower {
    /// Walks `data`, advancing the phase over every complete unit.
    fn walk(&mut self, data: &[u8]) -> Walk {
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            match self.phase {
                Phase::Passthrough => return Walk::Clear,
                Phase::Head => {
                    // Uninitialised slots, as hyper does: zeroing 100 headers per request
                    // costs more than parsing a small head.
                    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
                    let mut request = httparse::Request::new(&mut []);
                    let parsed = httparse::ParserConfig::default()
                        .parse_request_with_uninit_headers(&mut request, rest, &mut headers);
                    match parsed {
                        Ok(httparse::Status::Complete(length)) => {
                            if let Some(reason) = framing_error(request.headers) {
                                self.phase = Phase::Passthrough;
                                self.heads += 1;
                                return Walk::Rewrite {
                                    start: at,
                                    end: at + length,
                                    head: neutralised_head(&request, reason),
                                };
                            }
                            self.phase = body_phase(request.headers).unwrap_or(Phase::Passthrough);
                            self.heads += 1;
                            at += length;
                        }
                        Ok(httparse::Status::Partial) if rest.len() <= MAX_HEADER_BYTES => {
                            return Walk::Incomplete(at);
                        }
                        _ => self.phase = Phase::Passthrough,
                    }
                }
                Phase::Body(left) => {
                    let taken = left.min(rest.len() as u64);
                    at += taken as usize;
                    self.phase = if taken == left {
                        Phase::Head
                    } else {
                        Phase::Body(left - taken)
                    };
                }
                Phase::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((length, 0))) => {
                        at += length;
                        self.phase = Phase::Trailers;
                    }
                    Ok(httparse::Status::Complete((length, size))) => {
                        at += length;
                        self.phase = Phase::ChunkData(size);
                    }
                    Ok(httparse::Status::Partial) if rest.len() <= MAX_CHUNK_LINE => {
                        return Walk::Incomplete(at);
                    }
                    _ => self.phase = Phase::Passthrough,
                },
                Phase::ChunkData(left) => {
                    let taken = left.min(rest.len() as u64);
                    at += taken as usize;
                    self.phase = if taken == left {
                        Phase::ChunkEnd(2)
                    } else {
                        Phase::ChunkData(left - taken)
                    };
                }
                Phase::ChunkEnd(left) => {
                    let taken = usize::from(left).min(rest.len());
                    at += taken;
                    self.phase = match left as usize - taken {
                        0 => Phase::ChunkSize,
                        more => Phase::ChunkEnd(more as u8),
                    };
                }
                Phase::Trailers => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(rest, &mut headers) {
                        Ok(httparse::Status::Complete((length, _))) => {
                            at += length;
                            self.phase = Phase::Head;
                        }
                        Ok(httparse::Status::Partial) if rest.len() <= MAX_HEADER_BYTES => {
                            return Walk::Incomplete(at);
                        }
                        _ => self.phase = Phase::Passthrough,
                    }
                }
            }
        }
        Walk::Clear
    }
}

/// A connection's stream with the head guard on its reading side.
pub struct HeadGuard<S> {
    inner: S,
    follower: Follower,
    head_timeout: Duration,
    /// Since when the next head is awaited: set once the request before it is read and
    /// answered, cleared when the next head is whole (`None` while a request is served).
    awaiting_since: Option<Instant>,
    /// Whether a byte of the answer to the current request has been written.
    answered: bool,
    /// The connection's one timer; it may be set earlier than the deadline, never later.
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes read but held back: the start of a unit that has not fully arrived.
    held: Vec<u8>,
    /// Bytes inspected and waiting for room in hyper's buffer.
    ready: Vec<u8>,
    ready_from: usize,
}

impl<S> HeadGuard<S> {
    pub fn new(inner: S, head_timeout: Duration) -> Self {
        Self {
            inner,
            follower: Follower {
                phase: Phase::Head,
                heads: 0,
            },
            head_timeout,
            awaiting_since: Some(Instant::now()),
            answered: false,
            timer: None,
            held: Vec::new(),
            ready: Vec::new(),
            ready_from: 0,
        }
    }

    /// Answer bytes went out: once the request is read too, the next head is awaited from
    /// now (each write restarts the clock, so a long answer does not eat into it).
    fn wrote(&mut self, cx: &mut Context<'_>) {
        self.answered = true;
        if self.follower.phase == Phase::Head && self.follower.heads > 0 {
            self.awaiting_since = Some(Instant::now());
            // hyper may not read again before the client sends: the timer must already
            // hold this task's waker, or an idle connection would never be closed.
            let _ = self.poll_head_deadline(cx);
        }
    }

    /// Walks `data` and keeps the head clock in step with what was seen.
    fn walk(&mut self, data: &[u8]) -> Walk {
        let heads = self.follower.heads;
        let walk = self.follower.walk(data);
        if self.follower.heads != heads {
            self.awaiting_since = None;
            self.answered = false;
        }
        // A request answered before its body was read (413, say) is done once the body is.
        if self.answered && self.awaiting_since.is_none() && self.follower.phase == Phase::Head {
            self.awaiting_since = Some(Instant::now());
        }
        walk
    }

    /// Ready with an error once the awaited head is overdue; else pending, with the
    /// connection's timer set to wake the task by the deadline.
    fn poll_head_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(since) = self.awaiting_since else {
            return Poll::Pending;
        };
        if self.follower.phase == Phase::Passthrough {
            return Poll::Pending;
        }
        let deadline = since + self.head_timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request head did not arrive in time",
                ));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }

    /// Takes the result of walking `data` (which was held back, not yet in hyper's buffer).
    fn settle_held(&mut self, mut data: Vec<u8>) {
        match self.walk(&data) {
            Walk::Clear => self.ready = data,
            Walk::Incomplete(at) => {
                self.held = data.split_off(at);
                self.ready = data;
            }
            Walk::Rewrite { start, end, head } => {
                data.splice(start..end, head);
                self.ready = data;
            }
        }
        self.ready_from = 0;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_from < this.ready.len() {
                let waiting = &this.ready[this.ready_from..];
                let count = waiting.len().min(buf.remaining());
                buf.put_slice(&waiting[..count]);
                this.ready_from += count;
                if this.ready_from == this.ready.len() {
                    this.ready.clear();
                    this.ready_from = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.held.is_empty() {
                if this.follower.phase == Phase::Passthrough {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }

                // The usual case: read straight into hyper's buffer and look at it there.
                let start = buf.filled().len();
                if Pin::new(&mut this.inner).poll_read(cx, buf)?.is_pending() {
                    return this.poll_head_deadline(cx).map(Err);
                }
                if buf.filled().len() == start {
                    return Poll::Ready(Ok(()));
                }
                match this.walk(&buf.filled()[start..]) {
                    Walk::Clear => return Poll::Ready(Ok(())),
                    Walk::Incomplete(at) => {
                        this.held.extend_from_slice(&buf.filled()[start + at..]);
                        buf.set_filled(start + at);
                        if at > 0 {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Walk::Rewrite {
                        start: head_start,
                        end,
                        head,
                    } => {
                        let mut rewritten = head;
                        rewritten.extend_from_slice(&buf.filled()[start + end..]);
                        this.ready = rewritten;
                        this.ready_from = 0;
                        buf.set_filled(start + head_start);
                        if head_start > 0 {
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
            } else {
                let mut chunk = [0u8; 8192];
                let mut more = ReadBuf::new(&mut chunk);
                if Pin::new(&mut this.inner)
                    .poll_read(cx, &mut more)?
                    .is_pending()
                {
                    return this.poll_head_deadline(cx).map(Err);
                }
                let mut data = std::mem::take(&mut this.held);
                if more.filled().is_empty() {
                    // The peer stopped mid-head: hand on what came; hyper reports it.
                    this.follower.phase = Phase::Passthrough;
                    this.ready = data;
                    this.ready_from = 0;
                    if this.ready.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
                data.extend_from_slice(more.filled());
                this.settle_held(data);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.wrote(cx);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.wrote(cx);
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Everything a guard hands on when `input` arrives in pieces of `piece` bytes.
    async fn through_guard(input: &[u8], piece: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for part in input.chunks(piece) {
                client.write_all(part).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
        });
        let mut guard = HeadGuard::new(server, Duration::from_secs(60));
        let mut out = Vec::new();
        let mut small = [0u8; 37];
        loop {
            let n = guard.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&small[..n]);
        }
        writer.await.unwrap();
        out
    }

    const CLEAN: &[u8] = b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        POST /items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n\
        GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test]
    async fn clean_requests_pass_unchanged_however_they_arrive() {
        for piece in [1, 2, 3, 7, 16, 64, 4096] {
            assert_eq!(
                through_guard(CLEAN, piece).await,
                CLEAN,
                "pieces of {piece}"
            );
        }
    }

    #[tokio::test]
    async fn length_and_encoding_together_become_the_marker_after_earlier_requests() {
        let smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
            0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n";
        let expected = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /items HTTP/1.1\r\nHost: x\r\nx-larder-framing-error: content-length-and-transfer-encoding\r\n\r\n\
            0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n";
        for piece in [1, 5, 40, 4096] {
            assert_eq!(
                String::from_utf8(through_guard(smuggled, piece).await).unwrap(),
                String::from_utf8(expected.to_vec()).unwrap(),
                "pieces of {piece}"
            );
        }
    }

    #[tokio::test]
    async fn body_bytes_that_look_like_a_head_are_not_touched() {
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!(
            "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        assert_eq!(through_guard(&input, 9).await, input);
    }

    #[test]
    fn differing_lengths_are_refused_and_equal_ones_are_not() {
        let header = |value: &'static str| httparse::Header {
            name: "Content-Length",
            value: value.as_bytes(),
        };
        assert_eq!(
            framing_error(&[header("4"), header("5")]),
            Some("conflicting-content-length")
        );
        assert_eq!(framing_error(&[header("4"), header("4")]), None);
    }

    #[tokio::test]
    async fn what_the_guard_cannot_follow_passes_untouched() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(through_guard(preface, 3).await, preface);
        let cut = b"GET / HTTP/1.1\r\nHost: x\r\n";
        assert_eq!(through_guard(cut, 4).await, cut);
    }
}
