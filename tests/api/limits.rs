//! §5: `POST /validate`, and the rate-limited `GET /api/data` — in process and through Redis.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_problem, error_locs, redis_url};

both_backends!(
    every_falsy_required_field_is_400,
    a_truthy_required_field_is_valid,
    json_that_is_not_an_object_is_422,
    malformed_json_is_400,
    data_without_a_client_is_422,
    data_is_the_newest_twenty_ids_and_names,
    exactly_q_requests_pass_in_a_burst_then_429,
    header_values_add_up,
    clients_are_limited_apart,
    a_client_recovers_after_retry_after,
    redis_down_falls_back_to_the_process_and_is_counted,
    a_hung_redis_does_not_hold_requests_up,
    openapi_documents_every_status_and_limit_header,
    concurrent_requests_get_exactly_q,
);

both_backends!(redis: redis_limits_a_burst_to_q, two_servers_share_one_limit_through_redis, concurrent_requests_on_two_servers_get_exactly_q_through_redis);

/// The parsed `RateLimit` header: (remaining, seconds).
fn rate_limit(response: &reqwest::Response) -> (u32, u64) {
    let value = response.headers()["ratelimit"].to_str().unwrap();
    let rest = value
        .strip_prefix("\"default\";r=")
        .unwrap_or_else(|| panic!("RateLimit {value:?}"));
    let (remaining, seconds) = rest
        .split_once(";t=")
        .unwrap_or_else(|| panic!("RateLimit {value:?}"));
    (remaining.parse().unwrap(), seconds.parse().unwrap())
}

fn retry_after(response: &reqwest::Response) -> u64 {
    let value = response.headers()["retry-after"].to_str().unwrap();
    value
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {value:?} is not whole seconds"))
}

async fn data(app: &TestApp, client: &str) -> reqwest::Response {
    app.get("/api/data")
        .header("client", client)
        .send()
        .await
        .unwrap()
}

async fn spawn_limited(backend: Backend, limit: &str) -> TestApp {
    let limit = limit.parse().unwrap();
    TestApp::spawn_with(backend, |settings| settings.rate_limit = limit).await
}

/// A server sharing its limits through the test Redis under `prefix`.
async fn spawn_on_redis(backend: Backend, limit: &str, url: &str, prefix: &str) -> TestApp {
    let limit = limit.parse().unwrap();
    TestApp::spawn_with(backend, |settings| {
        settings.rate_limit = limit;
        settings.redis_url = Some(url.to_string());
        settings.redis_prefix = prefix.to_string();
    })
    .await
}

/// A key prefix no other test (or earlier run) uses.
fn fresh_prefix() -> String {
    format!("larder-test:{}:", uuid::Uuid::new_v4().simple())
}

async fn every_falsy_required_field_is_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bodies = [
        json!({}),
        json!({"other": 1}),
        json!({"required_field": null}),
        json!({"required_field": false}),
        json!({"required_field": 0}),
        json!({"required_field": 0.0}),
        json!({"required_field": ""}),
        json!({"required_field": []}),
        json!({"required_field": {}}),
    ];
    for body in bodies {
        let response = app.post("/validate").json(&body).send().await.unwrap();
        assert_problem(
            response,
            StatusCode::BAD_REQUEST,
            Some("required_field is missing"),
        )
        .await;
    }
}

async fn a_truthy_required_field_is_valid(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for value in [
        json!(true),
        json!(1),
        json!(-0.5),
        json!("x"),
        json!([0]),
        json!({"a": 0}),
    ] {
        let response = app
            .post("/validate")
            .json(&json!({"required_field": value, "extra": "ignored"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "required_field {value}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"status": "valid"})
        );
    }
}

async fn json_that_is_not_an_object_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for body in [
        json!([1, 2]),
        json!("required_field"),
        json!(3),
        json!(null),
        json!(true),
    ] {
        let response = app.post("/validate").json(&body).send().await.unwrap();
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
        assert_eq!(error_locs(&problem), vec![json!(["body"])], "body {body}");
    }
}

async fn malformed_json_is_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for body in ["{\"required_field\": ", "not json", "{'required_field': 1}"] {
        let response = app
            .post("/validate")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, None).await;
        assert_eq!(problem["type"], "/problems/malformed-json", "body {body:?}");
    }
}

async fn data_without_a_client_is_422(backend: Backend) {
    let app = spawn_limited(backend, "5/60s").await;
    let response = app.get("/api/data").send().await.unwrap();
    // Nothing is counted, but the answer still states the policy and a whole quota.
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"default\";q=5;w=60"
    );
    assert_eq!(rate_limit(&response), (5, 0));
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&problem), vec![json!(["header", "client"])]);
}

