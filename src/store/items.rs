//! Items: reads, keyset pages, and writes that check the version in the same statement.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::coalesce::Fetched;
use super::idempotency::{OwnedKey, StoredResponse};
use super::{Db, SqliteDb, StoreResult};
use crate::domain::item::ItemDraft;

/// A statement with a listing's arguments bound, in placeholder order (a macro: sqlx's
/// query types differ per backend and per kind of result).
macro_rules! bind_all {
    ($statement:expr, $args:expr) => {{
        let mut statement = $statement;
        for arg in $args {
            statement = match arg {
                Arg::Int(value) => statement.bind(value),
                Arg::Real(value) => statement.bind(value),
                Arg::Text(value) => statement.bind(value),
                Arg::Time(value) => statement.bind(value),
            };
        }
        statement
    }};
}

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
/// in the same transaction, so a replay exists exactly when the item does. The write joins
/// a group commit (see `store::batch`).
#[tracing::instrument(target = "larder::spans::db", name = "items.insert", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn insert(db: &Db, item: NewItem, respond: Respond) -> StoreResult<Item> {
    match db {
        Db::Sqlite(sqlite) => sqlite.items.insert(item, respond).await,
        Db::Postgres(postgres) => postgres.items.insert(item, respond).await,
    }
}

#[tracing::instrument(target = "larder::spans::db", name = "items.find", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn find(db: &Db, id: i64) -> StoreResult<Option<Item>> {
    if let Db::Postgres(postgres) = db {
        return postgres.reads.items.get(&postgres.pool, id).await;
    }
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

/// PostgreSQL's batched item reads (`store::coalesce`): every id in one statement.
pub(crate) fn find_many(pool: PgPool, ids: Vec<i64>) -> Fetched<i64, Item> {
    Box::pin(async move {
        let sql = "select id, name, description, price, quantity, owner_id, version, created_at, updated_at \
                   from items where id = any($1)";
        let items = sqlx::query_as::<_, Item>(sql)
            .bind(&ids)
            .fetch_all(&pool)
            .await?;
        Ok(items.into_iter().map(|item| (item.id, item)).collect())
    })
}

/// One page read waiting in PostgreSQL's batch (`store::coalesce`): reads of the same page
/// (the same text) share one query.
#[derive(Debug, Clone)]
pub(crate) struct PageRead {
    text: Arc<str>,
    query: ItemQuery,
    after: Option<After>,
    limit: i64,
}

impl PartialEq for PageRead {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for PageRead {}

impl std::hash::Hash for PageRead {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

/// PostgreSQL's batched page reads: each distinct page once.
pub(crate) fn pages(pool: PgPool, reads: Vec<PageRead>) -> Fetched<PageRead, Arc<Vec<Item>>> {
    Box::pin(async move {
        let mut pages = HashMap::with_capacity(reads.len());
        for read in reads {
            let plan = match price_range_count_sql(&read.query) {
                Some((sql, args)) => plan_for(
                    bind_all!(sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)), args)
                        .fetch_one(&pool)
                        .await?,
                ),
                None => PricePlan::SortIndex,
            };
            let (sql, args) = listing_sql(&read.query, read.after.as_ref(), Some(read.limit), plan);
            let items = bind_all!(sqlx::query_as::<_, Item>(sqlx::AssertSqlSafe(sql)), args)
                .fetch_all(&pool)
                .await?;
            pages.insert(read, Arc::new(items));
        }
        Ok(pages)
    })
}

/// The column a listing is sorted by; ties are broken by id, in the same direction, so the
/// order is total and a keyset cursor names one place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortKey {
    Id,
    Price,
    CreatedAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

impl Sort {
    /// The contract's default: ids ascending.
    pub const BY_ID: Sort = Sort {
        key: SortKey::Id,
        descending: false,
    };

    fn column(self) -> &'static str {
        match self.key {
            SortKey::Id => "id",
            SortKey::Price => "price",
            SortKey::CreatedAt => "created_at",
        }
    }
}

