//! Items: public reads with entity tags, owner-only writes with `If-Match`, keyset pages and
//! idempotent creation.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::{IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::conditional::{
    Precondition, Validators, evaluate, has_if_match, if_none_match_hits, last_modified,
};
use super::error::{ApiError, ApiResult, ValidationProblemBody};
use super::extract::{Body, IdPath, JsonValue, QueryParams, into_domain};
use super::idempotency::{self as idem, Begin, MaybeIdempotencyKey};
use super::openapi::{
    BadId, BusyWriters, ConditionRequired, ItemNotFound, NotJson, NotJsonMediaType, NotMatched,
    NotTheOwner, StillRunning, TooLarge, Unauthorized, shared,
};
use super::prefer::{PreferMinimal, minimal};
use crate::domain::item::{ItemDraft, merge_patch};
use crate::http::auth_user::AuthUser;
use crate::http::state::AppState;
use crate::store::idempotency::{KeyRef, StoredResponse};
use crate::store::items::{self, After, Item, NewItem, PageKey, RenderedPage, Sort};

mod export;
mod listing;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_items, create_item))
        .routes(routes!(export::export_items))
        .routes(routes!(get_item, replace_item, patch_item, delete_item))
}

/// What `POST /items` and `PUT /items/{id}` accept.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ItemInput {
    /// 1–200 characters after trimming.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
        example = "Strawberry jam"
    )]
    name: String,
    #[schema(max_length = 2000, pattern = r"^[^\u0000]*$")]
    description: Option<String>,
    #[schema(minimum = 0, example = 4.5)]
    price: f64,
    /// How many are in stock; default 0.
    #[schema(minimum = 0, example = 3)]
    quantity: Option<i64>,
}

/// A merge patch (RFC 7396) of an item: members given replace, `null` removes `description`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ItemPatch {
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    name: Option<String>,
    #[schema(max_length = 2000, pattern = r"^[^\u0000]*$")]
    description: Option<String>,
    #[schema(nullable = false, minimum = 0)]
    price: Option<f64>,
    #[schema(minimum = 0)]
    quantity: Option<i64>,
}

// An item as the API shows it; the row is `store::items::Item`. (A plain comment: a doc
// comment would become the schema's description.)
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Item)]
pub struct ItemView<'a> {
    #[schema(example = 1)]
    pub id: i64,
    #[schema(example = "Strawberry jam")]
    pub name: &'a str,
    pub description: Option<&'a str>,
    #[schema(example = 4.5)]
    pub price: f64,
    #[schema(example = 3)]
    pub quantity: i64,
    pub owner_id: i64,
    #[schema(example = 1)]
    pub version: i64,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl<'a> From<&'a Item> for ItemView<'a> {
    fn from(item: &'a Item) -> Self {
        ItemView {
            id: item.id,
            name: &item.name,
            description: item.description.as_deref(),
            price: item.price,
            quantity: item.quantity,
            owner_id: item.owner_id,
            version: item.version,
            created_at: item.created_at,
            updated_at: item.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemPage<'a> {
    pub items: Vec<ItemView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The response of a write: the item, its `ETag`, and for a creation its `Location`.
fn item_response(status: StatusCode, item: &Item) -> StoredResponse {
    let (modified, date) = last_modified(item.updated_at);
    let date = date.to_str().expect("an HTTP-date is text").to_owned();
    let mut headers = vec![(header::ETAG, item.etag()), (modified, date)];
    if status == StatusCode::CREATED {
        headers.push((header::LOCATION, format!("/items/{}", item.id)));
    }
    idem::stored_json(status, &headers, &ItemView::from(item))
}

fn send(status: StatusCode, item: &Item) -> Response {
    // What `idem::replay(&item_response(status, item))` answers, without the round trip
    // through the stored form (headers as JSON text, a copy of the body).
    let body = serde_json::to_vec(&ItemView::from(item)).expect("an item serialises");
    let mut response = json_answer(status, body);
    let headers = response.headers_mut();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&item.etag()).expect("etags are header text"),
    );
    let (modified, date) = last_modified(item.updated_at);
    headers.insert(modified, date);
    if status == StatusCode::CREATED {
        headers.insert(
            header::LOCATION,
            HeaderValue::from_str(&format!("/items/{}", item.id)).expect("a path is header text"),
        );
    }
    response
}

