//! Lingering close. When larder closes a connection whose client is still sending (a 413 is
//! answered before the body is read), closing the socket with unread bytes makes the kernel
//! send a reset, and a client that writes its whole body before reading (Python's urllib and
//! requests do) loses the answer with it. So a connection that ends before its client stopped
//! sending is half-closed (our side done, the answer and a FIN on their way) and what still
//! arrives is read and dropped, for at most [`LINGER_TIME`] and [`LINGER_BYTES`], before the
//! socket closes. Nothing is buffered, and the connection's slot is held until then.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// How long a closing connection keeps reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much it reads at most (at loopback speed, a 64 MiB upload takes well under a second).
pub const LINGER_BYTES: usize = 128 * 1024 * 1024;

/// A client's connection, with the slot it holds under `LARDER_MAX_CONNECTIONS`.
pub struct Lingering {
    stream: Option<TcpStream>,
    slot: Option<OwnedSemaphorePermit>,
    /// The client finished sending: nothing can be left to drain.
    client_done: bool,
}

impl Lingering {
    pub fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        Lingering {
            stream: Some(stream),
            slot: Some(slot),
            client_done: false,
        }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.stream
                .as_mut()
                .expect("the stream is taken only on drop"),
        )
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.stream().poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.client_done = true;
            }
            Poll::Ready(Err(_)) => self.client_done = true,
            _ => {}
        }
        polled
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(stream), slot) = (self.stream.take(), self.slot.take()) else {
            return;
        };
        if self.client_done {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(stream, slot));
        }
    }
}

async fn drain(mut stream: TcpStream, _slot: Option<OwnedSemaphorePermit>) {
    // Our half is done whether or not hyper said so (it does when it closes cleanly).
    let _ = stream.shutdown().await;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut drained = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while drained < LINGER_BYTES {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    })
    .await;
}
