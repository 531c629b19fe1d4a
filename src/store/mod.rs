//! The only place SQL lives. One enum over the two backends; the same SQL text runs on both
//! where the dialects agree (`$1` placeholders work on SQLite too), and explicit branches
//! where they do not.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{DatabaseSettings, DatabaseUrl, SqliteSync};

/// Runs `$body` with `$pool` bound to the pool that serves reads.
macro_rules! with_reader {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(sqlite) => {
                let $pool = &sqlite.reader;
                $body
            }
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$pool` bound to the pool that takes writes (SQLite: one connection).
macro_rules! with_writer {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(sqlite) => {
                let $pool = &sqlite.writer;
                $body
            }
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

pub mod batch;
pub mod cache;
pub mod idempotency;
pub mod items;
pub mod jobs;
pub mod users;

/// SQLite keeps one writer connection (SQLite allows one writer at a time anyway, and a single
/// connection makes writers queue in the pool instead of spinning on `SQLITE_BUSY`) and a pool
/// of read-only connections that WAL lets run beside it.
#[derive(Clone, Debug)]
pub struct SqliteDb {
    pub writer: SqlitePool,
    pub reader: SqlitePool,
    /// Item creations, group-committed on the writer connection.
    pub items: batch::ItemBatcher,
    /// Reads of items and users, never stale in-process (see `store::cache`).
    pub cache: std::sync::Arc<cache::ReadCache>,
}

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgPool),
}

/// What can go wrong below the HTTP layer, split by what the caller should be told.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or the pool is exhausted: 503, try again.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// Anything else: 500, logged with its cause, never shown.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            StoreError::Unavailable(error)
        } else {
            StoreError::Database(error)
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(sqlx::Error::Migrate(Box::new(error)))
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6) with their extended codes.
            if let Ok(numeric) = code.parse::<i32>() {
                return matches!(numeric & 0xff, 5 | 6);
            }
            // PostgreSQL: connection exceptions, shutdown, too many connections.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "40001"
        }
        _ => false,
    }
}

/// A multi-row SQLite statement: `head`, then `rows` copies of `tuple` joined by commas, then
/// `tail`. Tuples use positional `?`s: SQLite looks a numbered parameter up by name in
/// linear time, which would make binding thousands of `$n` quadratic.
pub(crate) fn sqlite_multi_row(head: &str, tuple: &str, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 1) + tail.len());
    sql.push_str(head);
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(tuple);
    }
    sql.push_str(tail);
    sql
}

/// True when the error is the violation of a unique constraint (the caller maps it to 409).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Db {
    /// Opens the pools and applies the migrations of the backend the URL names.
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Db> {
        let timeout = settings.pool_timeout();
        let db = match &settings.database_url {
            DatabaseUrl::Sqlite(url) => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(match settings.sqlite_sync {
                        SqliteSync::Full => SqliteSynchronous::Full,
                        SqliteSync::Normal => SqliteSynchronous::Normal,
                    })
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    .statement_cache_capacity(256);
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(timeout)
                    .connect_with(options.clone())
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&writer).await?;
                let reader = SqlitePoolOptions::new()
                    .max_connections(settings.pool_size)
                    .acquire_timeout(timeout)
                    // A small page cache per reader: the read cache answers most reads,
                    // the OS caches the file, and eight 2 MiB caches were most of the RSS.
                    .connect_with(options.read_only(true).pragma("cache_size", "-512"))
                    .await?;
                let cache = std::sync::Arc::new(cache::ReadCache::default());
                let items = batch::ItemBatcher::start(writer.clone(), cache.clone());
                Db::Sqlite(SqliteDb {
                    writer,
                    reader,
                    items,
                    cache,
                })
            }
            DatabaseUrl::Postgres(url) => {
                let pool = PgPoolOptions::new()
                    .max_connections(settings.pool_size)
                    .acquire_timeout(timeout)
                    .connect(url)
                    .await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Db::Postgres(pool)
            }
        };
        Ok(db)
    }

    /// The read cache: SQLite only (one process owns the database).
    pub(crate) fn cache(&self) -> Option<&cache::ReadCache> {
        match self {
            Db::Sqlite(sqlite) => Some(&sqlite.cache),
            Db::Postgres(_) => None,
        }
    }

    /// To call after every committed (or possibly committed) write that touches items.
    pub(crate) fn items_changed(&self) {
        if let Some(cache) = self.cache() {
            cache.items_changed();
        }
    }

    /// To call after every committed (or possibly committed) write that touches users.
    pub(crate) fn users_changed(&self) {
        if let Some(cache) = self.cache() {
            cache.users_changed();
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Whether the database answers a trivial query (for `/readyz`).
    pub async fn ping(&self) -> StoreResult<()> {
        with_reader!(self, |pool| {
            sqlx::query("select 1").execute(pool).await?;
        });
        Ok(())
    }

    /// The file a SQLite database lives in, if it is one.
    pub fn sqlite_path(url: &DatabaseUrl) -> Option<std::path::PathBuf> {
        match url {
            DatabaseUrl::Sqlite(url) => SqliteConnectOptions::from_str(url)
                .ok()
                .map(|options| options.get_filename().to_path_buf())
                .filter(|path| {
                    !path.as_os_str().is_empty() && path != std::path::Path::new(":memory:")
                }),
            DatabaseUrl::Postgres(_) => None,
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(sqlite) => {
                sqlite.reader.close().await;
                sqlite.writer.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// Milliseconds since the Unix epoch: how instants that are compared in SQL are stored,
/// so both backends order them the same way.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
