//! Domain types: values that cannot be constructed invalid. No I/O here.

pub mod error;
pub mod fields;
pub mod item;
pub mod job;
pub mod time;
pub mod user;
