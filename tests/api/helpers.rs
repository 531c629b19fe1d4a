//! The test harness: `TestApp::spawn(backend)` starts larder on port 0 with a fresh database
//! (a temporary SQLite file, or a new PostgreSQL database) and gives a client and helpers
//! that read like the contract.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use larder::app::Application;
use larder::config::{DatabaseUrl, Settings};
use larder::http::state::AppState;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for an `async fn(Backend)`. The PostgreSQL ones
/// are ignored (reported as skipped) in a build made without `LARDER_TEST_DATABASE_URL`; the
/// `redis:` form also needs `LARDER_TEST_REDIS_URL` (see `build.rs`). Under `CI=true` a
/// missing service fails `every_outside_service_is_there_under_ci` instead.
#[macro_export]
macro_rules! both_backends {
    (redis: $($name:ident),* $(,)?) => {
        mod sqlite_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(larder_test_redis), ignore = "LARDER_TEST_REDIS_URL is not set")]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(
                    not(all(larder_test_postgres, larder_test_redis)),
                    ignore = "LARDER_TEST_DATABASE_URL or LARDER_TEST_REDIS_URL is not set"
                )]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(larder_test_postgres), ignore = "LARDER_TEST_DATABASE_URL is not set")]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The PostgreSQL server for tests. Under `CI=true` a missing one fails the run, never skips.
pub fn postgres_url() -> Option<String> {
    match std::env::var("LARDER_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but LARDER_TEST_DATABASE_URL is not set: PostgreSQL tests cannot run")
        }
        _ => {
            eprintln!("LARDER_TEST_DATABASE_URL is not set: skipping the PostgreSQL variant");
            None
        }
    }
}

/// The database on the test server that holds one schema per test.
pub const TEST_DATABASE: &str = "larder_test";

pub async fn admin_connection(database: Option<&str>) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut url = postgres_url().expect("checked by the caller");
    if let Some(database) = database {
        let (base, _) = url.rsplit_once('/').expect("a database URL has a path");
        url = format!("{base}/{database}");
    }
    sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to the PostgreSQL test server")
}

/// A fresh, empty PostgreSQL schema for one test (much faster than a database per test):
/// the URL points `search_path` at it, so larder's migrations and queries live there.
pub async fn fresh_postgres_database() -> String {
    static CREATED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CREATED
        .get_or_init(|| async {
            let mut admin = admin_connection(None).await;
            let exists: Option<i32> =
                sqlx::query_scalar("select 1 from pg_database where datname = $1")
                    .bind(TEST_DATABASE)
                    .fetch_optional(&mut admin)
                    .await
                    .unwrap();
            if exists.is_none() {
                // Another test process may win the race; either way the database exists.
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "create database {TEST_DATABASE}"
                )))
                .execute(&mut admin)
                .await;
            }
        })
        .await;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut connection = admin_connection(Some(TEST_DATABASE)).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("create schema {schema}")))
        .execute(&mut connection)
        .await
        .expect("create a test schema");
    let url = postgres_url().unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{TEST_DATABASE}?options[search_path]={schema}")
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub backend: Backend,
    pub database_url: DatabaseUrl,
    /// Whether dropping this app drops its PostgreSQL database (not after a restart).
    owns_database: bool,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub password: String,
    pub token: String,
}

/// What every test server starts with: registrations unthrottled (tests register many users
/// from one address; the throttle's own tests set it low).
fn test_defaults(settings: &mut Settings) {
    settings.registration_limit = "100000/1h".parse().unwrap();
}

