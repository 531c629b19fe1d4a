//! Upgrades keep users: a database made by the schema before accounts and sessions
//! (migrations up to 0005) holding a user upgrades at start, and the user logs in.

use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, fresh_postgres_database};

both_backends!(a_database_from_before_sessions_upgrades_and_its_users_log_in);

/// The migrations of `backend` up to and including `version`.
async fn migrator_up_to(backend: Backend, version: i64) -> sqlx::migrate::Migrator {
    let dir = match backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut migrator = sqlx::migrate::Migrator::new(path).await.unwrap();
    let kept: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|migration| migration.version <= version)
        .cloned()
        .collect();
    assert_eq!(kept.len(), version as usize);
    migrator.migrations = kept.into();
    migrator
}

async fn a_database_from_before_sessions_upgrades_and_its_users_log_in(backend: Backend) {
    let email = "old.timer@example.com";
    let password = larder::domain::user::Password::parse("kept across upgrades", None).unwrap();
    let hash = larder::auth::password::hash(&password).await.unwrap();
    let insert = "insert into users (email, email_key, password_hash, full_name, role, created_at) \
                  values ($1, $1, $2, 'Old Timer', 'admin', $3)";
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => {
            let path = dir.path().join("old.db");
            let url = format!("sqlite://{}", path.display());
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            migrator_up_to(backend, 5).await.run(&pool).await.unwrap();
            sqlx::query(insert)
                .bind(email)
                .bind(&hash)
                .bind(chrono::Utc::now())
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            url
        }
        Backend::Postgres => {
            let url = fresh_postgres_database().await;
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            migrator_up_to(backend, 5).await.run(&pool).await.unwrap();
            sqlx::query(insert)
                .bind(email)
                .bind(&hash)
                .bind(chrono::Utc::now())
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            url
        }
    };
    let app = TestApp::spawn_with_database(backend, url, |_| {}).await;
    let (token, refresh_token) = app.login_pair(email, "kept across upgrades").await;
    let response = app
        .get("/users/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["email"], email);
    assert_eq!(me["full_name"], "Old Timer");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["is_active"], true);
    let response = app
        .post("/auth/token")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(dir);
}
