//! §8: jobs, continued — `GET /jobs`, `POST /jobs/{id}/cancel`, `GET /jobs/{id}/events`
//! (Server-Sent Events, read over real HTTP) and retention.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestUser, assert_problem, error_locs};
use crate::jobs::{SecondServer, finished, item_rows, job, keep_tokens, rows, submit, wait_for};

async fn list(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let response = app
        .get(&format!("/jobs{query}"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET /jobs{query}");
    response.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .expect("a page of jobs")
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every job `user` sees with `query` (`?status=…&` or `?`), `limit` per page, through the cursors.
async fn all_pages(app: &TestApp, user: &TestUser, query: &str, limit: u32) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("{query}limit={limit}&cursor={cursor}"),
            None => format!("{query}limit={limit}"),
        };
        let page = list(app, user, &path).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= limit as usize);
        seen.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return seen,
        }
    }
}

async fn jobs_are_listed_newest_first_in_keyset_pages(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.workers = 0).await;
    let ann = app.user().await;
    let bob = app.user().await;
    let admin = app.admin().await;
    let mut anns = Vec::new();
    for n in 0..5 {
        anns.push(
            submit(&app, &ann, &rows(&format!("a{n}"), 1))
                .await
                .to_string(),
        );
    }
    let mut bobs = Vec::new();
    for n in 0..2 {
        bobs.push(
            submit(&app, &bob, &rows(&format!("b{n}"), 1))
                .await
                .to_string(),
        );
    }
    let newest_first = |ids: &[String]| ids.iter().rev().cloned().collect::<Vec<_>>();

    let first = list(&app, &ann, "?limit=2").await;
    assert_eq!(first.as_object().unwrap().len(), 2, "{first}");
    assert_eq!(ids(&first), newest_first(&anns)[..2]);
    assert!(first["next_cursor"].is_string());
    // Each entry is the job as GET /jobs/{id} shows it.
    let shown = &first["jobs"][0];
    let id: Uuid = shown["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(shown, &job(&app, &ann, id).await);
    assert_eq!(shown["status"], "queued");

    assert_eq!(all_pages(&app, &ann, "?", 2).await, newest_first(&anns));
    assert_eq!(all_pages(&app, &ann, "?", 5).await, newest_first(&anns));
    let last = list(&app, &ann, "?limit=5").await;
    assert!(last["next_cursor"].is_null(), "{last}");
    assert_eq!(
        all_pages(&app, &ann, "?status=queued&", 3).await,
        newest_first(&anns)
    );
    assert!(ids(&list(&app, &ann, "?status=succeeded").await).is_empty());
    // Someone else's jobs are never shown to a user, whatever user_id says.
    assert!(ids(&list(&app, &ann, &format!("?user_id={}", bob.id)).await).is_empty());
    assert_eq!(
        ids(&list(&app, &ann, &format!("?user_id={}", ann.id)).await),
        newest_first(&anns)
    );
    // An admin sees everyone's, or one user's.
    let everyone: Vec<String> = newest_first(&[anns.clone(), bobs.clone()].concat());
    assert_eq!(all_pages(&app, &admin, "?", 3).await, everyone);
    assert_eq!(
        ids(&list(&app, &admin, &format!("?user_id={}", bob.id)).await),
        newest_first(&bobs)
    );

    // Refusals.
    let response = app.get("/jobs").send().await.unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
    for (query, name) in [
        ("?status=done", "status"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=nope", "cursor"),
        ("?cursor=12_0193a0c48f7e4b8e9c513f1f4c1c2a1", "cursor"),
        ("?user_id=me", "user_id"),
    ] {
        let response = app
            .get(&format!("/jobs{query}"))
            .bearer_auth(&ann.token)
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
        assert_eq!(error_locs(&body), vec![json!(["query", name])], "{query}");
    }
}

async fn cancel(app: &TestApp, user: &TestUser, id: Uuid) -> reqwest::Response {
    app.post(&format!("/jobs/{id}/cancel"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
}

async fn a_queued_job_is_cancelled_at_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        keep_tokens(settings);
        settings.workers = 0;
        settings.job_quota = 2;
    })
    .await;
    let ann = app.user().await;
    let bob = app.user().await;
    let admin = app.admin().await;
    let id = submit(&app, &ann, &rows("queued", 10)).await;

    let response = cancel(&app, &bob, id).await;
    assert_problem(response, StatusCode::FORBIDDEN, None).await;
    let response = app
        .post(&format!("/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
    let response = cancel(&app, &ann, Uuid::new_v4()).await;
    assert_problem(response, StatusCode::NOT_FOUND, Some("Job not found")).await;
    let response = app
        .post("/jobs/not-a-uuid/cancel")
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["path", "job_id"])]);

    let response = cancel(&app, &ann, id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["status"], "cancelled");
    assert!(body["finished_at"].is_string(), "{body}");
    assert_eq!(body["progress"], json!({"done": 0, "total": 10}));
    assert_eq!(body["result"]["created_count"], 0, "{body}");
    assert_eq!(body, job(&app, &ann, id).await);

    let response = cancel(&app, &ann, id).await;
    assert_problem(response, StatusCode::CONFLICT, Some("Job already finished")).await;
    assert_eq!(
        ids(&list(&app, &ann, "?status=cancelled").await),
        vec![id.to_string()]
    );

    // A cancelled job no longer counts against the quota; an admin may cancel anyone's.
    let second = submit(&app, &ann, &rows("second", 1)).await;
    let third = submit(&app, &ann, &rows("third", 1)).await;
    let response = cancel(&app, &admin, second).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );

    // Workers never run a cancelled job.
    let app = app
        .restart(|settings| {
            keep_tokens(settings);
            settings.workers = 1;
        })
        .await;
    let done = wait_for(&app, &ann, third, Duration::from_secs(20), finished).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(job(&app, &ann, id).await["status"], "cancelled");
    assert_eq!(item_rows(&app.database_url, id).await, (0, 0));
    assert_eq!(item_rows(&app.database_url, second).await, (0, 0));
    let response = cancel(&app, &ann, third).await;
    assert_problem(response, StatusCode::CONFLICT, Some("Job already finished")).await;
}

