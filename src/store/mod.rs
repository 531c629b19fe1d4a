//! The only place SQL lives. One enum over the two backends; the same SQL text runs on both
//! where the dialects agree (`$1` placeholders work on SQLite too), and explicit branches
//! where they do not.
//!
//! Every store call is a span (`#[tracing::instrument(target = "larder::spans::db", …)]`,
//! named `<module>.<function>`, with `db.system`): exported under a request's or a job's
//! span when tracing is on; with it off, a disabled callsite (`telemetry::DB_SPANS`).
//!
//! A write with `returning` outside a transaction is read with `fetch_all`, never
//! `fetch_one`/`fetch_optional`: those stop after the first row and reset the statement,
//! and sqlx ignores the reset's result, while SQLite commits such a statement's implicit
//! transaction when it finishes. A commit that failed there (a full disk) was answered as
//! a success (issue 16). `fetch_all` steps the statement to its end, where the commit's
//! error is reported.

use std::str::FromStr;
use std::sync::Arc;
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
            $crate::store::Db::Postgres(postgres) => {
                let $pool = &postgres.pool;
                $body
            }
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
            $crate::store::Db::Postgres(postgres) => {
                let $pool = &postgres.pool;
                $body
            }
        }
    };
}

pub mod batch;
pub mod cache;
pub mod coalesce;
pub mod direct;
pub mod idempotency;
pub mod items;
pub mod jobs;
pub mod password_resets;
pub mod schema;
pub mod sessions;
pub mod storage;
pub mod users;

use schema::OnOpen;
use storage::{DatabaseFile, StorageHealth, StorageProblem};

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
    pub cache: Arc<cache::ReadCache>,
    /// Storage faults, and the file the database lives in (none for an in-memory database).
    pub health: Arc<StorageHealth>,
    /// Jobs whose progress or status changed, told after each commit.
    pub job_events: jobs::JobEvents,
    /// Listing pages, read on the calling thread (none for an in-memory database).
    pub direct: Option<Arc<direct::DirectReaders>>,
}

#[derive(Clone, Debug)]
pub struct PostgresDb {
    pub pool: PgPool,
    /// Item creations, batched into shared commits.
    pub items: batch::ItemBatcher,
    /// Item reads, batched into shared round trips.
    pub reads: Arc<PostgresReads>,
    pub health: Arc<StorageHealth>,
    /// Jobs whose progress or status changed, as this process's listener hears them from
    /// every process (`jobs::EVENTS_CHANNEL`).
    pub job_events: jobs::JobEvents,
}

/// PostgreSQL's read batchers (`store::coalesce`).
#[derive(Debug)]
pub struct PostgresReads {
    pub(crate) items: Arc<coalesce::ReadBatcher<i64, items::Item>>,
    pub(crate) pages: Arc<coalesce::ReadBatcher<items::PageRead, Arc<Vec<items::Item>>>>,
    pub(crate) newest: Arc<coalesce::ReadBatcher<i64, Arc<Vec<items::ItemSummary>>>>,
    /// The token check of every authenticated request: (user id, session id) → the user.
    pub(crate) session_users: Arc<coalesce::ReadBatcher<(i64, Arc<str>), users::User>>,
}

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PostgresDb),
}