async fn data_is_the_newest_twenty_ids_and_names(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = data(&app, "empty").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"data": []}));

    let user = app.user().await;
    let mut created = Vec::new();
    for n in 0..25 {
        let item = app
            .create_item(&user, json!({"name": format!("item {n}"), "price": 1}))
            .await;
        created.push((item["id"].as_i64().unwrap(), item["name"].clone()));
    }
    let response = data(&app, "reader").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let expected: Vec<Value> = created
        .iter()
        .rev()
        .take(20)
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect();
    assert_eq!(body, json!({"data": expected}));
}

async fn exactly_q_requests_pass_in_a_burst_then_429(backend: Backend) {
    let app = spawn_limited(backend, "5/60s").await;
    for n in 0..5 {
        let response = data(&app, "bursty").await;
        assert_eq!(response.status(), StatusCode::OK, "request {n}");
        assert!(!response.headers().contains_key("retry-after"));
    }
    let refused = data(&app, "bursty").await;
    assert!(retry_after(&refused) >= 1);
    assert_problem(
        refused,
        StatusCode::TOO_MANY_REQUESTS,
        Some("Too many requests, please try later"),
    )
    .await;
    // Refusals are not counted, so the next one is refused the same way.
    let again = data(&app, "bursty").await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&again) >= 1);
}

/// 10 per 60 s: one request's cell is 6 s, so after `n` requests the quota is whole again in
/// 6·n s (less the little time the test has taken), and a refused request waits one cell.
async fn header_values_add_up(backend: Backend) {
    let app = spawn_limited(backend, "10/60s").await;
    assert_header_arithmetic(&app, "counted").await;
}

async fn assert_header_arithmetic(app: &TestApp, client: &str) {
    for used in 1..=10u64 {
        let response = data(app, client).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"default\";q=10;w=60"
        );
        let (remaining, reset) = rate_limit(&response);
        assert_eq!(u64::from(remaining), 10 - used, "remaining after {used}");
        assert!(
            (6 * used - 1..=6 * used).contains(&reset),
            "t={reset} after {used} requests"
        );
    }
    let refused = data(app, client).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.headers()["ratelimit-policy"],
        "\"default\";q=10;w=60"
    );
    let (remaining, reset) = rate_limit(&refused);
    assert_eq!(remaining, 0);
    assert!((5..=6).contains(&reset), "t={reset} when refused");
    assert!(
        retry_after(&refused) >= reset,
        "Retry-After is never earlier than t"
    );
}

