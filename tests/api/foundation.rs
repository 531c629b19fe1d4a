//! §1 and §6: the ground rules every route follows.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_problem, error_locs};

both_backends!(
    unknown_paths_are_404_problems,
    wrong_methods_are_405_with_allow,
    options_answers_204_with_allow,
    head_works_wherever_get_does,
    request_ids_are_echoed_or_generated,
    malformed_json_is_400,
    wrong_media_type_is_415,
    bodies_over_the_limit_are_413,
    shape_errors_are_422_with_fastapi_locations,
    a_panic_is_a_500_and_the_server_keeps_serving,
    health_readiness_and_metrics,
    security_headers,
    cors_is_off_by_default_and_configurable,
    slow_handlers_time_out_with_503,
    openapi_and_docs_are_served,
    an_unreachable_database_is_503_without_internals,
    a_database_error_is_500_without_internals,
);

async fn unknown_paths_are_404_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/no/such/path").send().await.unwrap();
    let body = assert_problem(response, StatusCode::NOT_FOUND, Some("Not Found")).await;
    assert_eq!(body["type"], "about:blank");
}

async fn wrong_methods_are_405_with_allow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.request(Method::DELETE, "/items").send().await.unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    for method in ["GET", "HEAD", "POST", "OPTIONS"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    assert!(!allow.contains("DELETE"));
    assert_problem(response, StatusCode::METHOD_NOT_ALLOWED, None).await;
}

async fn options_answers_204_with_allow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .request(Method::OPTIONS, "/items/1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    for method in ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    assert!(response.bytes().await.unwrap().is_empty());
}

async fn head_works_wherever_get_does(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.request(Method::HEAD, "/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.bytes().await.unwrap().is_empty());
    let response = app.request(Method::HEAD, "/items").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());
}

async fn request_ids_are_echoed_or_generated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .get("/healthz")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = app
        .get("/missing")
        .header("x-request-id", "trace-7")
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::NOT_FOUND, None).await;
    assert_eq!(body["request_id"], "trace-7");
    // Too long, or with spaces: replaced by a generated one.
    for bad in ["x".repeat(129), "has space".to_string()] {
        let response = app
            .get("/healthz")
            .header("x-request-id", &bad)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert!(!id.is_empty());
    }
    let first = app.get("/healthz").send().await.unwrap();
    let second = app.get("/healthz").send().await.unwrap();
    assert_ne!(
        first.headers()["x-request-id"],
        second.headers()["x-request-id"]
    );
}

async fn malformed_json_is_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for body in [
        &b"{\"email\": "[..],
        b"not json",
        b"\xff\xfe",
        b"{\"a\":1,}",
    ] {
        let response = app
            .post("/users")
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, None).await;
        assert_eq!(problem["type"], "/problems/malformed-json");
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let response = app
        .post("/validate")
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, None).await;
}

async fn wrong_media_type_is_415(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post("/users")
        .header("content-type", "text/plain")
        .body(r#"{"email":"a@b.co","password":"plum-kettle-42"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, None).await;
    // A form is fine for the token endpoint only.
    let response = app
        .post("/users")
        .form(&[("email", "a@b.co"), ("password", "plum-kettle-42")])
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, None).await;
}

async fn bodies_over_the_limit_are_413(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.max_body = 1024).await;
    let big = json!({"email": "a@b.co", "password": "x".repeat(2000)});
    let response = app.post("/users").json(&big).send().await.unwrap();
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, None).await;
    // A chunked body (no Content-Length) is cut off at the limit too: the answer comes
    // while the client is still sending, and nothing past the limit is read.
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = "POST /validate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // One chunk past the limit, in one write, so the server has read all that was sent
    // when it answers (unread bytes would turn its close into a reset).
    stream
        .write_all(format!("800\r\n{}\r\n", " ".repeat(2048)).as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // Nothing was created.
    let response = app
        .post("/users")
        .json(&json!({"email": "a@b.co", "password": "plum-kettle-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn shape_errors_are_422_with_fastapi_locations(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post("/users")
        .json(&json!({"email": 5}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(body["type"], "/problems/validation");
    assert_eq!(
        error_locs(&body),
        vec![json!(["body", "email"]), json!(["body", "password"])]
    );
    assert_eq!(body["errors"][0]["type"], "string_type");
    assert_eq!(body["errors"][1]["type"], "missing");
    assert_eq!(body["errors"][1]["msg"], "Field required");

    let response = app
        .post("/users")
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["body"])]);

    let response = app.get("/items/abc").send().await.unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["path", "item_id"])]);

    let response = app.get("/items?limit=0").send().await.unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["query", "limit"])]);

    let response = app.get("/api/data").send().await.unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["header", "client"])]);
}

