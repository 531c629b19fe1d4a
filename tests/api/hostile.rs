//! Slow and hostile clients, spoken to over raw TCP: slowloris, oversized headers,
//! request smuggling shapes, broken UTF-8.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    slow_headers_are_cut_off,
    oversized_headers_are_431,
    conflicting_lengths_are_400,
    length_with_encoding_is_framed_by_encoding_and_closes,
    idle_keep_alive_is_closed_but_slow_handlers_are_not,
    invalid_utf8_and_nul_bytes_are_4xx,
    a_client_that_sends_its_whole_body_first_still_reads_the_413,
    connections_past_the_cap_wait_for_a_free_slot,
);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes or `limit` passes; returns what arrived.
async fn read_answer(stream: &mut TcpStream, limit: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).to_string()
}

async fn slow_headers_are_cut_off(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.header_timeout = 1).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Never finish the headers: the server must give up on us, not wait forever.
    let answer = read_answer(&mut stream, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held for {:?}",
        started.elapsed()
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // Everyone else is still served.
    let response = app.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

async fn oversized_headers_are_431(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut stream = connect(&app).await;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_answer(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

async fn conflicting_lengths_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for request in [
        "POST /validate HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\n{}",
        "POST /validate HTTP/1.1\r\nhost: x\r\ncontent-length: 4, 5\r\n\r\n{}",
        "POST /validate HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked, identity\r\n\r\n",
        "POST /validate HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{request:?} → {answer}");
    }
}

/// Splits a raw answer into its head and its body.
fn head_and_body(answer: &str) -> (&str, &str) {
    answer.split_once("\r\n\r\n").unwrap_or((answer, ""))
}

/// SPEC.md §1 "ambiguous framing": a request with both `Content-Length` and
/// `Transfer-Encoding` is framed by `Transfer-Encoding` (or refused with 400) and the
/// connection is closed after the answer, so bytes after it are never read as a request.
async fn length_with_encoding_is_framed_by_encoding_and_closes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let token = &user.token;
    let before = app.get_json("/items?limit=100").await;
    // Both framings, in either order, after a clean request on the same connection, with a
    // second request hidden where a Content-Length reader would see a body.
    for framing in [
        "content-length: 50\r\ntransfer-encoding: chunked",
        "transfer-encoding: chunked\r\ncontent-length: 50",
    ] {
        let mut stream = connect(&app).await;
        let request = format!(
            "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n\
             POST /items HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\n{framing}\r\n\r\n\
             0\r\n\r\nPOST /items HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: 27\r\n\r\n\
             {{\"name\":\"hidden\",\"price\":1}}"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream, Duration::from_secs(5)).await;
        let answers: Vec<&str> = answer.matches("HTTP/1.1 ").collect();
        assert_eq!(
            answers.len(),
            2,
            "exactly two answers, then the close: {answer}"
        );
        let (_, rest) = answer.split_once("HTTP/1.1 200").expect(&answer);
        let second = &rest[rest.find("HTTP/1.1 ").expect(&answer)..];
        let (head, body) = head_and_body(second);
        // Framed by Transfer-Encoding, the body is empty: refused as such (or as ambiguous).
        assert!(
            head.starts_with("HTTP/1.1 400") || head.starts_with("HTTP/1.1 422"),
            "{framing}: {second}"
        );
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        let problem: serde_json::Value = serde_json::from_str(body).expect(body);
        assert_eq!(problem["instance"], "/items");
    }
    // Nothing was created: neither the framed request nor the hidden one.
    assert_eq!(app.get_json("/items?limit=100").await, before);
}

async fn idle_keep_alive_is_closed_but_slow_handlers_are_not(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.header_timeout = 1).await;
    // A handler that takes longer than the head deadline is answered in full.
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /__test/sleep?ms=2500 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..read]).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // After the answer the next head is awaited for the deadline only, then the server
    // closes the idle connection.
    let started = Instant::now();
    let rest = read_answer(&mut stream, Duration::from_secs(10)).await;
    assert!(rest.is_empty(), "{rest}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

async fn invalid_utf8_and_nul_bytes_are_4xx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let bodies: [&[u8]; 4] = [
        b"{\"name\": \"\xff\xfe\", \"price\": 1}",
        b"{\"name\": \"a\\u0000b\", \"price\": 1}",
        b"{\"name\": \"ok\", \"price\": 1, \"description\": \"\\u0000\"}",
        b"{\"name\": \"\\ud800\", \"price\": 1}",
    ];
    for body in bodies {
        let response = app
            .post("/items")
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "{} for {:?}",
            response.status(),
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    for body in bodies {
        let response = app
            .post("/users")
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error());
    }
    let response = app.get("/items/%00").send().await.unwrap();
    assert_eq!(response.status(), 422);
    let response = app.get("/items?cursor=%ff%fe").send().await.unwrap();
    assert!(response.status().is_client_error());
}

/// Python's urllib and requests send a whole body before they read: the 413 (answered before
/// the body is read) must still reach them, not a reset (lingering close).
async fn a_client_that_sends_its_whole_body_first_still_reads_the_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    for megabytes in [2usize, 8, 32] {
        let body = vec![b'x'; megabytes << 20];
        let mut stream = connect(&app).await;
        let head = format!(
            "POST /items HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            user.token,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
            .write_all(&body)
            .await
            .unwrap_or_else(|error| panic!("{megabytes} MB: the body could not be sent: {error}"));
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the server closes after answering")
            .unwrap_or_else(|error| panic!("{megabytes} MB: reading the answer failed: {error}"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{megabytes} MB: {answer}"
        );
        assert!(
            answer.contains("content-type: application/problem+json"),
            "{answer}"
        );
        assert!(answer.contains(r#""status":413"#), "{answer}");
    }
    // The server is unharmed.
    let response = app.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

async fn connections_past_the_cap_wait_for_a_free_slot(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.max_connections = Some(2)).await;
    const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        stream.write_all(REQUEST).await.unwrap();
        let mut buffer = vec![0u8; 4096];
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
        open.push(stream);
    }
    // Both slots are held by idle keep-alive connections: a third waits, unanswered.
    let mut third = connect(&app).await;
    third.write_all(REQUEST).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buffer)).await;
    assert!(early.is_err(), "answered past the cap: {early:?}");
    // One closes, and the waiting one is served.
    drop(open.pop());
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buffer))
        .await
        .expect("served once a slot is free")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..read]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
