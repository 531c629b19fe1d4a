//! The SQLite read cache never serves stale data: every write is seen by the next read in
//! the same process, on every cached path (item, pages, `/api/data`, the token's user).
//! Run on both backends: PostgreSQL has no cache and must behave the same.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    item_writes_are_seen_at_once_by_every_cached_read,
    a_deleted_user_is_401_at_once_and_their_items_are_gone,
    reads_racing_writes_never_go_back,
);

async fn get_json(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app
        .get(path)
        .header("client", "cache-test")
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn page_names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_string())
        .collect()
}

fn data_names(data: &Value) -> Vec<String> {
    data["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_string())
        .collect()
}

async fn item_writes_are_seen_at_once_by_every_cached_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let first = app
        .create_item(&user, json!({"name": "one", "price": 1}))
        .await;
    let id = first["id"].as_i64().unwrap();
    let path = format!("/items/{id}");
    // Warm every cached read twice.
    for _ in 0..2 {
        assert_eq!(get_json(&app, &path).await.1["name"], "one");
        assert_eq!(
            page_names(&get_json(&app, "/items?limit=20").await.1),
            ["one"]
        );
        assert_eq!(data_names(&get_json(&app, "/api/data").await.1), ["one"]);
    }

    // A creation shows in pages and /api/data at once.
    let second = app
        .create_item(&user, json!({"name": "two", "price": 2}))
        .await;
    let second_id = second["id"].as_i64().unwrap();
    assert_eq!(
        page_names(&get_json(&app, "/items?limit=20").await.1),
        ["one", "two"]
    );
    assert_eq!(
        data_names(&get_json(&app, "/api/data").await.1),
        ["two", "one"]
    );

    // A patch is fresh on GET (body and ETag), pages and /api/data.
    let response = app
        .request(Method::PATCH, &path)
        .bearer_auth(&user.token)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"name": "uno"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.get(&path).send().await.unwrap();
    assert_eq!(response.headers()["etag"], format!("\"{id}-2\""));
    let item: Value = response.json().await.unwrap();
    assert_eq!(item["name"], "uno");
    assert_eq!(item["version"], 2);
    assert_eq!(
        page_names(&get_json(&app, "/items?limit=20").await.1),
        ["uno", "two"]
    );
    assert_eq!(
        data_names(&get_json(&app, "/api/data").await.1),
        ["two", "uno"]
    );

    // A PUT too.
    let response = app
        .request(Method::PUT, &path)
        .bearer_auth(&user.token)
        .json(&json!({"name": "eins", "price": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(get_json(&app, &path).await.1["name"], "eins");

    // A deletion: 404 at once, gone from pages and /api/data.
    let second_path = format!("/items/{second_id}");
    assert_eq!(get_json(&app, &second_path).await.0, StatusCode::OK);
    let response = app
        .request(Method::DELETE, &second_path)
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(get_json(&app, &second_path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        page_names(&get_json(&app, "/items?limit=20").await.1),
        ["eins"]
    );
    assert_eq!(data_names(&get_json(&app, "/api/data").await.1), ["eins"]);

    // A missing item that is then created is found (a cached 404 does not linger).
    let next = format!("/items/{}", second_id + 1);
    assert_eq!(get_json(&app, &next).await.0, StatusCode::NOT_FOUND);
    let third = app
        .create_item(&user, json!({"name": "three", "price": 3}))
        .await;
    assert_eq!(third["id"].as_i64().unwrap(), second_id + 1);
    assert_eq!(get_json(&app, &next).await.1["name"], "three");
}

async fn a_deleted_user_is_401_at_once_and_their_items_are_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let user = app.user().await;
    let item = app
        .create_item(&user, json!({"name": "theirs", "price": 1}))
        .await;
    let path = format!("/items/{}", item["id"]);
    for _ in 0..3 {
        let response = app
            .get("/protected")
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(get_json(&app, &path).await.0, StatusCode::OK);
        assert_eq!(data_names(&get_json(&app, "/api/data").await.1), ["theirs"]);
    }
    let response = app
        .request(Method::DELETE, &format!("/admin/users/{}", user.id))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .get("/protected")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The cascade took their items: not served from the cache either.
    assert_eq!(get_json(&app, &path).await.0, StatusCode::NOT_FOUND);
    assert!(data_names(&get_json(&app, "/api/data").await.1).is_empty());
    assert!(page_names(&get_json(&app, "/items?limit=20").await.1).is_empty());
}

/// While readers hammer the item, each write's own next read sees that write (or a later one).
async fn reads_racing_writes_never_go_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let item = app
        .create_item(&user, json!({"name": "v1", "price": 1}))
        .await;
    let path = format!("/items/{}", item["id"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let client = reqwest::Client::new();
        let url = app.url(&path);
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client.get(&url).send().await.unwrap().bytes().await;
            }
        }));
    }
    for version in 2..=30 {
        let response = app
            .request(Method::PUT, &path)
            .bearer_auth(&user.token)
            .json(&json!({"name": format!("v{version}"), "price": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let (status, body) = get_json(&app, &path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["version"], version, "{body}");
        assert_eq!(body["name"], format!("v{version}"));
        let page = get_json(&app, "/items?limit=20").await.1;
        assert_eq!(page_names(&page), [format!("v{version}")]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
}
