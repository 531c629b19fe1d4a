//! The request context around every handler: request id, timeout, problem bodies for every
//! error answer, `OPTIONS`, security headers, the access log line and the request metrics.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, PROBLEM_JSON, Problem, problem_for_status, render_problem};

pub const REQUEST_ID: &str = "x-request-id";

/// The request id to use: the client's if it is 1–128 visible ASCII characters, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(REQUEST_ID) {
        let bytes = value.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return value.clone();
        }
    }
    let mut buffer = [0u8; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buffer);
    HeaderValue::from_str(id).expect("a uuid is a valid header value")
}

/// The route template a request matched (`/items/{item_id}`), for the metrics' labels
/// (shared with the router: no copy per request).
#[derive(Clone, Debug)]
pub struct RouteTemplate(pub MatchedPath);

impl RouteTemplate {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Inside the router: copies the matched route template onto the response.
pub async fn record_route(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(RouteTemplate(matched));
    }
    response
}

/// The request metrics of one (method, route, status): the counter and the route's
/// histogram, registered once and reused, so counting a request allocates nothing.
#[derive(Clone)]
struct RequestMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Per route template, per (method, status). Routes and statuses are few; methods beyond
/// the standard ones are not kept (a client could send any number of them).
type MetricHandles = HashMap<String, HashMap<(Method, u16), RequestMetrics>>;

fn request_metrics(method: &Method, route: &str, status: StatusCode) -> RequestMetrics {
    static HANDLES: OnceLock<Mutex<MetricHandles>> = OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let key = (method.clone(), status.as_u16());
    if let Some(found) = handles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(route)
        .and_then(|by_key| by_key.get(&key))
    {
        return found.clone();
    }
    let made = RequestMetrics {
        requests: metrics::counter!(
            "http_requests_total",
            "method" => method.to_string(),
            "route" => route.to_string(),
            "status" => status.as_u16().to_string()
        ),
        duration: metrics::histogram!("http_request_duration_seconds", "route" => route.to_string()),
    };
    let standard = matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT
    );
    if standard {
        let mut handles = handles.lock().unwrap_or_else(|e| e.into_inner());
        if handles.len() < 1024 {
            handles
                .entry(route.to_string())
                .or_default()
                .insert(key, made.clone());
        }
    }
    made
}

/// How long a handler may run before the request is answered 503.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeout(pub Duration);

pub async fn request_context(
    State(timeout): State<RequestTimeout>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let method = request.method().clone();
    // A clone of the URI shares its bytes: no copy of the path per request.
    let uri = request.uri().clone();
    let path = uri.path();
    let authenticated = request.headers().contains_key(header::AUTHORIZATION);

    let mut response = match tokio::time::timeout(timeout.0, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("Request timed out").into_response(),
    };

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
    headers.insert(REQUEST_ID, id.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if authenticated && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }

    let latency = started.elapsed();
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or("unmatched", RouteTemplate::as_str);
    let metrics = request_metrics(&method, route, status);
    metrics.requests.increment(1);
    metrics.duration.record(latency.as_secs_f64());
    tracing::info!(
        target: "larder::access",
        method = %method,
        path = %path,
        status = status.as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        request_id = id.to_str().unwrap_or(""),
        "request"
    );
    response
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// Replaces the body of an error answer with its problem document.
fn with_problem_body(response: Response, instance: &str, request_id: &str) -> Response {
    let (mut parts, _) = response.into_parts();
    let problem = parts
        .extensions
        .remove::<Problem>()
        .unwrap_or_else(|| problem_for_status(parts.status));
    let body = render_problem(parts.status, &problem, instance, request_id);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

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
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, allow_with_options(not_allowed));
    response
}

/// A panic inside a handler becomes a plain 500; the connection and the server live on.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "handler panicked");
    ApiError::internal().into_response()
}

/// The 404 for every path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}
