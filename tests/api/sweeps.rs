//! The answers many operations share, swept over the served OpenAPI document: for every
//! operation that documents a status, the condition that makes it is sent to that
//! operation, and every operation that does not document it must not answer it.
//! (The storage sweep, 507 on a really full disk, is in `storage.rs`.)

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestUser, assert_problem};

/// Every operation of the served document, with the statuses it documents.
pub struct Operation {
    pub method: Method,
    pub route: String,
    pub statuses: Vec<String>,
}

impl Operation {
    pub fn documents(&self, status: StatusCode) -> bool {
        self.statuses.iter().any(|s| s == status.as_str())
    }

    fn name(&self) -> String {
        format!("{} {}", self.method, self.route)
    }
}

pub async fn operations(app: &TestApp) -> Vec<Operation> {
    let document = app.get_json("/openapi.json").await;
    let mut operations = Vec::new();
    for (route, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            operations.push(Operation {
                method,
                route: route.clone(),
                statuses: responses.keys().cloned().collect(),
            });
        }
    }
    assert!(operations.len() > 30, "the document lists its operations");
    operations
}

/// What the valid requests of every operation refer to: an admin who acts, users to
/// delete and to change, an item, a queued job, a second session, a refresh token and a
/// password reset token.
pub struct World {
    pub admin: TestUser,
    other: TestUser,
    leaver: TestUser,
    item: i64,
    job: String,
    session: String,
    refresh: String,
    reset: String,
}

