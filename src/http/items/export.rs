//! `GET /items/export`: every item a listing matches (the same filters and sort as
//! `GET /items`), streamed as NDJSON or, with `Accept: text/csv`, as CSV.
//!
//! The rows are read in keyset batches of [`BATCH`] through the same query as a page, each
//! batch rendered and sent before the next is read: larder holds one batch at a time
//! whatever the size of the set, no database connection is held between batches (on SQLite
//! a long export never keeps a reader from the pool, nor the WAL from being checkpointed),
//! and a client that goes away stops the export at once: hyper drops the body, and with it
//! the batch being read. Being batches, the export is not one snapshot: like paging, it
//! shows every item that exists throughout it exactly once, in order; an item written
//! meanwhile may appear in its old or its new place.

use std::io;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;

use super::ItemView;
use super::listing;
use crate::http::error::{ApiError, ApiResult, ValidationProblemBody};
use crate::http::extract::QueryParams;
use crate::http::state::AppState;
use crate::store::Db;
use crate::store::items::{self, After, Item, ItemQuery, PricePlan};

/// Rows read (and rendered) at a time.
pub const BATCH: i64 = 1000;

pub const NDJSON: &str = "application/x-ndjson";

/// The columns of the CSV export, in order: an item's fields as the JSON shows them.
const CSV_HEADER: [&str; 9] = [
    "id",
    "name",
    "description",
    "price",
    "quantity",
    "owner_id",
    "version",
    "created_at",
    "updated_at",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

/// The format `Accept` prefers (RFC 9110 §12.5.1): the one with the higher quality, by the
/// most specific range naming it; on a tie the one named more specifically, then NDJSON.
/// No `Accept` (or an empty one) is NDJSON. `None` when neither is acceptable (406).
/// Not `headers-accept` (the 406 check's parser): it matches a range with parameters only
/// to a type with the same ones, so `text/csv; charset=utf-8` would be refused.
pub fn negotiate(headers: &HeaderMap) -> Option<Format> {
    let ranges: Vec<(String, String, f32)> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(media_range)
        .collect();
    if ranges.is_empty() {
        return Some(Format::Ndjson);
    }
    // (quality, specificity) by the most specific range that names the type.
    let rate = |kind: &str, subtype: &str| {
        ranges
            .iter()
            .filter_map(|(k, s, q)| {
                let specificity = match (k.as_str(), s.as_str()) {
                    (k, s) if k == kind && s == subtype => 2,
                    (k, "*") if k == kind => 1,
                    ("*", "*") => 0,
                    _ => return None,
                };
                Some((specificity, *q))
            })
            .max_by_key(|(specificity, _)| *specificity)
            .map(|(specificity, q)| (q, specificity))
    };
    let ndjson = rate("application", "x-ndjson").filter(|(q, _)| *q > 0.0);
    let csv = rate("text", "csv").filter(|(q, _)| *q > 0.0);
    match (ndjson, csv) {
        (None, None) => None,
        (Some(_), None) => Some(Format::Ndjson),
        (None, Some(_)) => Some(Format::Csv),
        (Some(n), Some(c)) if c.0 > n.0 || (c.0 == n.0 && c.1 > n.1) => Some(Format::Csv),
        (Some(_), Some(_)) => Some(Format::Ndjson),
    }
}

/// One media range of `Accept`: type and subtype (lower case) and its quality.
fn media_range(text: &str) -> Option<(String, String, f32)> {
    let mut parts = text.split(';');
    let (kind, subtype) = parts.next()?.trim().split_once('/')?;
    let mut quality = 1.0;
    for parameter in parts {
        if let Some((name, value)) = parameter.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            quality = value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))?;
        }
    }
    Some((
        kind.trim().to_ascii_lowercase(),
        subtype.trim().to_ascii_lowercase(),
        quality,
    ))
}

