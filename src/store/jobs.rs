//! The job queue's SQL: enqueue, claim with a lease, heartbeat, chunk commits that check the
//! lease in the same transaction (and record a progress event), the final states, the
//! listing, cancellation, and the retention sweep that leaves a tombstone.
//!
//! Every write a worker makes after its claim carries `locked_by = $worker` in its `where`
//! clause: once a lease has been lost (another worker took the job over after it expired),
//! the old worker's writes match no row, so a job is never run to completion twice.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::idempotency::{self, KeyRef, StoredResponse};
use super::{Db, StoreResult, now_millis};
use crate::domain::item::ItemDraft;
use crate::domain::job::JobStatus;

/// The PostgreSQL channel that wakes the workers of every process sharing the queue.
pub const CHANNEL: &str = "larder_jobs";

/// The PostgreSQL channel that tells every process a job's progress or status changed (the
/// payload is the job's id): followers of `GET /jobs/{id}/events` and the job's own worker
/// (a cancel request) wake on it.
pub const EVENTS_CHANNEL: &str = "larder_job_events";

/// Jobs whose progress or status changed, for the followers in this process: a broadcast of
/// ids. A follower that lags behind reads the database again anyway.
#[derive(Clone, Debug)]
pub struct JobEvents(tokio::sync::broadcast::Sender<Uuid>);

impl Default for JobEvents {
    fn default() -> Self {
        JobEvents(tokio::sync::broadcast::channel(1024).0)
    }
}

impl JobEvents {
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.0.subscribe()
    }

    pub fn send(&self, id: Uuid) {
        // No follower is not an error.
        let _ = self.0.send(id);
    }
}

/// Sends the `EVENTS_CHANNEL` notification for job `$id` in the open PostgreSQL transaction
/// `$tx` (delivered once it commits); nothing on SQLite, whose followers are told in-process.
macro_rules! notify_job_changed {
    ($db:expr, $tx:ident, $id:expr) => {
        if $db.is_postgres() {
            sqlx::query("select pg_notify($1, $2)")
                .bind(EVENTS_CHANNEL)
                .bind($id.to_string())
                .execute(&mut *$tx)
                .await?;
        }
    };
}

/// The columns of a [`Job`].
const JOB_COLUMNS: &str = "id, kind, owner_id, status, total, done, attempts, result, error, created_at, \
     started_at, finished_at, rejected_count, created_us, finished_ms, cancel_requested, chunks, expired_ms";

/// A job as `GET /jobs/{id}` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub owner_id: i64,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    pub total: i64,
    pub done: i64,
    pub attempts: i32,
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Rows rejected by the chunks committed so far.
    pub rejected_count: i64,
    /// `created_at` in microseconds: the listing's order.
    pub created_us: i64,
    /// `finished_at` in milliseconds, for retention.
    pub finished_ms: Option<i64>,
    /// A cancel was asked for while the job ran.
    pub cancel_requested: bool,
    /// Chunks committed: the id of the latest progress event.
    pub chunks: i64,
    /// When the retention sweep forgot the job (only its id and owner are left).
    pub expired_ms: Option<i64>,
}

impl Job {
    /// Whether the job is past its retention (swept or not yet) at `now_ms`.
    pub fn is_expired(&self, retention_ms: i64, now_ms: i64) -> bool {
        self.expired_ms.is_some()
            || self
                .finished_ms
                .is_some_and(|finished| finished.saturating_add(retention_ms) < now_ms)
    }
}

/// A job a worker holds: what it needs to run (or resume) it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub kind: String,
    pub owner_id: i64,
    /// Loaded after the claim, from `job_payloads`.
    #[sqlx(default)]
    pub payload: String,
    pub total: i64,
    pub done: i64,
    pub attempts: i32,
    pub max_attempts: i32,
    /// Rows rejected by the chunks committed so far (only the first 100 are stored).
    pub rejected_count: i64,
    /// A cancel was asked for (while it ran under a worker that has since died).
    pub cancel_requested: bool,
}

/// A job to store.
#[derive(Debug)]
pub struct NewJob<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub owner_id: i64,
    pub payload: &'a str,
    pub total: i64,
    pub max_attempts: i32,
}

/// Whether a job was stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    Stored,
    /// The owner already has `quota` jobs queued or running: nothing was stored.
    OverQuota,
}