/// The sort key's value in the last row of a page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SortValue {
    Id,
    Price(f64),
    CreatedAt(DateTime<Utc>),
}

/// Where a page starts: just after this row in the sort's order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct After {
    pub value: SortValue,
    pub id: i64,
}

impl After {
    /// The position just after `item` in `sort`'s order.
    pub fn item(sort: Sort, item: &Item) -> After {
        let value = match sort.key {
            SortKey::Id => SortValue::Id,
            SortKey::Price => SortValue::Price(item.price),
            SortKey::CreatedAt => SortValue::CreatedAt(item.created_at),
        };
        After { value, id: item.id }
    }

    /// Whether this position belongs to `sort`'s order (a cursor of another sort does not).
    pub fn fits(&self, sort: Sort) -> bool {
        matches!(
            (sort.key, self.value),
            (SortKey::Id, SortValue::Id)
                | (SortKey::Price, SortValue::Price(_))
                | (SortKey::CreatedAt, SortValue::CreatedAt(_))
        )
    }
}

/// Which items a listing shows; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemFilter {
    pub owner_id: Option<i64>,
    /// A case-insensitive substring of the name (`%` and `_` are plain characters here).
    pub name_contains: Option<String>,
    pub min_price: Option<f64>,
    pub max_price: Option<f64>,
}

impl ItemFilter {
    pub fn is_empty(&self) -> bool {
        *self == ItemFilter::default()
    }
}

/// A listing: which items, in which order.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemQuery {
    pub filter: ItemFilter,
    pub sort: Sort,
}

/// A value bound to a listing's statement.
#[derive(Debug)]
enum Arg {
    Int(i64),
    Real(f64),
    Text(String),
    Time(DateTime<Utc>),
}

/// `text` as a `like` pattern that matches it anywhere, with `\` as the escape character.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

const COLUMNS: &str =
    "id, name, description, price, quantity, owner_id, version, created_at, updated_at";

/// Adds an argument; its placeholder.
fn bind(args: &mut Vec<Arg>, arg: Arg) -> String {
    args.push(arg);
    format!("${}", args.len())
}

/// How a price bound is read under a sort other than price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PricePlan {
    /// Walk the sort's own index, the bound a filter: fast unless few rows are in range.
    SortIndex,
    /// Read the price range from its index and sort it: fast when few rows are in range.
    PriceRange,
}

/// Rows in a price range below which reading the range and sorting it beats walking the
/// sort's index: walking finds `limit` rows in range after about `limit × rows / in range`
/// steps, so with this many in range it takes at most 20 × 100,000 / 1,000 = 2,000 steps
/// for an owner's 100,000 items, and the range read at most 1,000 (bench/run.sh
/// --listing: p99 22 ms at 64 connections with the sort index alone, at a narrow range
/// walking every row of the owner).
const NARROW_PRICE_RANGE: i64 = 1_000;

/// The filter's price bounds on `column` (`price`, or `+price` to keep them off the index).
fn price_bounds(
    filter: &ItemFilter,
    column: &str,
    conditions: &mut Vec<String>,
    args: &mut Vec<Arg>,
) {
    if let Some(min) = filter.min_price {
        conditions.push(format!("{column} >= {}", bind(args, Arg::Real(min))));
    }
    if let Some(max) = filter.max_price {
        conditions.push(format!("{column} <= {}", bind(args, Arg::Real(max))));
    }
}

/// Whether the listing bounds the price under another sort, and if so, how to read it:
/// one short count over the price index (at most [`NARROW_PRICE_RANGE`] entries) decides.
#[tracing::instrument(target = "larder::spans::db", name = "items.price_plan", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn price_plan(db: &Db, query: &ItemQuery) -> StoreResult<PricePlan> {
    let Some((sql, args)) = price_range_count_sql(query) else {
        return Ok(PricePlan::SortIndex);
    };
    let in_range: i64 = with_reader!(db, |pool| {
        bind_all!(sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)), args)
            .fetch_one(pool)
            .await?
    });
    Ok(plan_for(in_range))
}

