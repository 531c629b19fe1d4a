//! The benchmark's baseline: the smallest axum server that answers a small JSON body.
//!
//! It answers every method and path with `{"status":"ok"}`, so the same wrk scripts
//! (headers, bodies, random paths) drive it and larder alike; the ratio larder/baseline
//! is what the HTTP stack and the machine leave for larder's own work. Same runtime
//! (tokio multi-thread), same allocator (mimalloc) and same release profile as larder.
//!
//! `cargo run --release --example baseline -- 127.0.0.1:8001`

use axum::Json;
use axum::Router;
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn answer() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8001".to_owned());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    eprintln!("baseline listening on {}", listener.local_addr()?);
    axum::serve(listener, Router::new().fallback(answer)).await
}
