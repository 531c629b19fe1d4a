//! Group commit for item creation.
//!
//! - SQLite: with `synchronous=FULL` every commit waits for the disk (about a millisecond
//!   here), so one transaction per request would cap writes at about a thousand a second.
//!   Requests queue for the single writer task instead; each transaction takes every request
//!   waiting at that moment, so under load one disk flush acknowledges many writes.
//! - PostgreSQL: one transaction per request is three round trips (begin, insert, commit)
//!   and a WAL flush each. Requests queue here too; up to `concurrent_batches` batches are
//!   written at once, each taking every request waiting when it starts, as one `insert …
//!   select from unnest(…)` (one round trip, committed by itself) unless a request carries
//!   an idempotency key (then begin, insert, the stored answers, commit).
//!
//! Either way an answer is sent only after its commit.

use std::sync::{Arc, LazyLock};

use chrono::Utc;
use sqlx::{PgPool, SqlitePool};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::cache::ReadCache;
use super::items::{Item, NewItem, Respond};
use super::storage::StorageHealth;
use super::{StoreError, StoreResult, idempotency};

/// The most requests one transaction takes.
const MAX_BATCH: usize = 256;

struct Pending {
    item: NewItem,
    respond: Respond,
    reply: oneshot::Sender<StoreResult<Item>>,
}

#[derive(Clone, Debug)]
pub struct ItemBatcher {
    sender: mpsc::Sender<Pending>,
}

fn closed() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

impl ItemBatcher {
    /// One writer task on SQLite's one writer connection.
    pub fn start_sqlite(
        writer: SqlitePool,
        cache: Arc<ReadCache>,
        health: Arc<StorageHealth>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run_sqlite(writer, cache, health, receiver));
        ItemBatcher { sender }
    }

    /// Up to `concurrent_batches` batches in flight on the pool, leaving the rest of its
    /// connections to reads.
    pub fn start_postgres(
        pool: PgPool,
        health: Arc<StorageHealth>,
        concurrent_batches: usize,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run_postgres(
            pool,
            health,
            receiver,
            concurrent_batches.max(1),
        ));
        ItemBatcher { sender }
    }

    pub async fn insert(&self, item: NewItem, respond: Respond) -> StoreResult<Item> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending {
                item,
                respond,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn run_sqlite(
    writer: SqlitePool,
    cache: Arc<ReadCache>,
    health: Arc<StorageHealth>,
    mut receiver: mpsc::Receiver<Pending>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let written = match health.before_write() {
            Ok(()) => health.settle(write_sqlite(&writer, &batch).await),
            Err(error) => Err(error),
        };
        // Before any answer is sent: a client that saw its item created reads it fresh.
        cache.items_changed();
        let redo = answer(&mut batch, written);
        for pending in redo {
            let result = health.settle(
                write_sqlite(&writer, std::slice::from_ref(&pending))
                    .await
                    .map(|mut items| items.remove(0)),
            );
            cache.items_changed();
            let _ = pending.reply.send(result);
        }
    }
}

async fn run_postgres(
    pool: PgPool,
    health: Arc<StorageHealth>,
    mut receiver: mpsc::Receiver<Pending>,
    concurrent_batches: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrent_batches));
    loop {
        // A free slot first, then every request waiting: while all slots are busy the next
        // batch grows, which is what makes a commit acknowledge many writes under load.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (pool, health) = (pool.clone(), health.clone());
        tokio::spawn(async move {
            let written = match health.before_write() {
                Ok(()) => health.settle(write_postgres(&pool, &batch).await),
                Err(error) => Err(error),
            };
            let redo = answer(&mut batch, written);
            for pending in redo {
                let result = health.settle(
                    write_postgres(&pool, std::slice::from_ref(&pending))
                        .await
                        .map(|mut items| items.remove(0)),
                );
                let _ = pending.reply.send(result);
            }
            drop(slot);
        });
    }
}

/// Answers a batch from its write, or hands back the requests to redo one by one: one bad
/// request (say, its owner deleted meanwhile) must not fail its neighbours.
fn answer(batch: &mut Vec<Pending>, written: StoreResult<Vec<Item>>) -> Vec<Pending> {
    match written {
        Ok(items) => {
            for (pending, item) in batch.drain(..).zip(items) {
                let _ = pending.reply.send(Ok(item));
            }
            Vec::new()
        }
        // A storage fault or an unreachable database fails every request alike: no point
        // retrying them one by one.
        Err(error)
            if batch.len() == 1
                || error.is_storage()
                || matches!(error, StoreError::Unavailable(_)) =>
        {
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(same_error(&error)));
            }
            Vec::new()
        }
        Err(_) => std::mem::take(batch),
    }
}

/// The error to give each request of a batch that failed as a whole. `sqlx::Error` is not
/// `Clone`; what the HTTP layer needs of it is its class, and the cause is logged once.
pub(crate) fn same_error(error: &StoreError) -> StoreError {
    let cause = || sqlx::Error::Protocol(error.to_string());
    match error {
        StoreError::Unavailable(_) => StoreError::Unavailable(cause()),
        StoreError::Full(_) => StoreError::Full(cause()),
        StoreError::Fault(_) => StoreError::Fault(cause()),
        StoreError::Database(_) => StoreError::Database(cause()),
    }
}

