//! The job queue's SQL: enqueue, claim with a lease, heartbeat, chunk commits that check the
//! lease in the same transaction, and the final states.
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
pub async fn enqueue(
    db: &Db,
    job: &NewJob<'_>,
    quota: i64,
    key: Option<(&KeyRef<'_>, &StoredResponse)>,
) -> StoreResult<Enqueued> {
    db.write(async {
    let sql = "insert into jobs (id, kind, owner_id, status, total, done, attempts, max_attempts, run_at_ms, created_at) \
               values ($1, $2, $3, 'queued', $4, 0, 0, $5, $6, $7)";
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
            .bind(Utc::now())
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

pub async fn find(db: &Db, id: Uuid) -> StoreResult<Option<Job>> {
    let sql = "select id, kind, owner_id, status, total, done, attempts, result, error, created_at, started_at, finished_at \
               from jobs where id = $1";
    let job = with_reader!(db, |pool| {
        sqlx::query_as::<_, Job>(sql)
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    Ok(job)
}

/// Takes the next job that is due, or whose worker's lease ran out, for `lease_ms`.
/// PostgreSQL skips rows other workers are claiming (`for update skip locked`); SQLite has
/// one writer connection, so claims are serialised there anyway.
pub async fn claim(db: &Db, worker: &str, lease_ms: i64) -> StoreResult<Option<Claimed>> {
    db.write(async {
    const CLAIM: &str = "update jobs set status = 'running', attempts = attempts + 1, locked_by = $1, \
         locked_until_ms = $2, started_at = coalesce(started_at, $3) \
         where id = (select id from jobs \
             where (status = 'queued' and run_at_ms <= $4) or (status = 'running' and locked_until_ms < $4) \
             order by run_at_ms limit 1 {lock}) \
         returning id, kind, owner_id, total, done, attempts, max_attempts, rejected_count";
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

/// Extends the lease; false when the worker no longer holds the job.
pub async fn heartbeat(db: &Db, id: Uuid, worker: &str, lease_ms: i64) -> StoreResult<bool> {
    db.write(async {
    let sql = "update jobs set locked_until_ms = $1 where id = $2 and locked_by = $3 and status = 'running'";
    let updated = with_writer!(db, |pool| {
        sqlx::query(sql)
            .bind(now_millis() + lease_ms)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(updated == 1)
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

/// Moves the cursor, counts the rejections and extends the lease, naming the worker: 0 rows
/// when the lease was lost.
const CURSOR: &str = "update jobs set done = $1, locked_until_ms = $2, rejected_count = $5 \
     where id = $3 and locked_by = $4 and status = 'running'";

/// Runs `CURSOR` first in the chunk's open transaction `$tx` (on either backend, whose
/// transaction types differ); when the lease was lost, rolls back and returns `Ok(false)`
/// from the calling function.
macro_rules! move_cursor_or_return {
    ($tx:ident, $done:expr, $lease_until:expr, $id:expr, $worker:expr, $rejected:expr) => {
        let held = sqlx::query(CURSOR)
            .bind($done)
            .bind($lease_until)
            .bind($id)
            .bind($worker)
            .bind($rejected)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
        if held != 1 {
            $tx.rollback().await?;
            return Ok(false);
        }
    };
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
/// Returns false when the worker no longer holds the job.
pub async fn commit_chunk(
    db: &Db,
    job: &Claimed,
    worker: &str,
    lease_ms: i64,
    chunk: &Chunk<'_>,
) -> StoreResult<bool> {
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
            }
            Db::Postgres(postgres) => {
                let pool = &postgres.pool;
                let mut tx = pool.begin().await?;
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
                tx.commit().await?;
            }
        }
        Ok(true)
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

/// Marks the job done with its result; false when the worker no longer holds it.
pub async fn succeed(db: &Db, id: Uuid, worker: &str, result: &str) -> StoreResult<bool> {
    let sql = "update jobs set status = 'succeeded', result = $1, error = null, done = total, finished_at = $2, \
               locked_by = null, locked_until_ms = null \
               where id = $3 and locked_by = $4 and status = 'running'";
    finish(db, sql, id, worker, result, None).await
}

/// Gives up on the job after its last attempt.
pub async fn fail(db: &Db, id: Uuid, worker: &str, error: &str) -> StoreResult<bool> {
    let sql = "update jobs set status = 'failed', error = $1, finished_at = $2, locked_by = null, locked_until_ms = null \
               where id = $3 and locked_by = $4 and status = 'running'";
    finish(db, sql, id, worker, error, None).await
}

/// Puts the job back in the queue to be tried again at `run_at_ms`, keeping the error.
pub async fn retry(
    db: &Db,
    id: Uuid,
    worker: &str,
    error: &str,
    run_at_ms: i64,
) -> StoreResult<bool> {
    let sql = "update jobs set status = 'queued', error = $1, run_at_ms = $2, locked_by = null, locked_until_ms = null \
               where id = $3 and locked_by = $4 and status = 'running'";
    finish(db, sql, id, worker, error, Some(run_at_ms)).await
}

/// Hands a job back at shutdown: queued again at once, and the interrupted attempt does not count.
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

/// The shared shape of `succeed`, `fail` and `retry`: `$1` text, `$2` instant, `$3` id, `$4` worker.
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
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 1 && run_at_ms.is_none() {
                sqlx::query("delete from job_payloads where job_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            updated
        });
        Ok(updated == 1)
    })
    .await
}

/// How many jobs are in each status.
pub async fn counts(db: &Db) -> StoreResult<Vec<(String, i64)>> {
    let sql = "select status, count(*) from jobs group by status";
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