/// Stores a job (and, with a key, the response that announces it, in the same transaction:
/// a replay exists exactly when the job does), unless its owner already has `quota` jobs
/// queued or running. The count and the insert share the transaction; on PostgreSQL the
/// owner's row is locked first, so two requests of one user cannot both pass the count
/// (SQLite's one writer serialises them anyway). On PostgreSQL the notification is sent in
/// the transaction too, so it is delivered only once the job is committed.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.enqueue", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn enqueue(
    db: &Db,
    job: &NewJob<'_>,
    quota: i64,
    key: Option<(&KeyRef<'_>, &StoredResponse)>,
) -> StoreResult<Enqueued> {
    db.write(async {
    let sql = "insert into jobs (id, kind, owner_id, status, total, done, attempts, max_attempts, run_at_ms, created_at, created_us) \
               values ($1, $2, $3, 'queued', $4, 0, 0, $5, $6, $7, $8)";
    let created_at = Utc::now();
    let payload = "insert into job_payloads (job_id, payload) values ($1, $2)";
    let active = "select count(*) from jobs where owner_id = $1 and status in ('queued', 'running')";
    with_writer!(db, |pool| {
        let mut tx = pool.begin().await?;
        if db.is_postgres() {
            sqlx::query("select id from users where id = $1 for update")
                .bind(job.owner_id)
                .execute(&mut *tx)
                .await?;
        }
        let (count,): (i64,) = sqlx::query_as(active)
            .bind(job.owner_id)
            .fetch_all(&mut *tx)
            .await?
            .pop()
            .unwrap_or((0,));
        if count >= quota {
            tx.rollback().await?;
            return Ok(Enqueued::OverQuota);
        }
        sqlx::query(sql)
            .bind(job.id)
            .bind(job.kind)
            .bind(job.owner_id)
            .bind(job.total)
            .bind(job.max_attempts)
            .bind(now_millis())
            .bind(created_at)
            .bind(created_at.timestamp_micros())
            .execute(&mut *tx)
            .await?;
        sqlx::query(payload)
            .bind(job.id)
            .bind(job.payload)
            .execute(&mut *tx)
            .await?;
        if let Some((key, response)) = key {
            idempotency::store_answer!(tx, key, response)?;
        }
        if db.is_postgres() {
            sqlx::query("select pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    });
    Ok(Enqueued::Stored)
}).await
}

#[tracing::instrument(target = "larder::spans::db", name = "jobs.find", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn find(db: &Db, id: Uuid) -> StoreResult<Option<Job>> {
    let sql = format!("select {JOB_COLUMNS} from jobs where id = $1");
    let job = with_reader!(db, |pool| {
        sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    Ok(job)
}

/// Which jobs a listing shows.
#[derive(Debug, Clone, Copy)]
pub struct JobFilter {
    /// One owner's jobs, or everyone's.
    pub owner_id: Option<i64>,
    pub status: Option<JobStatus>,
    /// Jobs that finished before this instant (ms) are past their retention: not shown.
    pub finished_after_ms: i64,
    /// After this `(created_us, id)`, in the listing's order (newest first).
    pub after: Option<(i64, Uuid)>,
}

/// Up to `limit` jobs, newest first (`created_us` then `id`, both descending), never the
/// expired ones.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.list", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn list(db: &Db, filter: &JobFilter, limit: i64) -> StoreResult<Vec<Job>> {
    let mut conditions = vec![
        "expired_ms is null".to_string(),
        "(finished_ms is null or finished_ms >= $1)".to_string(),
    ];
    let mut n = 1;
    let mut next = || {
        n += 1;
        n
    };
    if filter.owner_id.is_some() {
        conditions.push(format!("owner_id = ${}", next()));
    }
    if filter.status.is_some() {
        conditions.push(format!("status = ${}", next()));
    }
    if filter.after.is_some() {
        let (us, id) = (next(), next());
        conditions.push(format!(
            "(created_us < ${us} or (created_us = ${us} and id < ${id}))"
        ));
    }
    let sql = format!(
        "select {JOB_COLUMNS} from jobs where {} order by created_us desc, id desc limit ${}",
        conditions.join(" and "),
        next()
    );
    let jobs = with_reader!(db, |pool| {
        let mut query =
            sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql)).bind(filter.finished_after_ms);
        if let Some(owner_id) = filter.owner_id {
            query = query.bind(owner_id);
        }
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some((us, id)) = filter.after {
            query = query.bind(us).bind(id);
        }
        query.bind(limit).fetch_all(pool).await?
    });
    Ok(jobs)
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The job was queued: it is cancelled now (and its payload deleted).
    Cancelled,
    /// The job is running: its worker is asked to stop after its current chunk.
    Requested,
    /// The job had already finished with this status: nothing changed.
    Finished(JobStatus),
}

/// Cancels a queued job at once, or asks a running one's worker to stop; `None` for an
/// unknown job. The status is read and changed in one transaction (on PostgreSQL the row is
/// locked), so a job claimed meanwhile is asked, never cancelled under its worker.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.cancel", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn cancel(db: &Db, id: Uuid) -> StoreResult<Option<Cancel>> {
    db.write(async {
        let read = format!(
            "select status from jobs where id = $1{}",
            if db.is_postgres() { " for update" } else { "" }
        );
        let cancel = "update jobs set status = 'cancelled', finished_at = $1, finished_ms = $2, \
             locked_by = null, locked_until_ms = null where id = $3 and status = 'queued'";
        let request =
            "update jobs set cancel_requested = true where id = $1 and status = 'running'";
        let outcome = with_writer!(db, |pool| {
            let mut tx = pool.begin().await?;
            let status: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(read))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(status) = status else {
                tx.rollback().await?;
                return Ok(None);
            };
            let status = JobStatus::parse(&status).unwrap_or(JobStatus::Failed);
            let outcome = match status {
                JobStatus::Queued => {
                    sqlx::query(cancel)
                        .bind(Utc::now())
                        .bind(now_millis())
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("delete from job_payloads where job_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    Cancel::Cancelled
                }
                JobStatus::Running => {
                    sqlx::query(request).bind(id).execute(&mut *tx).await?;
                    Cancel::Requested
                }
                finished => Cancel::Finished(finished),
            };
            if !matches!(outcome, Cancel::Finished(_)) {
                notify_job_changed!(db, tx, id);
            }
            tx.commit().await?;
            outcome
        });
        if !matches!(outcome, Cancel::Finished(_)) {
            db.job_changed(id);
        }
        Ok(Some(outcome))
    })
    .await
}

/// Records the result of a job cancelled while queued (what its earlier attempts committed).
#[tracing::instrument(target = "larder::spans::db", name = "jobs.set_cancelled_result", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn set_cancelled_result(db: &Db, id: Uuid, result: &str) -> StoreResult<()> {
    db.write(async {
        let sql = "update jobs set result = $1 where id = $2 and status = 'cancelled' and expired_ms is null";
        with_writer!(db, |pool| {
            sqlx::query(sql).bind(result).bind(id).execute(pool).await?;
        });
        db.job_changed(id);
        Ok(())
    })
    .await
}

