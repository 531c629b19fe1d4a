//! Read batching for PostgreSQL: concurrent reads that wait for the same kind of query share
//! one round trip.
//!
//! Each read on its own is a round trip and a wake-up of a PostgreSQL backend; under load
//! those, not the lookups, are the cost (a tokio-postgres server pipelining its queries did
//! 2.4× larder's reads on the same machine). So a read joins the batch that is gathering, if
//! any; a batch starts when one of `slots` query slots is free, takes every key gathered by
//! then, and answers them all from one fetch (`id = any($1)`, or one query per distinct page).
//!
//! Staleness: none. A read joins only a batch whose fetch has not started, so every answer
//! comes from a query sent after the read arrived: a write acknowledged (by any process)
//! before a read began is always seen, as without batching (`docs/architecture.md`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};

use super::batch::same_error;
use super::{StoreError, StoreResult};

type Answer<K, V> = Option<Result<Arc<HashMap<K, V>>, Arc<StoreError>>>;

/// What a fetch gives: the value of each key that has one.
pub type Fetched<K, V> = BoxFuture<'static, StoreResult<HashMap<K, V>>>;

/// Fetches the values of a batch's keys; a key with no value is absent from the map. Given
/// the pool at each call, not kept: the batcher lives beside it.
pub type Fetch<K, V> = fn(PgPool, Vec<K>) -> Fetched<K, V>;

/// The most keys one batch takes; a read that finds the gathering batch full starts the next.
const MAX_KEYS: usize = 256;

struct Gathering<K, V> {
    keys: Vec<K>,
    answer: watch::Receiver<Answer<K, V>>,
    /// Set when the batch's fetch takes the keys: no read joins it after that.
    id: u64,
}

pub struct ReadBatcher<K, V> {
    /// The batches not started yet, oldest first; reads join the newest unless it is full.
    gathering: Mutex<Vec<Gathering<K, V>>>,
    next_id: std::sync::atomic::AtomicU64,
    slots: Arc<Semaphore>,
    fetch: Fetch<K, V>,
}

impl<K, V> std::fmt::Debug for ReadBatcher<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBatcher")
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl<K, V> ReadBatcher<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(slots: usize, fetch: Fetch<K, V>) -> Arc<Self> {
        Arc::new(ReadBatcher {
            gathering: Mutex::new(Vec::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(slots.max(1))),
            fetch,
        })
    }

    /// The value of `key`, read by a fetch that starts after this call.
    pub async fn get(self: &Arc<Self>, pool: &PgPool, key: K) -> StoreResult<Option<V>> {
        let mut answer = self.join(pool, key.clone());
        let answer = match answer.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone(),
            // The batch's task ended without answering (the runtime is shutting down).
            Err(_) => return Err(StoreError::Unavailable(sqlx::Error::PoolClosed)),
        };
        match answer.expect("waited for an answer") {
            Ok(values) => Ok(values.get(&key).cloned()),
            Err(error) => Err(same_error(&error)),
        }
    }

    fn join(self: &Arc<Self>, pool: &PgPool, key: K) -> watch::Receiver<Answer<K, V>> {
        let mut gathering = self
            .gathering
            .lock()
            .expect("the batcher's lock is not poisoned");
        if let Some(batch) = gathering.last_mut()
            && batch.keys.len() < MAX_KEYS
        {
            if !batch.keys.contains(&key) {
                batch.keys.push(key);
            }
            return batch.answer.clone();
        }
        let (sender, receiver) = watch::channel(None);
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        gathering.push(Gathering {
            keys: vec![key],
            answer: receiver.clone(),
            id,
        });
        // Its own task: the read that started the batch may be dropped (a client gone)
        // while others wait on it.
        tokio::spawn(self.clone().run(pool.clone(), id, sender));
        receiver
    }

    async fn run(self: Arc<Self>, pool: PgPool, id: u64, sender: watch::Sender<Answer<K, V>>) {
        let Ok(_slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let keys = {
            let mut gathering = self
                .gathering
                .lock()
                .expect("the batcher's lock is not poisoned");
            let place = gathering
                .iter()
                .position(|batch| batch.id == id)
                .expect("a batch is taken only by its own task");
            gathering.remove(place).keys
        };
        let answer = (self.fetch)(pool, keys)
            .await
            .map(Arc::new)
            .map_err(Arc::new);
        let _ = sender.send(Some(answer));
    }
}
