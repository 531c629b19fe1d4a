//! §3: items — ownership, conditional requests, cursor pages and idempotency keys.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_problem, error_locs};

both_backends!(
    create_answers_201_with_location_and_etag,
    every_invalid_field_is_reported_and_nothing_is_coerced,
    reads_are_public_and_conditional,
    writes_need_a_token_and_the_owner,
    put_replaces_and_patch_merges,
    stale_if_match_is_412_and_changes_nothing,
    racing_updates_with_one_tag_give_one_200_and_one_412,
    delete_is_204_without_a_body_then_404,
    pages_follow_the_cursor_in_id_order,
    bad_limits_and_cursors_are_422,
    idempotency_keys_replay_the_first_answer,
    idempotency_key_with_another_body_is_422,
    concurrent_idempotent_posts_create_one_item,
    concurrent_creations_each_get_their_own_item_and_replay,
    idempotent_replays_survive_a_restart,
    hostile_strings_are_stored_verbatim_or_refused,
);

async fn create_answers_201_with_location_and_etag(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let response = app
        .post("/items")
        .bearer_auth(&user.token)
        .json(&json!({"name": "  Jam  ", "description": "sweet", "price": 4.5, "quantity": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let headers = response.headers().clone();
    let item: Value = response.json().await.unwrap();
    assert_eq!(headers["location"], format!("/items/{}", item["id"]));
    assert_eq!(headers["etag"], format!("\"{}-1\"", item["id"]));
    assert_eq!(item["name"], "Jam");
    assert_eq!(item["description"], "sweet");
    assert_eq!(item["price"], 4.5);
    assert_eq!(item["quantity"], 3);
    assert_eq!(item["owner_id"], user.id);
    assert_eq!(item["version"], 1);
    assert!(item["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(item["created_at"], item["updated_at"]);
    let minimal = app
        .create_item(&user, json!({"name": "Salt", "price": 0}))
        .await;
    assert_eq!(minimal["quantity"], 0);
    assert_eq!(minimal["description"], Value::Null);
}

async fn every_invalid_field_is_reported_and_nothing_is_coerced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let cases = [
        (
            json!({"name": "", "price": "cheap", "quantity": 1.5}),
            vec!["name", "price", "quantity"],
        ),
        (
            json!({"name": "x".repeat(201), "price": -1, "quantity": -1}),
            vec!["name", "price", "quantity"],
        ),
        (
            json!({"name": "ok", "price": 1, "quantity": "2"}),
            vec!["quantity"],
        ),
        (json!({"name": "ok", "price": true}), vec!["price"]),
        (
            json!({"name": "ok", "price": 1, "description": "d".repeat(2001)}),
            vec!["description"],
        ),
        (json!({"name": 5}), vec!["name", "price"]),
    ];
    for (body, fields) in cases {
        let response = app
            .post("/items")
            .bearer_auth(&user.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
        let expected: Vec<Value> = fields.iter().map(|f| json!(["body", f])).collect();
        assert_eq!(error_locs(&problem), expected, "{body}");
    }
    let page: Value = app.get_json("/items").await;
    assert_eq!(page["items"], json!([]));
}

async fn reads_are_public_and_conditional(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let item = app
        .create_item(&user, json!({"name": "Tea", "price": 2}))
        .await;
    let path = format!("/items/{}", item["id"]);
    let response = app.get(&path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(response.json::<Value>().await.unwrap(), item);
    for tag in [
        etag.clone(),
        format!("W/{etag}"),
        "*".to_string(),
        format!("\"x\", {etag}"),
    ] {
        let response = app
            .get(&path)
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(response.headers()["etag"], etag.as_str());
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let response = app
        .get(&path)
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.get("/items/999999").send().await.unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, Some("Item not found")).await;
}

async fn writes_need_a_token_and_the_owner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.user().await;
    let stranger = app.user().await;
    let admin = app.admin().await;
    let response = app
        .post("/items")
        .json(&json!({"name": "x", "price": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
    let item = app
        .create_item(&owner, json!({"name": "Mine", "price": 1}))
        .await;
    let path = format!("/items/{}", item["id"]);
    let body = json!({"name": "Theirs", "price": 2});
    for method in [Method::PUT, Method::PATCH] {
        let response = app
            .request(method.clone(), &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
        let response = app
            .request(method, &path)
            .bearer_auth(&stranger.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::FORBIDDEN, None).await;
    }
    let response = app
        .request(Method::DELETE, &path)
        .bearer_auth(&stranger.token)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::FORBIDDEN, None).await;
    let unchanged: Value = app.get_json(&path).await;
    assert_eq!(unchanged, item);
    // An admin may change anyone's item.
    let response = app
        .request(Method::PATCH, &path)
        .bearer_auth(&admin.token)
        .json(&json!({"quantity": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .request(Method::PUT, "/items/999999")
        .bearer_auth(&owner.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, Some("Item not found")).await;
}

async fn put_replaces_and_patch_merges(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let item = app
        .create_item(
            &user,
            json!({"name": "Jam", "description": "sweet", "price": 4, "quantity": 2}),
        )
        .await;
    let path = format!("/items/{}", item["id"]);
    let response = app
        .request(Method::PUT, &path)
        .bearer_auth(&user.token)
        .json(&json!({"name": "Honey", "price": 6}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], format!("\"{}-2\"", item["id"]));
    let put: Value = response.json().await.unwrap();
    assert_eq!(
        (
            put["name"].clone(),
            put["description"].clone(),
            put["quantity"].clone()
        ),
        (json!("Honey"), Value::Null, json!(0))
    );
    assert_eq!(put["version"], 2);
    assert_eq!(put["created_at"], item["created_at"]);

    let response = app
        .request(Method::PATCH, &path)
        .bearer_auth(&user.token)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"description": "floral", "quantity": 5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["name"], "Honey");
    assert_eq!(patched["description"], "floral");
    assert_eq!(patched["quantity"], 5);
    assert_eq!(patched["version"], 3);

    let response = app
        .request(Method::PATCH, &path)
        .bearer_auth(&user.token)
        .json(&json!({"description": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["description"],
        Value::Null
    );
    let response = app
        .request(Method::PATCH, &path)
        .bearer_auth(&user.token)
        .json(&json!({"price": -3, "name": null}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(
        error_locs(&problem),
        vec![json!(["body", "name"]), json!(["body", "price"])]
    );
    let current: Value = app.get_json(&path).await;
    assert_eq!(current["version"], 4);
}

async fn stale_if_match_is_412_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let item = app
        .create_item(&user, json!({"name": "Jam", "price": 4}))
        .await;
    let path = format!("/items/{}", item["id"]);
    let v1 = format!("\"{}-1\"", item["id"]);
    let response = app
        .request(Method::PATCH, &path)
        .bearer_auth(&user.token)
        .header("if-match", &v1)
        .json(&json!({"price": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for method in [Method::PUT, Method::PATCH] {
        let response = app
            .request(method, &path)
            .bearer_auth(&user.token)
            .header("if-match", &v1)
            .json(&json!({"name": "Stale", "price": 1}))
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::PRECONDITION_FAILED, None).await;
    }
    let response = app
        .request(Method::DELETE, &path)
        .bearer_auth(&user.token)
        .header("if-match", &v1)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::PRECONDITION_FAILED, None).await;
    // A weak tag never satisfies If-Match.
    let v2 = format!("\"{}-2\"", item["id"]);
    let response = app
        .request(Method::DELETE, &path)
        .bearer_auth(&user.token)
        .header("if-match", format!("W/{v2}"))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::PRECONDITION_FAILED, None).await;
    let current: Value = app.get_json(&path).await;
    assert_eq!(
        (
            current["name"].clone(),
            current["price"].clone(),
            current["version"].clone()
        ),
        (json!("Jam"), json!(5.0), json!(2))
    );
    let response = app
        .request(Method::DELETE, &path)
        .bearer_auth(&user.token)
        .header("if-match", &v2)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

async fn racing_updates_with_one_tag_give_one_200_and_one_412(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    for round in 0..5 {
        let item = app
            .create_item(&user, json!({"name": format!("race {round}"), "price": 1}))
            .await;
        let path = format!("/items/{}", item["id"]);
        let tag = format!("\"{}-1\"", item["id"]);
        let requests = (0..4).map(|i| {
            app.request(Method::PUT, &path)
                .bearer_auth(&user.token)
                .header("if-match", &tag)
                .json(&json!({"name": format!("writer {i}"), "price": i}))
                .send()
        });
        let statuses: Vec<StatusCode> = futures::future::join_all(requests)
            .await
            .into_iter()
            .map(|r| r.unwrap().status())
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
                .count(),
            3,
            "{statuses:?}"
        );
        let current: Value = app.get_json(&path).await;
        assert_eq!(current["version"], 2);
    }
}

async fn delete_is_204_without_a_body_then_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let item = app
        .create_item(&user, json!({"name": "Gone", "price": 1}))
        .await;
    let path = format!("/items/{}", item["id"]);
    let response = app
        .request(Method::DELETE, &path)
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().get("content-type").is_none());
    assert!(response.bytes().await.unwrap().is_empty());
    let response = app
        .request(Method::DELETE, &path)
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, Some("Item not found")).await;
    let response = app.get(&path).send().await.unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, Some("Item not found")).await;
}

async fn pages_follow_the_cursor_in_id_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            app.create_item(&user, json!({"name": format!("item {i}"), "price": i}))
                .await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let first: Value = app.get_json("/items").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 20);
    let seen = app.all_item_ids(7).await;
    assert_eq!(seen, ids);
}

async fn bad_limits_and_cursors_are_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
    ] {
        let response = app.get(&format!("/items?{query}")).send().await.unwrap();
        if field == "cursor" && response.status() == StatusCode::BAD_REQUEST {
            // A query string that is not even URL-encoded text is a malformed request.
            assert_problem(response, StatusCode::BAD_REQUEST, None).await;
            continue;
        }
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
        assert_eq!(
            error_locs(&problem),
            vec![json!(["query", field])],
            "{query}"
        );
    }
    let response = app.get("/items?limit=100").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn idempotency_keys_replay_the_first_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    for key in ["\"8e03-4c2b\"", "plain-token-key"] {
        let send = || {
            app.post("/items")
                .bearer_auth(&user.token)
                .header("idempotency-key", key)
                .json(&json!({"name": "Once", "price": 1}))
                .send()
        };
        let first = send().await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        let (first_headers, first_body) = (first.headers().clone(), first.bytes().await.unwrap());
        let second = send().await.unwrap();
        assert_eq!(second.status(), StatusCode::CREATED);
        assert_eq!(second.headers()["location"], first_headers["location"]);
        assert_eq!(second.headers()["etag"], first_headers["etag"]);
        assert_eq!(second.bytes().await.unwrap(), first_body);
    }
    let page: Value = app.get_json("/items").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    // Keys are per user: another user's identical key creates their own item.
    let other = app.user().await;
    let response = app
        .post("/items")
        .bearer_auth(&other.token)
        .header("idempotency-key", "plain-token-key")
        .json(&json!({"name": "Once", "price": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.json::<Value>().await.unwrap()["owner_id"],
        other.id
    );
    let response = app
        .post("/items")
        .bearer_auth(&other.token)
        .header("idempotency-key", "has space")
        .json(&json!({"name": "x", "price": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
}

async fn idempotency_key_with_another_body_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let post = |body: Value| {
        app.post("/items")
            .bearer_auth(&user.token)
            .header("idempotency-key", "k-1")
            .json(&body)
            .send()
    };
    assert_eq!(
        post(json!({"name": "A", "price": 1}))
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let response = post(json!({"name": "B", "price": 1})).await.unwrap();
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    // A failed first attempt (invalid body) does not use up the key.
    let response = app
        .post("/items")
        .bearer_auth(&user.token)
        .header("idempotency-key", "k-2")
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let response = app
        .post("/items")
        .bearer_auth(&user.token)
        .header("idempotency-key", "k-2")
        .json(&json!({"name": "ok", "price": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn concurrent_idempotent_posts_create_one_item(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let requests = (0..8).map(|_| {
        app.post("/items")
            .bearer_auth(&user.token)
            .header("idempotency-key", "\"same\"")
            .json(&json!({"name": "Single", "price": 1}))
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut bodies = Vec::new();
    for response in responses {
        let response = response.unwrap();
        match response.status() {
            StatusCode::CREATED => bodies.push(response.json::<Value>().await.unwrap()),
            StatusCode::CONFLICT => {
                assert_problem(response, StatusCode::CONFLICT, None).await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!bodies.is_empty());
    assert!(bodies.iter().all(|body| body == &bodies[0]));
    let page: Value = app.get_json("/items").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

/// Concurrent creations share a transaction on SQLite (group commit, several rows per
/// statement): each answer must still be its own request's item, and each key's replay too.
async fn concurrent_creations_each_get_their_own_item_and_replay(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let create = |i: usize| {
        let mut request = app
            .post("/items")
            .bearer_auth(&user.token)
            .json(&json!({"name": format!("batch {i}"), "price": i, "quantity": i}));
        // Every other request carries a key, so keyed and unkeyed rows share batches.
        if i.is_multiple_of(2) {
            request = request.header("idempotency-key", format!("batch-{i}"));
        }
        request.send()
    };
    let count = 80;
    let responses = futures::future::join_all((0..count).map(create)).await;
    let mut items = Vec::new();
    for (i, response) in responses.into_iter().enumerate() {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let item: Value = response.json().await.unwrap();
        assert_eq!(item["name"], format!("batch {i}"));
        assert_eq!(item["quantity"], i);
        assert_eq!(location, format!("/items/{}", item["id"]));
        let stored: Value = app.get_json(&location).await;
        assert_eq!(stored, item);
        items.push(item);
    }
    let mut ids: Vec<i64> = items
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count);
    for i in (0..count).step_by(2) {
        let replay = create(i).await.unwrap();
        assert_eq!(replay.status(), StatusCode::CREATED);
        let item: Value = replay.json().await.unwrap();
        assert_eq!(item, items[i]);
    }
    let page: Value = app.get_json("/items?limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), count);
}

async fn idempotent_replays_survive_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let body = json!({"name": "Durable", "price": 3});
    let first = app
        .post("/items")
        .bearer_auth(&user.token)
        .header("idempotency-key", "restart-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body = first.bytes().await.unwrap();
    let app = app.restart(|_| {}).await;
    // The token secret survived too (kept beside the SQLite file, or the database).
    let replay = app
        .post("/items")
        .bearer_auth(&user.token)
        .header("idempotency-key", "restart-key")
        .json(&body)
        .send()
        .await;
    let replay = replay.unwrap();
    if backend == Backend::Postgres && replay.status() == StatusCode::UNAUTHORIZED {
        // Without LARDER_JWT_SECRET, PostgreSQL deployments get a per-process secret.
        let token = app.login(&user.email, &user.password).await;
        let replay = app
            .post("/items")
            .bearer_auth(&token)
            .header("idempotency-key", "restart-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.bytes().await.unwrap(), first_body);
    } else {
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.bytes().await.unwrap(), first_body);
    }
    let page: Value = app.get_json("/items").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

async fn hostile_strings_are_stored_verbatim_or_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    for name in [
        "'; drop table items; --",
        "Robert\"); DELETE FROM users;--",
        "ünïcødé ✓ 🍓",
        "<script>alert(1)</script>",
    ] {
        let item = app
            .create_item(&user, json!({"name": name, "price": 1}))
            .await;
        let read: Value = app.get_json(&format!("/items/{}", item["id"])).await;
        assert_eq!(read["name"], name);
    }
    let response = app
        .post("/items")
        .bearer_auth(&user.token)
        .json(&json!({"name": "nul\u{0}byte", "price": 1}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&problem), vec![json!(["body", "name"])]);
    let response = app
        .get("/items/1%27%20or%20%271%27=%271")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    let page: Value = app.get_json("/items?limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
}