async fn a_panic_is_a_500_and_the_server_keeps_serving(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for _ in 0..3 {
        let response = app.get("/__test/panic").send().await.unwrap();
        let body = assert_problem(
            response,
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("Internal server error"),
        )
        .await;
        let text = body.to_string();
        assert!(
            !text.contains("panicked") && !text.contains(".rs"),
            "{text}"
        );
    }
    let response = app.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn health_readiness_and_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    let response = app.get("/readyz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
    app.get("/items/12345").send().await.unwrap();
    // Made-up methods share one label: no request can add series.
    for method in ["XAAA", "XBBB", "XCCC"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.request(method, "/items").send().await.unwrap();
    }
    let response = app.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/items/{item_id}""#), "{text}");
    assert!(text.contains(r#"status="404""#), "{text}");
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(!text.contains("XAAA") && !text.contains("XCCC"), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );

    // With the database gone, readiness fails while liveness holds.
    app.state.db.close().await;
    let response = app.get("/readyz").send().await.unwrap();
    let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, None).await;
    assert!(problem["detail"].as_str().unwrap().contains("Database"));
    let response = app.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn an_unreachable_database_is_503_without_internals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    app.state.db.close().await;
    // A closed pool is "cannot reach the database": 503 with Retry-After, never a hang.
    let response = app.get("/items/1").send().await.unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let body = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, None).await;
    let text = body.to_string();
    assert!(!text.contains("select") && !text.contains("sqlx"), "{text}");
    let response = app
        .get("/users/me")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, None).await;
}

async fn security_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let response = app.get("/healthz").send().await.unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(response.headers().get("cache-control").is_none());
    let response = app
        .get("/users/me")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

async fn openapi_and_docs_are_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let spec: Value = response.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(spec["paths"]["/items/{item_id}"]["get"].is_object());
    // Shared problem answers are described once, as components the operations reference.
    let put = &spec["paths"]["/items/{item_id}"]["put"]["responses"];
    assert_eq!(put["401"]["$ref"], "#/components/responses/Unauthorized");
    assert_eq!(put["503"]["$ref"], "#/components/responses/Unavailable");
    assert_eq!(
        spec["components"]["responses"]["Unauthorized"]["headers"]["WWW-Authenticate"]["schema"]["type"],
        "string"
    );
    // Every error answer of every operation, referenced or inline, is a problem document.
    let mut errors = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                let response = match response["$ref"].as_str() {
                    Some(reference) => {
                        let name = reference
                            .strip_prefix("#/components/responses/")
                            .unwrap_or_else(|| panic!("{method} {path} {status}: {reference}"));
                        &spec["components"]["responses"][name]
                    }
                    None => response,
                };
                assert!(
                    response["content"]["application/problem+json"]["schema"]["$ref"]
                        .as_str()
                        .is_some_and(|schema| schema.ends_with("ProblemBody")),
                    "{method} {path} {status}: {response}"
                );
                errors += 1;
            }
        }
    }
    assert!(errors > 50, "{errors}");
    let response = app.get("/docs/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The docs page runs only larder's own scripts and may not be framed.
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
}

async fn a_database_error_is_500_without_internals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Break the schema under the running server: every item query now fails inside the database.
    match &app.state.db {
        larder::store::Db::Sqlite(sqlite) => {
            sqlx::query("alter table items rename to items_gone")
                .execute(&sqlite.writer)
                .await
                .unwrap();
        }
        larder::store::Db::Postgres(postgres) => {
            sqlx::query("alter table items rename to items_gone")
                .execute(&postgres.pool)
                .await
                .unwrap();
        }
    }
    let response = app.get("/items?limit=5").send().await.unwrap();
    let body = assert_problem(
        response,
        StatusCode::INTERNAL_SERVER_ERROR,
        Some("Database error"),
    )
    .await;
    let text = body.to_string();
    assert!(
        !text.contains("items_gone")
            && !text.contains("no such table")
            && !text.contains("relation"),
        "{text}"
    );
    let response = app.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn cors_is_off_by_default_and_configurable(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        settings.cors_origins = Some("https://app.example".into())
    })
    .await;
    let preflight = app
        .request(Method::OPTIONS, "/items")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let response = get_from_origin(&app, "/healthz", "https://app.example").await;
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    // The same `Vary` whatever tower-http's default: a cache keys CORS answers on all three.
    let vary: Vec<String> = response
        .headers()
        .get_all("vary")
        .iter()
        .flat_map(|value| value.to_str().unwrap().split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in [
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
    ] {
        assert!(vary.iter().any(|v| v == name), "{name} not in {vary:?}");
    }
    let response = get_from_origin(&app, "/healthz", "https://evil.example").await;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // A handler's panic is answered inside CORS: the browser can read the problem.
    let response = get_from_origin(&app, "/__test/panic", "https://app.example").await;
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_problem(
        response,
        StatusCode::INTERNAL_SERVER_ERROR,
        Some("Internal server error"),
    )
    .await;
}

async fn get_from_origin(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.get(path).header("origin", origin).send().await.unwrap()
}

async fn slow_handlers_time_out_with_503(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.request_timeout = 1).await;
    let response = app.get("/__test/sleep?ms=3000").send().await.unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        Some("Request timed out"),
    )
    .await;
}
