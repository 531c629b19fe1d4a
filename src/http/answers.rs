//! The contract's part of every answer: the request id, problem bodies for every error
//! answer, `OPTIONS`, the security headers, the access log line, and the request metrics by
//! route template. (Why these are larder's own and not tower-http's: `http::layers`.)
//!
//! With tracing on (`telemetry`), each request also gets a span, `GET /items/{item_id}`,
//! continuing the trace of its `traceparent`; the handler's store calls are its children and
//! the access log line carries its trace id. With tracing off no span is made: one load and
//! a branch (measured: `http::layers`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::error::{ApiError, PROBLEM_JSON, Problem, problem_for_status, render_problem};
use super::negotiation::{Produces, plainly_admits_json};
use super::route_label::{RouteLabels, UNMATCHED};
use crate::telemetry::SPANS;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the answers layer reads from a request's headers, found in one pass over them:
/// a request has few headers, and walking them costs less than two hashed lookups.
#[derive(Debug, Default)]
struct ContextHeaders<'a> {
    request_id: Option<&'a HeaderValue>,
    authenticated: bool,
    /// `Accept` names something other than the common values that plainly admit JSON.
    accept_to_check: bool,
}

impl<'a> ContextHeaders<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let mut seen = ContextHeaders::default();
        for (name, value) in headers {
            if name == header::AUTHORIZATION {
                seen.authenticated = true;
            } else if name == REQUEST_ID {
                seen.request_id.get_or_insert(value);
            } else if name == header::ACCEPT {
                seen.accept_to_check |= !plainly_admits_json(value.as_bytes());
            }
        }
        seen
    }
}

/// The request id to use: the client's if it is 1–128 visible ASCII characters, else a new one.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    if let Some(value) = given {
        let bytes = value.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return value.clone();
        }
    }
    let mut buffer = [0u8; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buffer);
    HeaderValue::from_str(id).expect("a uuid is a valid header value")
}

/// The request metrics of one (method, route, status): the counter and the route's
/// histogram, registered once and reused, so counting a request allocates nothing.
struct RequestMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl RequestMetrics {
    fn register(method: &'static str, route: &str, status: StatusCode) -> Self {
        RequestMetrics {
            requests: metrics::counter!(
                "http_requests_total",
                "method" => method,
                "route" => route.to_string(),
                "status" => status.as_u16().to_string()
            ),
            duration: metrics::histogram!(
                "http_request_duration_seconds",
                "route" => route.to_string()
            ),
        }
    }

    fn record(&self, latency: Duration) {
        self.requests.increment(1);
        self.duration.record(latency.as_secs_f64());
    }
}

/// Per route template, per (method label, status): all few, so the map is bounded.
type MetricHandles =
    HashMap<Box<str>, HashMap<(&'static str, u16), RequestMetrics, FastHash>, FastHash>;

/// The method as a metrics label: a standard method by name, any other `other`, so no
/// request can add series (a client may send any number of made-up methods).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        // The safe method with a body (draft-ietf-httpbis-safe-method-w-body): known, so a
        // path that does not serve it answers 405, not 501.
        _ if method.as_str() == "QUERY" => "QUERY",
        _ => "other",
    }
}
type FastHash = foldhash::fast::RandomState;

/// Counts one answered request. The handles are cached per worker thread: no lock and no
/// shared reference count is touched on the way to the (atomic) counter and histogram.
fn record_request(method: &Method, route: &str, status: StatusCode, latency: Duration) {
    thread_local! {
        static HANDLES: RefCell<MetricHandles> = RefCell::new(MetricHandles::default());
    }
    let key = (method_label(method), status.as_u16());
    HANDLES.with_borrow_mut(|handles| {
        if let Some(found) = handles.get(route).and_then(|by_key| by_key.get(&key)) {
            found.record(latency);
            return;
        }
        let made = RequestMetrics::register(key.0, route, status);
        made.record(latency);
        if handles.len() < 1024 {
            handles.entry(route.into()).or_default().insert(key, made);
        }
    });
}