impl World {
    /// Builds the world on `app` (which should run no job workers, so the job stays queued).
    pub async fn build(app: &TestApp) -> World {
        let admin = app.admin().await;
        let other = app.user().await;
        let leaver = app.user().await;
        let item = app
            .create_item(&admin, json!({"name": "swept", "price": 1}))
            .await["id"]
            .as_i64()
            .unwrap();
        let response = app
            .post("/process")
            .bearer_auth(&admin.token)
            .json(&json!({"kind": "import_items", "items": [{"name": "queued", "price": 1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let job = response.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, refresh) = app.login_pair(&admin.email, &admin.password).await;
        let sessions: Value = app
            .get("/users/me/sessions")
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = sessions
            .as_array()
            .unwrap()
            .iter()
            .find(|session| session["current"] == false)
            .expect("the second login's session")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let reset = larder::auth::secret::new_token();
        let stored = larder::store::password_resets::create(
            &app.state.db,
            &other.email.to_lowercase(),
            &larder::auth::secret::digest(&reset),
            larder::store::now_millis() + 3_600_000,
        )
        .await
        .unwrap();
        assert_eq!(stored.map(|(id, _)| id), Some(other.id));
        World {
            admin,
            other,
            leaver,
            item,
            job,
            session,
            refresh,
            reset,
        }
    }

    /// A request `operation` would accept (2xx) on a healthy server, as the admin.
    pub fn valid_request(&self, app: &TestApp, operation: &Operation) -> RequestBuilder {
        let route = operation.route.as_str();
        let path = route
            .replace("{item_id}", &self.item.to_string())
            .replace("{user_id}", &self.other.id.to_string())
            .replace("{job_id}", &self.job)
            .replace("{session_id}", &self.session);
        let request = app.request(operation.method.clone(), &path);
        let admin = &self.admin;
        match (operation.method.as_str(), route) {
            ("GET", "/healthz" | "/readyz" | "/metrics" | "/items" | "/items/export")
            | ("GET", "/items/{item_id}") => request,
            ("GET", "/api/data") => request.header("client", "sweep"),
            ("POST", "/validate") => request.json(&json!({"required_field": "x"})),
            ("POST", "/users") => request.json(&json!({
                "email": format!("new-{}@example.com", uuid::Uuid::new_v4().simple()),
                "password": "correct horse battery",
            })),
            ("POST", "/auth/token") => request.form(&[
                ("username", admin.email.as_str()),
                ("password", admin.password.as_str()),
            ]),
            ("POST", "/auth/revoke") => request.form(&[("token", self.refresh.as_str())]),
            ("POST", "/auth/password-reset") => request.json(&json!({"email": self.other.email})),
            ("POST", "/auth/password-reset/confirm") => request.json(&json!({
                "token": self.reset,
                "new_password": "a brand new passphrase",
            })),
            ("DELETE", "/users/me") => request.bearer_auth(&self.leaver.token),
            ("GET", _) | ("DELETE", _) | ("POST", "/jobs/{job_id}/cancel") => {
                request.bearer_auth(&admin.token)
            }
            ("POST", "/items") | ("PUT", "/items/{item_id}") => request
                .bearer_auth(&admin.token)
                .json(&json!({"name": "swept again", "price": 2})),
            ("PATCH", "/items/{item_id}") => request
                .bearer_auth(&admin.token)
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"price": 3}"#),
            ("POST", "/process") => request.bearer_auth(&admin.token).json(
                &json!({"kind": "import_items", "items": [{"name": "imported", "price": 1}]}),
            ),
            ("PATCH", "/users/me") | ("PATCH", "/users/{user_id}") => request
                .bearer_auth(&admin.token)
                .json(&json!({"full_name": "Swept Name"})),
            ("PUT", "/users/me/password") => request.bearer_auth(&admin.token).json(&json!({
                "current_password": admin.password,
                "new_password": "a brand new passphrase",
            })),
            _ => panic!(
                "{}: a new operation; give it a valid request in tests/api/sweeps.rs",
                operation.name()
            ),
        }
    }
}

/// Whether the operation reads a JSON (or form) body.
fn takes_body(operation: &Operation) -> bool {
    operation.documents(StatusCode::UNSUPPORTED_MEDIA_TYPE)
}

/// Sends the valid request of every operation under a fault, and checks each answers
/// `status` (a problem) exactly when it documents it, and never a 5xx otherwise.
async fn sweep_fault(app: &TestApp, world: &World, status: StatusCode) {
    let operations = operations(app).await;
    let mut answered = 0;
    for operation in &operations {
        let response = world
            .valid_request(app, operation)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let got = response.status();
        if operation.documents(status) {
            assert_eq!(got, status, "{} under the fault", operation.name());
            assert_problem(response, status, None).await;
            answered += 1;
        } else {
            assert!(
                got.is_success() || operation.documents(got),
                "{} answered {got}, which it does not document",
                operation.name()
            );
        }
    }
    assert!(
        answered > 20,
        "{status}: only {answered} operations answered it"
    );
}

/// 500: every table is gone (a database error that is no outage). Operations that never
/// touch the database still answer.
async fn a_database_error_answers_500_wherever_documented(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.workers = 0).await;
    let world = World::build(&app).await;
    match &app.state.db {
        larder::store::Db::Sqlite(sqlite) => {
            use sqlx::Connection;
            let mut connection = sqlx::SqliteConnection::connect_with(
                &(*sqlite.writer.connect_options())
                    .clone()
                    .foreign_keys(false),
            )
            .await
            .unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'",
            )
            .fetch_all(&mut connection)
            .await
            .unwrap();
            for table in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!("drop table \"{table}\"")))
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
            // As a change made by another process would: the cache is read again.
            sqlite.cache.items_changed();
            sqlite.cache.users_changed();
        }
        larder::store::Db::Postgres(postgres) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "select tablename::text from pg_tables where schemaname = current_schema()",
            )
            .fetch_all(&postgres.pool)
            .await
            .unwrap();
            for table in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "drop table if exists \"{table}\" cascade"
                )))
                .execute(&postgres.pool)
                .await
                .unwrap();
            }
        }
    }
    sweep_fault(&app, &world, StatusCode::INTERNAL_SERVER_ERROR).await;
}

/// 503: the database went away (every connection cut, new ones refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn postgres_gone_answers_503_wherever_documented() {
    let (proxy, through_proxy) = crate::faults::CuttableProxy::in_front_of_a_fresh_database().await;
    let app = TestApp::spawn_with_database(Backend::Postgres, through_proxy, |settings| {
        settings.database.pool_timeout = 1;
        settings.workers = 0;
    })
    .await;
    let world = World::build(&app).await;
    proxy.cut();
    sweep_fault(&app, &world, StatusCode::SERVICE_UNAVAILABLE).await;
}

