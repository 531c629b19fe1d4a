//! §11: operating larder — `larder backup` of a live SQLite database, `larder migrate` with
//! `serve --no-migrate`, and `larder check`.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{Backend, TestApp, fresh_postgres_database, redis_url};
use crate::process::{BINARY, free_port, wait_until_serving};

fn larder(args: &[&str], database_url: &str) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("LARDER_DATABASE_URL", database_url)
        .env_remove("LARDER_REDIS_URL")
        .env_remove("LARDER_NO_MIGRATE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    assert_eq!(text.trim().lines().count(), 1, "one line: {text:?}");
    text.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_writes_is_whole_and_holds_every_earlier_write() {
    let app = Arc::new(TestApp::spawn(Backend::Sqlite).await);
    let user = Arc::new(app.user().await);
    let acknowledged = Arc::new(Mutex::new(Vec::<i64>::new()));
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (app, user, acknowledged, writing) = (
            app.clone(),
            user.clone(),
            acknowledged.clone(),
            writing.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let item = app
                    .create_item(&user, json!({"name": format!("item {n}"), "price": n}))
                    .await;
                acknowledged
                    .lock()
                    .unwrap()
                    .push(item["id"].as_i64().unwrap());
                n += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: BTreeSet<i64> = acknowledged.lock().unwrap().iter().copied().collect();
    assert!(!before.is_empty(), "the writer is writing");

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    let database_url = app.database_url.to_string();
    let backup = tokio::task::spawn_blocking({
        let copy = copy.clone();
        move || larder(&["backup", "--to", copy.to_str().unwrap()], &database_url)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert!(backup.status.success(), "{backup:?}");
    let said = one_line(&backup.stdout);
    assert!(said.contains("integrity ok"), "{said}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the copy is private: {mode:o}");
    }

    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&copy)
        .read_only(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let verdict: String = sqlx::query_scalar("pragma integrity_check")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(verdict, "ok");
    let copied: BTreeSet<i64> = sqlx::query_scalar::<_, i64>("select id from items")
        .fetch_all(&mut connection)
        .await
        .unwrap()
        .into_iter()
        .collect();
    connection.close().await.unwrap();
    let missing: Vec<_> = before.difference(&copied).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, missing: {missing:?}"
    );
    let all: BTreeSet<i64> = acknowledged.lock().unwrap().iter().copied().collect();
    assert!(copied.is_subset(&all), "the copy holds only real writes");

    // The copy serves: larder starts on it and the user and the items are there.
    let restored = TestApp::spawn_with_database(
        Backend::Sqlite,
        format!("sqlite://{}", copy.display()),
        |_| {},
    )
    .await;
    let token = restored.login(&user.email, &user.password).await;
    assert!(!token.is_empty());
    let some = *before.iter().next().unwrap();
    let response = restored
        .get(&format!("/items/{some}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // A second backup to the same file is refused: nothing is overwritten.
    let again = larder(
        &["backup", "--to", copy.to_str().unwrap()],
        &app.database_url.to_string(),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(one_line(&again.stderr).contains("already exists"));
}

#[test]
fn a_backup_of_postgres_points_to_pg_dump() {
    let output = larder(
        &["backup", "--to", "/tmp/never-written.db"],
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(one_line(&output.stderr).contains("pg_dump"));
    assert!(!std::path::Path::new("/tmp/never-written.db").exists());
}

async fn database_url_for(backend: Backend, dir: &tempfile::TempDir) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("larder.db").display()),
        Backend::Postgres => fresh_postgres_database().await,
    }
}

crate::both_backends!(migrate_applies_and_serve_no_migrate_refuses_a_schema_behind);

async fn migrate_applies_and_serve_no_migrate_refuses_a_schema_behind(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url_for(backend, &dir).await;
    let port = free_port();
    let serve = |url: &str| {
        crate::process::serve(url, port)
            .arg("--no-migrate")
            .env_remove("LARDER_REDIS_URL")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // An empty database: `serve --no-migrate` refuses it, in one line naming the fix.
    let refused = serve(&url).wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    let last = said.trim().lines().last().unwrap_or_default();
    assert!(last.contains("run `larder migrate` first"), "{said}");
    assert!(last.contains("schema version 0 of"), "{said}");

    let check = larder(&["check"], &url);
    assert!(check.status.success(), "{check:?}");
    assert!(one_line(&check.stdout).contains("migrations pending"));

    let migrated = larder(&["migrate"], &url);
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(one_line(&migrated.stdout).contains("(current)"));
    // Applying again changes nothing.
    let again = larder(&["migrate"], &url);
    assert!(again.status.success());

    let mut server = serve(&url);
    wait_until_serving(&format!("http://127.0.0.1:{port}")).await;
    let check = larder(&["check"], &url);
    assert!(check.status.success(), "{check:?}");
    let said = one_line(&check.stdout);
    assert!(
        said.starts_with("larder check: settings ok; database reachable"),
        "{said}"
    );
    assert!(said.contains("(current)"), "{said}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn check_fails_in_one_line_on_what_it_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("new.db").display());
    // Not made yet is fine, and check does not make it.
    let output = larder(&["check"], &sqlite);
    assert!(output.status.success(), "{output:?}");
    assert!(one_line(&output.stdout).contains("does not exist yet"));
    assert!(!dir.path().join("new.db").exists());

    let output = larder(&["check"], "postgres://postgres@127.0.0.1:1/none");
    assert_eq!(output.status.code(), Some(1));
    assert!(one_line(&output.stderr).starts_with("larder check: cannot open the database"));

    let output = Command::new(BINARY)
        .arg("check")
        .env("LARDER_DATABASE_URL", &sqlite)
        .env("LARDER_REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(one_line(&output.stderr).starts_with("larder check: cannot reach Redis"));

    let output = Command::new(BINARY)
        .arg("check")
        .env("LARDER_DATABASE_URL", &sqlite)
        .env("LARDER_ENV", "production")
        .env_remove("LARDER_JWT_SECRET")
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("LARDER_JWT_SECRET"));

    if let Some(redis) = redis_url() {
        let output = Command::new(BINARY)
            .arg("check")
            .env("LARDER_DATABASE_URL", &sqlite)
            .env("LARDER_REDIS_URL", redis)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert!(one_line(&output.stdout).contains("; Redis reachable"));
    }
}

/// A database made by the first release's schema (migration 0001 only, with a user and an
/// item written as that release wrote them) upgrades at start with its data intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_release_database_upgrades_with_its_data_intact() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first-release");
    std::fs::create_dir(&first).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut names: Vec<_> = std::fs::read_dir(&source)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    std::fs::copy(source.join(&names[0]), first.join(&names[0])).unwrap();

    let file = dir.path().join("old.db");
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))
            .unwrap()
            .create_if_missing(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let migrator = sqlx::migrate::Migrator::new(first.as_path()).await.unwrap();
    migrator.run(&mut connection).await.unwrap();
    let password = "correct horse battery";
    let hash = larder::auth::password::hash(
        &larder::domain::user::Password::parse(password, None).unwrap(),
    )
    .await
    .unwrap();
    let now = chrono::Utc::now();
    sqlx::query(
        "insert into users (email, email_key, password_hash, full_name, role, created_at) \
         values ('old@example.com', 'old@example.com', ?, 'Old Timer', 'user', ?)",
    )
    .bind(&hash)
    .bind(now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    .execute(&mut connection)
    .await
    .unwrap();
    sqlx::query(
        "insert into items (name, description, price, quantity, owner_id, created_at, updated_at) \
         values ('Old jam', 'from 2025', 4.5, 3, 1, ?1, ?1)",
    )
    .bind(now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    .execute(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();

    let url = format!("sqlite://{}", file.display());
    let app = TestApp::spawn_with_database(Backend::Sqlite, url.clone(), |_| {}).await;
    let token = app.login("old@example.com", password).await;
    let me = app
        .get("/users/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["email"], "old@example.com");
    assert_eq!(me["full_name"], "Old Timer");
    let item = app.get_json("/items/1").await;
    assert_eq!(item["name"], "Old jam");
    assert_eq!(item["description"], "from 2025");
    assert_eq!(item["price"], 4.5);
    assert_eq!(item["owner_id"], me["id"]);
    let check = larder(&["check"], &url);
    assert!(one_line(&check.stdout).contains("(current)"), "{check:?}");
}

/// PostgreSQL backups are `pg_dump`/`pg_restore` (README): a database round-trips through
/// them and serves with its users and items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn a_postgres_database_round_trips_through_pg_dump_and_pg_restore() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let user = app.user().await;
    let item = app
        .create_item(&user, json!({"name": "Dumped jam", "price": 3}))
        .await;
    let url = app.database_url.to_string();
    let (base, schema) = url.split_once("?options[search_path]=").unwrap();
    let dump = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new("pg_dump")
        .args(["--format=custom", "--schema", schema, "--file"])
        .arg(dump.path())
        .arg(base)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    let restored_database = format!("larder_restore_{}", uuid::Uuid::new_v4().simple());
    let mut admin = crate::helpers::admin_connection(None).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create database {restored_database}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    let restored_base = format!("{server}/{restored_database}");
    let output = Command::new("pg_restore")
        .args(["--no-owner", "--dbname", &restored_base])
        .arg(dump.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    {
        let restored = TestApp::spawn_with_database(
            Backend::Postgres,
            format!("{restored_base}?options[search_path]={schema}"),
            |_| {},
        )
        .await;
        let token = restored.login(&user.email, &user.password).await;
        assert!(!token.is_empty());
        let copy = restored.get_json(&format!("/items/{}", item["id"])).await;
        assert_eq!(copy, item);
        let check = larder(
            &["check"],
            &format!("{restored_base}?options[search_path]={schema}"),
        );
        assert!(one_line(&check.stdout).contains("(current)"), "{check:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists {restored_database} with (force)"
    )))
    .execute(&mut admin)
    .await;
}