/// The sorts `GET /items` and `GET /items/export` take (`-` first: descending).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub enum ItemSort {
    #[serde(rename = "id")]
    Id,
    #[serde(rename = "-id")]
    IdDesc,
    #[serde(rename = "price")]
    Price,
    #[serde(rename = "-price")]
    PriceDesc,
    #[serde(rename = "created_at")]
    CreatedAt,
    #[serde(rename = "-created_at")]
    CreatedAtDesc,
}

/// A page of items: filtered, sorted (ties broken by id), one keyset cursor at a time.
/// The page's weak `ETag` is a digest of its body; 304 on a matching `If-None-Match`.
#[utoipa::path(get, path = "/items", tag = "items",
    params(
        ("owner_id" = Option<i64>, Query, description = "Only this user's items"),
        ("q" = Option<String>, Query, description = "Only items whose name contains this text, ignoring case (`%` and `_` are plain characters)"),
        ("min_price" = Option<f64>, Query, description = "Only items priced at least this"),
        ("max_price" = Option<f64>, Query, description = "Only items priced at most this (not below `min_price`)"),
        ("sort" = Option<ItemSort>, Query, description = "The order, ties broken by id in the same direction (default `id`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items per page (default 20)"),
        ("cursor" = Option<String>, Query, pattern = r"^([0-9]{1,18}|-id\.[0-9]{1,18}|-?price\.[0-9a-f]{16}\.[0-9]{1,18}|-?created_at\.-?[0-9]{1,30}\.[0-9]{1,18})$",
            description = "The `next_cursor` of the previous page, with the same `sort`"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "The page's `ETag` the client holds"),
    ),
    responses(
        (status = 200, description = "A page of items", body = ItemPage, headers(("ETag" = String, description = "Weak entity tag of the page"))),
        (status = 304, description = "The client's copy of the page is current", headers(("ETag" = String, description = "Weak entity tag of the page"))),
        (status = 422, description = "A bad filter, sort, limit or cursor, `min_price` above `max_price`, or a cursor of another sort", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list_items(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let request = listing::page_request(&params)?;
    // The plain listing (no filter, id order) is the hot one: its key allocates nothing.
    let key: PageKey = if request.query.filter.is_empty() && request.query.sort == Sort::BY_ID {
        (
            request.after.map_or(0, |after| after.id),
            request.limit,
            "".into(),
        )
    } else {
        let rest = format!("{:?}|{:?}", request.query, request.after);
        (0, request.limit, rest.into())
    };
    // Taken before the reads: a write that lands after it makes the answer one not to keep.
    let tag = items::generation(&state.db);
    if let Some(page) = items::page_body(&state.db, &key, tag) {
        return Ok(page_answer(&headers, page));
    }
    let limit = request.limit;
    let mut items =
        items::page(&state.db, &request.query, request.after.as_ref(), limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|item| {
            let sort = request.query.sort;
            listing::encode_cursor(sort, &After::item(sort, item))
        })
    } else {
        None
    };
    let page = ItemPage {
        items: items.iter().map(ItemView::from).collect(),
        next_cursor,
    };
    let mut body = Vec::with_capacity(64 + 320 * page.items.len());
    serde_json::to_writer(&mut body, &page).expect("a page serialises");
    let page = RenderedPage {
        etag: page_etag(&body),
        body: Bytes::from(body),
    };
    items::keep_page_body(&state.db, key, tag, page.clone());
    Ok(page_answer(&headers, page))
}

/// A page's weak entity tag: a digest of its body, so any change to what the page shows (an
/// item on it written, an item inserted into it or deleted from it, another next cursor)
/// changes it, and the same page read by two processes has the same tag.
fn page_etag(body: &[u8]) -> Bytes {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let mut etag = String::with_capacity(4 + 32);
    etag.push_str("W/\"");
    for byte in &digest[..16] {
        etag.push_str(&format!("{byte:02x}"));
    }
    etag.push('"');
    Bytes::from(etag)
}

/// The page, or 304 when the client's `If-None-Match` names its tag.
fn page_answer(headers: &HeaderMap, page: RenderedPage) -> Response {
    let etag = HeaderValue::from_maybe_shared(page.etag.clone()).expect("etags are header text");
    let opaque = std::str::from_utf8(&page.etag[2..]).expect("etags are ASCII");
    let mut response = if if_none_match_hits(headers, opaque) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_answer(StatusCode::OK, page.body)
    };
    response.headers_mut().insert(header::ETAG, etag);
    response
}