/// The contract's part of every answer, around CORS and the router: problem bodies for every
/// error answer (the timeout's bare 503 included), `OPTIONS`, the security headers, the
/// request id, the access log and the request metrics. The timeout and panics are
/// tower-http's layers (`http::layers`).
#[derive(Clone, Debug)]
pub struct AnswersLayer {
    /// The metrics' route labels.
    pub labels: Arc<RouteLabels>,
    /// The media types each route answers with, for `Accept`.
    pub produces: Arc<Produces>,
}

impl<S> Layer<S> for AnswersLayer {
    type Service = Answers<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Answers {
            inner,
            labels: self.labels.clone(),
            produces: self.produces.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Answers<S> {
    inner: S,
    labels: Arc<RouteLabels>,
    produces: Arc<Produces>,
}

/// What the answers layer keeps of a request until its answer is ready.
struct Started {
    at: Instant,
    id: HeaderValue,
    method: Method,
    /// A clone shares the request's bytes: no copy of the path per request.
    path_and_query: Option<PathAndQuery>,
    route: &'static str,
    authenticated: bool,
}

impl<S> Service<Request> for Answers<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AnswersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let seen = ContextHeaders::of(request.headers());
        let started = Started {
            at: Instant::now(),
            id: request_id(seen.request_id),
            method: request.method().clone(),
            path_and_query: request.uri().path_and_query().cloned(),
            route: self.labels.label(request.uri().path()),
            authenticated: seen.authenticated,
        };
        let span = request_span(&request, started.route);
        let entered = span.as_deref().map(tracing::Span::enter);
        let inner = match refusal(&request, seen.accept_to_check, &self.produces) {
            Some(refused) => Either::Right(std::future::ready(Ok(refused.into_response()))),
            None => Either::Left(self.inner.call(request)),
        };
        drop(entered);
        AnswersFuture {
            inner,
            started: Some(started),
            span,
        }
    }
}

pin_project! {
    pub struct AnswersFuture<F> {
        #[pin]
        inner: Either<F, std::future::Ready<Result<Response, Infallible>>>,
        started: Option<Started>,
        // Boxed: with tracing off (none), the future that hyper moves grows by a pointer.
        span: Option<Box<tracing::Span>>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for AnswersFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.as_deref().map(tracing::Span::enter);
        let Ok(response) = ready!(this.inner.poll(cx));
        let started = this
            .started
            .take()
            .expect("an answers future is not polled after it is done");
        // Inside the span: the access log line carries its trace id.
        let response = finish(response, started);
        if let Some(span) = this.span.as_deref() {
            record_answer(span, response.status());
        }
        Poll::Ready(Ok(response))
    }
}

/// The request's span, when tracing is on: named by method and route template (OpenTelemetry's
/// HTTP server conventions), its parent the `traceparent` the request came with.
fn request_span(request: &Request, route: &'static str) -> Option<Box<tracing::Span>> {
    // Not even a disabled span with tracing off: that is a callsite check and, with
    // tracing's `log` feature, a span value made and dropped (about 80 instructions).
    if !crate::telemetry::tracing_on() {
        return None;
    }
    let method = request.method();
    let span = tracing::info_span!(
        target: SPANS,
        "request",
        otel.name = %SpanName(method, route),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        http.route = tracing::field::Empty,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return None;
    }
    if route != UNMATCHED {
        span.record("http.route", route);
    }
    crate::telemetry::continue_trace(&span, request.headers());
    Some(Box::new(span))
}

/// `GET /items/{item_id}`; `GET` alone for a path no route matches.
struct SpanName<'a>(&'a Method, &'static str);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            UNMATCHED => f.write_str(self.0.as_str()),
            route => write!(f, "{} {route}", self.0),
        }
    }
}

/// The answer's status on the request's span; a server error marks the span failed.
fn record_answer(span: &tracing::Span, status: StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// The longest request target (path and query) larder reads: 8 KiB.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

/// What is refused before any route sees the request, in this order: a request target over
/// [`MAX_TARGET_BYTES`] (414), a method larder does not know at all (501; a known method a
/// path does not allow is the router's 405), and an `Accept` that admits nothing the route
/// answers with (406).
fn refusal(request: &Request, accept_to_check: bool, produces: &Produces) -> Option<ApiError> {
    let uri = request.uri();
    let target = uri
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_TARGET_BYTES {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "The request target is longer than 8192 bytes",
        ));
    }
    if method_label(request.method()) == "other" {
        return Some(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "The request method is not implemented",
        ));
    }
    if accept_to_check && request.method() != Method::OPTIONS {
        return produces.refusal(uri.path(), request.headers());
    }
    None
}

