//! Group commit for item creation on SQLite. With `synchronous=FULL` every commit waits for
//! the disk (about a millisecond here), so one transaction per request would cap writes at
//! about a thousand a second. Requests queue for the single writer task instead; each
//! transaction takes every request waiting at that moment, so under load one disk flush
//! acknowledges many writes, and an answer is still sent only after its commit.

use std::sync::Arc;

use chrono::Utc;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::cache::ReadCache;
use super::items::{INSERT, Item, NewItem, Respond};
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
    pub fn start(writer: SqlitePool, cache: Arc<ReadCache>) -> Self {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(writer, cache, receiver));
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

async fn run(writer: SqlitePool, cache: Arc<ReadCache>, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let written = write(&writer, &batch).await;
        // Before any answer is sent: a client that saw its item created reads it fresh.
        cache.items_changed();
        match written {
            Ok(items) => {
                for (pending, item) in batch.drain(..).zip(items) {
                    let _ = pending.reply.send(Ok(item));
                }
            }
            Err(error) if batch.len() == 1 => {
                let pending = batch.pop().expect("one request");
                let _ = pending.reply.send(Err(error));
            }
            // One bad request must not fail its neighbours: redo them one by one, so
            // each gets its own answer.
            Err(_) => {
                for pending in batch.drain(..) {
                    let result = write(&writer, std::slice::from_ref(&pending))
                        .await
                        .map(|mut items| items.remove(0));
                    cache.items_changed();
                    let _ = pending.reply.send(result);
                }
            }
        }
    }
}

async fn write(writer: &SqlitePool, batch: &[Pending]) -> StoreResult<Vec<Item>> {
    let mut tx = writer.begin().await?;
    let now = Utc::now();
    let mut items = Vec::with_capacity(batch.len());
    for pending in batch {
        let item = sqlx::query_as::<_, Item>(INSERT)
            .bind(pending.item.draft.name())
            .bind(pending.item.draft.description())
            .bind(pending.item.draft.price())
            .bind(pending.item.draft.quantity())
            .bind(pending.item.owner_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if let Some(key) = &pending.item.key {
            let response = (pending.respond)(&item);
            idempotency::store_answer!(tx, key, response)?;
        }
        items.push(item);
    }
    tx.commit().await?;
    Ok(items)
}