/// A JSON answer whose body is already serialised.
fn json_answer(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// One item, with its `ETag`; 304 when `If-None-Match` matches.
#[utoipa::path(get, path = "/items/{item_id}", tag = "items",
    params(
        ("item_id" = i64, Path, description = "The item's id"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "Entity tags the client holds"),
        ("If-Modified-Since" = Option<String>, Header, nullable = false, description = "An HTTP-date; 304 when the item has not changed since (ignored when If-None-Match is sent)"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "Answer only if the item still has this ETag"),
        ("If-Unmodified-Since" = Option<String>, Header, nullable = false, description = "An HTTP-date; 412 when the item changed after it (ignored when If-Match is sent)"),
    ),
    responses(
        (status = 200, description = "The item", body = ItemView, headers(("ETag" = String, description = "Strong entity tag"), ("Last-Modified" = String, description = "When the item last changed (HTTP-date)"))),
        (status = 304, description = "The client's copy is current", headers(("ETag" = String, description = "Strong entity tag"))),
        (status = 404, response = ItemNotFound),
        (status = 412, response = NotMatched),
        (status = 422, response = BadId),
    ))]
pub async fn get_item(
    State(state): State<AppState>,
    IdPath(item_id): IdPath,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let item = items::find(&state.db, item_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Item not found"))?;
    let etag = item.etag();
    match evaluate(&headers, true, validators(&item, &etag)) {
        Precondition::Holds => Ok(send(StatusCode::OK, &item)),
        Precondition::Failed => Err(ApiError::precondition_failed()),
        Precondition::NotModified => {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            response.headers_mut().insert(
                header::ETAG,
                HeaderValue::from_str(&etag).expect("etags are header text"),
            );
            Ok(response)
        }
    }
}

fn validators<'a>(item: &Item, etag: &'a str) -> Validators<'a> {
    Validators {
        etag,
        last_modified: item.updated_at,
    }
}

