//! The layers around the router, outermost first: tower-http's where they cost little,
//! larder's own where the benchmark said otherwise.
//!
//! 1. `Authorization` marked sensitive (tower-http), so no debug output shows a token;
//! 2. the contract's answers (`http::answers`, larder's): the request id, problem bodies,
//!    `OPTIONS`, security headers, the access log line and the metrics by route template;
//! 3. CORS (tower-http), when configured;
//! 4. the request timeout (tower-http), answered 503;
//! 5. a panic in a handler answered 500 (tower-http), the server living on;
//! 6. the router.
//!
//! Measured with `bench/callgrind.sh` (instructions per `GET /healthz` at the default log
//! level, where the access log is on; 2026-12-03): the hand-written stack this replaced
//! took 27,250 per request, this one 28,360, +4% for the timeout, catch-panic and
//! sensitive-header layers together. Three standard components cost more than 5% each and
//! are not used:
//! - tower-http's `TraceLayer` for the access log: +6,700 (+25%), a span made, formatted,
//!   entered and closed per request, beside the one event `answers` logs;
//! - tower-http's `SetRequestId` + `PropagateRequestId`: +3,300 (+12%), a UUID string and
//!   an extension map on both the request and the answer; `answers` keeps the id in its
//!   future and formats the UUID on the stack;
//! - axum's `MatchedPath` for the metrics' route label: +1,600 (+6%), the router's extension
//!   plus a `route_layer` that boxes each route once more; `route_label` matches the path
//!   with the router's own matcher (matchit) instead.
//!
//! Tracing (OpenTelemetry, `telemetry`) adds nothing here: with it off no request span is
//! made. Measured on 2026-12-05 against the commit before it (same dependencies, `cargo
//! build --release --bin larder`, three runs each): `/healthz` 28,620–28,790 before,
//! 28,830–28,850 with tracing support, off (+0.4%, a disabled request span then, since
//! skipped by a flag); `/items/1` 39,660–39,830 and 39,980–40,080 (+0.7%: the store call's
//! disabled span, about 140 instructions: `#[instrument]` nests the call's future once
//! more). With tracing on, exporting to a local receiver: see `bench/README.md`.

use std::any::Any;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::util::{Either, MapFuture};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer, ResponseForPanic};
use tower_http::cors::{Cors, CorsLayer};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};
use tower_http::timeout::{Timeout, TimeoutLayer};

use super::answers::{Answers, AnswersLayer};
use super::error::ApiError;
use super::negotiation::Produces;
use super::route_label::RouteLabels;

/// The whole service, as the accept loop serves it. Named, not boxed: a boxed service is
/// cloned into a new allocation for every request.
pub type HttpService = SetSensitiveRequestHeaders<Answers<Either<BoxedCors, Timed>>>;

/// The catch-panic layer's body, which every answer inside it gets.
type CaughtBody = tower_http::body::UnsyncBoxBody<bytes::Bytes, tower_http::BoxError>;

type Timed = Timeout<AxumBody<CatchPanic<Router, PanicAnswer>>>;

/// The routes behind CORS, its future boxed: hyper moves the request's future with every
/// request, and unboxed the CORS state would make it larger for every deployment, CORS or not.
type BoxedCors = MapFuture<Cors<Timed>, fn(CorsFuture) -> BoxedAnswer>;
type CorsFuture = <Cors<Timed> as Service<Request>>::Future;
type BoxedAnswer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

fn box_cors_future(future: CorsFuture) -> BoxedAnswer {
    Box::pin(future)
}

/// Wraps `router` (its routes and its fallback) in the layers, outermost first.
pub fn around(
    router: Router,
    labels: RouteLabels,
    produces: Produces,
    timeout: Duration,
    cors: Option<CorsLayer>,
) -> HttpService {
    let cors = cors.map(|cors| {
        ServiceBuilder::new()
            .map_future(box_cors_future as fn(CorsFuture) -> BoxedAnswer)
            .layer(cors)
    });
    ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(AnswersLayer {
            labels: Arc::new(labels),
            produces: Arc::new(produces),
        })
        .option_layer(cors)
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(AxumBodyLayer)
        .layer(CatchPanicLayer::custom(PanicAnswer))
        .service(router)
}

/// The 500 for a panic; its message goes to the log, never to the client.
#[derive(Clone, Copy, Debug)]
pub struct PanicAnswer;

impl ResponseForPanic for PanicAnswer {
    type ResponseBody = Body;

    fn response_for_panic(&mut self, panic: Box<dyn Any + Send + 'static>) -> Response {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        tracing::error!(panic = message, "handler panicked");
        ApiError::internal().into_response()
    }
}

/// The catch-panic layer boxes every body in a type of its own; here it becomes axum's body,
/// like every other answer's. (A named layer, not tower-http's `map_response_body` with a
/// function pointer: a pointer whose argument holds a `dyn Error` trips rustc's check that
/// the connection's future is `Send`.)
#[derive(Clone, Copy, Debug)]
struct AxumBodyLayer;

impl<S> Layer<S> for AxumBodyLayer {
    type Service = AxumBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AxumBody { inner }
    }
}

#[derive(Clone, Debug)]
pub struct AxumBody<S> {
    inner: S,
}

impl<S> Service<Request> for AxumBody<S>
where
    S: Service<Request, Response = Response<CaughtBody>, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AxumBodyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        AxumBodyFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    pub struct AxumBodyFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future<Output = Result<Response<CaughtBody>, Infallible>>> Future for AxumBodyFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = ready!(self.project().inner.poll(cx));
        Poll::Ready(Ok(response.map(Body::new)))
    }
}