/// 401 without a token, before anything else is looked at.
async fn no_token_answers_401_wherever_documented(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for operation in operations(&app).await {
        let path = operation
            .route
            .replace("{item_id}", "1")
            .replace("{user_id}", "1")
            .replace("{job_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{session_id}", "unknown");
        let mut request = app.request(operation.method.clone(), &path);
        if operation.route == "/auth/token" {
            // Its 401 is a wrong email or password.
            request = request.form(&[("username", "nobody@example.com"), ("password", "x")]);
        } else if takes_body(&operation) {
            request = request.json(&json!({}));
        }
        let response = request.send().await.unwrap();
        if operation.documents(StatusCode::UNAUTHORIZED) {
            assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
        } else {
            assert_ne!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{}",
                operation.name()
            );
        }
    }
}

/// 406 and 414 are refused before routing, for every operation.
async fn accept_and_target_length_are_refused_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long_query = format!("?pad={}", "a".repeat(8200));
    for operation in operations(&app).await {
        let path = operation.route.replace(['{', '}'], "");
        assert!(
            operation.documents(StatusCode::NOT_ACCEPTABLE),
            "{}",
            operation.name()
        );
        let response = app
            .request(operation.method.clone(), &path)
            .header("accept", "image/png")
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::NOT_ACCEPTABLE, None).await;
        assert!(
            operation.documents(StatusCode::URI_TOO_LONG),
            "{}",
            operation.name()
        );
        let response = app
            .request(operation.method.clone(), &format!("{path}{long_query}"))
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::URI_TOO_LONG, None).await;
    }
}

/// The body rules of every operation that reads one: 415 for a media type it does not
/// read, 413 above the size limit, 400 for a body that is not JSON.
async fn body_rules_hold_wherever_documented(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        settings.max_body = 4096;
        settings.import_max_body = 4096;
        settings.workers = 0;
    })
    .await;
    let world = World::build(&app).await;
    for operation in operations(&app).await.iter().filter(|op| takes_body(op)) {
        // The valid request (its token, its path) with another body and media type.
        let send = |content_type: &'static str, body: String| {
            let mut request = world.valid_request(&app, operation).build().unwrap();
            request.headers_mut().insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static(content_type),
            );
            *request.body_mut() = Some(body.into());
            app.client.execute(request)
        };
        let response = send("text/plain", "hello".to_string()).await.unwrap();
        assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, None).await;
        if operation.documents(StatusCode::PAYLOAD_TOO_LARGE) {
            let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(5000));
            let response = send("application/json", big).await.unwrap();
            assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, None).await;
        }
        if operation.documents(StatusCode::BAD_REQUEST) && operation.route != "/auth/token" {
            let response = send("application/json", "{\"name\": ".to_string())
                .await
                .unwrap();
            assert_problem(response, StatusCode::BAD_REQUEST, None).await;
        }
    }
}

crate::both_backends!(
    a_database_error_answers_500_wherever_documented,
    malformed_ids_answer_422_and_unknown_ones_404_wherever_documented,
    writes_that_keep_losing_the_race_answer_409,
    a_key_still_in_flight_answers_409,
    no_token_answers_401_wherever_documented,
    accept_and_target_length_are_refused_everywhere,
    body_rules_hold_wherever_documented,
);

