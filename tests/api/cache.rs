//! The SQLite read cache never serves stale data: every write is seen by the next read in
//! the same process, on every cached path (item, pages, `/api/data`, the token's user).
//! Run on both backends: PostgreSQL has no cache and must behave the same; it batches
//! concurrent reads instead (`store::coalesce`), and a read through one process sees a write
//! answered by another at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, fresh_postgres_database};
use crate::process::{free_port, wait_until_serving};

both_backends!(
    item_writes_are_seen_at_once_by_every_cached_read,
    a_deleted_user_is_401_at_once_and_their_items_are_gone,
    reads_racing_writes_never_go_back,
    concurrent_reads_and_creations_each_get_their_own_answer,
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

/// Many reads and creations at once, so that they share batches (PostgreSQL) or group
/// commits (both): every answer is the one its own request asked for.
async fn concurrent_reads_and_creations_each_get_their_own_answer(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let user = Arc::new(app.user().await);
    let mut creations = Vec::new();
    for n in 0..64 {
        let (app, user) = (app.clone(), user.clone());
        creations.push(tokio::spawn(async move {
            let name = format!("item {n}");
            let item = app
                .create_item(&user, json!({"name": name, "price": n, "quantity": n}))
                .await;
            assert_eq!(item["name"], name);
            assert_eq!(item["price"], n as f64);
            assert_eq!(item["quantity"], n);
            item
        }));
    }
    let mut created = Vec::new();
    for creation in creations {
        created.push(creation.await.unwrap());
    }
    let mut ids: Vec<i64> = created
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 64, "every creation got an id of its own");
    let missing = ids[63] + 1000;
    let mut reads = Vec::new();
    for round in 0..4 {
        for item in created.iter().cloned() {
            let app = app.clone();
            reads.push(tokio::spawn(async move {
                let (status, body) = get_json(&app, &format!("/items/{}", item["id"])).await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body, item);
            }));
        }
        let app = app.clone();
        reads.push(tokio::spawn(async move {
            let response = app
                .get(&format!("/items/{}", missing + round))
                .send()
                .await
                .unwrap();
            crate::helpers::assert_problem(response, StatusCode::NOT_FOUND, None).await;
        }));
    }
    // Pages of every size at once: distinct pages in one batch, each its own length.
    for limit in 1..=64 {
        let (app, ids) = (app.clone(), ids.clone());
        reads.push(tokio::spawn(async move {
            let (status, page) = get_json(&app, &format!("/items?limit={limit}")).await;
            assert_eq!(status, StatusCode::OK);
            let got: Vec<i64> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_i64().unwrap())
                .collect();
            assert_eq!(got, ids[..limit].to_vec(), "limit={limit}");
        }));
    }
    // Token checks of many users at once (one batch of session lookups on PostgreSQL): each
    // request is answered as its own user.
    let mut users = Vec::new();
    for _ in 0..8 {
        users.push(Arc::new(app.user().await));
    }
    for round in 0..4 {
        for user in &users {
            let (app, user) = (app.clone(), user.clone());
            reads.push(tokio::spawn(async move {
                let response = app
                    .get("/users/me")
                    .bearer_auth(&user.token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK, "round {round}");
                assert_eq!(response.json::<Value>().await.unwrap()["id"], user.id);
            }));
        }
    }
    for read in reads {
        read.await.unwrap();
    }
}

/// A GET's JSON body.
async fn read_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Two larder processes on one PostgreSQL database, the second under a read load that keeps
/// its batches full: each write answered by the first is seen by the very next read through
/// the second — the item, its new version, the page it lands on, and its deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn postgres_a_write_through_one_process_is_read_through_another_at_once() {
    let database = fresh_postgres_database().await;
    let (writer_port, reader_port) = (free_port(), free_port());
    let mut first = crate::faults::start(&database, writer_port);
    let mut second = crate::faults::start(&database, reader_port);
    let writer = format!("http://127.0.0.1:{writer_port}");
    let reader = format!("http://127.0.0.1:{reader_port}");
    wait_until_serving(&writer).await;
    wait_until_serving(&reader).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = crate::jobs::register(&client, &writer).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for n in 0..16 {
        let (client, reader, stop) = (client.clone(), reader.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let path = if n % 2 == 0 {
                "/items/1"
            } else {
                "/items?limit=5"
            };
            while !stop.load(Ordering::Relaxed) {
                let status = client
                    .get(format!("{reader}{path}"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert!(
                    status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                    "{status}"
                );
            }
        }));
    }
    for round in 0..25 {
        let response = client
            .post(format!("{writer}/items"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("new {round}"), "price": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let item: Value = response.json().await.unwrap();
        let path = format!("/items/{}", item["id"]);
        let seen = client.get(format!("{reader}{path}")).send().await.unwrap();
        assert_eq!(seen.status(), StatusCode::OK, "round {round}: the new item");
        assert_eq!(seen.json::<Value>().await.unwrap(), item);
        let page = read_json(&client, format!("{reader}/items?sort=-id&limit=1")).await;
        assert_eq!(
            page["items"][0]["id"], item["id"],
            "round {round}: the newest page"
        );
        let renamed = client
            .patch(format!("{writer}{path}"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("renamed {round}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(renamed.status(), StatusCode::OK);
        let seen = read_json(&client, format!("{reader}{path}")).await;
        assert_eq!(
            seen["name"],
            format!("renamed {round}"),
            "round {round}: the new version"
        );
        assert_eq!(seen["version"], 2);
        if round % 2 == 1 {
            let deleted = client
                .delete(format!("{writer}{path}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
            let gone = client.get(format!("{reader}{path}")).send().await.unwrap();
            assert_eq!(
                gone.status(),
                StatusCode::NOT_FOUND,
                "round {round}: the deletion"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