/// Cancels a running import of `total` rows once a chunk is in; returns the final job.
async fn cancel_while_running(
    front: &TestApp,
    user: &TestUser,
    total: usize,
    limit: Duration,
) -> (Uuid, Value) {
    let id = submit(front, user, &rows("long", total)).await;
    wait_for(front, user, id, Duration::from_secs(30), |body| {
        body["progress"]["done"].as_i64() > Some(0)
    })
    .await;
    let response = cancel(front, user, id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["status"], "running", "{body}");
    let started = Instant::now();
    let done = wait_for(front, user, id, Duration::from_secs(30), finished).await;
    assert!(
        started.elapsed() < limit,
        "the job stopped {:?} after the request",
        started.elapsed()
    );
    (id, done)
}

/// What a cancelled import committed: its counted rows are exactly the rows in the table.
async fn assert_cancelled_import(app: &TestApp, id: Uuid, done: &Value, total: i64) {
    assert_eq!(done["status"], "cancelled", "{done}");
    let processed = done["progress"]["done"].as_i64().unwrap();
    assert!(processed > 0 && processed < total, "{done}");
    assert_eq!(done["progress"]["total"], total);
    let created = done["result"]["created_count"].as_i64().unwrap();
    assert_eq!(
        created, processed,
        "every row is valid: {}",
        done["progress"]
    );
    assert_eq!(
        done["result"]["created"].as_array().unwrap().len() as i64,
        created
    );
    assert_eq!(done["result"]["rejected_count"], 0);
    assert_eq!(item_rows(&app.database_url, id).await, (created, created));
}

async fn a_running_import_stops_after_its_chunk(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        settings.workers = 1;
        settings.import_max_items = 100_000;
    })
    .await;
    let user = app.user().await;
    let (id, done) = cancel_while_running(&app, &user, 100_000, Duration::from_secs(5)).await;
    assert_cancelled_import(&app, id, &done, 100_000).await;
    let response = cancel(&app, &user, id).await;
    assert_problem(response, StatusCode::CONFLICT, Some("Job already finished")).await;
    // It stays cancelled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(job(&app, &user, id).await, done);
}