/// One committed chunk of a job, as its events replay it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProgressRow {
    pub seq: i64,
    pub done: i64,
    pub rejected_count: i64,
}

/// The job's progress events after `after`, in order, up to `limit`.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.progress_after", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn progress_after(
    db: &Db,
    id: Uuid,
    after: i64,
    limit: i64,
) -> StoreResult<Vec<ProgressRow>> {
    let sql = "select seq, done, rejected_count from job_progress where job_id = $1 and seq > $2 \
               order by seq limit $3";
    let rows = with_reader!(db, |pool| {
        sqlx::query_as::<_, ProgressRow>(sql)
            .bind(id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
    });
    Ok(rows)
}

/// Forgets the jobs that finished before `cutoff_ms`: their payload, result, error,
/// rejections and progress go; the row stays as a tombstone (id, owner, kind, status,
/// instants), so the id is still known. Returns how many jobs expired.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.expire", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn expire(db: &Db, cutoff_ms: i64) -> StoreResult<u64> {
    db.write(async {
        const DUE: &str = "select id from jobs where finished_ms < $1 and expired_ms is null";
        let expired = with_writer!(db, |pool| {
            let mut tx = pool.begin().await?;
            for table in ["job_payloads", "job_rejections", "job_progress"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "delete from {table} where job_id in ({DUE})"
                )))
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?;
            }
            let expired = sqlx::query(
                "update jobs set expired_ms = $1, result = null, error = null \
                 where finished_ms < $2 and expired_ms is null",
            )
            .bind(now_millis())
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            expired
        });
        Ok(expired)
    })
    .await
}