/// The count [`price_plan`] decides by (up to [`NARROW_PRICE_RANGE`] rows in the price
/// range), or `None` when the listing needs no plan: a price sort, or no price bound.
fn price_range_count_sql(query: &ItemQuery) -> Option<(String, Vec<Arg>)> {
    let filter = &query.filter;
    if query.sort.key == SortKey::Price
        || (filter.min_price.is_none() && filter.max_price.is_none())
    {
        return None;
    }
    let mut args = Vec::new();
    let mut conditions = Vec::new();
    if let Some(owner_id) = filter.owner_id {
        conditions.push(format!(
            "owner_id = {}",
            bind(&mut args, Arg::Int(owner_id))
        ));
    }
    price_bounds(filter, "price", &mut conditions, &mut args);
    let limit = bind(&mut args, Arg::Int(NARROW_PRICE_RANGE));
    let sql = format!(
        "select count(*) from (select 1 from items where {} limit {limit}) as in_range",
        conditions.join(" and ")
    );
    Some((sql, args))
}

fn plan_for(in_range: i64) -> PricePlan {
    if in_range < NARROW_PRICE_RANGE {
        PricePlan::PriceRange
    } else {
        PricePlan::SortIndex
    }
}

/// The statement of a listing and its arguments, in placeholder order. Each filter is
/// written only when given, so every combination is a plain conjunction the planner can
/// match to an index (migration 0007); the position after the cursor is a row-value
/// comparison `(key, id) > ($k, $id)`, which both backends answer with an index range scan.
fn listing_sql(
    query: &ItemQuery,
    after: Option<&After>,
    limit: Option<i64>,
    plan: PricePlan,
) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    let filter = &query.filter;
    if let Some(owner_id) = filter.owner_id {
        conditions.push(format!(
            "owner_id = {}",
            bind(&mut args, Arg::Int(owner_id))
        ));
    }
    if let Some(text) = &filter.name_contains {
        let pattern = bind(&mut args, Arg::Text(contains_pattern(text)));
        conditions.push(format!("lower(name) like lower({pattern}) escape '\\'"));
    }
    let sort = query.sort;
    // Under another sort, a price bound is a filter, not an index range (`+price` is the
    // same value, but no index matches it): the planner then walks the sort's own index
    // and stops after `limit` rows, instead of reading every row in the price range and
    // sorting them (SQLite's planner, without statistics, chose the latter: tens of ms for
    // an owner's 100,000 items).
    let price = if sort.key == SortKey::Price || plan == PricePlan::PriceRange {
        "price"
    } else {
        "+price"
    };
    price_bounds(filter, price, &mut conditions, &mut args);
    let (direction, beyond) = if sort.descending {
        ("desc", "<")
    } else {
        ("asc", ">")
    };
    if let Some(after) = after {
        let key = match after.value {
            SortValue::Price(price) if sort.key == SortKey::Price => Some(Arg::Real(price)),
            SortValue::CreatedAt(at) if sort.key == SortKey::CreatedAt => Some(Arg::Time(at)),
            _ => None,
        };
        match key {
            Some(key) => {
                let key = bind(&mut args, key);
                let id = bind(&mut args, Arg::Int(after.id));
                conditions.push(format!("({}, id) {beyond} ({key}, {id})", sort.column()));
            }
            None => {
                let id = bind(&mut args, Arg::Int(after.id));
                conditions.push(format!("id {beyond} {id}"));
            }
        }
    }
    let mut sql = format!("select {COLUMNS} from items");
    if !conditions.is_empty() {
        sql.push_str(" where ");
        sql.push_str(&conditions.join(" and "));
    }
    match sort.key {
        SortKey::Id => sql.push_str(&format!(" order by id {direction}")),
        _ => sql.push_str(&format!(
            " order by {} {direction}, id {direction}",
            sort.column()
        )),
    }
    if let Some(limit) = limit {
        let limit = bind(&mut args, Arg::Int(limit));
        sql.push_str(&format!(" limit {limit}"));
    }
    (sql, args)
}

