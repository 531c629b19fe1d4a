//! §10: the remaining status semantics — 501 against 405, 414, 406, 428, `Last-Modified`
//! with the `If-*-Since` preconditions, and `Prefer: return=minimal`.

use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestUser, assert_problem};

both_backends!(
    an_unknown_method_is_501_and_a_known_one_not_allowed_is_405,
    a_request_target_over_8_kib_is_414,
    an_accept_that_admits_nothing_is_406_and_changes_nothing,
    writes_without_if_match_are_428_when_required,
    items_carry_last_modified_and_the_since_preconditions_follow_rfc_9110,
    prefer_return_minimal_answers_without_a_body,
);

fn http_date(at: SystemTime) -> String {
    httpdate::fmt_http_date(at)
}

fn last_modified(response: &reqwest::Response) -> SystemTime {
    let value = response.headers()["last-modified"].to_str().unwrap();
    httpdate::parse_http_date(value).expect("Last-Modified is an HTTP-date")
}

async fn item_count(app: &TestApp) -> usize {
    app.all_item_ids(100).await.len()
}

async fn an_unknown_method_is_501_and_a_known_one_not_allowed_is_405(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let brew = Method::from_bytes(b"BREW").unwrap();
    for path in ["/items", "/healthz", "/no-such-path"] {
        let response = app.request(brew.clone(), path).send().await.unwrap();
        assert!(!response.headers().contains_key("allow"));
        assert_problem(
            response,
            StatusCode::NOT_IMPLEMENTED,
            Some("The request method is not implemented"),
        )
        .await;
    }
    for (method, path, allowed) in [
        (Method::DELETE, "/items", "GET, POST"),
        (Method::TRACE, "/items/1", "GET, PUT, PATCH, DELETE"),
        (Method::PUT, "/healthz", "GET"),
        (Method::from_bytes(b"QUERY").unwrap(), "/items", "GET, POST"),
    ] {
        let response = app.request(method.clone(), path).send().await.unwrap();
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        for name in allowed.split(", ") {
            assert!(allow.contains(name), "{method} {path}: Allow {allow}");
        }
        assert!(allow.contains("OPTIONS"), "{allow}");
        assert_problem(response, StatusCode::METHOD_NOT_ALLOWED, None).await;
    }
}

async fn a_request_target_over_8_kib_is_414(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // "/items?limit=5&pad=" is 19 bytes.
    let at_the_limit = format!("/items?limit=5&pad={}", "x".repeat(8192 - 19));
    let response = app.get(&at_the_limit).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let over = format!("{at_the_limit}y");
    let response = app.get(&over).send().await.unwrap();
    assert_problem(
        response,
        StatusCode::URI_TOO_LONG,
        Some("The request target is longer than 8192 bytes"),
    )
    .await;
    let long_path = format!("/items/{}", "1".repeat(9000));
    let response = app.get(&long_path).send().await.unwrap();
    assert_problem(response, StatusCode::URI_TOO_LONG, None).await;
}