/// Takes the next job that is due, or whose worker's lease ran out, for `lease_ms`.
/// PostgreSQL skips rows other workers are claiming (`for update skip locked`); SQLite has
/// one writer connection, so claims are serialised there anyway.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.claim", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn claim(db: &Db, worker: &str, lease_ms: i64) -> StoreResult<Option<Claimed>> {
    db.write(async {
    const CLAIM: &str = "update jobs set status = 'running', attempts = attempts + 1, locked_by = $1, \
         locked_until_ms = $2, started_at = coalesce(started_at, $3) \
         where id = (select id from jobs \
             where (status = 'queued' and run_at_ms <= $4) or (status = 'running' and locked_until_ms < $4) \
             order by run_at_ms limit 1 {lock}) \
         returning id, kind, owner_id, total, done, attempts, max_attempts, rejected_count, cancel_requested";
    let now = now_millis();
    let mut claimed = match db {
        Db::Sqlite(sqlite) => {
            let sql = CLAIM.replace("{lock}", "");
            sqlx::query_as::<_, Claimed>(sqlx::AssertSqlSafe(sql))
                .bind(worker)
                .bind(now + lease_ms)
                .bind(Utc::now())
                .bind(now)
                .fetch_all(&sqlite.writer)
                .await?
        }
        Db::Postgres(postgres) => {
            let pool = &postgres.pool;
            let sql = CLAIM.replace("{lock}", "for update skip locked");
            sqlx::query_as::<_, Claimed>(sqlx::AssertSqlSafe(sql))
                .bind(worker)
                .bind(now + lease_ms)
                .bind(Utc::now())
                .bind(now)
                .fetch_all(pool)
                .await?
        }
    };
    let Some(mut claimed) = claimed.pop() else {
        return Ok(None);
    };
    let payload = "select payload from job_payloads where job_id = $1";
    claimed.payload = with_reader!(db, |pool| {
        sqlx::query_scalar::<_, String>(payload)
            .bind(claimed.id)
            .fetch_optional(pool)
            .await?
            .unwrap_or_default()
    });
    Ok(Some(claimed))
}).await
}

/// Whether a worker still holds its job, and whether it was asked to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Yes { cancel_requested: bool },
    Lost,
}

/// Extends the lease, and tells whether a cancel was asked for.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.heartbeat", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn heartbeat(db: &Db, id: Uuid, worker: &str, lease_ms: i64) -> StoreResult<Held> {
    db.write(async {
    let sql = "update jobs set locked_until_ms = $1 where id = $2 and locked_by = $3 and status = 'running' \
               returning cancel_requested";
    let held = with_writer!(db, |pool| {
        sqlx::query_scalar::<_, bool>(sql)
            .bind(now_millis() + lease_ms)
            .bind(id)
            .bind(worker)
            .fetch_all(pool)
            .await?
            .pop()
    });
    Ok(match held {
        Some(cancel_requested) => Held::Yes { cancel_requested },
        None => Held::Lost,
    })
}).await
}

/// One row of an import that passed validation, with its index in the job.
pub struct ImportRow {
    pub index: i64,
    pub draft: ItemDraft,
}

/// One row that did not, with its errors as JSON text.
pub struct Rejection {
    pub index: i64,
    pub errors: String,
}

/// One committed step of an import: its valid rows, the rejections to keep, and where the
/// job stands after it.
#[derive(Clone, Copy)]
pub struct Chunk<'a> {
    pub rows: &'a [ImportRow],
    pub rejections: &'a [Rejection],
    /// Rows handled once this chunk commits (the job's cursor).
    pub done: i64,
    /// Rows rejected once this chunk commits (all of them, kept or not).
    pub rejected_count: i64,
}

/// Rows per SQLite `insert` statement (9 parameters each, under SQLite's 32,766).
const ROWS_PER_STATEMENT: usize = 1000;

/// Moves the cursor, counts the rejections and the chunk, and extends the lease, naming the
/// worker: no row when the lease was lost.
const CURSOR: &str = "update jobs set done = $1, locked_until_ms = $2, rejected_count = $5, chunks = chunks + 1 \
     where id = $3 and locked_by = $4 and status = 'running' returning chunks, cancel_requested";