/// Every item a listing matches, as NDJSON (one item per line, as `GET /items/{id}` shows
/// it) or as CSV (`Accept: text/csv`; a header row, then one row per item). Public, like
/// `GET /items`.
#[utoipa::path(get, path = "/items/export", tag = "items",
    params(
        ("owner_id" = Option<i64>, Query, description = "Only this user's items"),
        ("q" = Option<String>, Query, description = "Only items whose name contains this text, ignoring case"),
        ("min_price" = Option<f64>, Query, description = "Only items priced at least this"),
        ("max_price" = Option<f64>, Query, description = "Only items priced at most this (not below `min_price`)"),
        ("sort" = Option<super::ItemSort>, Query, description = "The order, ties broken by id in the same direction (default `id`)"),
        ("Accept" = Option<String>, Header, nullable = false, description = "`application/x-ndjson` (the default) or `text/csv`"),
    ),
    responses(
        (status = 200, description = "Every matching item, streamed",
            content(
                (String = "application/x-ndjson", example = json!("{\"id\":1,\"name\":\"Strawberry jam\",\"description\":null,\"price\":4.5,\"quantity\":3,\"owner_id\":1,\"version\":1,\"created_at\":\"2026-12-01T10:00:00Z\",\"updated_at\":\"2026-12-01T10:00:00Z\"}\n")),
                (String = "text/csv", example = json!("id,name,description,price,quantity,owner_id,version,created_at,updated_at\n1,Strawberry jam,,4.5,3,1,1,2026-12-01T10:00:00Z,2026-12-01T10:00:00Z\n")),
            )),
        (status = 406, description = "`Accept` admits neither NDJSON nor CSV", body = crate::http::error::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter or sort, or `min_price` above `max_price`", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn export_items(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let query = listing::export_query(&params)?;
    let format = negotiate(&headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "The export is available as application/x-ndjson or text/csv",
        )
    })?;
    let media_type = match format {
        Format::Ndjson => NDJSON,
        Format::Csv => "text/csv; charset=utf-8",
    };
    // The first batch is read before the answer starts, so a database that fails at once
    // gets its 500/503/507 problem, not a 200 cut off after its headers.
    let plan = items::price_plan(&state.db, &query).await?;
    let first = items::page_planned(&state.db, &query, plan, None, BATCH).await?;
    let body = chunks(state.db.clone(), query, plan, format, first);
    let mut response = Response::new(Body::from_stream(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

/// Where an export is: the next batch starts after `after`; `done` once a batch came short.
struct Progress {
    db: Db,
    query: ItemQuery,
    plan: PricePlan,
    format: Format,
    after: Option<After>,
    /// A batch read already (the first), sent before any other is read.
    ready: Option<Vec<Item>>,
    started: bool,
    done: bool,
    _active: Active,
}

/// Counts the export in `items_exports_active` while its body lives: hyper drops the body
/// when the export ends, or when its client goes away.
struct Active;

impl Active {
    fn start() -> Active {
        metrics::gauge!("items_exports_active").increment(1.0);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        metrics::gauge!("items_exports_active").decrement(1.0);
    }
}

/// The export's body: a chunk per batch (the CSV header in the first). A database error
/// ends the body with an error, so the client sees a cut-off transfer, never a short file
/// that looks complete.
fn chunks(
    db: Db,
    query: ItemQuery,
    plan: PricePlan,
    format: Format,
    first: Vec<Item>,
) -> impl Stream<Item = io::Result<Bytes>> {
    let progress = Progress {
        db,
        query,
        plan,
        format,
        after: None,
        ready: Some(first),
        started: false,
        done: false,
        _active: Active::start(),
    };
    futures::stream::unfold(progress, |mut progress| async move {
        if progress.done {
            return None;
        }
        let read = match progress.ready.take() {
            Some(rows) => Ok(rows),
            None => {
                let after = progress.after.as_ref();
                items::page_planned(&progress.db, &progress.query, progress.plan, after, BATCH)
                    .await
            }
        };
        let rows = match read {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, "the export stopped: the database failed");
                progress.done = true;
                return Some((Err(io::Error::other("the export stopped")), progress));
            }
        };
        // Rows read for exports, in `/metrics`: it stops growing when a client goes away.
        metrics::counter!("items_exported_total").increment(rows.len() as u64);
        progress.done = (rows.len() as i64) < BATCH;
        let sort = progress.query.sort;
        progress.after = rows.last().map(|item| After::item(sort, item));
        let header = !progress.started;
        progress.started = true;
        let chunk = render(progress.format, header, &rows);
        Some((Ok(chunk), progress))
    })
}

/// A batch of rows in the export's format (the CSV header first when `header`).
fn render(format: Format, header: bool, rows: &[Item]) -> Bytes {
    let mut out = Vec::with_capacity(64 + 320 * rows.len());
    match format {
        Format::Ndjson => {
            for item in rows {
                serde_json::to_writer(&mut out, &ItemView::from(item)).expect("an item serialises");
                out.push(b'\n');
            }
        }
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(&mut out);
            if header {
                writer.write_record(CSV_HEADER).expect("writing to memory");
            }
            for item in rows {
                writer
                    .serialize(ItemView::from(item))
                    .expect("writing to memory");
            }
            writer.flush().expect("writing to memory");
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn accept_chooses_the_format() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(Format::Ndjson));
        assert_eq!(negotiate(&accept("*/*")), Some(Format::Ndjson));
        assert_eq!(negotiate(&accept("text/csv")), Some(Format::Csv));
        assert_eq!(
            negotiate(&accept("TEXT/CSV; charset=utf-8")),
            Some(Format::Csv)
        );
        assert_eq!(negotiate(&accept("text/*")), Some(Format::Csv));
        assert_eq!(negotiate(&accept("text/csv, */*")), Some(Format::Csv));
        assert_eq!(
            negotiate(&accept("text/csv;q=0.5, */*")),
            Some(Format::Ndjson)
        );
        assert_eq!(
            negotiate(&accept("application/x-ndjson, text/csv")),
            Some(Format::Ndjson)
        );
        assert_eq!(negotiate(&accept("application/json")), None);
        assert_eq!(negotiate(&accept("text/csv;q=0")), None);
        assert_eq!(negotiate(&accept("*/*;q=0, text/csv")), Some(Format::Csv));
        assert_eq!(negotiate(&accept("image/png, text/html")), None);
    }
}