async fn clients_are_limited_apart(backend: Backend) {
    let app = spawn_limited(backend, "2/60s").await;
    for _ in 0..2 {
        assert_eq!(data(&app, "greedy").await.status(), StatusCode::OK);
    }
    assert_eq!(
        data(&app, "greedy").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let other = data(&app, "patient").await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(rate_limit(&other).0, 1);
    // Values are compared exactly: a case change is another client, but the whitespace
    // around a field value is not part of it (RFC 9110 §5.5), so this is the same one.
    assert_eq!(data(&app, "Greedy").await.status(), StatusCode::OK);
    assert_eq!(
        data(&app, "greedy ").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// 3 per 2 s: a refused client waits one cell (⅔ s, so `Retry-After: 1`), then may go on.
async fn a_client_recovers_after_retry_after(backend: Backend) {
    let app = spawn_limited(backend, "3/2s").await;
    assert_recovers(&app, "recovering").await;
}

async fn assert_recovers(app: &TestApp, client: &str) {
    for _ in 0..3 {
        assert_eq!(data(app, client).await.status(), StatusCode::OK);
    }
    let refused = data(app, client).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&refused);
    assert_eq!(wait, 1);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let after = data(app, client).await;
    assert_eq!(after.status(), StatusCode::OK, "after waiting Retry-After");
    // One cell has come back, not the whole burst.
    assert_eq!(
        data(app, client).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

async fn redis_limits_a_burst_to_q(backend: Backend) {
    let url = redis_url().expect("this build saw LARDER_TEST_REDIS_URL");
    let app = spawn_on_redis(backend, "10/60s", &url, &fresh_prefix()).await;
    assert_header_arithmetic(&app, "counted").await;
    let app = spawn_on_redis(backend, "3/2s", &url, &fresh_prefix()).await;
    assert_recovers(&app, "recovering").await;
}

async fn two_servers_share_one_limit_through_redis(backend: Backend) {
    let url = redis_url().expect("this build saw LARDER_TEST_REDIS_URL");
    let prefix = fresh_prefix();
    let first = spawn_on_redis(backend, "6/60s", &url, &prefix).await;
    let second = spawn_on_redis(backend, "6/60s", &url, &prefix).await;
    // The count running on across both servers shows Redis answered, not either process.
    for n in 0..6u32 {
        let server = if n % 2 == 0 { &first } else { &second };
        let response = data(server, "shared").await;
        assert_eq!(response.status(), StatusCode::OK, "request {n}");
        assert_eq!(
            rate_limit(&response).0,
            5 - n,
            "one count across both servers"
        );
    }
    for server in [&first, &second] {
        let refused = data(server, "shared").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(retry_after(&refused) >= 1);
    }
    // Another client still has its whole quota on both.
    assert_eq!(rate_limit(&data(&second, "other").await).0, 5);
}

async fn redis_down_falls_back_to_the_process_and_is_counted(backend: Backend) {
    // Nothing listens on port 1: every connection is refused at once.
    let app = spawn_on_redis(backend, "3/60s", "redis://127.0.0.1:1", "unused:").await;
    let before = fallbacks(&app).await;
    for n in 0..3 {
        assert_eq!(
            data(&app, "stranded").await.status(),
            StatusCode::OK,
            "request {n}"
        );
    }
    let refused = data(&app, "stranded").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused) >= 1);
    assert!(
        fallbacks(&app).await >= before + 4,
        "each fallback is counted in /metrics"
    );
}

async fn a_hung_redis_does_not_hold_requests_up(backend: Backend) {
    // A "Redis" that accepts connections and never answers a byte.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", hung.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = hung.accept().await {
            connections.push(connection);
        }
    });
    let app = spawn_on_redis(backend, "3/60s", &url, "unused:").await;
    let before = fallbacks(&app).await;
    for n in 0..4 {
        let started = std::time::Instant::now();
        let response = data(&app, "waiting").await;
        let expected = if n < 3 {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(response.status(), expected, "request {n}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {n} waited {:?} for a hung Redis",
            started.elapsed()
        );
    }
    assert!(fallbacks(&app).await >= before + 4);
    held.abort();
}

async fn openapi_documents_every_status_and_limit_header(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let spec: Value = app.get_json("/openapi.json").await;
    let statuses = |operation: &Value| -> Vec<String> {
        operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let validate = &spec["paths"]["/validate"]["post"];
    for status in ["200", "400", "413", "415", "422"] {
        assert!(
            statuses(validate).contains(&status.to_string()),
            "/validate {status}"
        );
    }
    let data = &spec["paths"]["/api/data"]["get"];
    assert_eq!(data["parameters"][0]["name"], "client");
    assert_eq!(data["parameters"][0]["in"], "header");
    for status in ["200", "422", "429", "500", "503"] {
        let headers = &data["responses"][status]["headers"];
        for header in ["RateLimit-Policy", "RateLimit"] {
            assert!(
                headers.get(header).is_some(),
                "/api/data {status} documents {header}"
            );
        }
    }
    assert!(
        data["responses"]["429"]["headers"]
            .get("Retry-After")
            .is_some()
    );
}

/// Fires `total` requests for one client at once, spread over `servers`; counts the 200s.
async fn concurrent_successes(servers: &[&TestApp], total: usize) -> usize {
    let requests = (0..total).map(|n| data(servers[n % servers.len()], "stampede"));
    let responses = futures::future::join_all(requests).await;
    let mut passed = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => assert!(retry_after(&response) >= 1),
            other => panic!("unexpected {other}"),
        }
    }
    passed
}

async fn concurrent_requests_get_exactly_q(backend: Backend) {
    let app = spawn_limited(backend, "10/60s").await;
    assert_eq!(concurrent_successes(&[&app], 30).await, 10);
}

async fn concurrent_requests_on_two_servers_get_exactly_q_through_redis(backend: Backend) {
    let url = redis_url().expect("this build saw LARDER_TEST_REDIS_URL");
    let prefix = fresh_prefix();
    let first = spawn_on_redis(backend, "10/60s", &url, &prefix).await;
    let second = spawn_on_redis(backend, "10/60s", &url, &prefix).await;
    assert_eq!(concurrent_successes(&[&first, &second], 30).await, 10);
}

/// `ratelimit_redis_fallback_total` from `/metrics` (one recorder per test process, so
/// compare before and after rather than against zero).
async fn fallbacks(app: &TestApp) -> u64 {
    app.metric("ratelimit_redis_fallback_total")
        .await
        .unwrap_or(0.0) as u64
}