static USER_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, |_| {}).await
    }

    /// Starts with the test defaults, adjusted by `configure`.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::spawn_configured(backend, configure, crate::hooks::extensions()).await
    }

    async fn spawn_configured(
        backend: Backend,
        configure: impl FnOnce(&mut Settings),
        extensions: larder::app::Extensions,
    ) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let database_url = match backend {
            Backend::Sqlite => DatabaseUrl::Sqlite(format!(
                "sqlite://{}",
                dir.path().join("larder.db").display()
            )),
            Backend::Postgres => DatabaseUrl::Postgres(fresh_postgres_database().await),
        };
        let mut settings = Settings::for_database(database_url.clone());
        test_defaults(&mut settings);
        configure(&mut settings);
        TestApp::start_with(settings, backend, dir, extensions).await
    }

    /// Starts on a database the test prepared (e.g. reached through a proxy it controls).
    pub async fn spawn_with_database(
        backend: Backend,
        url: String,
        configure: impl FnOnce(&mut Settings),
    ) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let database_url = match backend {
            Backend::Sqlite => DatabaseUrl::Sqlite(url),
            Backend::Postgres => DatabaseUrl::Postgres(url),
        };
        let mut settings = Settings::for_database(database_url);
        test_defaults(&mut settings);
        configure(&mut settings);
        TestApp::start(settings, backend, dir).await
    }

    /// Starts as the release binary would: without the test hooks.
    pub async fn spawn_without_hooks(
        backend: Backend,
        configure: impl FnOnce(&mut Settings),
    ) -> TestApp {
        TestApp::spawn_configured(backend, configure, larder::app::Extensions::default()).await
    }

    async fn start(settings: Settings, backend: Backend, dir: tempfile::TempDir) -> TestApp {
        TestApp::start_with(settings, backend, dir, crate::hooks::extensions()).await
    }

    async fn start_with(
        settings: Settings,
        backend: Backend,
        dir: tempfile::TempDir,
        hooks: larder::app::Extensions,
    ) -> TestApp {
        let database_url = settings.database.database_url.clone();
        let app = Application::build_with(settings, hooks)
            .await
            .expect("larder builds");
        let address = format!("http://{}", app.address());
        let state = app.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        TestApp {
            address,
            client,
            state,
            backend,
            database_url,
            owns_database: true,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    /// Stops this server and starts a new one on the same database (a restart).
    pub async fn restart(mut self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        self.shutdown().await;
        self.owns_database = false;
        let mut settings = Settings::for_database(self.database_url.clone());
        test_defaults(&mut settings);
        configure(&mut settings);
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        TestApp::start(settings, self.backend, dir).await
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the server task ends")
                .expect("the server stops cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// GETs `path` anonymously and decodes the JSON answer.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path)
            .send()
            .await
            .expect("the server answers")
            .json()
            .await
            .expect("a JSON body")
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// The value of a metric without labels in `/metrics`, `None` before it is first set.
    /// The recorder is one per test process: compare before and after, not against zero.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .get("/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(|value| value.trim().parse().expect("a metric's value is a number"))
    }

    /// Registers a new user with a unique email and logs them in.
    pub async fn user(&self) -> TestUser {
        let n = USER_COUNTER.fetch_add(1, Ordering::Relaxed);
        let email = format!("user{n}-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = "correct horse battery".to_string();
        let response = self
            .post("/users")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap();
        let token = self.login(&email, &password).await;
        TestUser {
            id,
            email,
            password,
            token,
        }
    }

    /// An admin, made the way an operator makes one (the store's upsert, as `larder admin create`).
    pub async fn admin(&self) -> TestUser {
        let user = self.user().await;
        let email = larder::domain::user::Email::parse(&user.email).unwrap();
        let password = larder::domain::user::Password::parse(&user.password, Some(&email)).unwrap();
        let hash = larder::auth::password::hash(&password).await.unwrap();
        larder::store::users::upsert_admin(&self.state.db, &email, Some(&hash))
            .await
            .unwrap();
        // Setting the password ended the tokens issued before it.
        let token = self.login(&user.email, &user.password).await;
        TestUser { token, ..user }
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        self.login_pair(email, password).await.0
    }

    /// Logs in and returns the access token and the refresh token.
    pub async fn login_pair(&self, email: &str, password: &str) -> (String, String) {
        let response = self
            .post("/auth/token")
            .form(&[("username", email), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.json::<Value>().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_string(),
            body["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    /// The ids of every item, page by page (`limit` per page) through the cursors.
    pub async fn all_item_ids(&self, limit: u32) -> Vec<i64> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/items?limit={limit}&cursor={cursor}"),
                None => format!("/items?limit={limit}"),
            };
            let page = self.get_json(&path).await;
            ids.extend(
                page["items"]
                    .as_array()
                    .expect("a page of items")
                    .iter()
                    .map(|item| item["id"].as_i64().expect("an id")),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return ids,
            }
        }
    }

    /// Creates an item as `user` and returns its JSON.
    pub async fn create_item(&self, user: &TestUser, body: Value) -> Value {
        let response = self
            .post("/items")
            .bearer_auth(&user.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "creating {body}");
        response.json().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        record_contract_coverage();
        if let (DatabaseUrl::Postgres(url), true) = (&self.database_url, self.owns_database) {
            drop_postgres_database(url.clone());
        }
    }
}

/// Drops a test's schema (on a thread of its own: `Drop` cannot await).
pub fn drop_postgres_database(url: String) {
    let Some((_, schema)) = url.rsplit_once("search_path]=") else {
        return;
    };
    let schema = schema.to_string();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let mut connection = admin_connection(Some(TEST_DATABASE)).await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop schema if exists {schema} cascade"
            )))
            .execute(&mut connection)
            .await
            .ok()
        })
    })
    .join();
}