/// The most rows one insert statement takes. Each row count is its own prepared statement,
/// so this bounds the writer's statement cache as well as the statement's size.
const ROWS_PER_STATEMENT: usize = 32;

/// `INSERTS[n - 1]` inserts `n` items.
static INSERTS: LazyLock<Vec<String>> =
    LazyLock::new(|| (1..=ROWS_PER_STATEMENT).map(insert_rows).collect());

fn insert_rows(rows: usize) -> String {
    super::sqlite_multi_row(
        "insert into items (name, description, price, quantity, owner_id, version, created_at, updated_at) values ",
        "(?, ?, ?, ?, ?, 1, ?, ?)",
        rows,
        " returning id, name, description, price, quantity, owner_id, version, created_at, updated_at",
    )
}

/// One transaction for the whole batch, one statement per `ROWS_PER_STATEMENT` items: each
/// statement is a round trip to SQLite's worker thread, which under load cost more than
/// the insert itself.
async fn write_sqlite(writer: &SqlitePool, batch: &[Pending]) -> StoreResult<Vec<Item>> {
    let mut tx = writer.begin().await?;
    let now = Utc::now();
    let mut items = Vec::with_capacity(batch.len());
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let mut query =
            sqlx::query_as::<_, Item>(sqlx::AssertSqlSafe(INSERTS[chunk.len() - 1].as_str()));
        for pending in chunk {
            let draft = &pending.item.draft;
            query = query
                .bind(draft.name())
                .bind(draft.description())
                .bind(draft.price())
                .bind(draft.quantity())
                .bind(pending.item.owner_id)
                .bind(now)
                .bind(now);
        }
        let mut created = query.fetch_all(&mut *tx).await?;
        // RETURNING gives no order; autoincrement ids follow the VALUES order.
        created.sort_unstable_by_key(|item| item.id);
        if created.len() != chunk.len() {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        for (pending, item) in chunk.iter().zip(&created) {
            if let Some(key) = &pending.item.key {
                let response = (pending.respond)(item);
                idempotency::store_answer!(tx, key, response)?;
            }
        }
        items.append(&mut created);
    }
    tx.commit().await?;
    Ok(items)
}

/// Every row in one statement, ordered by its place in the batch: the identity column takes
/// its values in that order, so the rows sorted by id are the batch's, one for one.
const PG_INSERT: &str = "insert into items (name, description, price, quantity, owner_id, version, created_at, updated_at) \
     select r.name, r.description, r.price, r.quantity, r.owner_id, 1, $6, $6 \
     from unnest($1::text[], $2::text[], $3::float8[], $4::int8[], $5::int8[]) with ordinality \
         as r (name, description, price, quantity, owner_id, place) \
     order by r.place \
     returning id, name, description, price, quantity, owner_id, version, created_at, updated_at";

async fn write_postgres(pool: &PgPool, batch: &[Pending]) -> StoreResult<Vec<Item>> {
    let names: Vec<&str> = batch.iter().map(|p| p.item.draft.name()).collect();
    let descriptions: Vec<Option<&str>> =
        batch.iter().map(|p| p.item.draft.description()).collect();
    let prices: Vec<f64> = batch.iter().map(|p| p.item.draft.price()).collect();
    let quantities: Vec<i64> = batch.iter().map(|p| p.item.draft.quantity()).collect();
    let owners: Vec<i64> = batch.iter().map(|p| p.item.owner_id).collect();
    let insert = sqlx::query_as::<_, Item>(PG_INSERT)
        .bind(names)
        .bind(descriptions)
        .bind(prices)
        .bind(quantities)
        .bind(owners)
        .bind(Utc::now());
    let keyed = batch.iter().any(|pending| pending.item.key.is_some());
    let mut items = if keyed {
        let mut tx = pool.begin().await?;
        let mut items = insert.fetch_all(&mut *tx).await?;
        items.sort_unstable_by_key(|item| item.id);
        if items.len() != batch.len() {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        for (pending, item) in batch.iter().zip(&items) {
            if let Some(key) = &pending.item.key {
                let response = (pending.respond)(item);
                idempotency::store_answer!(tx, key, response)?;
            }
        }
        tx.commit().await?;
        items
    } else {
        // One statement outside a transaction commits by itself: one round trip.
        insert.fetch_all(pool).await?
    };
    items.sort_unstable_by_key(|item| item.id);
    if items.len() != batch.len() {
        return Err(StoreError::Database(sqlx::Error::RowNotFound));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_row_insert_has_one_values_tuple_and_seven_parameters_per_row() {
        let sql = insert_rows(3);
        assert_eq!(sql.matches("(?, ?, ?, ?, ?, 1, ?, ?)").count(), 3);
        assert_eq!(sql.matches('?').count(), 21);
        assert!(sql.ends_with("updated_at"));
        assert_eq!(INSERTS.len(), ROWS_PER_STATEMENT);
        assert_eq!(INSERTS[0], insert_rows(1));
    }
}