/// The cancel is in the database: its worker died (as under `kill -9`) after the request was
/// taken, and the worker that takes the job over after the lease cancels it instead of
/// running it, counting what was committed.
async fn a_cancel_outlives_the_worker_that_held_the_job(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        keep_tokens(settings);
        settings.workers = 0;
    })
    .await;
    let user = app.user().await;
    let id = submit(&app, &user, &rows("orphan", 2500)).await;
    let claimed = larder::store::jobs::claim(&app.state.db, "dead-worker", 300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, id);
    let drafts: Vec<_> = rows("orphan", 1000)
        .iter()
        .enumerate()
        .map(|(i, row)| larder::store::jobs::ImportRow {
            index: i as i64,
            draft: larder::domain::item::ItemDraft::try_from(row).unwrap(),
        })
        .collect();
    let chunk = larder::store::jobs::Chunk {
        rows: &drafts,
        rejections: &[],
        done: 1000,
        rejected_count: 0,
    };
    let held =
        larder::store::jobs::commit_chunk(&app.state.db, &claimed, "dead-worker", 300, &chunk)
            .await
            .unwrap();
    assert_eq!(
        held,
        larder::store::jobs::Held::Yes {
            cancel_requested: false
        }
    );
    let response = cancel(&app, &user, id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "running");
    // The process that took the request goes away; another takes the job over.
    let app = app
        .restart(|settings| {
            keep_tokens(settings);
            settings.workers = 1;
        })
        .await;
    let done = wait_for(&app, &user, id, Duration::from_secs(20), finished).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["progress"], json!({"done": 1000, "total": 2500}));
    assert_eq!(done["result"]["created_count"], 1000);
    assert_eq!(item_rows(&app.database_url, id).await, (1000, 1000));
    // The dead worker's late chunk is refused.
    let late =
        larder::store::jobs::commit_chunk(&app.state.db, &claimed, "dead-worker", 300, &chunk)
            .await
            .unwrap();
    assert_eq!(late, larder::store::jobs::Held::Lost);
}

/// PostgreSQL, several processes: the cancel is taken by a process that does not run the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn a_cancel_reaches_the_worker_of_another_process() {
    let app = TestApp::spawn_with(Backend::Postgres, |settings| {
        keep_tokens(settings);
        settings.workers = 0;
    })
    .await;
    let second = SecondServer::start(&app.database_url, 1).await;
    let user = app.user().await;
    let (id, done) = cancel_while_running(&app, &user, 100_000, Duration::from_secs(5)).await;
    assert_cancelled_import(&app, id, &done, 100_000).await;
    second.stop().await;
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