/// The chunk's progress event, replayed by `GET /jobs/{id}/events`.
const PROGRESS: &str =
    "insert into job_progress (job_id, seq, done, rejected_count) values ($1, $2, $3, $4)";

/// Runs `CURSOR` first in the chunk's open transaction `$tx` (on either backend, whose
/// transaction types differ) and records the chunk's progress event; when the lease was
/// lost, rolls back and returns `Ok(Held::Lost)` from the calling function. Evaluates to
/// whether a cancel was asked for.
macro_rules! move_cursor_or_return {
    ($tx:ident, $done:expr, $lease_until:expr, $id:expr, $worker:expr, $rejected:expr) => {{
        let held: Option<(i64, bool)> = sqlx::query_as(CURSOR)
            .bind($done)
            .bind($lease_until)
            .bind($id)
            .bind($worker)
            .bind($rejected)
            .fetch_optional(&mut *$tx)
            .await?;
        let Some((seq, cancel_requested)) = held else {
            $tx.rollback().await?;
            return Ok(Held::Lost);
        };
        sqlx::query(PROGRESS)
            .bind($id)
            .bind(seq)
            .bind($done)
            .bind($rejected)
            .execute(&mut *$tx)
            .await?;
        cancel_requested
    }};
}

/// PostgreSQL takes a chunk as five arrays: one statement, one round trip, no parameter limit.
const PG_INSERT_ITEMS: &str = "insert into items (owner_id, created_at, updated_at, job_id, version, \
         name, description, price, quantity, job_index) \
     select $1, $2, $2, $3, 1, r.name, r.description, r.price, r.quantity, r.job_index \
     from unnest($4::text[], $5::text[], $6::float8[], $7::int8[], $8::int8[]) \
         as r (name, description, price, quantity, job_index) \
     on conflict (job_id, job_index) do nothing";

const PG_INSERT_REJECTIONS: &str = "insert into job_rejections (job_id, idx, errors) \
     select $1, r.idx, r.errors from unnest($2::int8[], $3::text[]) as r (idx, errors) \
     on conflict (job_id, idx) do nothing";

/// Commits one chunk of an import: its items, its rejections, and the job's cursor and lease,
/// in one transaction — so a retried job resumes after the last committed chunk. The cursor
/// update comes first and names the worker: if the lease was lost, nothing is written (and on
/// PostgreSQL the row lock it takes keeps a concurrent claim away until the commit).
/// `(job_id, job_index)` is unique and inserts skip conflicts: a row is never created twice.
/// Tells whether the worker still holds the job, and whether a cancel was asked for.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.commit_chunk", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn commit_chunk(
    db: &Db,
    job: &Claimed,
    worker: &str,
    lease_ms: i64,
    chunk: &Chunk<'_>,
) -> StoreResult<Held> {
    let Chunk {
        rows,
        rejections,
        done,
        rejected_count,
    } = *chunk;
    db.write(async {
        let now = Utc::now();
        let lease_until = now_millis() + lease_ms;
        match db {
            Db::Sqlite(sqlite) => {
                let mut tx = sqlite.writer.begin().await?;
                let cancel_requested =
                    move_cursor_or_return!(tx, done, lease_until, job.id, worker, rejected_count);
                for batch in rows.chunks(ROWS_PER_STATEMENT) {
                    let mut query =
                        sqlx::query(sqlx::AssertSqlSafe(sqlite_insert_items(batch.len())));
                    for row in batch {
                        query = query
                            .bind(job.owner_id)
                            .bind(now)
                            .bind(now)
                            .bind(job.id)
                            .bind(row.draft.name())
                            .bind(row.draft.description())
                            .bind(row.draft.price())
                            .bind(row.draft.quantity())
                            .bind(row.index);
                    }
                    query.execute(&mut *tx).await?;
                }
                for batch in rejections.chunks(ROWS_PER_STATEMENT) {
                    let mut query =
                        sqlx::query(sqlx::AssertSqlSafe(sqlite_insert_rejections(batch.len())));
                    for rejection in batch {
                        query = query
                            .bind(job.id)
                            .bind(rejection.index)
                            .bind(&rejection.errors);
                    }
                    query.execute(&mut *tx).await?;
                }
                let committed = tx.commit().await;
                sqlite.cache.items_changed();
                committed?;
                db.job_changed(job.id);
                Ok(Held::Yes { cancel_requested })
            }
            Db::Postgres(postgres) => {
                let pool = &postgres.pool;
                let mut tx = pool.begin().await?;
                let cancel_requested =
                    move_cursor_or_return!(tx, done, lease_until, job.id, worker, rejected_count);
                if !rows.is_empty() {
                    let names: Vec<&str> = rows.iter().map(|row| row.draft.name()).collect();
                    let descriptions: Vec<Option<&str>> =
                        rows.iter().map(|row| row.draft.description()).collect();
                    let prices: Vec<f64> = rows.iter().map(|row| row.draft.price()).collect();
                    let quantities: Vec<i64> =
                        rows.iter().map(|row| row.draft.quantity()).collect();
                    let indexes: Vec<i64> = rows.iter().map(|row| row.index).collect();
                    sqlx::query(PG_INSERT_ITEMS)
                        .bind(job.owner_id)
                        .bind(now)
                        .bind(job.id)
                        .bind(names)
                        .bind(descriptions)
                        .bind(prices)
                        .bind(quantities)
                        .bind(indexes)
                        .execute(&mut *tx)
                        .await?;
                }
                if !rejections.is_empty() {
                    let indexes: Vec<i64> = rejections.iter().map(|r| r.index).collect();
                    let errors: Vec<&str> = rejections.iter().map(|r| r.errors.as_str()).collect();
                    sqlx::query(PG_INSERT_REJECTIONS)
                        .bind(job.id)
                        .bind(indexes)
                        .bind(errors)
                        .execute(&mut *tx)
                        .await?;
                }
                notify_job_changed!(db, tx, job.id);
                tx.commit().await?;
                Ok(Held::Yes { cancel_requested })
            }
        }
    })
    .await
}