/// Up to `limit` items of `query`, after `after` in its order. Not cached as rows: the read
/// cache keeps the page's rendered answer instead (`page_body`), under the same rule.
#[tracing::instrument(target = "larder::spans::db", name = "items.page", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn page(
    db: &Db,
    query: &ItemQuery,
    after: Option<&After>,
    limit: i64,
) -> StoreResult<Vec<Item>> {
    if let Db::Postgres(postgres) = db {
        let read = PageRead {
            text: format!("{query:?}|{after:?}|{limit}").into(),
            query: query.clone(),
            after: after.copied(),
            limit,
        };
        let items = postgres.reads.pages.get(&postgres.pool, read).await?;
        return Ok(items
            .map(|items| items.as_ref().clone())
            .unwrap_or_default());
    }
    // A text search (`q`) scans rows, unbounded: it stays on sqlx's connection thread.
    if let (
        Db::Sqlite(SqliteDb {
            direct: Some(direct),
            ..
        }),
        None,
    ) = (db, &query.filter.name_contains)
    {
        return direct.read(|connection| {
            let plan = match price_range_count_sql(query) {
                Some((sql, args)) => plan_for(
                    connection
                        .prepare_cached(&sql)?
                        .query_row(rusqlite::params_from_iter(&args), |row| row.get(0))?,
                ),
                None => PricePlan::SortIndex,
            };
            let (sql, args) = listing_sql(query, after, Some(limit), plan);
            let mut statement = connection.prepare_cached(&sql)?;
            let items = statement.query_map(rusqlite::params_from_iter(&args), item_of_row)?;
            items.collect()
        });
    }
    let plan = price_plan(db, query).await?;
    page_planned(db, query, plan, after, limit).await
}

/// An item from a row of [`COLUMNS`], read by rusqlite (the direct reads).
fn item_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        price: row.get(3)?,
        quantity: row.get(4)?,
        owner_id: row.get(5)?,
        version: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput;
        Ok(match self {
            Arg::Int(value) => ToSqlOutput::from(*value),
            Arg::Real(value) => ToSqlOutput::from(*value),
            Arg::Text(value) => ToSqlOutput::from(value.as_str()),
            // As sqlx writes an instant, so that the text comparison with stored ones holds.
            Arg::Time(value) => {
                ToSqlOutput::from(value.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
            }
        })
    }
}

/// [`page`] with the price plan decided already: a listing read in many pages (the export)
/// counts its price range once, not once a page.
#[tracing::instrument(target = "larder::spans::db", name = "items.page_planned", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn page_planned(
    db: &Db,
    query: &ItemQuery,
    plan: PricePlan,
    after: Option<&After>,
    limit: i64,
) -> StoreResult<Vec<Item>> {
    let (sql, args) = listing_sql(query, after, Some(limit), plan);
    let items = with_reader!(db, |pool| {
        bind_all!(sqlx::query_as::<_, Item>(sqlx::AssertSqlSafe(sql)), args)
            .fetch_all(pool)
            .await?
    });
    Ok(items)
}

/// What identifies a rendered page in the read cache: the cursor's id and the limit, and
/// for any listing other than the plain one (no filter, id order) a text naming the rest.
pub type PageKey = (i64, i64, Box<str>);

/// A page as the HTTP layer sends it: its body and its entity tag.
#[derive(Debug, Clone)]
pub struct RenderedPage {
    pub body: Bytes,
    pub etag: Bytes,
}

/// The item generation to tag a rendered answer with, taken before the reads it is made
/// from; `None` on PostgreSQL, which keeps no read cache (other processes write too).
pub fn generation(db: &Db) -> Option<u64> {
    db.cache().map(|cache| cache.generation())
}