/// Create an item owned by the caller. With `Idempotency-Key`, a repeat replays the answer.
#[utoipa::path(post, path = "/items", tag = "items",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~:/-]{1,255}$",
        description = "A token, or a structured-field string such as `\"8e03\"`; repeats replay the first answer for 24 hours"),
        ("Prefer" = Option<String>, Header, nullable = false, description = "`return=minimal`: the 201 comes without a body (RFC 7240)")),
    request_body(content = ItemInput, content_type = "application/json"),
    responses(
        (status = 201, description = "The item was created (with `Prefer: return=minimal`, no body and `Preference-Applied`)", body = ItemView,
            headers(("Location" = String, description = "/items/{id}"), ("ETag" = String, description = "Strong entity tag"),
                ("Last-Modified" = String, description = "When the item last changed (HTTP-date)")),
            links(("GetItemById" = (operation_id = "get_item", parameters(("item_id" = "$response.body#/id")))))),
        (status = 400, response = NotJson),
        (status = 401, response = Unauthorized),
        (status = 409, response = StillRunning),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJsonMediaType),
        (status = 422, description = "Invalid fields, or the key was used with another body", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn create_item(
    State(state): State<AppState>,
    user: AuthUser,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    prefer: PreferMinimal,
    JsonValue(body): JsonValue,
) -> ApiResult<Response> {
    let draft: ItemDraft = into_domain(&body)?;
    let key = key.as_ref().map(|key| KeyRef {
        user_id: user.id(),
        scope: "POST /items",
        key: key.as_str(),
    });
    if let Begin::Answer(response) = idem::begin(&state.db, key.as_ref(), &body).await? {
        return Ok(minimal(prefer, response));
    }
    let new_item = NewItem {
        owner_id: user.id(),
        draft,
        key: key.as_ref().map(KeyRef::to_owned_key),
    };
    match items::insert(&state.db, new_item, created_response).await {
        Ok(item) => Ok(minimal(prefer, send(StatusCode::CREATED, &item))),
        Err(error) => {
            idem::abandon(&state.db, key.as_ref()).await;
            Err(error.into())
        }
    }
}

fn created_response(item: &Item) -> StoredResponse {
    item_response(StatusCode::CREATED, item)
}

/// What a versioned write does to the current version.
enum Change<'a> {
    Replace(&'a (dyn Fn(&Item) -> ApiResult<ItemDraft> + Sync)),
    Delete,
}

/// Applies `change` to the current version after checking ownership and `If-Match`. The
/// store names the version it read in the statement (`where id = $1 and version = $2`);
/// when another writer got there first, with `If-Match` the client's tag is stale (412),
/// without it the item is read again and the change retried. Answers the new version, or
/// `None` once deleted.
async fn versioned_write(
    state: &AppState,
    user: &AuthUser,
    item_id: i64,
    headers: &HeaderMap,
    change: Change<'_>,
) -> ApiResult<Option<Item>> {
    const ATTEMPTS: usize = 5;
    if state.settings.require_if_match && !has_if_match(headers) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "This write must be conditional: send If-Match with the item's ETag",
        ));
    }
    for _ in 0..ATTEMPTS {
        let current = items::find(&state.db, item_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Item not found"))?;
        if !user.may_change(current.owner_id) {
            return Err(ApiError::forbidden("Not enough permissions"));
        }
        let etag = current.etag();
        if evaluate(headers, false, validators(&current, &etag)) != Precondition::Holds {
            return Err(ApiError::precondition_failed());
        }
        match &change {
            Change::Replace(make) => {
                let draft = make(&current)?;
                if let Some(item) =
                    items::update(&state.db, item_id, current.version, &draft).await?
                {
                    return Ok(Some(item));
                }
            }
            Change::Delete => {
                if items::delete(&state.db, item_id, current.version).await? {
                    return Ok(None);
                }
            }
        }
        if has_if_match(headers) {
            return Err(match items::find(&state.db, item_id).await? {
                Some(_) => ApiError::precondition_failed(),
                None => ApiError::not_found("Item not found"),
            });
        }
    }
    Err(ApiError::conflict(
        "The item is being changed by others, try again",
    ))
}

/// A new version made from the current one by `make`.
async fn write_item(
    state: &AppState,
    user: &AuthUser,
    item_id: i64,
    headers: &HeaderMap,
    make: impl Fn(&Item) -> ApiResult<ItemDraft> + Sync,
) -> ApiResult<Response> {
    versioned_write(state, user, item_id, headers, Change::Replace(&make))
        .await?
        .map(|item| send(StatusCode::OK, &item))
        .ok_or_else(ApiError::internal)
}

/// What a write to an existing item (`PUT`, `PATCH`) can be refused with, beside its 422.
struct ItemWriteRefusals;

impl IntoResponses for ItemWriteRefusals {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        BTreeMap::from([
            ("400".to_owned(), shared::<NotJson>()),
            ("401".to_owned(), shared::<Unauthorized>()),
            ("403".to_owned(), shared::<NotTheOwner>()),
            ("404".to_owned(), shared::<ItemNotFound>()),
            ("409".to_owned(), shared::<BusyWriters>()),
            ("412".to_owned(), shared::<NotMatched>()),
            ("413".to_owned(), shared::<TooLarge>()),
            ("428".to_owned(), shared::<ConditionRequired>()),
            ("415".to_owned(), shared::<NotJsonMediaType>()),
        ])
    }
}

