//! larder's black-box suite: every test starts the real server on port 0 with a fresh
//! database and talks HTTP to it, once on SQLite and once on PostgreSQL.

mod helpers;
mod hooks;

mod auth;
mod cache;
mod faults;
mod foundation;
mod hostile;
mod items;
mod jobs;
mod limits;
mod openapi;
mod process;
mod storage;
mod throttles;
