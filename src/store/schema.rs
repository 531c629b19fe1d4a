//! The schema's version, for `larder migrate`, `serve --no-migrate` and `larder check`, and
//! `larder backup`'s consistent copy of a live SQLite database.

use std::path::Path;
use std::str::FromStr;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool};

use super::StoreError;
use crate::config::DatabaseUrl;

pub static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
pub static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// How far a database's schema is from this binary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The newest migration applied (0 for an empty database).
    pub applied: i64,
    /// The newest migration this binary has.
    pub latest: i64,
}

impl SchemaVersion {
    pub fn is_current(&self) -> bool {
        self.applied >= self.latest
    }
}

impl std::fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_current() {
            write!(f, "schema version {} (current)", self.applied)
        } else {
            write!(
                f,
                "schema version {} of {} ({} migrations pending)",
                self.applied,
                self.latest,
                self.latest - self.applied
            )
        }
    }
}

fn latest(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// What opening a database does about its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOpen {
    /// Apply the pending migrations (`serve`, `migrate`).
    Migrate,
    /// Refuse a schema that is behind (`serve --no-migrate`).
    RequireCurrent,
    /// Leave it as it is (`check`).
    AsItIs,
}

const APPLIED: &str = "select coalesce(max(version), 0) from _sqlx_migrations where success";

pub async fn sqlite_version(pool: &SqlitePool) -> Result<SchemaVersion, StoreError> {
    let applied = sqlx::query_scalar::<_, i64>(APPLIED).fetch_one(pool).await;
    settle(applied, &SQLITE)
}

pub async fn postgres_version(pool: &PgPool) -> Result<SchemaVersion, StoreError> {
    let applied = sqlx::query_scalar::<_, i64>(APPLIED).fetch_one(pool).await;
    settle(applied, &POSTGRES)
}

fn settle(
    applied: Result<i64, sqlx::Error>,
    migrator: &Migrator,
) -> Result<SchemaVersion, StoreError> {
    let applied = match applied {
        Ok(version) => version,
        Err(error) if is_missing_table(&error) => 0,
        Err(error) => return Err(error.into()),
    };
    Ok(SchemaVersion {
        applied,
        latest: latest(migrator),
    })
}

/// `_sqlx_migrations` does not exist yet: nothing was ever applied.
fn is_missing_table(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("42P01") || db.message().contains("no such table")
        }
        _ => false,
    }
}

/// The refusal of `serve --no-migrate` on a schema that is behind.
pub fn require_current(version: SchemaVersion) -> Result<(), StoreError> {
    if version.is_current() {
        return Ok(());
    }
    Err(StoreError::Database(sqlx::Error::Configuration(
        format!("the database is at {version}: run `larder migrate` first").into(),
    )))
}

/// Why a backup could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("larder backup copies SQLite databases; for PostgreSQL use pg_dump (see README)")]
    NotSqlite,
    #[error("{0} already exists; choose a new file")]
    Exists(String),
    #[error("the database {0} does not exist")]
    NoDatabase(String),
    #[error("the copy failed its integrity check: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Sqlite(#[from] sqlx::Error),
}

/// Copies the live SQLite database at `url` to `to` with `VACUUM INTO`: one read
/// transaction, so the copy holds exactly the transactions committed before it began, while
/// the server goes on writing (WAL lets a reader and the writer run side by side). The copy
/// is made readable by its owner only, then checked with `PRAGMA integrity_check`.
pub async fn backup(url: &DatabaseUrl, to: &Path) -> Result<u64, BackupError> {
    let DatabaseUrl::Sqlite(url) = url else {
        return Err(BackupError::NotSqlite);
    };
    if to.exists() {
        return Err(BackupError::Exists(to.display().to_string()));
    }
    let options = SqliteConnectOptions::from_str(url)?.create_if_missing(false);
    let source = options.get_filename().to_path_buf();
    if !source.exists() {
        return Err(BackupError::NoDatabase(source.display().to_string()));
    }
    let mut connection = SqliteConnection::connect_with(&options).await?;
    // The copy holds password hashes: no other user may read it, not even for a moment.
    // SAFETY: `umask` only swaps the process's file-creation mask.
    let previous = unsafe { libc::umask(0o077) };
    let copied = sqlx::query("vacuum into ?")
        .bind(to.to_string_lossy().into_owned())
        .execute(&mut connection)
        .await;
    unsafe { libc::umask(previous) };
    copied?;
    connection.close().await?;

    let copy = SqliteConnectOptions::new().filename(to).read_only(true);
    let mut connection = SqliteConnection::connect_with(&copy).await?;
    let verdict: String = sqlx::query_scalar("pragma integrity_check")
        .fetch_one(&mut connection)
        .await?;
    connection.close().await?;
    if verdict != "ok" {
        return Err(BackupError::Corrupt(verdict));
    }
    Ok(std::fs::metadata(to).map_or(0, |meta| meta.len()))
}
