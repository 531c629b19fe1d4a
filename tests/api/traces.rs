//! §11 tracing, black-box: the binary runs with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a
//! real OTLP/HTTP receiver started here (protobuf, decoded with `opentelemetry-proto`). A
//! child process, not a `TestApp`: the exporter's layer belongs to the process's one global
//! subscriber, which this test binary's many servers share.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, drop_postgres_database, fresh_postgres_database};
use crate::process::{BINARY, free_port, root_token, wait_until_serving};

/// A span as received, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/HTTP receiver on a port of its own: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answered as a collector does.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = spans.clone();
        let export = move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                if headers
                    .get(header::CONTENT_TYPE)
                    .is_none_or(|value| value != "application/x-protobuf")
                {
                    return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
                }
                let request =
                    ExportTraceServiceRequest::decode(body).map_err(|_| StatusCode::BAD_REQUEST)?;
                let mut kept = kept.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .as_ref()
                        .and_then(|resource| text(&resource.attributes, "service.name"))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            kept.push(Received {
                                service: service.clone(),
                                span,
                            });
                        }
                    }
                }
                Ok((
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                ))
            }
        };
        let router = axum::Router::new().route("/v1/traces", axum::routing::post(export));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { endpoint, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        any_value::Value::IntValue(number) => Some(*number),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The variables of an OpenTelemetry setup the test runner may have, so only the test's apply.
const OTEL_VARIABLES: [&str; 8] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_SDK_DISABLED",
];

/// The larder binary serving `database` on a free port with `env`, logging JSON lines.
fn serve(database: &str, env: &[(&str, &str)]) -> (Child, String) {
    let port = free_port();
    let mut command = crate::process::serve(database, port);
    command
        .env("LARDER_LOG_FORMAT", "json")
        .env("LARDER_LOG_LEVEL", "info")
        .env("LARDER_ADMIN_EMAIL", "root@example.com")
        .env("LARDER_ADMIN_PASSWORD", "admin password")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for variable in OTEL_VARIABLES {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied());
    (command.spawn().unwrap(), format!("http://127.0.0.1:{port}"))
}

/// SIGTERM, then the exit status and everything the process logged (bounded: 20 s).
async fn stop(mut server: Child) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let waited = tokio::task::spawn_blocking(move || {
        let status = server.wait().unwrap();
        let mut logs = String::new();
        std::io::Read::read_to_string(&mut server.stdout.take().unwrap(), &mut logs).unwrap();
        (status, logs)
    });
    tokio::time::timeout(Duration::from_secs(20), waited)
        .await
        .expect("larder exits within 20 s of SIGTERM")
        .unwrap()
}