/// The answer rendered for this page at `tag`, if no item has changed since.
pub fn page_body(db: &Db, key: &PageKey, tag: Option<u64>) -> Option<RenderedPage> {
    db.cache()?.page_body(key, tag?)
}

/// Keeps a page's rendered answer, made from reads that started at `tag`.
pub fn keep_page_body(db: &Db, key: PageKey, tag: Option<u64>, page: RenderedPage) {
    if let (Some(cache), Some(tag)) = (db.cache(), tag) {
        cache.put_page_body(key, tag, page);
    }
}

/// PostgreSQL's batched `newest` reads: each distinct limit once.
pub(crate) fn newest_many(pool: PgPool, limits: Vec<i64>) -> Fetched<i64, Arc<Vec<ItemSummary>>> {
    Box::pin(async move {
        let mut pages = HashMap::with_capacity(limits.len());
        for limit in limits {
            let items = sqlx::query_as::<_, ItemSummary>(NEWEST)
                .bind(limit)
                .fetch_all(&pool)
                .await?;
            pages.insert(limit, Arc::new(items));
        }
        Ok(pages)
    })
}

const NEWEST: &str = "select id, name from items order by id desc limit $1";

/// The newest `limit` items, newest first.
#[tracing::instrument(target = "larder::spans::db", name = "items.newest", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn newest(db: &Db, limit: i64) -> StoreResult<Vec<ItemSummary>> {
    if let Db::Postgres(postgres) = db {
        let items = postgres.reads.newest.get(&postgres.pool, limit).await?;
        return Ok(items
            .map(|items| items.as_ref().clone())
            .unwrap_or_default());
    }
    let cache = db.cache();
    let tag = cache.map(|cache| cache.generation());
    if let (Some(cache), Some(tag)) = (cache, tag)
        && let Some(items) = cache.newest(limit, tag)
    {
        return Ok(items);
    }
    let items = with_reader!(db, |pool| {
        sqlx::query_as::<_, ItemSummary>(NEWEST)
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
#[tracing::instrument(target = "larder::spans::db", name = "items.update", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
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
#[tracing::instrument(target = "larder::spans::db", name = "items.delete", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sort: Sort) -> ItemQuery {
        ItemQuery {
            filter: ItemFilter {
                owner_id: Some(3),
                name_contains: Some("50%_off\\".into()),
                min_price: Some(1.0),
                max_price: Some(2.0),
            },
            sort,
        }
    }

    #[test]
    fn a_listing_is_one_conjunction_in_its_sorts_index_order() {
        let by_price = Sort {
            key: SortKey::Price,
            descending: true,
        };
        let after = After {
            value: SortValue::Price(1.5),
            id: 9,
        };
        let (sql, args) = listing_sql(
            &query(by_price),
            Some(&after),
            Some(21),
            PricePlan::SortIndex,
        );
        assert!(sql.ends_with(
            "where owner_id = $1 and lower(name) like lower($2) escape '\\' and price >= $3 \
             and price <= $4 and (price, id) < ($5, $6) order by price desc, id desc limit $7"
        ));
        assert_eq!(args.len(), 7);
        assert!(matches!(&args[1], Arg::Text(pattern) if pattern == "%50\\%\\_off\\\\%"));
        let (sql, _) = listing_sql(&query(Sort::BY_ID), None, None, PricePlan::SortIndex);
        assert!(
            sql.ends_with("and +price >= $3 and +price <= $4 order by id asc"),
            "{sql}"
        );
        // A narrow price range is read as a range of the price index, then sorted.
        let (sql, _) = listing_sql(&query(Sort::BY_ID), None, None, PricePlan::PriceRange);
        assert!(
            sql.ends_with("and price >= $3 and price <= $4 order by id asc"),
            "{sql}"
        );
    }
}
