//! Group commit for item creation on SQLite. With `synchronous=FULL` every commit waits for
//! the disk (about a millisecond here), so one transaction per request would cap writes at
//! about a thousand a second. Requests queue for the single writer task instead; each
//! transaction takes every request waiting at that moment, so under load one disk flush
//! acknowledges many writes, and an answer is still sent only after its commit.

use std::sync::{Arc, LazyLock};

use chrono::Utc;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

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
    pub fn start(writer: SqlitePool, cache: Arc<ReadCache>, health: Arc<StorageHealth>) -> Self {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(writer, cache, health, receiver));
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

async fn run(
    writer: SqlitePool,
    cache: Arc<ReadCache>,
    health: Arc<StorageHealth>,
    mut receiver: mpsc::Receiver<Pending>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let written = match health.before_write() {
            Ok(()) => health.settle(write(&writer, &batch).await),
            Err(error) => Err(error),
        };
        // Before any answer is sent: a client that saw its item created reads it fresh.
        cache.items_changed();
        match written {
            Ok(items) => {
                for (pending, item) in batch.drain(..).zip(items) {
                    let _ = pending.reply.send(Ok(item));
                }
            }
            // A storage fault fails every request alike: no point retrying them one by one.
            Err(error) if batch.len() == 1 || error.is_storage() => {
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(same_error(&error)));
                }
            }
            // One bad request must not fail its neighbours: redo them one by one, so
            // each gets its own answer.
            Err(_) => {
                for pending in batch.drain(..) {
                    let result = health.settle(
                        write(&writer, std::slice::from_ref(&pending))
                            .await
                            .map(|mut items| items.remove(0)),
                    );
                    cache.items_changed();
                    let _ = pending.reply.send(result);
                }
            }
        }
    }
}

/// The error to give each request of a batch that failed as a whole. `sqlx::Error` is not
/// `Clone`; what the HTTP layer needs of it is its class, and the cause is logged once.
fn same_error(error: &StoreError) -> StoreError {
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
async fn write(writer: &SqlitePool, batch: &[Pending]) -> StoreResult<Vec<Item>> {
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