/// Path ids: one that does not parse is 422 at `["path", name]`; one that names nothing is
/// 404. Everything else about the request is valid.
async fn malformed_ids_answer_422_and_unknown_ones_404_wherever_documented(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.workers = 0).await;
    let world = World::build(&app).await;
    let params = [
        ("item_id", "999999999"),
        ("user_id", "999999999"),
        ("job_id", "00000000-0000-4000-8000-000000000000"),
        ("session_id", "no-such-session"),
    ];
    let mut checked = 0;
    for operation in operations(&app).await {
        let Some((param, unknown)) = params
            .iter()
            .find(|(param, _)| operation.route.contains(&format!("{{{param}}}")))
        else {
            continue;
        };
        let with_id = |id: &str| {
            let mut request = world.valid_request(&app, &operation).build().unwrap();
            let path = operation.route.replace(&format!("{{{param}}}"), id);
            request.url_mut().set_path(&path);
            app.client.execute(request)
        };
        if operation.documents(StatusCode::UNPROCESSABLE_ENTITY) && *param != "session_id" {
            let response = with_id("not-an-id").await.unwrap();
            let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
            assert_eq!(
                crate::helpers::error_locs(&body),
                vec![json!(["path", param])],
                "{}",
                operation.name()
            );
            checked += 1;
        }
        if operation.documents(StatusCode::NOT_FOUND) {
            let response = with_id(unknown).await.unwrap();
            assert_problem(response, StatusCode::NOT_FOUND, None).await;
            checked += 1;
        }
    }
    assert!(checked > 15, "only {checked} checks");
}

/// The item writes retry when another writer changed the row between their read and their
/// write; one that loses every attempt is 409 and changes nothing. Here the database skips
/// every change of the row (a trigger), so each attempt loses as it would to a busy writer.
async fn writes_that_keep_losing_the_race_answer_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let item = app
        .create_item(&user, json!({"name": "contended", "price": 1}))
        .await;
    let statements: &[&'static str] = match backend {
        Backend::Sqlite => &[
            "create trigger lose_updates before update on items begin select raise(ignore); end",
            "create trigger lose_deletes before delete on items begin select raise(ignore); end",
        ],
        Backend::Postgres => &[
            "create function lose_the_race() returns trigger language plpgsql as $$ begin return null; end $$",
            "create trigger lose_writes before update or delete on items for each row execute function lose_the_race()",
        ],
    };
    for statement in statements {
        match &app.state.db {
            larder::store::Db::Sqlite(sqlite) => {
                sqlx::query(*statement)
                    .execute(&sqlite.writer)
                    .await
                    .unwrap();
            }
            larder::store::Db::Postgres(postgres) => {
                sqlx::query(*statement)
                    .execute(&postgres.pool)
                    .await
                    .unwrap();
            }
        }
    }
    let path = format!("/items/{}", item["id"]);
    let writes = [
        app.request(Method::PUT, &path)
            .json(&json!({"name": "replaced", "price": 2})),
        app.request(Method::PATCH, &path)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"price": 3}"#),
        app.request(Method::DELETE, &path),
    ];
    for write in writes {
        let response = write.bearer_auth(&user.token).send().await.unwrap();
        assert_problem(
            response,
            StatusCode::CONFLICT,
            Some("The item is being changed by others, try again"),
        )
        .await;
    }
    assert_eq!(app.get_json(&path).await, item);
}

/// A second request with the key of one still being processed (here, claimed by another
/// process that has not answered yet) is 409 and starts nothing, on both keyed routes.
async fn a_key_still_in_flight_answers_409(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.workers = 0).await;
    let user = app.user().await;
    let routes = [
        (
            "/process",
            "POST /process",
            json!({"kind": "import_items", "items": [{"name": "once", "price": 1}]}),
        ),
        ("/items", "POST /items", json!({"name": "once", "price": 1})),
    ];
    for (path, scope, body) in routes {
        let key = larder::store::idempotency::KeyRef {
            user_id: user.id,
            scope,
            key: "held-elsewhere",
        };
        let claim = larder::store::idempotency::claim(
            &app.state.db,
            &key,
            &larder::http::idempotency::fingerprint(&body),
        )
        .await
        .unwrap();
        assert!(matches!(claim, larder::store::idempotency::Claim::Fresh));
        let response = app
            .post(path)
            .bearer_auth(&user.token)
            .header("idempotency-key", "held-elsewhere")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(
            response,
            StatusCode::CONFLICT,
            Some("A request with this Idempotency-Key is still being processed"),
        )
        .await;
    }
    let jobs = app
        .get("/jobs")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status(), StatusCode::OK);
    let jobs: Value = jobs.json().await.unwrap();
    assert_eq!(jobs["jobs"], json!([]), "{jobs}");
    assert_eq!(app.all_item_ids(20).await, Vec::<i64>::new());
}
