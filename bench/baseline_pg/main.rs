//! The PostgreSQL benchmark's baseline (issue 22): the smallest axum server that does one
//! database round trip per request, the way the fastest Rust entries of TechEmpower's
//! single-query test do — tokio-postgres, a fixed set of connections chosen round-robin,
//! statements prepared once per connection, queries pipelined on each connection.
//!
//! - `GET /items/{id}`: one prepared single-row `select` by id, the row as JSON (404 if none);
//! - any other `GET` (the bench's `/items?limit=20` row): the same `select`, of an id drawn
//!   from the seeded range, so each read route is compared with one indexed read;
//! - `POST /items`: one prepared single-row `insert … returning`, 201 with the row;
//! - `/healthz` and anything else: `{"status":"ok"}`, as `bench/baseline` answers.
//!
//! `cargo run --release --example baseline_pg -- 127.0.0.1:8002 postgres://…/db [connections]`
//! The database must hold larder's schema (`larder migrate`), a user, and the seeded items.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::{Client, NoTls, Row, Statement};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SELECT: &str = "select id, name, description, price, quantity, owner_id, version, created_at, updated_at \
     from items where id = $1";
const INSERT: &str = "insert into items (name, description, price, quantity, owner_id, version, created_at, updated_at) \
     values ($1, $2, $3, $4, $5, 1, $6, $6) \
     returning id, name, description, price, quantity, owner_id, version, created_at, updated_at";

struct Connection {
    client: Client,
    select: Statement,
    insert: Statement,
}

struct Shared {
    connections: Vec<Connection>,
    next: AtomicUsize,
    owner_id: i64,
    first_id: i64,
    seeded: i64,
}

impl Shared {
    fn connection(&self) -> &Connection {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.connections[n % self.connections.len()]
    }
}

#[derive(Serialize)]
struct Item {
    id: i64,
    name: String,
    description: Option<String>,
    price: f64,
    quantity: i64,
    owner_id: i64,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for Item {
    fn from(row: Row) -> Self {
        Item {
            id: row.get(0),
            name: row.get(1),
            description: row.get(2),
            price: row.get(3),
            quantity: row.get(4),
            owner_id: row.get(5),
            version: row.get(6),
            created_at: row.get(7),
            updated_at: row.get(8),
        }
    }
}

#[derive(Deserialize)]
struct NewItem {
    name: String,
    description: Option<String>,
    price: f64,
    quantity: i64,
}

fn failed(error: tokio_postgres::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
}

async fn read(shared: &Shared, id: i64) -> Response {
    let connection = shared.connection();
    match connection
        .client
        .query_opt(&connection.select, &[&id])
        .await
    {
        Ok(Some(row)) => Json(Item::from(row)).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(error) => failed(error),
    }
}

async fn item(State(shared): State<Arc<Shared>>, Path(id): Path<i64>) -> Response {
    read(&shared, id).await
}

async fn other_read(State(shared): State<Arc<Shared>>) -> Response {
    let n = shared.next.load(Ordering::Relaxed) as i64;
    read(
        &shared,
        shared.first_id + n.wrapping_mul(7919).rem_euclid(shared.seeded),
    )
    .await
}

async fn create(State(shared): State<Arc<Shared>>, Json(new): Json<NewItem>) -> Response {
    let connection = shared.connection();
    let now = Utc::now();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &new.name,
        &new.description,
        &new.price,
        &new.quantity,
        &shared.owner_id,
        &now,
    ];
    match connection
        .client
        .query_one(&connection.insert, &params)
        .await
    {
        Ok(row) => (StatusCode::CREATED, Json(Item::from(row))).into_response(),
        Err(error) => failed(error),
    }
}

async fn ok() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:8002".to_owned());
    let url = args
        .next()
        .ok_or("usage: baseline_pg BIND DATABASE_URL [CONNECTIONS]")?;
    let count: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(8);
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("baseline_pg: connection ended: {error}");
            }
        });
        let select = client.prepare(SELECT).await?;
        let insert = client.prepare(INSERT).await?;
        connections.push(Connection {
            client,
            select,
            insert,
        });
    }
    let row = connections[0]
        .client
        .query_one(
            "select (select min(id) from users), coalesce(min(id), 1), count(*) from items",
            &[],
        )
        .await?;
    let owner_id: Option<i64> = row.get(0);
    let shared = Arc::new(Shared {
        connections,
        next: AtomicUsize::new(0),
        owner_id: owner_id.ok_or("the database has no user to own new items")?,
        first_id: row.get(1),
        seeded: row.get::<_, i64>(2).max(1),
    });
    let app = Router::new()
        .route("/healthz", get(ok))
        .route("/items/{id}", get(item))
        .route("/items", get(other_read).post(create))
        .fallback(ok)
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    eprintln!("baseline_pg listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
