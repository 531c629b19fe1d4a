//! §9: items, continued — filters, sorts and exact keyset pages, page entity tags, and the
//! streamed export.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestUser, assert_problem, error_locs};

both_backends!(
    filters_narrow_the_listing,
    name_search_ignores_case_and_treats_wildcards_as_text,
    every_sort_orders_with_ties_broken_by_id,
    pages_stay_exact_while_rows_are_inserted,
    bad_sorts_filters_and_cursors_are_422,
    pages_have_weak_etags_and_304_while_unchanged,
    export_streams_ndjson_with_the_listings_filters_and_sort,
    export_as_csv_is_quoted_by_the_book,
    export_spans_many_batches_in_order,
    export_refuses_what_it_cannot_produce,
    the_document_describes_the_listing_and_the_export,
);

const SORTS: [&str; 6] = ["id", "-id", "price", "-price", "created_at", "-created_at"];

/// Every item of a listing, page by page (`limit` per page): the items, and every page.
async fn all_pages(app: &TestApp, query: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/items?limit={limit}&{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", urlencode(cursor)));
        }
        let response = app.get(&path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page: Value = response.json().await.unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return items,
        }
    }
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)]).unwrap()[1..].to_string()
}

fn ids(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect()
}

/// `items` sorted as `sort` orders them: by the key, ties by id, both in its direction.
fn sorted(items: &[Value], sort: &str) -> Vec<i64> {
    let mut items = items.to_vec();
    let (descending, key) = match sort.strip_prefix('-') {
        Some(key) => (true, key),
        None => (false, sort),
    };
    items.sort_by(|a, b| {
        let by_key = match key {
            "price" => a["price"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["price"].as_f64().unwrap()),
            "created_at" => parse_time(&a["created_at"]).cmp(&parse_time(&b["created_at"])),
            _ => std::cmp::Ordering::Equal,
        };
        let order = by_key.then(a["id"].as_i64().cmp(&b["id"].as_i64()));
        if descending { order.reverse() } else { order }
    });
    ids(&items)
}

fn parse_time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn filters_narrow_the_listing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = app.user().await;
    let bob = app.user().await;
    let mut made = Vec::new();
    for (user, name, price) in [
        (&ann, "apple jam", 3.5),
        (&ann, "pear jam", 5.0),
        (&ann, "honey", 12.0),
        (&bob, "apple pie", 4.99),
        (&bob, "plum jam", 5.0),
        (&bob, "bread", 2.0),
    ] {
        made.push(
            app.create_item(user, json!({"name": name, "price": price}))
                .await,
        );
    }
    let names = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_string())
            .collect()
    };
    let ann_items = all_pages(&app, &format!("owner_id={}", ann.id), 2).await;
    assert_eq!(names(&ann_items), ["apple jam", "pear jam", "honey"]);
    let bob_jams = all_pages(&app, &format!("owner_id={}&q=jam", bob.id), 2).await;
    assert_eq!(names(&bob_jams), ["plum jam"]);
    // Both bounds are inclusive.
    let five = all_pages(&app, "min_price=5&max_price=5", 2).await;
    assert_eq!(names(&five), ["pear jam", "plum jam"]);
    let cheap = all_pages(&app, "max_price=4.99&sort=-price", 1).await;
    assert_eq!(names(&cheap), ["apple pie", "apple jam", "bread"]);
    let under_5_by_ann = all_pages(
        &app,
        &format!("owner_id={}&max_price=5&sort=price", ann.id),
        5,
    )
    .await;
    assert_eq!(names(&under_5_by_ann), ["apple jam", "pear jam"]);
    // Ties (both at 5.0) by id, in the sort's direction.
    let dear = all_pages(&app, "min_price=5&q=A&sort=-price", 20).await;
    assert_eq!(names(&dear), ["plum jam", "pear jam"]);
    // Nothing matches: an empty last page.
    let page = app.get_json("/items?owner_id=999999").await;
    assert_eq!(page, json!({"items": [], "next_cursor": null}));
    // The items are the items `GET /items/{id}` shows.
    let all = all_pages(&app, "", 100).await;
    assert_eq!(all, made);
}