/// What can go wrong below the HTTP layer, split by what the caller should be told.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or the pool is exhausted: 503, try again.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The disk is full (SQLite's `SQLITE_FULL`, PostgreSQL's `disk_full`): 507, nothing kept.
    #[error("storage full: {0}")]
    Full(sqlx::Error),
    /// The database file is gone, replaced, read-only or failing with I/O errors: 503.
    #[error("storage fault: {0}")]
    Fault(sqlx::Error),
    /// Anything else: 500, logged with its cause, never shown.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl StoreError {
    /// Whether the write failed because of the storage, not the request: worth retrying
    /// once the storage is back, and no reason to give up on a job.
    pub fn is_storage(&self) -> bool {
        matches!(self, StoreError::Full(_) | StoreError::Fault(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match storage::storage_problem(&error) {
            Some(StorageProblem::Full) => StoreError::Full(error),
            Some(StorageProblem::Fault) => StoreError::Fault(error),
            None if is_unavailable(&error) => StoreError::Unavailable(error),
            None => StoreError::Database(error),
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
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                return sqlite_busy(code.parse::<i32>().unwrap_or_default());
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

/// Whether an SQLite (extended) result code says the database is busy: SQLITE_BUSY (5) or
/// SQLITE_LOCKED (6), with their extended codes. Worth trying again.
pub(crate) fn sqlite_busy(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6)
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
    /// Opens the pools and applies the migrations of the backend the URL names (with
    /// `--no-migrate`: refuses a schema that is behind).
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Db> {
        let on_open = if settings.no_migrate {
            OnOpen::RequireCurrent
        } else {
            OnOpen::Migrate
        };
        Db::open(settings, on_open).await
    }

    /// Opens the pools, doing `on_open` about the schema.
    pub async fn open(settings: &DatabaseSettings, on_open: OnOpen) -> StoreResult<Db> {
        let timeout = settings.pool_timeout();
        let db = match &settings.database_url {
            DatabaseUrl::Sqlite(url) => {
                let options = SqliteConnectOptions::from_str(url)?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(match settings.sqlite_sync {
                        SqliteSync::Full => SqliteSynchronous::Full,
                        SqliteSync::Normal => SqliteSynchronous::Normal,
                    })
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    .statement_cache_capacity(256);
                // The file is created here, once (an empty file is an empty database). The
                // pools open an existing file only, so a database deleted under a running
                // server is never silently recreated empty.
                let file = sqlite_file(&options)
                    .map(|path| create_private(&path).and_then(|()| DatabaseFile::open(&path)))
                    .transpose()
                    .map_err(sqlx::Error::Io)?;
                // Connections are kept for the life of the process (no idle timeout, no
                // lifetime): they hold the file larder opened, so a file replaced at the path
                // is not silently read (or written) in its place.
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(timeout)
                    .after_connect(sqlite_after_connect(file.clone(), true))
                    .after_release(|connection, _| {
                        Box::pin(async move { Ok(sqlite_left_clean(connection).await) })
                    })
                    // Only an in-memory database is made by the pool itself.
                    .connect_with(options.clone().create_if_missing(file.is_none()))
                    .await?;
                match on_open {
                    OnOpen::Migrate => schema::SQLITE.run(&writer).await?,
                    OnOpen::RequireCurrent => {
                        schema::require_current(schema::sqlite_version(&writer).await?)?
                    }
                    OnOpen::AsItIs => {}
                }
                let reader = SqlitePoolOptions::new()
                    .max_connections(settings.pool_size)
                    .min_connections(settings.pool_size)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(timeout)
                    // A small page cache per reader: the read cache answers most reads,
                    // the OS caches the file, and eight 2 MiB caches were most of the RSS.
                    .after_connect(sqlite_after_connect(file.clone(), false))
                    .connect_with(options.read_only(true).pragma("cache_size", "-512"))
                    .await?;
                // One per tokio worker: a direct read is never held across an await.
                let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
                let direct = file
                    .as_ref()
                    .map(|file| {
                        direct::DirectReaders::open(file, workers.min(settings.pool_size as usize))
                    })
                    .transpose()?
                    .map(Arc::new);
                let cache = Arc::new(cache::ReadCache::default());
                let health = Arc::new(StorageHealth::new(file));
                let items =
                    batch::ItemBatcher::start_sqlite(writer.clone(), cache.clone(), health.clone());
                Db::Sqlite(SqliteDb {
                    writer,
                    reader,
                    items,
                    cache,
                    health,
                    job_events: jobs::JobEvents::default(),
                    direct,
                })
            }
            DatabaseUrl::Postgres(url) => {
                let pool = PgPoolOptions::new()
                    .max_connections(settings.pool_size)
                    .acquire_timeout(timeout)
                    // A connection whose transaction was not ended is closed, never reused.
                    .after_release(|connection, _| {
                        use sqlx::Connection;
                        Box::pin(async move { Ok(!connection.is_in_transaction()) })
                    })
                    .connect(url)
                    .await?;
                match on_open {
                    OnOpen::Migrate => schema::POSTGRES.run(&pool).await?,
                    OnOpen::RequireCurrent => {
                        schema::require_current(schema::postgres_version(&pool).await?)?
                    }
                    OnOpen::AsItIs => {}
                }
                let health = Arc::new(StorageHealth::default());
                // Half the pool at most for item creations, so reads always find connections.
                let items = batch::ItemBatcher::start_postgres(
                    pool.clone(),
                    health.clone(),
                    (settings.pool_size as usize / 2).max(1),
                );
                // The other half for reads, each a batch of every read waiting for it.
                let read_slots = (settings.pool_size as usize / 2).max(1);
                let reads = Arc::new(PostgresReads {
                    items: coalesce::ReadBatcher::new(read_slots, items::find_many),
                    pages: coalesce::ReadBatcher::new(read_slots, items::pages),
                    newest: coalesce::ReadBatcher::new(read_slots, items::newest_many),
                    session_users: coalesce::ReadBatcher::new(read_slots, users::for_sessions),
                });
                Db::Postgres(PostgresDb {
                    pool,
                    items,
                    reads,
                    health,
                    job_events: jobs::JobEvents::default(),
                })
            }
        };
        Ok(db)
    }

    /// Whether writes can be expected to succeed (the last storage fault, until a write
    /// succeeds again).
    pub fn health(&self) -> &StorageHealth {
        match self {
            Db::Sqlite(sqlite) => &sqlite.health,
            Db::Postgres(postgres) => &postgres.health,
        }
    }

    /// Runs a write and records a storage fault it met (see `store::storage`).
    pub(crate) async fn write<T>(
        &self,
        write: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.health().before_write()?;
        self.health().settle(write.await)
    }

    /// Where changes to jobs are told in this process (see [`jobs::JobEvents`]).
    pub fn job_events(&self) -> &jobs::JobEvents {
        match self {
            Db::Sqlite(sqlite) => &sqlite.job_events,
            Db::Postgres(postgres) => &postgres.job_events,
        }
    }

    /// To call after every committed write that changes a job's progress or status: SQLite's
    /// followers are all in this process; PostgreSQL's hear the `NOTIFY` sent in the
    /// transaction, through each process's listener.
    pub(crate) fn job_changed(&self, id: uuid::Uuid) {
        if let Db::Sqlite(sqlite) = self {
            sqlite.job_events.send(id);
        }
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

    /// The backend's name in OpenTelemetry's conventions (`db.system`).
    pub fn system(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgresql",
        }
    }

    /// Readiness (for `/readyz`): the database answers, its file is the one larder opened,
    /// and, after a storage fault, a write succeeds again (a one-row probe).
    #[tracing::instrument(target = "larder::spans::db", name = "db.ready", skip_all, fields(db.system = self.system(), otel.kind = "client"))]
    pub async fn ready(&self) -> StoreResult<()> {
        self.health().before_write()?;
        with_reader!(self, |pool| {
            sqlx::query("select 1").execute(pool).await?;
        });
        if self.health().problem().is_some() {
            let probe = "insert into storage_probe (id, written_at_ms) values (1, $1) \
                         on conflict (id) do update set written_at_ms = excluded.written_at_ms";
            self.write(async {
                with_writer!(self, |pool| {
                    sqlx::query(probe).bind(now_millis()).execute(pool).await?;
                });
                Ok(())
            })
            .await?;
            self.health().recovered();
        }
        Ok(())
    }

    /// The id this database was made with (tokens name it as their issuer).
    pub async fn installation_id(&self) -> StoreResult<String> {
        let id = with_reader!(self, |pool| {
            sqlx::query_scalar::<_, String>("select id from installation")
                .fetch_one(pool)
                .await?
        });
        Ok(id)
    }

    /// How far the database's schema is from this binary's.
    pub async fn schema_version(&self) -> StoreResult<schema::SchemaVersion> {
        match self {
            Db::Sqlite(sqlite) => schema::sqlite_version(&sqlite.reader).await,
            Db::Postgres(postgres) => schema::postgres_version(&postgres.pool).await,
        }
    }

    /// The file a SQLite database lives in, if it is one.
    pub fn sqlite_path(url: &DatabaseUrl) -> Option<std::path::PathBuf> {
        match url {
            DatabaseUrl::Sqlite(url) => SqliteConnectOptions::from_str(url)
                .ok()
                .and_then(|options| sqlite_file(&options)),
            DatabaseUrl::Postgres(_) => None,
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(sqlite) => {
                if let Some(direct) = &sqlite.direct {
                    direct.close();
                }
                sqlite.reader.close().await;
                sqlite.writer.close().await;
            }
            Db::Postgres(postgres) => postgres.pool.close().await,
        }
    }
}

/// Creates a missing database file readable by its owner only (an empty file is an empty
/// SQLite database). SQLite gives the `-wal` and `-shm` files it creates the database
/// file's permissions. An existing file keeps the permissions its operator chose.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// The file SQLite options name, unless the database lives in memory.
fn sqlite_file(options: &SqliteConnectOptions) -> Option<std::path::PathBuf> {
    let path = options.get_filename();
    (!path.as_os_str().is_empty() && path != std::path::Path::new(":memory:"))
        .then(|| path.to_path_buf())
}

type AfterConnect = Box<
    dyn for<'c> Fn(
            &'c mut sqlx::SqliteConnection,
            sqlx::pool::PoolConnectionMetadata,
        ) -> futures::future::BoxFuture<'c, Result<(), sqlx::Error>>
        + Send
        + Sync,
>;

/// A new connection is refused when the path no longer names the file larder opened (it would
/// share the WAL and shared-memory files of the connections still on the original); the
/// writer's connections get the commit hook that checks the same before each commit.
fn sqlite_after_connect(file: Option<DatabaseFile>, writer: bool) -> AfterConnect {
    Box::new(move |connection, _| {
        let file = file.clone();
        Box::pin(async move {
            if let Some(file) = file {
                file.check()
                    .map_err(|problem| sqlx::Error::Io(std::io::Error::other(problem)))?;
                if writer {
                    connection
                        .lock_handle()
                        .await?
                        .set_commit_hook(file.commit_hook());
                }
            }
            Ok(())
        })
    })
}

/// Whether a writer connection came back outside any transaction, as both sqlx and SQLite
/// see it. When SQLite rolls a transaction back by itself (as it may on `SQLITE_FULL` or an
/// I/O error), sqlx's `ROLLBACK` on drop fails and sqlx keeps counting the transaction as
/// open, so the connection's next `begin` would be a `SAVEPOINT` inside a transaction nothing
/// commits. Such a connection is closed, and the pool opens a fresh one.
///
/// A connection sqlx counts outside any transaction is clean without asking SQLite: sqlx
/// resets every statement it ran, which ends SQLite's implicit transaction. Only one it
/// counts inside a transaction costs a round trip to the connection's thread (which also
/// waits for a dropped transaction's queued rollback) to check both counts again. Asking
/// SQLite on every release cost `POST /items` about 10% (18.7–19.0k against 20.8–21.2k
/// req/s, alternating runs of `bench/run.sh --routes create`).
async fn sqlite_left_clean(connection: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    if !connection.is_in_transaction() {
        return true;
    }
    let autocommit = match connection.lock_handle().await {
        // SAFETY: the handle is locked for this call, on a live connection.
        Ok(mut handle) => unsafe {
            libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) != 0
        },
        Err(_) => return false,
    };
    let clean = autocommit && !connection.is_in_transaction();
    if !clean {
        tracing::warn!("the SQLite writer was left inside a transaction; reopening it");
    }
    clean
}

/// Milliseconds since the Unix epoch: how instants that are compared in SQL are stored,
/// so both backends order them the same way.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