async fn a_request_continues_its_trace_and_its_store_call_is_a_child(backend: Backend) {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("larder.db").display()),
        Backend::Postgres => fresh_postgres_database().await,
    };
    // A schedule delay longer than the test: the spans go out at shutdown, so this also
    // checks that a graceful stop flushes them.
    let (server, base) = serve(
        &database,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    wait_until_serving(&base).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = root_token(&client, &base).await;
    let created: Value = client
        .post(format!("{base}/items"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "traced", "price": 2.5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let answer = client
        .get(format!("{base}/items/{id}"))
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .header("x-request-id", "traced-1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    // Nothing was exported yet (the batch waits for its schedule or the shutdown).
    assert!(receiver.spans().is_empty());

    // An import of two chunks.
    let rows: Vec<Value> = (0..larder::jobs::kinds::import_items::CHUNK + 1)
        .map(|i| serde_json::json!({"name": format!("row {i}"), "price": 1.0}))
        .collect();
    let accepted: Value = client
        .post(format!("{base}/process"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"kind": "import_items", "items": rows}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    let waiting = Instant::now();
    loop {
        let job: Value = client
            .get(format!("{base}/jobs/{job_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "succeeded" {
            break;
        }
        assert!(waiting.elapsed() < Duration::from_secs(30), "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, logs) = stop(server).await;
    assert_eq!(status.code(), Some(0), "{logs}");

    let spans = receiver.spans();
    let in_trace: Vec<&Received> = spans
        .iter()
        .filter(|received| hex(&received.span.trace_id) == trace_id)
        .collect();
    let request = in_trace
        .iter()
        .find(|received| received.span.name == "GET /items/{item_id}")
        .unwrap_or_else(|| panic!("no request span in the incoming trace: {spans:#?}"));
    assert_eq!(request.service, "larder");
    assert_eq!(hex(&request.span.parent_span_id), parent_id);
    assert_eq!(request.span.kind, SpanKind::Server as i32);
    let attributes = &request.span.attributes;
    assert_eq!(
        text(attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        text(attributes, "http.route").as_deref(),
        Some("/items/{item_id}")
    );
    assert_eq!(text(attributes, "url.path"), Some(format!("/items/{id}")));
    assert_eq!(
        int(attributes, "http.response.status_code"),
        Some(200),
        "{attributes:?}"
    );

    let store_call = in_trace
        .iter()
        .find(|received| received.span.name == "items.find")
        .unwrap_or_else(|| panic!("no items.find span in the incoming trace: {in_trace:#?}"));
    assert_eq!(store_call.span.parent_span_id, request.span.span_id);
    assert_eq!(store_call.span.kind, SpanKind::Client as i32);
    let system = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgresql",
    };
    assert_eq!(
        text(&store_call.span.attributes, "db.system").as_deref(),
        Some(system)
    );
    // Every other span in the trace is below the request's: nothing else joined it.
    for received in &in_trace {
        if received.span.span_id == request.span.span_id {
            continue;
        }
        let mut parent = &received.span.parent_span_id;
        while parent != &request.span.span_id {
            parent = &in_trace
                .iter()
                .find(|above| &above.span.span_id == parent)
                .unwrap_or_else(|| panic!("a span outside the request: {received:#?}"))
                .span
                .parent_span_id;
        }
    }
    // The job's attempt is a trace: a span per committed chunk, each chunk's commit below it.
    let attempt = spans
        .iter()
        .find(|received| {
            received.span.name == "job import_items"
                && text(&received.span.attributes, "job.id").as_deref() == Some(job_id.as_str())
        })
        .unwrap_or_else(|| panic!("no span for the job's attempt: {spans:#?}"));
    let chunks: Vec<&Received> = spans
        .iter()
        .filter(|received| {
            received.span.name == "import_items chunk"
                && received.span.parent_span_id == attempt.span.span_id
        })
        .collect();
    assert_eq!(chunks.len(), 2, "{spans:#?}");
    for chunk in &chunks {
        assert_eq!(chunk.span.trace_id, attempt.span.trace_id);
        assert!(
            spans
                .iter()
                .any(|received| received.span.name == "jobs.commit_chunk"
                    && received.span.parent_span_id == chunk.span.span_id),
            "no commit below {chunk:#?}"
        );
    }
    // The workers' polling for jobs makes no traces.
    assert!(
        !spans
            .iter()
            .any(|received| received.span.name == "jobs.claim"
                && received.span.parent_span_id.is_empty()),
        "{spans:#?}"
    );

    // The other requests (the health checks, the login, the creation) are traces of their own.
    let login = spans
        .iter()
        .find(|received| received.span.name == "POST /auth/token")
        .expect("a span for the login");
    assert!(login.span.parent_span_id.is_empty());
    assert_ne!(hex(&login.span.trace_id), trace_id);

    // The access log line carries the trace id; a line outside any request does not.
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let access = lines
        .iter()
        .find(|line| line["request_id"] == "traced-1")
        .unwrap_or_else(|| panic!("no access log line for the traced request: {logs}"));
    assert_eq!(access["trace_id"], trace_id);
    let started = lines
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("larder is serving"))
        })
        .expect("the start line");
    assert!(started.get("trace_id").is_none(), "{started}");
    if backend == Backend::Postgres {
        drop_postgres_database(database);
    }
}

/// A collector that cannot be reached costs the requests nothing: they are answered as
/// usual, and the process still stops promptly (the last export gives up within its
/// timeout). Tracing off, no line carries a trace id.
#[tokio::test]
async fn a_collector_that_is_down_neither_fails_nor_slows_requests() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("larder.db").display());
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (server, base) = serve(
        &database,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", closed.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ],
    );
    wait_until_serving(&base).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = root_token(&client, &base).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let sent = Instant::now();
        let answer = client
            .get(format!("{base}/users/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        slowest = slowest.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "the slowest request took {slowest:?} ({:?} for all)",
        started.elapsed()
    );
    let stopping = Instant::now();
    let (status, logs) = stop(server).await;
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        stopping.elapsed()
    );

    // The same server with tracing off: no trace ids in its log.
    let (server, base) = serve(&database, &[]);
    wait_until_serving(&base).await;
    let token = root_token(&client, &base).await;
    let answer = client
        .get(format!("{base}/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let (status, logs) = stop(server).await;
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("\"path\":\"/users/me\""), "{logs}");
    assert!(!logs.contains("trace_id"), "{logs}");
}

both_backends!(a_request_continues_its_trace_and_its_store_call_is_a_child);

/// `larder check` says whether tracing is on, and refuses an endpoint that is not a URL.
#[test]
fn check_reports_tracing_and_refuses_a_bad_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("new.db").display());
    let check = |env: &[(&str, &str)]| {
        let mut command = Command::new(BINARY);
        command.arg("check").env("LARDER_DATABASE_URL", &database);
        for variable in OTEL_VARIABLES {
            command.env_remove(variable);
        }
        command.envs(env.iter().copied()).output().unwrap()
    };
    let off = check(&[]);
    assert!(off.status.success(), "{off:?}");
    assert!(
        String::from_utf8_lossy(&off.stdout)
            .trim_end()
            .ends_with("; tracing off")
    );
    let on = check(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
    assert!(on.status.success(), "{on:?}");
    assert!(
        String::from_utf8_lossy(&on.stdout)
            .trim_end()
            .ends_with("; tracing on (OTLP/HTTP)")
    );
    let disabled = check(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_SDK_DISABLED", "true"),
    ]);
    assert!(String::from_utf8_lossy(&disabled.stdout).contains("; tracing off"));
    let bad = check(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")]);
    assert_eq!(bad.status.code(), Some(1));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(said.starts_with("larder check: invalid settings"), "{said}");
    assert!(said.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{said}");
    // `serve` refuses it too, as any invalid setting: one line, exit 2.
    let serve = Command::new(BINARY)
        .arg("serve")
        .env("LARDER_DATABASE_URL", &database)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(2), "{serve:?}");
    let said = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(said.starts_with("larder: invalid settings"), "{said}");
}
