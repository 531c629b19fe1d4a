//! Items: reads, keyset pages, and writes that check the version in the same statement.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::idempotency::{self, OwnedKey, StoredResponse};
use super::{Db, StoreResult};
use crate::domain::item::ItemDraft;

/// An item row. The API shows it through `http::items::ItemView`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub price: f64,
    pub quantity: i64,
    pub owner_id: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Item {
    /// The strong entity tag: it changes with every version.
    pub fn etag(&self) -> String {
        format!("\"{}-{}\"", self.id, self.version)
    }
}

/// What `GET /api/data` shows of an item (through `http::limited::ItemSummaryView`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemSummary {
    pub id: i64,
    pub name: String,
}

pub(crate) const INSERT: &str = "insert into items (name, description, price, quantity, owner_id, version, created_at, updated_at) \
     values ($1, $2, $3, $4, $5, 1, $6, $6) \
     returning id, name, description, price, quantity, owner_id, version, created_at, updated_at";

/// How the answer stored under an idempotency key is made from the created item.
pub type Respond = fn(&Item) -> StoredResponse;

/// An item to create, and the idempotency key whose answer is stored with it.
#[derive(Debug)]
pub struct NewItem {
    pub owner_id: i64,
    pub draft: ItemDraft,
    pub key: Option<OwnedKey>,
}

/// Creates an item. With an idempotency key, the answer made from the new item is stored
/// in the same transaction, so a replay exists exactly when the item does. On SQLite the
/// write joins a group commit (see `store::batch`).
pub async fn insert(db: &Db, item: NewItem, respond: Respond) -> StoreResult<Item> {
    let pool = match db {
        Db::Sqlite(sqlite) => return sqlite.items.insert(item, respond).await,
        Db::Postgres(postgres) => &postgres.pool,
    };
    db.write(insert_postgres(pool, item, respond)).await
}

async fn insert_postgres(
    pool: &sqlx::PgPool,
    item: NewItem,
    respond: Respond,
) -> StoreResult<Item> {
    let mut tx = pool.begin().await?;
    let created = sqlx::query_as::<_, Item>(INSERT)
        .bind(item.draft.name())
        .bind(item.draft.description())
        .bind(item.draft.price())
        .bind(item.draft.quantity())
        .bind(item.owner_id)
        .bind(Utc::now())
        .fetch_one(&mut *tx)
        .await?;
    if let Some(key) = &item.key {
        let response = respond(&created);
        idempotency::store_answer!(tx, key, response)?;
    }
    tx.commit().await?;
    Ok(created)
}

pub async fn find(db: &Db, id: i64) -> StoreResult<Option<Item>> {
    let cache = db.cache();
    let tag = cache.map(|cache| cache.generation());
    if let (Some(cache), Some(tag)) = (cache, tag)
        && let Some(item) = cache.item(id, tag)
    {
        return Ok(item);
    }
    let sql = "select id, name, description, price, quantity, owner_id, version, created_at, updated_at \
               from items where id = $1";
    let item = with_reader!(db, |pool| {
        sqlx::query_as::<_, Item>(sql)
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    if let (Some(cache), Some(tag)) = (cache, tag) {
        cache.put_item(id, tag, item.clone());
    }
    Ok(item)
}

/// Up to `limit` items with ids above `after`, in id order. Not cached as rows: the read
/// cache keeps the page's rendered answer instead (`page_body`), under the same rule.
pub async fn page(db: &Db, after: i64, limit: i64) -> StoreResult<Vec<Item>> {
    let sql = "select id, name, description, price, quantity, owner_id, version, created_at, updated_at \
               from items where id > $1 order by id limit $2";
    let items = with_reader!(db, |pool| {
        sqlx::query_as::<_, Item>(sql)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
    });
    Ok(items)
}

/// The item generation to tag a rendered answer with, taken before the reads it is made
/// from; `None` on PostgreSQL, which keeps no read cache (other processes write too).
pub fn generation(db: &Db) -> Option<u64> {
    db.cache().map(|cache| cache.generation())
}

/// The answer rendered for this page at `tag`, if no item has changed since.
pub fn page_body(db: &Db, after: i64, limit: i64, tag: Option<u64>) -> Option<Bytes> {
    db.cache()?.page_body(after, limit, tag?)
}

/// Keeps a page's rendered answer, made from reads that started at `tag`.
pub fn keep_page_body(db: &Db, after: i64, limit: i64, tag: Option<u64>, body: Bytes) {
    if let (Some(cache), Some(tag)) = (db.cache(), tag) {
        cache.put_page_body(after, limit, tag, body);
    }
}

/// The newest `limit` items, newest first.
pub async fn newest(db: &Db, limit: i64) -> StoreResult<Vec<ItemSummary>> {
    let cache = db.cache();
    let tag = cache.map(|cache| cache.generation());
    if let (Some(cache), Some(tag)) = (cache, tag)
        && let Some(items) = cache.newest(limit, tag)
    {
        return Ok(items);
    }
    let sql = "select id, name from items order by id desc limit $1";
    let items = with_reader!(db, |pool| {
        sqlx::query_as::<_, ItemSummary>(sql)
            .bind(limit)
            .fetch_all(pool)
            .await?
    });
    if let (Some(cache), Some(tag)) = (cache, tag) {
        cache.put_newest(limit, tag, items.clone());
    }
    Ok(items)
}

/// Replaces the fields if the item is still at `version`; `None` when it is not (or is gone).
pub async fn update(
    db: &Db,
    id: i64,
    version: i64,
    draft: &ItemDraft,
) -> StoreResult<Option<Item>> {
    db.write(async {
    let sql = "update items set name = $1, description = $2, price = $3, quantity = $4, \
               version = version + 1, updated_at = $5 \
               where id = $6 and version = $7 \
               returning id, name, description, price, quantity, owner_id, version, created_at, updated_at";
    let item = with_writer!(db, |pool| {
        sqlx::query_as::<_, Item>(sql)
            .bind(draft.name())
            .bind(draft.description())
            .bind(draft.price())
            .bind(draft.quantity())
            .bind(Utc::now())
            .bind(id)
            .bind(version)
            .fetch_all(pool)
            .await
    });
    db.items_changed();
    Ok(item?.pop())
}).await
}

/// Deletes the item if it is still at `version`; false when it is not (or is gone).
pub async fn delete(db: &Db, id: i64, version: i64) -> StoreResult<bool> {
    db.write(async {
        let sql = "delete from items where id = $1 and version = $2";
        let deleted = with_writer!(db, |pool| {
            sqlx::query(sql)
                .bind(id)
                .bind(version)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        db.items_changed();
        Ok(deleted? > 0)
    })
    .await
}