async fn an_accept_that_admits_nothing_is_406_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let item = app
        .create_item(&user, json!({"name": "Jam", "price": 2}))
        .await;
    let path = format!("/items/{}", item["id"]);
    for accept in [
        "text/html",
        "application/xml, text/*",
        "application/json;q=0",
        "image/*",
    ] {
        let response = app
            .get(&path)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, StatusCode::NOT_ACCEPTABLE, None).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{body}"
        );
    }
    for accept in [
        "application/json",
        "*/*",
        "application/*",
        "text/html, application/json;q=0.1",
        "application/problem+json",
        "",
    ] {
        let response = app
            .get(&path)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "Accept: {accept}");
        assert_eq!(response.headers()["content-type"], "application/json");
    }
    // A route's other documented media types admit it: /metrics is text.
    let response = app
        .get("/metrics")
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Refused before anything runs: no item is created.
    let before = item_count(&app).await;
    let response = app
        .post("/items")
        .bearer_auth(&user.token)
        .header("accept", "text/html")
        .json(&json!({"name": "Salt", "price": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_ACCEPTABLE, None).await;
    assert_eq!(item_count(&app).await, before);
}

async fn writes_without_if_match_are_428_when_required(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.require_if_match = true).await;
    let user = app.user().await;
    // Creating needs no precondition: there is nothing to overwrite.
    let item = app
        .create_item(&user, json!({"name": "Jam", "price": 2}))
        .await;
    let path = format!("/items/{}", item["id"]);
    let unconditional = [
        (Method::PUT, Some(json!({"name": "Jelly", "price": 3}))),
        (Method::PATCH, Some(json!({"price": 3}))),
        (Method::DELETE, None),
    ];
    for (method, body) in &unconditional {
        let mut request = app.request(method.clone(), &path).bearer_auth(&user.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert_problem(
            response,
            StatusCode::PRECONDITION_REQUIRED,
            Some("This write must be conditional: send If-Match with the item's ETag"),
        )
        .await;
    }
    let unchanged = app.get_json(&path).await;
    assert_eq!(unchanged, item);

    let etag = format!("\"{}-1\"", item["id"]);
    let response = app
        .request(Method::PATCH, &path)
        .bearer_auth(&user.token)
        .header("if-match", &etag)
        .json(&json!({"price": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .request(Method::DELETE, &path)
        .bearer_auth(&user.token)
        .header("if-match", format!("\"{}-2\"", item["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

async fn items_carry_last_modified_and_the_since_preconditions_follow_rfc_9110(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let response = app
        .post("/items")
        .bearer_auth(&user.token)
        .json(&json!({"name": "Jam", "price": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created = last_modified(&response);
    let item: Value = response.json().await.unwrap();
    let path = format!("/items/{}", item["id"]);
    let etag = format!("\"{}-1\"", item["id"]);

    let response = app.get(&path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(last_modified(&response), created);
    let updated_at: chrono::DateTime<chrono::Utc> =
        item["updated_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        created,
        SystemTime::UNIX_EPOCH + Duration::from_secs(updated_at.timestamp() as u64)
    );

    let get_since =
        |name: &'static str, at: SystemTime| app.get(&path).header(name, http_date(at)).send();
    // If-Modified-Since: 304 unless changed after the date.
    let response = get_since("if-modified-since", created).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()["etag"], etag.as_str());
    assert!(response.bytes().await.unwrap().is_empty());
    let earlier = created - Duration::from_secs(10);
    let response = get_since("if-modified-since", earlier).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // An unreadable date is ignored.
    let response = app
        .get(&path)
        .header("if-modified-since", "last tuesday")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // If-None-Match takes precedence over If-Modified-Since.
    let response = app
        .get(&path)
        .header("if-modified-since", http_date(created))
        .header("if-none-match", "\"0-0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // If-Unmodified-Since on a read: 412 when changed after the date.
    let response = get_since("if-unmodified-since", earlier).await.unwrap();
    assert_problem(response, StatusCode::PRECONDITION_FAILED, None).await;

    // If-Unmodified-Since on a write: 412 and nothing changes when the item changed after it.
    let response = app
        .request(Method::PATCH, &path)
        .bearer_auth(&user.token)
        .header("if-unmodified-since", http_date(earlier))
        .json(&json!({"price": 9}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::PRECONDITION_FAILED, None).await;
    assert_eq!(app.get_json(&path).await["price"], 2.0);
    // If-Match takes precedence over If-Unmodified-Since.
    let response = app
        .request(Method::PATCH, &path)
        .bearer_auth(&user.token)
        .header("if-unmodified-since", http_date(earlier))
        .header("if-match", &etag)
        .json(&json!({"price": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(last_modified(&response) >= created);
    // Unmodified since a date at or after the last change: the write goes ahead.
    let now = SystemTime::now() + Duration::from_secs(1);
    let response = app
        .request(Method::DELETE, &path)
        .bearer_auth(&user.token)
        .header("if-unmodified-since", http_date(now))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

async fn write_with_prefer(
    app: &TestApp,
    user: &TestUser,
    method: Method,
    path: &str,
    body: Value,
) -> reqwest::Response {
    app.request(method, path)
        .bearer_auth(&user.token)
        .header("prefer", "return=minimal")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn prefer_return_minimal_answers_without_a_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let response = write_with_prefer(
        &app,
        &user,
        Method::POST,
        "/items",
        json!({"name": "Jam", "price": 2}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let headers = response.headers().clone();
    assert_eq!(headers["preference-applied"], "return=minimal");
    let location = headers["location"].to_str().unwrap().to_owned();
    let id = location.trim_start_matches("/items/").to_owned();
    assert_eq!(headers["etag"], format!("\"{id}-1\""));
    assert!(headers.contains_key("last-modified"));
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(app.get_json(&location).await["name"], "Jam");

    for (method, body, version, name) in [
        (
            Method::PUT,
            json!({"name": "Jelly", "price": 3}),
            2,
            "Jelly",
        ),
        (Method::PATCH, json!({"name": "Marmalade"}), 3, "Marmalade"),
    ] {
        let response = write_with_prefer(&app, &user, method.clone(), &location, body).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{method}");
        let headers = response.headers().clone();
        assert_eq!(headers["preference-applied"], "return=minimal");
        assert_eq!(headers["etag"], format!("\"{id}-{version}\""));
        assert!(!headers.contains_key("content-type"));
        assert!(response.bytes().await.unwrap().is_empty());
        assert_eq!(app.get_json(&location).await["name"], name);
    }

    // A refusal is not minimal: the problem body comes as always.
    let response =
        write_with_prefer(&app, &user, Method::PATCH, &location, json!({"price": -1})).await;
    assert!(!response.headers().contains_key("preference-applied"));
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    // Without the preference the representation comes back.
    let response = app
        .request(Method::PATCH, &location)
        .bearer_auth(&user.token)
        .json(&json!({"quantity": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("preference-applied"));
    assert_eq!(response.json::<Value>().await.unwrap()["quantity"], 4);
}