fn sqlite_insert_items(rows: usize) -> String {
    super::sqlite_multi_row(
        "insert into items (owner_id, created_at, updated_at, job_id, version, name, description, price, quantity, job_index) values ",
        "(?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
        rows,
        " on conflict (job_id, job_index) do nothing",
    )
}

fn sqlite_insert_rejections(rows: usize) -> String {
    super::sqlite_multi_row(
        "insert into job_rejections (job_id, idx, errors) values ",
        "(?, ?, ?)",
        rows,
        " on conflict (job_id, idx) do nothing",
    )
}

/// The ids of the items a job created, in row order.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.created_ids", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn created_ids(db: &Db, id: Uuid) -> StoreResult<Vec<i64>> {
    let sql = "select id from items where job_id = $1 order by job_index";
    let ids = with_reader!(db, |pool| {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(id)
            .fetch_all(pool)
            .await?
    });
    Ok(ids)
}

/// The rows a job rejected, in row order, with their errors as JSON text.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.rejections", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn rejections(db: &Db, id: Uuid) -> StoreResult<Vec<(i64, String)>> {
    let sql = "select idx, errors from job_rejections where job_id = $1 order by idx";
    let rows = with_reader!(db, |pool| {
        sqlx::query_as::<_, (i64, String)>(sql)
            .bind(id)
            .fetch_all(pool)
            .await?
    });
    Ok(rows)
}

/// Marks the job done with its result; false when the worker no longer holds it. A job
/// whose cancel was asked for during its last chunk ends `cancelled` (with its full result):
/// the 202 that answered the request said it would.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.succeed", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn succeed(db: &Db, id: Uuid, worker: &str, result: &str) -> StoreResult<bool> {
    let sql = "update jobs set status = case when cancel_requested then 'cancelled' else 'succeeded' end, \
               result = $1, error = null, done = total, finished_at = $2, finished_ms = $5, \
               locked_by = null, locked_until_ms = null \
               where id = $3 and locked_by = $4 and status = 'running'";
    finish(db, sql, id, worker, result, None).await
}

/// Ends a running job whose cancel was asked for, with what its committed chunks did.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.cancelled", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn cancelled(db: &Db, id: Uuid, worker: &str, result: Option<&str>) -> StoreResult<bool> {
    let sql = "update jobs set status = 'cancelled', result = $1, finished_at = $2, finished_ms = $5, \
               locked_by = null, locked_until_ms = null \
               where id = $3 and locked_by = $4 and status = 'running'";
    finish(db, sql, id, worker, result.unwrap_or_default(), None).await
}

