//! §9: a client that goes away halfway through `GET /items/export` stops the export: no
//! further batch is read. Its own test binary (its own process), because the evidence is
//! the process-wide `items_exported_total` counter, which no other test may move meanwhile;
//! the two backends' tests take turns for the same reason.

#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/hooks.rs"]
mod hooks;

use std::time::Duration;

use helpers::{Backend, TestApp};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Far more than the socket buffers between larder and the client can hold (about 40 MB
/// of NDJSON), so the export must be waiting on the client when it goes away.
const ITEMS: i64 = 200_000;

async fn exported_total(app: &TestApp) -> u64 {
    app.metric("items_exported_total").await.unwrap_or(0.0) as u64
}

async fn exports_active(app: &TestApp) -> u64 {
    app.metric("items_exports_active").await.unwrap_or(0.0) as u64
}

/// `ITEMS` rows for `owner`, written straight into the table (the import path is tested
/// elsewhere; this only needs many rows fast).
async fn seed(app: &TestApp, owner: i64) {
    match &app.state.db {
        larder::store::Db::Sqlite(sqlite) => {
            sqlx::query(
                "with recursive n(i) as (select 1 union all select i + 1 from n where i < $1)
                 insert into items (name, price, quantity, owner_id, created_at, updated_at)
                 select 'item ' || i, i % 100, 1, $2, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z' from n",
            )
            .bind(ITEMS)
            .bind(owner)
            .execute(&sqlite.writer)
            .await
            .unwrap();
            sqlite.cache.items_changed();
        }
        larder::store::Db::Postgres(postgres) => {
            sqlx::query(
                "insert into items (name, price, quantity, owner_id, created_at, updated_at)
                 select 'item ' || i, i % 100, 1, $2, now(), now() from generate_series(1, $1) as i",
            )
            .bind(ITEMS)
            .bind(owner)
            .execute(&postgres.pool)
            .await
            .unwrap();
        }
    }
}

async fn a_client_that_goes_away_stops_the_export(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    seed(&app, user.id).await;
    let before = exported_total(&app).await;

    // A client with a small receive buffer reads the start of the export, then resets the
    // connection (linger 0: an RST, as a killed client's kernel would send).
    let address = app.address.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    stream
        .write_all(b"GET /items/export HTTP/1.1\r\nhost: larder\r\n\r\n")
        .await
        .unwrap();
    let mut start = vec![0u8; 64 * 1024];
    let mut read = 0;
    while read < start.len() {
        let n = stream.read(&mut start[read..]).await.unwrap();
        assert!(n > 0, "the export ended early");
        read += n;
    }
    assert!(start.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // The export waits on this client (hyper writes no faster than it reads).
    assert_eq!(exports_active(&app).await, 1);
    stream.set_zero_linger().unwrap();
    drop(stream);

    // The export ends (its body is dropped), and reads nothing more: the count settles,
    // well short of every row.
    let mut ended = false;
    for _ in 0..50 {
        if exports_active(&app).await == 0 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the export still runs 5 s after its client left");
    let mut settled = exported_total(&app).await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = exported_total(&app).await;
        if now == settled {
            break;
        }
        settled = now;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = exported_total(&app).await;
    assert_eq!(
        after, settled,
        "the export went on reading after its client left"
    );
    let read_rows = after - before;
    eprintln!("{backend:?}: {read_rows} of {ITEMS} rows read before the export stopped");
    assert!(
        read_rows < ITEMS as u64 / 2,
        "{read_rows} of {ITEMS} rows were read for a client that left after 64 KiB"
    );
    // And larder serves on.
    assert_eq!(
        app.get("/healthz").send().await.unwrap().status(),
        StatusCode::OK
    );
}

/// One export test at a time: each reads the process-wide counter before and after.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_client_that_goes_away_stops_the_export() {
    let _alone = ONE_AT_A_TIME.lock().await;
    a_client_that_goes_away_stops_the_export(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn postgres_a_client_that_goes_away_stops_the_export() {
    let _alone = ONE_AT_A_TIME.lock().await;
    a_client_that_goes_away_stops_the_export(Backend::Postgres).await;
}
