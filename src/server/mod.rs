//! Transport only: the accept loop (hyper-util, HTTP/1.1 and HTTP/2), graceful shutdown and
//! connection limits. It knows the service `http::service` builds, and no route.
//!
//! axum's own `serve` has no timers, so a client could hold a connection forever by sending
//! headers a byte at a time (slowloris); here hyper's `header_read_timeout` bounds every
//! head (the first and each keep-alive one), its buffer bounds their size (larger heads are
//! answered 431), and hyper frames every request itself: one with both `Content-Length` and
//! `Transfer-Encoding` is framed by `Transfer-Encoding` and its connection closed after the
//! answer (RFC 9112 §6.3). Shutdown stops accepting, then lets open connections finish. At
//! most `max_connections` are open at once (more wait in the listen queue), and a connection
//! closed while its client is still sending lingers (`linger`).

pub mod linger;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::http::HttpService;
use linger::Lingering;

/// The most header bytes read for one request (hyper answers 431 past it).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves `service` on `listener` until `shutdown` completes; then waits for open
/// connections to finish (the caller bounds that wait with the grace period).
pub async fn serve(
    listener: TcpListener,
    service: HttpService,
    header_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_timeout))
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // A slot first: at the cap, new connections wait in the kernel's listen queue.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                // An extension is an allocation and a hashed insert on every request; only
                // routes that change state read the peer (the throttles: `http::client`).
                if request.method() == Method::POST {
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(peer));
                }
                request.map(Body::new)
            });
        let connection = builder
            .serve_connection(
                TokioIo::new(Lingering::new(stream, slot)),
                TowerToHyperService::new(service),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
