//! The durable job queue (see `crate::jobs`).
