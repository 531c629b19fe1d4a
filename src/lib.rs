//! larder: an items-and-users JSON API that answers with the status codes the HTTP standards ask for.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod limits;
pub mod server;
pub mod store;
pub mod telemetry;