async fn name_search_ignores_case_and_treats_wildcards_as_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    for name in [
        "50% off",
        "500 off",
        "a_b",
        "axb",
        "back\\slash",
        "backslash",
        "Strawberry JAM",
    ] {
        app.create_item(&user, json!({"name": name, "price": 1}))
            .await;
    }
    for (q, expected) in [
        ("%", vec!["50% off"]),
        ("0%", vec!["50% off"]),
        ("_", vec!["a_b"]),
        ("a_b", vec!["a_b"]),
        ("\\", vec!["back\\slash"]),
        ("jam", vec!["Strawberry JAM"]),
        ("sTRAWberry j", vec!["Strawberry JAM"]),
        ("off", vec!["50% off", "500 off"]),
        ("nothing", vec![]),
    ] {
        let items = all_pages(&app, &format!("q={}", urlencode(q)), 20).await;
        let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, expected, "q={q}");
    }
}

async fn every_sort_orders_with_ties_broken_by_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    for i in 0..13 {
        // Prices repeat, so ties are many; creation instants may tie too.
        app.create_item(
            &user,
            json!({"name": format!("item {i}"), "price": (i * 7) % 4}),
        )
        .await;
    }
    let everything = all_pages(&app, "", 100).await;
    for sort in SORTS {
        for limit in [1, 3, 100] {
            let items = all_pages(&app, &format!("sort={sort}"), limit).await;
            assert_eq!(
                ids(&items),
                sorted(&everything, sort),
                "sort={sort} limit={limit}"
            );
        }
    }
    // The default is id order, and `sort=id` is the same listing with the same cursors.
    let first = app.get_json("/items?limit=5").await;
    assert_eq!(first, app.get_json("/items?limit=5&sort=id").await);
    assert_eq!(first["next_cursor"], json!(ids(&everything)[4].to_string()));
}

async fn pages_stay_exact_while_rows_are_inserted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let mut n = 0;
    for _ in 0..20 {
        app.create_item(&user, json!({"name": format!("first {n}"), "price": n % 5}))
            .await;
        n += 1;
    }
    for (sort, filter) in [
        ("id", ""),
        ("-id", ""),
        ("price", ""),
        ("-price", "&max_price=3"),
        ("created_at", "&q=I"),
        ("-created_at", ""),
    ] {
        let before: HashSet<i64> =
            ids(&all_pages(&app, &format!("sort={sort}{filter}"), 100).await)
                .into_iter()
                .collect();
        let mut seen: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/items?limit=3&sort={sort}{filter}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={}", urlencode(cursor)));
            }
            let page = app.get_json(&path).await;
            seen.extend(page["items"].as_array().unwrap().iter().cloned());
            // Rows land before, on and after the cursor's place, with tied prices (fewer
            // than a page, and on the first pages only: the listing must end).
            for _ in 0..(if seen.len() < 15 { 2 } else { 0 }) {
                app.create_item(&user, json!({"name": format!("later {n}"), "price": n % 5}))
                    .await;
                n += 1;
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        let seen_ids = ids(&seen);
        let unique: HashSet<i64> = seen_ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen_ids.len(),
            "sort={sort}: a row was repeated"
        );
        assert!(before.is_subset(&unique), "sort={sort}: a row was skipped");
        assert_eq!(seen_ids, sorted(&seen, sort), "sort={sort}: out of order");
    }
}

