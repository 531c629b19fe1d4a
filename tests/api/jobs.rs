//! §4: background processing — `POST /process`, `GET /jobs/{id}`, and a queue that loses
//! nothing: leases, retries, panics, shutdown, concurrent workers and `kill -9`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{
    Backend, TestApp, TestUser, assert_problem, error_locs, fresh_postgres_database,
};
use crate::process::{free_port, wait_until_serving};
use larder::config::{DatabaseUrl, Settings};

/// The in-process server accepts the tokens of the binaries these tests start.
pub(crate) fn keep_tokens(settings: &mut Settings) {
    settings.jwt_secret = Some(crate::process::SECRET.to_string());
}

/// `count` import rows named `{prefix}-{index}`.
pub(crate) fn rows(prefix: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| json!({"name": format!("{prefix}-{i}"), "price": (i % 100) as f64 / 4.0, "quantity": i % 7}))
        .collect()
}

pub(crate) async fn submit(app: &TestApp, user: &TestUser, items: &[Value]) -> Uuid {
    let response = app
        .post("/process")
        .bearer_auth(&user.token)
        .json(&json!({"kind": "import_items", "items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    body["job_id"].as_str().unwrap().parse().unwrap()
}

pub(crate) async fn job(app: &TestApp, user: &TestUser, id: Uuid) -> Value {
    let response = app
        .get(&format!("/jobs/{id}"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Polls the job until `done` says so (or fails the test after `limit`).
pub(crate) async fn wait_for(
    app: &TestApp,
    user: &TestUser,
    id: Uuid,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let body = job(app, user, id).await;
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < limit,
            "job {id} did not get there in {limit:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn finished(body: &Value) -> bool {
    body["status"] == "succeeded" || body["status"] == "failed" || body["status"] == "cancelled"
}

/// `(rows, distinct job_index values)` of the items a job created, straight from the database.
pub(crate) async fn item_rows(database_url: &DatabaseUrl, job: Uuid) -> (i64, i64) {
    count_rows(
        database_url,
        "select count(*), count(distinct job_index) from items where job_id = $1",
        job,
    )
    .await
}

/// Two counts from `sql` with `$1` bound to the job's id, read beside the server.
pub(crate) async fn count_rows(
    database_url: &DatabaseUrl,
    sql: &'static str,
    job: Uuid,
) -> (i64, i64) {
    match database_url {
        DatabaseUrl::Sqlite(url) => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let counts = sqlx::query_as(sql)
                .bind(job)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            counts
        }
        DatabaseUrl::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let counts = sqlx::query_as(sql)
                .bind(job)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            counts
        }
    }
}

async fn import_succeeds_and_reports_each_row(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let mut items = rows("jam", 2500);
    items[1] = json!({"name": "Honey", "price": -1});
    // PostgreSQL cannot store NUL: the row is rejected, the job does not fail.
    items[2499] = json!({"name": "Nul\u{0}led", "price": 1});
    let response = app
        .post("/process")
        .bearer_auth(&user.token)
        .json(&json!({"kind": "import_items", "items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "processing");
    let id: Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/jobs/{id}"));
    assert_eq!(body["status_url"], location);
    assert_eq!(body.as_object().unwrap().len(), 3);

    let done = wait_for(&app, &user, id, Duration::from_secs(20), finished).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["id"], id.to_string());
    assert_eq!(done["kind"], "import_items");
    assert_eq!(done["progress"], json!({"done": 2500, "total": 2500}));
    assert_eq!(done["attempts"], 1);
    assert!(done["error"].is_null());
    for field in ["created_at", "started_at", "finished_at"] {
        let at = done[field].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok(),
            "{field}: {at}"
        );
    }
    let created = done["result"]["created"].as_array().unwrap();
    assert_eq!(created.len(), 2498);
    let rejected = done["result"]["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["errors"][0]["loc"], json!(["price"]));
    assert_eq!(rejected[0]["errors"][0]["type"], "greater_than_equal");
    assert_eq!(rejected[1]["index"], 2499);
    assert_eq!(rejected[1]["errors"][0]["loc"], json!(["name"]));

    // Ids come in row order, and the items are the caller's.
    let first = app
        .get(&format!("/items/{}", created[0]))
        .send()
        .await
        .unwrap();
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["name"], "jam-0");
    assert_eq!(first["owner_id"], user.id);
    let second: Value = app.get_json(&format!("/items/{}", created[1])).await;
    assert_eq!(second["name"], "jam-2");
    assert_eq!(item_rows(&app.database_url, id).await, (2498, 2498));

    // Nothing to import is a job that succeeds at once with nothing created.
    let empty = submit(&app, &user, &[]).await;
    let done = wait_for(&app, &user, empty, Duration::from_secs(10), finished).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["progress"], json!({"done": 0, "total": 0}));
    assert_eq!(
        done["result"],
        json!({"created": [], "created_count": 0, "rejected": [], "rejected_count": 0})
    );
}

/// A payload of invalid rows stores their count and the first 100 of them, not all; the
/// payload itself is deleted when the job finishes.
async fn rejections_are_counted_and_kept_only_for_the_first_hundred(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let mut items: Vec<Value> = (0..2600).map(|i| json!({"name": "", "price": i})).collect();
    for i in [0, 1500, 2599] {
        items[i] = json!({"name": format!("ok-{i}"), "price": 1});
    }
    let id = submit(&app, &user, &items).await;
    let done = wait_for(&app, &user, id, Duration::from_secs(30), finished).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let result = &done["result"];
    assert_eq!(result["created_count"], 3);
    assert_eq!(result["created"].as_array().unwrap().len(), 3);
    assert_eq!(result["rejected_count"], 2597);
    let rejected = result["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 100);
    let indexes: Vec<i64> = rejected
        .iter()
        .map(|r| r["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, (1..=100).collect::<Vec<i64>>());
    assert_eq!(rejected[0]["errors"][0]["loc"], json!(["name"]));
    let sql = "select (select count(*) from job_rejections where job_id = $1), \
               (select count(*) from job_payloads where job_id = $1)";
    assert_eq!(count_rows(&app.database_url, sql, id).await, (100, 0));
}

async fn imports_over_the_item_limit_are_413(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.import_max_items = 5).await;
    let user = app.user().await;
    let response = app
        .post("/process")
        .bearer_auth(&user.token)
        .json(&json!({"kind": "import_items", "items": rows("big", 6)}))
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("Too many items: an import holds at most 5"),
    )
    .await;
    let id = submit(&app, &user, &rows("fits", 5)).await;
    let done = wait_for(&app, &user, id, Duration::from_secs(10), finished).await;
    assert_eq!(done["result"]["created_count"], 5);
}

/// At most `LARDER_JOB_QUOTA` queued or running jobs per user, even when the requests race;
/// one more is 429 with `Retry-After`, and other users are not affected.
async fn a_user_cannot_queue_more_jobs_than_the_quota(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        keep_tokens(settings);
        settings.job_quota = 3;
        settings.workers = 0;
    })
    .await;
    let user = app.user().await;
    let racing = (0..8).map(|_| {
        app.post("/process")
            .bearer_auth(&user.token)
            .json(&json!({"kind": "import_items", "items": rows("q", 2)}))
            .send()
    });
    let mut accepted = 0;
    for response in futures::future::join_all(racing).await {
        let response = response.unwrap();
        if response.status() == StatusCode::ACCEPTED {
            accepted += 1;
            continue;
        }
        assert_eq!(response.headers()["retry-after"], "5");
        assert_problem(
            response,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many jobs: at most 3 queued or running per user"),
        )
        .await;
    }
    assert_eq!(accepted, 3);
    let other = app.user().await;
    submit(&app, &other, &rows("other", 1)).await;
    // Once the queue drains, the user may submit again.
    let app = app
        .restart(|settings| {
            keep_tokens(settings);
            settings.job_quota = 3;
        })
        .await;
    let started = Instant::now();
    loop {
        let response = app
            .post("/process")
            .bearer_auth(&user.token)
            .json(&json!({"kind": "import_items", "items": rows("later", 1)}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the quota never freed up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn process_and_job_errors_speak_problem_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.user().await;
    let stranger = app.user().await;
    let admin = app.admin().await;

    let response = app
        .post("/process")
        .json(&json!({"kind": "import_items", "items": []}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;

    let post = |body: &'static str| {
        app.post("/process")
            .bearer_auth(&owner.token)
            .header("content-type", "application/json")
            .body(body)
    };
    let body = assert_problem(
        post(r#"{"kind": "nope", "items": []}"#)
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(error_locs(&body), [json!(["body", "kind"])]);
    let body = assert_problem(
        post("[1, 2]").send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(error_locs(&body), [json!(["body"])]);
    let body = assert_problem(
        post(r#"{"kind": "import_items", "items": 5}"#)
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(error_locs(&body), [json!(["body", "items"])]);
    let body = assert_problem(
        post(r#"{"items": []}"#).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(error_locs(&body), [json!(["body", "kind"])]);
    let body = assert_problem(
        post(r#"{"kind": "import_items""#).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        None,
    )
    .await;
    assert_eq!(body["type"], "/problems/malformed-json");
    let response = app
        .post("/process")
        .bearer_auth(&owner.token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, None).await;

    // Above LARDER_MAX_BODY (1 MiB) is fine here: the route has its own, larger limit.
    let big = rows(&"x".repeat(150), 8000);
    let id = submit(&app, &owner, &big).await;

    let path = format!("/jobs/{id}");
    assert_problem(
        app.get(&path).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        None,
    )
    .await;
    let response = app
        .get(&path)
        .bearer_auth(&stranger.token)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::FORBIDDEN, None).await;
    let response = app
        .get(&path)
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .get(&format!("/jobs/{}", Uuid::new_v4()))
        .bearer_auth(&owner.token)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, Some("Job not found")).await;
    let response = app
        .get("/jobs/42")
        .bearer_auth(&owner.token)
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), [json!(["path", "job_id"])]);
    wait_for(&app, &owner, id, Duration::from_secs(30), finished).await;
}

async fn import_body_limit_and_test_kinds_follow_settings(backend: Backend) {
    // As the release binary: the tests' panicking kind does not exist there.
    let app = TestApp::spawn_without_hooks(backend, |settings| {
        settings.import_max_body = 4096;
    })
    .await;
    let user = app.user().await;
    let response = app
        .post("/process")
        .bearer_auth(&user.token)
        .json(&json!({"kind": "test_panic", "items": []}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), [json!(["body", "kind"])]);
    let response = app
        .post("/process")
        .bearer_auth(&user.token)
        .json(&json!({"kind": "import_items", "items": rows("too-big", 200)}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, None).await;
}

async fn process_replays_an_idempotent_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let body = json!({"kind": "import_items", "items": rows("idem", 3)});
    let send = |body: &Value| {
        app.post("/process")
            .bearer_auth(&user.token)
            .header("idempotency-key", "\"import-1\"")
            .json(body)
            .send()
    };
    let first = send(&body).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.unwrap();
    let again = send(&body).await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let other = json!({"kind": "import_items", "items": rows("other", 3)});
    let response = send(&other).await.unwrap();
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&problem), [json!(["header", "idempotency-key"])]);

    let id: Uuid = first["job_id"].as_str().unwrap().parse().unwrap();
    let done = wait_for(&app, &user, id, Duration::from_secs(20), finished).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(item_rows(&app.database_url, id).await, (3, 3));
}

async fn an_expired_lease_is_taken_over_and_resumed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        keep_tokens(settings);
        settings.workers = 0;
    })
    .await;
    let user = app.user().await;
    let id = submit(&app, &user, &rows("lease", 2500)).await;

    // A worker that claims the job, commits its first chunk, then dies without a word.
    let claimed = larder::store::jobs::claim(&app.state.db, "dead-worker", 300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, id);
    let drafts: Vec<_> = rows("lease", 1000)
        .iter()
        .enumerate()
        .map(|(i, row)| larder::store::jobs::ImportRow {
            index: i as i64,
            draft: larder::domain::item::ItemDraft::try_from(row).unwrap(),
        })
        .collect();
    let held = larder::store::jobs::commit_chunk(
        &app.state.db,
        &claimed,
        "dead-worker",
        300,
        &larder::store::jobs::Chunk {
            rows: &drafts,
            rejections: &[],
            done: 1000,
            rejected_count: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        held,
        larder::store::jobs::Held::Yes {
            cancel_requested: false
        }
    );
    let running = job(&app, &user, id).await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["progress"], json!({"done": 1000, "total": 2500}));

    let app = app
        .restart(|settings| {
            keep_tokens(settings);
            settings.workers = 1;
        })
        .await;
    let done = wait_for(&app, &user, id, Duration::from_secs(20), finished).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["result"]["created"].as_array().unwrap().len(), 2500);
    assert_eq!(item_rows(&app.database_url, id).await, (2500, 2500));

    // The dead worker's late writes are refused.
    let late = larder::store::jobs::commit_chunk(
        &app.state.db,
        &claimed,
        "dead-worker",
        300,
        &larder::store::jobs::Chunk {
            rows: &drafts,
            rejections: &[],
            done: 2500,
            rejected_count: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(late, larder::store::jobs::Held::Lost);
}

async fn a_panicking_job_fails_its_attempt_not_the_worker(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.workers = 1).await;
    let user = app.user().await;
    let response = app
        .post("/process")
        .bearer_auth(&user.token)
        .json(&json!({"kind": "test_panic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let id: Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    let failed = wait_for(&app, &user, id, Duration::from_secs(10), |body| {
        !body["error"].is_null()
    })
    .await;
    assert!(
        failed["error"].as_str().unwrap().contains("panicked"),
        "{failed}"
    );
    assert!(
        failed["status"] == "queued" || failed["status"] == "failed",
        "{failed}"
    );
    assert_eq!(failed["attempts"], 1);

    // The one worker is still there, and so is the server.
    let id = submit(&app, &user, &rows("after-panic", 3)).await;
    let done = wait_for(&app, &user, id, Duration::from_secs(10), finished).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(
        app.get("/healthz").send().await.unwrap().status(),
        StatusCode::OK
    );
}

async fn concurrent_workers_never_run_a_job_twice(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        keep_tokens(settings);
        settings.workers = 3;
        settings.job_quota = 16;
    })
    .await;
    // A second server on the same database: two processes sharing one queue.
    let second = SecondServer::start(&app.database_url, 3).await;
    let user = app.user().await;
    let mut ids = Vec::new();
    for n in 0..16 {
        ids.push(submit(&app, &user, &rows(&format!("job{n}"), 1100)).await);
    }
    for id in &ids {
        let done = wait_for(&app, &user, *id, Duration::from_secs(60), finished).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
        assert_eq!(done["result"]["created"].as_array().unwrap().len(), 1100);
        assert_eq!(item_rows(&app.database_url, *id).await, (1100, 1100));
    }
    second.stop().await;
}

/// Another larder on the same database, in this process.
pub(crate) struct SecondServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl SecondServer {
    pub(crate) async fn start(database_url: &DatabaseUrl, workers: usize) -> SecondServer {
        let mut settings = Settings::for_database(database_url.clone());
        keep_tokens(&mut settings);
        settings.workers = workers;
        let server = larder::app::Application::build(settings).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async move {
            let _ = stopped.await;
        }));
        SecondServer { stop, task }
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// How long the job waited in the queue.
fn queued_for(job: &Value) -> Duration {
    let at =
        |field: &str| chrono::DateTime::parse_from_rfc3339(job[field].as_str().unwrap()).unwrap();
    (at("started_at") - at("created_at"))
        .to_std()
        .unwrap_or_default()
}

async fn a_new_job_wakes_idle_workers_at_once(backend: Backend) {
    // On PostgreSQL the only worker lives in another server, so only `NOTIFY` can wake it
    // before its next poll (1 s); on SQLite the worker is in the server that took the job.
    let local_workers = if backend == Backend::Postgres { 0 } else { 1 };
    let app = TestApp::spawn_with(backend, |settings| {
        keep_tokens(settings);
        settings.workers = local_workers;
    })
    .await;
    let second = match backend {
        Backend::Postgres => Some(SecondServer::start(&app.database_url, 1).await),
        Backend::Sqlite => None,
    };
    let user = app.user().await;
    for n in 0..3 {
        // The worker went idle when the last job ended and polls again 1 s later; a job stored
        // 300 ms into that wait would sit there for ~700 ms if nothing woke the worker.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = submit(&app, &user, &rows(&format!("wake{n}"), 1)).await;
        let done = wait_for(&app, &user, id, Duration::from_secs(10), finished).await;
        assert_eq!(done["status"], "succeeded");
        assert!(
            queued_for(&done) < Duration::from_millis(400),
            "waited {:?}: {done}",
            queued_for(&done)
        );
    }
    if let Some(second) = second {
        second.stop().await;
    }
}

async fn shutdown_hands_a_running_job_back(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        keep_tokens(settings);
        settings.workers = 1;
    })
    .await;
    let user = app.user().await;
    let id = submit(&app, &user, &rows("handback", 60_000)).await;
    wait_for(&app, &user, id, Duration::from_secs(20), |body| {
        body["progress"]["done"].as_i64() > Some(0)
    })
    .await;
    let app = app
        .restart(|settings| {
            keep_tokens(settings);
            settings.workers = 0;
        })
        .await;
    let parked = job(&app, &user, id).await;
    assert_eq!(parked["status"], "queued", "{parked}");
    assert_eq!(
        parked["attempts"], 0,
        "the interrupted attempt does not count: {parked}"
    );
    let resumed_from = parked["progress"]["done"].as_i64().unwrap();
    assert!(resumed_from > 0 && resumed_from < 60_000, "{parked}");

    let app = app
        .restart(|settings| {
            keep_tokens(settings);
            settings.workers = 2;
        })
        .await;
    let done = wait_for(&app, &user, id, Duration::from_secs(60), finished).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(item_rows(&app.database_url, id).await, (60_000, 60_000));
}

async fn metrics_and_openapi_describe_the_queue(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let id = submit(&app, &user, &rows("metrics", 3)).await;
    wait_for(&app, &user, id, Duration::from_secs(10), finished).await;
    let metrics = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("job_queue_depth"), "{metrics}");
    assert!(metrics.contains(r#"jobs{status="succeeded"}"#), "{metrics}");
    assert!(metrics.contains("job_duration_seconds"), "{metrics}");

    let openapi: Value = app.get_json("/openapi.json").await;
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let mut codes: Vec<String> = openapi["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is documented"))
            .keys()
            .cloned()
            .collect();
        codes.sort();
        codes
    };
    // Every status each handler can answer (faults, 500 and 503, may be added for all).
    let process = statuses("/process", "post");
    for status in ["202", "400", "401", "409", "413", "415", "422"] {
        assert!(
            process.iter().any(|s| s == status),
            "POST /process: {status}"
        );
    }
    let get_job = statuses("/jobs/{job_id}", "get");
    for status in ["200", "401", "403", "404", "422"] {
        assert!(
            get_job.iter().any(|s| s == status),
            "GET /jobs/{{job_id}}: {status}"
        );
    }
    let accepted = &openapi["paths"]["/process"]["post"]["responses"]["202"];
    assert!(accepted["headers"]["Location"].is_object(), "{accepted}");
    assert!(accepted["links"]["GetJobById"].is_object(), "{accepted}");
}

both_backends!(
    rejections_are_counted_and_kept_only_for_the_first_hundred,
    imports_over_the_item_limit_are_413,
    a_user_cannot_queue_more_jobs_than_the_quota,
    a_new_job_wakes_idle_workers_at_once,
    metrics_and_openapi_describe_the_queue,
    import_succeeds_and_reports_each_row,
    process_and_job_errors_speak_problem_json,
    import_body_limit_and_test_kinds_follow_settings,
    process_replays_an_idempotent_request,
    an_expired_lease_is_taken_over_and_resumed,
    a_panicking_job_fails_its_attempt_not_the_worker,
    concurrent_workers_never_run_a_job_twice,
    shutdown_hands_a_running_job_back,
    killed_server_loses_no_job,
);

/// The real binary, as an operator runs it.
pub(crate) struct Server {
    pub(crate) child: std::process::Child,
    pub(crate) base: String,
}

/// A failing test must not leave a server behind.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary on `database_url` at `port`, two workers on a 2 s lease, once it serves.
pub(crate) async fn start_server(database_url: &str, port: u16) -> Server {
    let child = crate::process::serve(database_url, port)
        .env("LARDER_JOB_LEASE", "2")
        .env("LARDER_WORKERS", "2")
        // One user submits every job of these tests, far more than a user's usual quota.
        .env("LARDER_JOB_QUOTA", "1000")
        .spawn()
        .expect("the larder binary starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_until_serving(&server.base).await;
    server
}

/// Registers a user on a running binary and returns their token.
pub(crate) async fn register(client: &reqwest::Client, base: &str) -> String {
    let email = format!("crash-{}@example.com", Uuid::new_v4().simple());
    let created = client
        .post(format!("{base}/users"))
        .json(&json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let token: Value = client
        .post(format!("{base}/auth/token"))
        .form(&[
            ("username", email.as_str()),
            ("password", "correct horse battery"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["access_token"].as_str().unwrap().to_string()
}

async fn killed_server_loses_no_job(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database_url = match backend {
        Backend::Sqlite => DatabaseUrl::Sqlite(format!(
            "sqlite://{}",
            dir.path().join("crash.db").display()
        )),
        Backend::Postgres => DatabaseUrl::Postgres(fresh_postgres_database().await),
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let port = free_port();
    let mut server = start_server(database_url.as_str(), port).await;

    let token = register(&client, &server.base).await;

    const JOBS: usize = 6;
    const ROWS: usize = 15_000;
    let mut ids = Vec::new();
    for n in 0..JOBS {
        let response = client
            .post(format!("{}/process", server.base))
            .bearer_auth(&token)
            .json(&json!({"kind": "import_items", "items": rows(&format!("crash{n}"), ROWS)}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        ids.push(body["job_id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    let status = |base: String, id: Uuid| {
        let request = client.get(format!("{base}/jobs/{id}")).bearer_auth(&token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };

    // Mid-import: some rows committed, not all.
    let started = Instant::now();
    loop {
        let body = status(server.base.clone(), ids[0]).await;
        if body["progress"]["done"].as_i64() > Some(0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the import never started: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().unwrap(); // SIGKILL: no shutdown, no hand-back
    server.child.wait().unwrap();
    let last = status_after_kill(&database_url, &ids).await;
    assert!(
        last < (JOBS * ROWS) as i64,
        "every job had finished before the kill"
    );

    let server = start_server(database_url.as_str(), port).await;
    for id in &ids {
        let started = Instant::now();
        loop {
            let body = status(server.base.clone(), *id).await;
            if body["status"] == "succeeded" {
                assert_eq!(body["progress"], json!({"done": ROWS, "total": ROWS}));
                assert_eq!(body["result"]["created"].as_array().unwrap().len(), ROWS);
                break;
            }
            assert_ne!(body["status"], "failed", "{body}");
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "job {id} did not finish: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            item_rows(&database_url, *id).await,
            (ROWS as i64, ROWS as i64)
        );
    }
}

/// How many rows were committed when the server died.
async fn status_after_kill(database_url: &DatabaseUrl, ids: &[Uuid]) -> i64 {
    let mut total = 0;
    for id in ids {
        total += item_rows(database_url, *id).await.0;
    }
    total
}

/// Two binaries on one PostgreSQL queue: 200 small jobs submitted across both are each done
/// exactly once, and when one process is killed mid-import the other finishes its jobs after
/// their leases run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn postgres_processes_share_one_queue_and_survive_a_kill() {
    let database_url = fresh_postgres_database().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut first = start_server(&database_url, free_port()).await;
    let second = start_server(&database_url, free_port()).await;
    let token = register(&client, &first.base).await;
    let submit_to = |base: &str, items: Vec<Value>| {
        let request = client
            .post(format!("{base}/process"))
            .bearer_auth(&token)
            .json(&json!({"kind": "import_items", "items": items}));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            let body: Value = response.json().await.unwrap();
            body["job_id"].as_str().unwrap().parse::<Uuid>().unwrap()
        }
    };
    let status = |base: &str, id: Uuid| {
        let request = client.get(format!("{base}/jobs/{id}")).bearer_auth(&token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };

    let mut small = Vec::new();
    for n in 0..200 {
        let base = if n % 2 == 0 {
            &first.base
        } else {
            &second.base
        };
        small.push(submit_to(base, rows(&format!("small{n}"), 5)).await);
    }
    let mut large = Vec::new();
    for n in 0..4 {
        large.push(submit_to(&first.base, rows(&format!("large{n}"), 15_000)).await);
    }
    // Kill the first process once an import is under way.
    let started = Instant::now();
    loop {
        let progressed =
            status(&second.base, large[0]).await["progress"]["done"].as_i64() > Some(0);
        if progressed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the large imports never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let url = DatabaseUrl::Postgres(database_url.clone());
    for (id, rows) in small
        .iter()
        .map(|id| (*id, 5))
        .chain(large.iter().map(|id| (*id, 15_000)))
    {
        let started = Instant::now();
        loop {
            let body = status(&second.base, id).await;
            if body["status"] == "succeeded" {
                assert_eq!(body["result"]["created"].as_array().unwrap().len(), rows);
                break;
            }
            assert_ne!(body["status"], "failed", "{body}");
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "job {id} did not finish: {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(item_rows(&url, id).await, (rows as i64, rows as i64));
    }
}