/// Reads a `text/event-stream` answer over HTTP, chunk by chunk, until the server ends it.
async fn read_events(response: reqwest::Response) -> Vec<SseEvent> {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let reading = async {
        while let Some(bytes) = stream.next().await {
            text.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the stream ends");
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|block| !block.trim().is_empty()) {
        let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
        for line in block.lines() {
            match line.split_once(':') {
                Some(("event", value)) => event = value.trim_start().to_string(),
                Some(("id", value)) => id = Some(value.trim_start().to_string()),
                Some(("data", value)) => data.push_str(value.trim_start()),
                // Comments (keep-alives) and anything else.
                _ => {}
            }
        }
        if data.is_empty() {
            continue;
        }
        events.push(SseEvent {
            event,
            id,
            data: serde_json::from_str(&data).expect("event data is JSON"),
        });
    }
    events
}

async fn events(app: &TestApp, user: &TestUser, id: Uuid, last: Option<&str>) -> reqwest::Response {
    let mut request = app
        .get(&format!("/jobs/{id}/events"))
        .bearer_auth(&user.token);
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    request.send().await.unwrap()
}

/// `progress` events from chunk `first` on, of an import of valid rows whose chunks end at
/// `ends` (the last end is the total): a job's chunks are 1,000 rows, then double what is
/// done, up to 8,000.
fn assert_progress(events: &[SseEvent], first: usize, ends: &[i64]) {
    let total = *ends.last().unwrap();
    let progress: Vec<&SseEvent> = events.iter().filter(|e| e.event == "progress").collect();
    assert_eq!(
        progress.len(),
        ends.len() + 1 - first,
        "one per chunk: {events:?}"
    );
    for (event, chunk) in progress.iter().zip(first..) {
        let done = ends[chunk - 1];
        assert_eq!(event.id.as_deref(), Some(chunk.to_string().as_str()));
        assert_eq!(
            event.data,
            json!({"chunk": chunk, "done": done, "total": total, "created": done, "rejected": 0})
        );
    }
}

async fn events_stream_each_chunk_then_the_status(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.workers = 1).await;
    let user = app.user().await;
    // The one worker is busy with this one while the stream connects to the next.
    let ahead = submit(&app, &user, &rows("ahead", 30_000)).await;
    let id = submit(&app, &user, &rows("followed", 5_500)).await;
    let events = read_events(events(&app, &user, id, None).await).await;
    assert_eq!(job(&app, &user, id).await["attempts"], 1);
    assert_progress(&events, 1, &[1_000, 2_000, 4_000, 5_500]);
    let last = events.last().unwrap();
    assert_eq!(last.event, "status");
    assert_eq!(last.data, job(&app, &user, id).await);
    assert_eq!(last.data["status"], "succeeded");
    assert_eq!(events.len(), 5);
    assert_eq!(
        wait_for(&app, &user, ahead, Duration::from_secs(30), finished).await["status"],
        "succeeded"
    );
}

async fn events_resume_after_the_last_event_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let other = app.user().await;
    let id = submit(&app, &user, &rows("resumed", 4_500)).await;
    let done = wait_for(&app, &user, id, Duration::from_secs(20), finished).await;

    let resumed = read_events(events(&app, &user, id, Some("2")).await).await;
    assert_progress(&resumed, 3, &[1_000, 2_000, 4_000, 4_500]);
    assert_eq!(resumed.len(), 3);
    assert_eq!(resumed[2].event, "status");
    assert_eq!(resumed[2].data, done);
    // A finished job, followed afresh: its status only.
    let fresh = read_events(events(&app, &user, id, None).await).await;
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(fresh[0].event, "status");
    assert_eq!(fresh[0].data, done);
    let all = read_events(events(&app, &user, id, Some("0")).await).await;
    assert_progress(&all, 1, &[1_000, 2_000, 4_000, 4_500]);

    let response = events(&app, &other, id, None).await;
    assert_problem(response, StatusCode::FORBIDDEN, None).await;
    let response = events(&app, &user, Uuid::new_v4(), None).await;
    assert_problem(response, StatusCode::NOT_FOUND, Some("Job not found")).await;
    let response = app.get(&format!("/jobs/{id}/events")).send().await.unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
}

/// PostgreSQL, several processes: the stream is served by a process without workers, the
/// job runs in another; `NOTIFY` carries its progress across.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn events_reach_a_follower_in_another_process() {
    let app = TestApp::spawn_with(Backend::Postgres, |settings| {
        keep_tokens(settings);
        settings.workers = 0;
    })
    .await;
    let user = app.user().await;
    let id = submit(&app, &user, &rows("across", 4_200)).await;
    let stream = events(&app, &user, id, None).await;
    let second = SecondServer::start(&app.database_url, 1).await;
    let started = Instant::now();
    let events = read_events(stream).await;
    // Notified, not polled: well under one poll per chunk.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_progress(&events, 1, &[1_000, 2_000, 4_000, 4_200]);
    assert_eq!(events.last().unwrap().event, "status");
    assert_eq!(events.last().unwrap().data["status"], "succeeded");
    second.stop().await;
}

async fn a_follower_is_let_go_at_shutdown(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, |settings| settings.workers = 0).await;
    let user = app.user().await;
    let id = submit(&app, &user, &rows("never", 1)).await;
    let stream = events(&app, &user, id, None).await;
    let reading = tokio::spawn(read_events(stream));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The stream of a job that never moves ends at shutdown, not after the grace period.
    let started = Instant::now();
    app.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(reading.await.unwrap().is_empty());
}