/// Asserts an RFC 9457 problem answer and returns its body: status, media type, request id
/// (header and body agree), title, instance, and the detail when given.
pub async fn assert_problem(response: Response, status: StatusCode, detail: Option<&str>) -> Value {
    assert_eq!(response.status(), status, "status of {}", response.url());
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/problem+json");
    let request_id = headers["x-request-id"].to_str().unwrap().to_string();
    let path = response.url().path().to_string();
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["title"], status.canonical_reason().unwrap());
    assert_eq!(body["instance"], path);
    assert_eq!(body["request_id"], request_id);
    assert!(body["type"].is_string());
    if let Some(detail) = detail {
        assert_eq!(body["detail"], detail);
    } else {
        assert!(body["detail"].is_string());
    }
    body
}

/// The `loc` of every error in a 422 body.
pub fn error_locs(body: &Value) -> Vec<Value> {
    body["errors"]
        .as_array()
        .expect("a validation problem has errors")
        .iter()
        .map(|error| error["loc"].clone())
        .collect()
}

/// The Redis server for tests. Under `CI=true` a missing one fails the run, never skips.
pub fn redis_url() -> Option<String> {
    match std::env::var("LARDER_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but LARDER_TEST_REDIS_URL is not set: Redis tests cannot run")
        }
        _ => {
            eprintln!("LARDER_TEST_REDIS_URL is not set: skipping a Redis test");
            None
        }
    }
}

/// Contract coverage (`clients/coverage.py`): with `LARDER_CONTRACT_COVERAGE=DIR`, every
/// test server, when dropped, writes each (method, route template, status) this process's
/// servers have answered so far to `DIR/<pid>.tsv`, read off the process-wide request
/// counter the servers keep for `/metrics`. The counts only grow, so the file the last
/// server writes holds the whole run; each write replaces the file whole (a rename).
fn record_contract_coverage() {
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let Some(dir) = std::env::var_os("LARDER_CONTRACT_COVERAGE") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let _writing = WRITING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let rendered = larder::telemetry::metrics().render();
    let mut pairs = std::collections::BTreeSet::new();
    for line in rendered.lines() {
        let Some(labels) = line
            .strip_prefix("http_requests_total{")
            .and_then(|rest| rest.rsplit_once('}'))
            .map(|(labels, _)| labels)
        else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|pair| {
                pair.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix("=\""))
                    .and_then(|rest| rest.strip_suffix('"'))
            })
        };
        if let (Some(method), Some(route), Some(status)) =
            (label("method"), label("route"), label("status"))
        {
            pairs.insert(format!("{method}\t{route}\t{status}\n"));
        }
    }
    let pid = std::process::id();
    let partial = dir.join(format!("{pid}.tsv.partial"));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&partial, pairs.into_iter().collect::<String>()))
        .and_then(|()| std::fs::rename(&partial, dir.join(format!("{pid}.tsv"))));
    // Not a panic: this runs in `Drop`, possibly while a failed test unwinds. The check
    // itself fails on a missing or stale file.
    if let Err(error) = written {
        eprintln!(
            "LARDER_CONTRACT_COVERAGE: cannot write into {}: {error}",
            dir.display()
        );
    }
}