/// Everything the answers layer does to an answer on its way out.
fn finish(mut response: Response, started: Started) -> Response {
    let Started {
        at,
        id,
        method,
        path_and_query,
        route,
        authenticated,
    } = started;
    let path = path_and_query.as_ref().map_or("", PathAndQuery::path);
    if method == Method::OPTIONS && response.status() == StatusCode::METHOD_NOT_ALLOWED {
        response = options_answer(response.headers());
    } else if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        add_options_to_allow(response.headers_mut());
    }
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_problem(response.headers()) {
        response = with_problem_body(response, path, id.to_str().unwrap_or(""));
    }

    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if authenticated && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let latency = at.elapsed();
    record_request(&method, route, status, latency);
    tracing::info!(
        target: "larder::access",
        method = %method,
        path = %path,
        status = status.as_u16(),
        // Milliseconds to the microsecond.
        latency_ms = latency.as_micros() as f64 / 1000.0,
        request_id = id.to_str().unwrap_or(""),
        "request"
    );
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// Replaces the body of an error answer with its problem document. An answer with no
/// problem of its own is the standard one for its status; a bare 503 is the timeout layer's.
fn with_problem_body(response: Response, instance: &str, request_id: &str) -> Response {
    let (mut parts, _) = response.into_parts();
    let problem = match parts.extensions.remove::<Problem>() {
        Some(problem) => problem,
        None if parts.status == StatusCode::SERVICE_UNAVAILABLE => {
            parts
                .headers
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Problem {
                detail: std::borrow::Cow::Borrowed(TIMED_OUT),
                ..problem_for_status(parts.status)
            }
        }
        None => problem_for_status(parts.status),
    };
    let body = render_problem(parts.status, &problem, instance, request_id);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// The detail of the 503 for a request that ran past `LARDER_REQUEST_TIMEOUT`.
const TIMED_OUT: &str = "Request timed out";

fn allow_with_options(headers: &HeaderMap) -> HeaderValue {
    let mut methods: Vec<String> = headers
        .get(header::ALLOW)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|method| method.trim().to_string())
        .filter(|method| !method.is_empty())
        .collect();
    if !methods.iter().any(|m| m == "OPTIONS") {
        methods.push("OPTIONS".to_string());
    }
    HeaderValue::from_str(&methods.join(", ")).expect("method names are valid header text")
}

fn add_options_to_allow(headers: &mut HeaderMap) {
    let allow = allow_with_options(headers);
    headers.insert(header::ALLOW, allow);
}

/// `OPTIONS` on a path that exists: 204 with the methods it supports.
fn options_answer(not_allowed: &HeaderMap) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
        .headers_mut()
        .insert(header::ALLOW, allow_with_options(not_allowed));
    response
}

/// The 404 for every path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_headers_are_found_in_one_pass() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        headers.append(&REQUEST_ID, HeaderValue::from_static("first"));
        headers.append(&REQUEST_ID, HeaderValue::from_static("second"));
        let seen = ContextHeaders::of(&headers);
        assert!(seen.authenticated);
        assert_eq!(seen.request_id, Some(&HeaderValue::from_static("first")));

        let empty = HeaderMap::new();
        let seen = ContextHeaders::of(&empty);
        assert!(!seen.authenticated);
        assert_eq!(seen.request_id, None);
    }

    #[test]
    fn a_usable_request_id_is_kept_and_any_other_replaced() {
        let given = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&given)), given);
        let spaced = HeaderValue::from_static("has space");
        let made = request_id(Some(&spaced));
        assert_eq!(made.len(), 32);
        assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit));
        let long = HeaderValue::from_str(&"x".repeat(129)).unwrap();
        assert_eq!(request_id(Some(&long)).len(), 32);
        assert_ne!(request_id(None), request_id(None));
    }
}