/// Replace an item's fields. Owner or admin only.
#[utoipa::path(put, path = "/items/{item_id}", tag = "items",
    security(("bearer" = [])),
    params(
        ("item_id" = i64, Path, description = "The item's id"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "Write only if the item still has this ETag"),
        ("If-Unmodified-Since" = Option<String>, Header, nullable = false, description = "An HTTP-date; 412 when the item changed after it (ignored when If-Match is sent)"),
        ("Prefer" = Option<String>, Header, nullable = false, description = "`return=minimal`: answer 204 without a body (RFC 7240)"),
    ),
    request_body(content = ItemInput, content_type = "application/json"),
    responses(
        (status = 200, description = "The new version", body = ItemView, headers(("ETag" = String, description = "Strong entity tag"), ("Last-Modified" = String, description = "When the item last changed (HTTP-date)"))),
        (status = 204, description = "The new version was stored; `Prefer: return=minimal` asked for no body", headers(("ETag" = String, description = "Strong entity tag"), ("Preference-Applied" = String, description = "return=minimal"))),
        ItemWriteRefusals,
        (status = 422, description = "Invalid fields or id", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn replace_item(
    State(state): State<AppState>,
    user: AuthUser,
    IdPath(item_id): IdPath,
    headers: HeaderMap,
    prefer: PreferMinimal,
    Body(draft): Body<ItemDraft>,
) -> ApiResult<Response> {
    let written = write_item(&state, &user, item_id, &headers, |_| Ok(draft.clone())).await?;
    Ok(minimal(prefer, written))
}

/// Change some of an item's fields with a JSON merge patch (RFC 7396). Owner or admin only.
#[utoipa::path(patch, path = "/items/{item_id}", tag = "items",
    security(("bearer" = [])),
    params(
        ("item_id" = i64, Path, description = "The item's id"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "Write only if the item still has this ETag"),
        ("If-Unmodified-Since" = Option<String>, Header, nullable = false, description = "An HTTP-date; 412 when the item changed after it (ignored when If-Match is sent)"),
        ("Prefer" = Option<String>, Header, nullable = false, description = "`return=minimal`: answer 204 without a body (RFC 7240)"),
    ),
    request_body(content(
        (ItemPatch = "application/merge-patch+json"),
        (ItemPatch = "application/json"),
    )),
    responses(
        (status = 200, description = "The new version", body = ItemView, headers(("ETag" = String, description = "Strong entity tag"), ("Last-Modified" = String, description = "When the item last changed (HTTP-date)"))),
        (status = 204, description = "The new version was stored; `Prefer: return=minimal` asked for no body", headers(("ETag" = String, description = "Strong entity tag"), ("Preference-Applied" = String, description = "return=minimal"))),
        ItemWriteRefusals,
        (status = 422, description = "The patched item is invalid, or a bad id", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn patch_item(
    State(state): State<AppState>,
    user: AuthUser,
    IdPath(item_id): IdPath,
    headers: HeaderMap,
    prefer: PreferMinimal,
    JsonValue(patch): JsonValue,
) -> ApiResult<Response> {
    let written = write_item(&state, &user, item_id, &headers, |current| {
        let document = serde_json::json!({
            "name": current.name,
            "description": current.description,
            "price": current.price,
            "quantity": current.quantity,
        });
        into_domain(&merge_patch(document, &patch))
    })
    .await?;
    Ok(minimal(prefer, written))
}

/// Delete an item. Owner or admin only; answers 204 with no body.
#[utoipa::path(delete, path = "/items/{item_id}", tag = "items",
    security(("bearer" = [])),
    params(
        ("item_id" = i64, Path, description = "The item's id"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "Delete only if the item still has this ETag"),
        ("If-Unmodified-Since" = Option<String>, Header, nullable = false, description = "An HTTP-date; 412 when the item changed after it (ignored when If-Match is sent)"),
    ),
    responses(
        (status = 204, description = "The item was deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotTheOwner),
        (status = 404, response = ItemNotFound),
        (status = 409, response = BusyWriters),
        (status = 412, response = NotMatched),
        (status = 422, response = BadId),
        (status = 428, response = ConditionRequired),
    ))]
pub async fn delete_item(
    State(state): State<AppState>,
    user: AuthUser,
    IdPath(item_id): IdPath,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    versioned_write(&state, &user, item_id, &headers, Change::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}