async fn finished_jobs_expire_after_the_retention(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        settings.job_retention = Duration::from_millis(800);
    })
    .await;
    let user = app.user().await;
    let mut items = rows("kept", 3);
    items[1] = json!({"name": "bad"});
    let id = submit(&app, &user, &items).await;
    let done = wait_for(&app, &user, id, Duration::from_secs(20), finished).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(ids(&list(&app, &user, "").await), vec![id.to_string()]);

    let started = Instant::now();
    loop {
        let response = app
            .get(&format!("/jobs/{id}"))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::GONE {
            assert_problem(response, StatusCode::GONE, Some("Job expired")).await;
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The id is remembered (an unknown one is still 404), nothing else is.
    let response = app
        .get(&format!("/jobs/{}", Uuid::new_v4()))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, Some("Job not found")).await;
    assert!(ids(&list(&app, &user, "").await).is_empty());
    let response = cancel(&app, &user, id).await;
    assert_problem(response, StatusCode::GONE, Some("Job expired")).await;
    let response = events(&app, &user, id, None).await;
    assert_problem(response, StatusCode::GONE, Some("Job expired")).await;
    // The items it created are items: they stay.
    assert_eq!(item_rows(&app.database_url, id).await, (2, 2));

    // The sweep forgets it in the database too, and counts it.
    let started = Instant::now();
    loop {
        let (tombstones, left) = crate::jobs::count_rows(
            &app.database_url,
            "select count(*), (select count(*) from job_rejections where job_id = $1) \
                 + (select count(*) from job_progress where job_id = $1) \
             from jobs where id = $1 and expired_ms is not null and result is null",
            id,
        )
        .await;
        if tombstones == 1 {
            assert_eq!(left, 0);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired = app
        .metric("jobs_expired_total")
        .await
        .expect("jobs_expired_total in /metrics");
    assert!(expired >= 1.0, "{expired}");
}

async fn jobs_that_have_not_finished_never_expire(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        settings.workers = 0;
        settings.job_retention = Duration::from_millis(100);
    })
    .await;
    let user = app.user().await;
    let id = submit(&app, &user, &rows("waiting", 2)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(job(&app, &user, id).await["status"], "queued");
    assert_eq!(ids(&list(&app, &user, "").await), vec![id.to_string()]);
}

async fn openapi_documents_the_job_controls(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let openapi: Value = app.get_json("/openapi.json").await;
    let statuses = |path: &str, method: &str| -> Vec<String> {
        openapi["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is documented"))
            .keys()
            .cloned()
            .collect()
    };
    for (path, method, expected) in [
        ("/jobs", "get", &["200", "401", "422"][..]),
        (
            "/jobs/{job_id}/cancel",
            "post",
            &["200", "202", "401", "403", "404", "409", "410", "422"][..],
        ),
        (
            "/jobs/{job_id}/events",
            "get",
            &["200", "401", "403", "404", "410", "422"][..],
        ),
        (
            "/jobs/{job_id}",
            "get",
            &["200", "401", "403", "404", "410", "422"][..],
        ),
    ] {
        let documented = statuses(path, method);
        for status in expected {
            assert!(
                documented.iter().any(|s| s == status),
                "{method} {path}: {status}"
            );
        }
    }
    let events = &openapi["paths"]["/jobs/{job_id}/events"]["get"]["responses"]["200"];
    assert!(
        events["content"]["text/event-stream"].is_object(),
        "{events}"
    );
    let status = &openapi["components"]["schemas"]["JobStatus"]["enum"];
    assert_eq!(
        status,
        &json!(["queued", "running", "succeeded", "failed", "cancelled"])
    );
}

both_backends!(
    jobs_are_listed_newest_first_in_keyset_pages,
    a_queued_job_is_cancelled_at_once,
    a_running_import_stops_after_its_chunk,
    a_cancel_outlives_the_worker_that_held_the_job,
    a_follower_is_let_go_at_shutdown,
    events_stream_each_chunk_then_the_status,
    events_resume_after_the_last_event_id,
    finished_jobs_expire_after_the_retention,
    jobs_that_have_not_finished_never_expire,
    openapi_documents_the_job_controls,
);
