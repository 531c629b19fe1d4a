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
    invalid_utf8_and_nul_bytes_are_4xx,
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
    // Both framings: Transfer-Encoding wins (RFC 9112 §6.3), so the 4 bytes Content-Length
    // claims are never read as a body and nothing is smuggled past the chunked terminator.
    let mut stream = connect(&app).await;
    let request = "POST /validate HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..read]).to_string();
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    assert!(answer.contains("\"loc\":[\"body\"]"), "{answer}");
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