/// Gives up on the job after its last attempt.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.fail", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn fail(db: &Db, id: Uuid, worker: &str, error: &str) -> StoreResult<bool> {
    let sql = "update jobs set status = 'failed', error = $1, finished_at = $2, finished_ms = $5, \
               locked_by = null, locked_until_ms = null \
               where id = $3 and locked_by = $4 and status = 'running'";
    finish(db, sql, id, worker, error, None).await
}

/// Puts the job back in the queue to be tried again at `run_at_ms`, keeping the error (at
/// once if its cancel was asked for: the next claim cancels it).
#[tracing::instrument(target = "larder::spans::db", name = "jobs.retry", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn retry(
    db: &Db,
    id: Uuid,
    worker: &str,
    error: &str,
    run_at_ms: i64,
) -> StoreResult<bool> {
    let sql = "update jobs set status = 'queued', error = $1, \
               run_at_ms = case when cancel_requested then $5 else $2 end, \
               locked_by = null, locked_until_ms = null \
               where id = $3 and locked_by = $4 and status = 'running'";
    finish(db, sql, id, worker, error, Some(run_at_ms)).await
}

/// Hands a job back at shutdown: queued again at once, and the interrupted attempt does not count.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.release", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn release(db: &Db, id: Uuid, worker: &str) -> StoreResult<bool> {
    db.write(async {
        let sql = "update jobs set status = 'queued', attempts = attempts - 1, run_at_ms = $1, \
               locked_by = null, locked_until_ms = null \
               where id = $2 and locked_by = $3 and status = 'running'";
        let updated = with_writer!(db, |pool| {
            sqlx::query(sql)
                .bind(now_millis())
                .bind(id)
                .bind(worker)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(updated == 1)
    })
    .await
}

/// The shared shape of `succeed`, `cancelled`, `fail` and `retry`: `$1` text, `$2` instant
/// (or for a retry `run_at_ms`), `$3` id, `$4` worker, `$5` now in milliseconds.
/// A job that ends (no `run_at_ms`) loses its payload in the same transaction: a finished
/// import's rows are in `items`, and keeping them again would grow the database forever.
async fn finish(
    db: &Db,
    sql: &'static str,
    id: Uuid,
    worker: &str,
    text: &str,
    run_at_ms: Option<i64>,
) -> StoreResult<bool> {
    // An empty text is no result (`cancelled` of a kind that reports none).
    let text = (!text.is_empty()).then_some(text);
    db.write(async {
        let updated = with_writer!(db, |pool| {
            let mut tx = pool.begin().await?;
            let query = sqlx::query(sql).bind(text);
            let query = match run_at_ms {
                Some(run_at) => query.bind(run_at),
                None => query.bind(Utc::now()),
            };
            let updated = query
                .bind(id)
                .bind(worker)
                .bind(now_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 1 && run_at_ms.is_none() {
                sqlx::query("delete from job_payloads where job_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            if updated == 1 {
                notify_job_changed!(db, tx, id);
            }
            tx.commit().await?;
            updated
        });
        if updated == 1 {
            db.job_changed(id);
        }
        Ok(updated == 1)
    })
    .await
}

/// How many jobs are in each status.
#[tracing::instrument(target = "larder::spans::db", name = "jobs.counts", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn counts(db: &Db) -> StoreResult<Vec<(String, i64)>> {
    let sql = "select status, count(*) from jobs where expired_ms is null group by status";
    let rows = with_reader!(db, |pool| {
        sqlx::query_as::<_, (String, i64)>(sql)
            .fetch_all(pool)
            .await?
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_inserts_bind_positionally() {
        assert_eq!(
            sqlite_insert_items(2),
            "insert into items (owner_id, created_at, updated_at, job_id, version, name, description, price, quantity, job_index) values \
             (?, ?, ?, ?, 1, ?, ?, ?, ?, ?),(?, ?, ?, ?, 1, ?, ?, ?, ?, ?) on conflict (job_id, job_index) do nothing"
        );
        assert_eq!(
            sqlite_insert_rejections(2),
            "insert into job_rejections (job_id, idx, errors) values (?, ?, ?),(?, ?, ?) on conflict (job_id, idx) do nothing"
        );
    }
}