async fn bad_sorts_filters_and_cursors_are_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    for i in 0..3 {
        app.create_item(&user, json!({"name": format!("item {i}"), "price": i}))
            .await;
    }
    let price_cursor = app.get_json("/items?limit=1&sort=price").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let price_cursor = urlencode(&price_cursor);
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("sort=name".into(), vec!["sort"]),
        ("sort=".into(), vec!["sort"]),
        ("sort=PRICE".into(), vec!["sort"]),
        ("min_price=5&max_price=4".into(), vec!["max_price"]),
        ("min_price=abc".into(), vec!["min_price"]),
        ("max_price=NaN".into(), vec!["max_price"]),
        ("owner_id=ann".into(), vec!["owner_id"]),
        (format!("sort=-price&cursor={price_cursor}"), vec!["cursor"]),
        (format!("cursor={price_cursor}"), vec!["cursor"]),
        ("sort=price&cursor=3".into(), vec!["cursor"]),
        (
            "sort=bogus&limit=0&owner_id=x".into(),
            vec!["owner_id", "sort", "limit"],
        ),
    ];
    for (query, locs) in cases {
        for route in ["/items", "/items/export"] {
            let expected: Vec<Value> = locs
                .iter()
                // The export takes neither `limit` nor `cursor`.
                .filter(|name| route == "/items" || !matches!(**name, "limit" | "cursor"))
                .map(|name| json!(["query", name]))
                .collect();
            let response = app.get(&format!("{route}?{query}")).send().await.unwrap();
            if expected.is_empty() {
                assert_eq!(response.status(), StatusCode::OK, "{route}?{query}");
                continue;
            }
            let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
            assert_eq!(error_locs(&problem), expected, "{route}?{query}");
        }
    }
    let response = app
        .get(&format!("/items?sort=price&cursor={price_cursor}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn etag_of(app: &TestApp, path: &str) -> String {
    let response = app.get(path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with("W/\"") && etag.ends_with('"'), "{etag}");
    etag
}

/// Whether a conditional GET with `If-None-Match: sent` is 304 (with the page's tag, one
/// that `sent` names, and no body); else it must be 200 with another tag.
async fn not_modified(app: &TestApp, path: &str, sent: &str) -> bool {
    let response = app
        .get(path)
        .header("If-None-Match", sent)
        .send()
        .await
        .unwrap();
    match response.status() {
        StatusCode::NOT_MODIFIED => {
            let etag = response.headers()["etag"].to_str().unwrap().to_string();
            assert!(etag.starts_with("W/\""));
            assert!(sent == "*" || sent.contains(&etag), "{sent} / {etag}");
            assert!(response.bytes().await.unwrap().is_empty());
            true
        }
        StatusCode::OK => {
            let etag = response.headers()["etag"].to_str().unwrap();
            assert!(!sent.contains(etag), "{sent} / {etag}");
            false
        }
        status => panic!("{path}: {status}"),
    }
}

async fn pages_have_weak_etags_and_304_while_unchanged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let mut items = Vec::new();
    for i in 0..5 {
        items.push(
            app.create_item(&user, json!({"name": format!("item {i}"), "price": i}))
                .await,
        );
    }
    let first = "/items?limit=2";
    let etag = etag_of(&app, first).await;
    assert_eq!(etag, etag_of(&app, first).await, "a page's tag is stable");
    assert!(not_modified(&app, first, &etag).await);
    assert!(not_modified(&app, first, &format!("\"x\", {etag}")).await);
    assert!(not_modified(&app, first, "*").await);
    assert!(!not_modified(&app, first, "W/\"other\"").await);
    // Other pages and other listings have other tags.
    assert_ne!(etag, etag_of(&app, "/items?limit=3").await);
    assert_ne!(etag, etag_of(&app, "/items?limit=2&sort=-id").await);
    // An insert that lands after the page leaves it unchanged.
    let last = app
        .create_item(&user, json!({"name": "last", "price": 9}))
        .await;
    assert!(not_modified(&app, first, &etag).await);
    // A write to an item on the page changes it.
    let id = items[1]["id"].as_i64().unwrap();
    let response = app
        .request(reqwest::Method::PATCH, &format!("/items/{id}"))
        .bearer_auth(&user.token)
        .json(&json!({"quantity": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!not_modified(&app, first, &etag).await);
    // An insert that lands on a page changes it (newest first: the first page).
    let newest = "/items?limit=2&sort=-id";
    let etag = etag_of(&app, newest).await;
    assert!(not_modified(&app, newest, &etag).await);
    app.create_item(&user, json!({"name": "newer", "price": 1}))
        .await;
    assert!(!not_modified(&app, newest, &etag).await);
    // So does a deletion, on a filtered page.
    let dear = "/items?min_price=9";
    let etag = etag_of(&app, dear).await;
    assert!(not_modified(&app, dear, &etag).await);
    let response = app
        .request(reqwest::Method::DELETE, &format!("/items/{}", last["id"]))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(!not_modified(&app, dear, &etag).await);
    // HEAD carries the tag too.
    let response = app.client.head(app.url(first)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["etag"]
            .to_str()
            .unwrap()
            .starts_with("W/\"")
    );
}

async fn export(app: &TestApp, query: &str, accept: Option<&str>) -> (String, String) {
    let mut request = app.get(&format!("/items/export?{query}"));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "export?{query}");
    let media_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    (media_type, response.text().await.unwrap())
}

fn ndjson(text: &str) -> Vec<Value> {
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn export_streams_ndjson_with_the_listings_filters_and_sort(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = app.user().await;
    let bob = app.user().await;
    for i in 0..7 {
        let user = if i % 2 == 0 { &ann } else { &bob };
        app.create_item(
            user,
            json!({"name": format!("Jam {i}"), "price": i % 3, "description": "line\nbreak"}),
        )
        .await;
    }
    let (media_type, body) = export(&app, "", None).await;
    assert_eq!(media_type, "application/x-ndjson");
    assert_eq!(ndjson(&body), all_pages(&app, "", 100).await);
    for query in [
        "sort=-price".to_string(),
        format!("owner_id={}&sort=created_at", ann.id),
        "q=JAM%201&min_price=1&max_price=2&sort=-id".to_string(),
        "owner_id=424242".to_string(),
    ] {
        for accept in [
            None,
            Some("application/x-ndjson"),
            Some("*/*"),
            Some("application/*"),
        ] {
            let (media_type, body) = export(&app, &query, accept).await;
            assert_eq!(media_type, "application/x-ndjson");
            assert_eq!(ndjson(&body), all_pages(&app, &query, 2).await, "{query}");
        }
    }
    // `/items/export` is not an item id.
    let response = app.get("/items/export").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn export_as_csv_is_quoted_by_the_book(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let tricky = [
        ("plain", None),
        ("comma, and \"quotes\"", Some("line one\nline two")),
        ("  spaced  ", Some("semi;colon")),
        ("=1+1", Some("")),
    ];
    for (name, description) in tricky {
        app.create_item(
            &user,
            json!({"name": name, "description": description, "price": 2.5, "quantity": 4}),
        )
        .await;
    }
    let (media_type, body) = export(&app, "sort=-id", Some("text/csv")).await;
    assert_eq!(media_type, "text/csv; charset=utf-8");
    let listed = all_pages(&app, "sort=-id", 100).await;
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "id",
            "name",
            "description",
            "price",
            "quantity",
            "owner_id",
            "version",
            "created_at",
            "updated_at"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), listed.len());
    for (row, item) in rows.iter().zip(&listed) {
        assert_eq!(row[0], item["id"].to_string());
        assert_eq!(&row[1], item["name"].as_str().unwrap());
        assert_eq!(&row[2], item["description"].as_str().unwrap_or(""));
        assert_eq!(row[3].parse::<f64>().unwrap(), 2.5);
        assert_eq!(&row[4], "4");
        assert_eq!(row[5], item["owner_id"].to_string());
        assert_eq!(&row[6], "1");
        assert_eq!(&row[7], item["created_at"].as_str().unwrap());
        assert_eq!(&row[8], item["updated_at"].as_str().unwrap());
    }
    // A preference for CSV over anything else.
    let (media_type, _) = export(&app, "", Some("text/csv, */*;q=0.1")).await;
    assert!(media_type.starts_with("text/csv"));
    // No items: the header row alone.
    let (_, body) = export(&app, "owner_id=424242", Some("text/csv")).await;
    assert_eq!(
        body,
        "id,name,description,price,quantity,owner_id,version,created_at,updated_at\n"
    );
}

/// Imports `count` items as `user` (one job) and waits for it to finish.
async fn import(app: &TestApp, user: &TestUser, count: usize) {
    let items: Vec<Value> = (0..count)
        .map(|i| json!({"name": format!("bulk {i}"), "price": (i % 50) as f64 / 2.0}))
        .collect();
    let response = app
        .post("/process")
        .bearer_auth(&user.token)
        .json(&json!({"kind": "import_items", "items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job: Value = response.json().await.unwrap();
    let id = job["job_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = app
            .get(&format!("/jobs/{id}"))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match job["status"].as_str().unwrap() {
            "succeeded" => return,
            "failed" => panic!("the import failed: {job}"),
            _ if Instant::now() > deadline => panic!("the import did not finish: {job}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn export_spans_many_batches_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    import(&app, &user, 2_345).await;
    let (_, body) = export(&app, "sort=-price", None).await;
    let items = ndjson(&body);
    assert_eq!(items.len(), 2_345);
    assert_eq!(ids(&items), sorted(&items, "-price"));
    let unique: HashSet<i64> = ids(&items).into_iter().collect();
    assert_eq!(unique.len(), 2_345);
    let (_, body) = export(&app, "min_price=20", Some("text/csv")).await;
    // Prices 20.0 … 24.5: rows 40–49 of every 50 (465 of 2,345), and the header.
    assert_eq!(body.lines().count(), 1 + 465);
    // A client that goes away halfway leaves the server serving.
    let response = app.get("/items/export").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    assert_eq!(
        app.get("/healthz").send().await.unwrap().status(),
        StatusCode::OK
    );
}

async fn export_refuses_what_it_cannot_produce(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for accept in [
        "application/json",
        "text/html, image/png",
        "text/csv;q=0",
        "application/x-ndjson;q=0, text/plain",
    ] {
        let response = app
            .get("/items/export")
            .header("Accept", accept)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::NOT_ACCEPTABLE, None).await;
    }
}

/// The schema a parameter of an operation points to, resolved.
fn parameter_schema<'a>(spec: &'a Value, operation: &'a Value, name: &str) -> &'a Value {
    let parameter = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name}"));
    let schema = &parameter["schema"];
    let reference = schema["$ref"].as_str().or_else(|| {
        schema["oneOf"]
            .as_array()
            .and_then(|all| all.iter().find_map(|s| s["$ref"].as_str()))
    });
    match reference {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

async fn the_document_describes_the_listing_and_the_export(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let spec: Value = app.get_json("/openapi.json").await;
    for path in ["/items", "/items/export"] {
        let operation = &spec["paths"][path]["get"];
        let sort = parameter_schema(&spec, operation, "sort");
        assert_eq!(
            sort["enum"],
            json!(["id", "-id", "price", "-price", "created_at", "-created_at"]),
            "{path}"
        );
        for name in ["owner_id", "q", "min_price", "max_price"] {
            parameter_schema(&spec, operation, name);
        }
        assert!(operation["responses"]["422"].is_object(), "{path}");
    }
    let list = &spec["paths"]["/items"]["get"];
    assert!(list["responses"]["304"].is_object());
    assert!(list["responses"]["200"]["headers"]["ETag"].is_object());
    let export = &spec["paths"]["/items/export"]["get"];
    assert!(export["responses"]["406"].is_object());
    let content = export["responses"]["200"]["content"].as_object().unwrap();
    assert!(content.contains_key("application/x-ndjson") && content.contains_key("text/csv"));
}
