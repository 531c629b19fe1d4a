//! SQLite listing pages read on the calling thread, not through sqlx.
//!
//! sqlx-sqlite runs each statement on its connection's own thread and sends every row back
//! over a channel. For an uncached listing page that hand-off, not SQLite, was the cost: at
//! 64 connections about 35% of the server's samples were task switching and the mutexes
//! between tokio's workers and those threads, and the pool's size did not change it
//! (bench/README.md, "Listing and export"). A listing's work is bounded (its price plan caps
//! the index steps at a few thousand), so it runs inline on the tokio worker, on one of these
//! read-only connections, held only for its statements.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use super::storage::{self, DatabaseFile, StorageProblem};

/// Read-only connections to the database file, one taken per read; none once closed.
pub struct DirectReaders {
    connections: Box<[Mutex<Option<Connection>>]>,
    next: AtomicUsize,
}

impl std::fmt::Debug for DirectReaders {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DirectReaders")
            .field("connections", &self.connections.len())
            .finish()
    }
}

impl DirectReaders {
    /// Opens `count` connections on the file larder opened (refused if the path now names
    /// another file, as the pools' connections are).
    pub fn open(file: &DatabaseFile, count: usize) -> Result<DirectReaders, StoreError> {
        let connections = (0..count.max(1))
            .map(|_| open_one(file.path()))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(store_error)?;
        file.check().map_err(|problem| {
            StoreError::Fault(sqlx::Error::Io(std::io::Error::other(problem)))
        })?;
        Ok(DirectReaders {
            connections: connections
                .into_iter()
                .map(|connection| Mutex::new(Some(connection)))
                .collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `read` on a free connection (each tokio worker holds at most one at a time, so
    /// one is free unless there are more workers than connections; then it waits for one).
    pub fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let count = self.connections.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..count).find_map(|k| self.connections[(start + k) % count].try_lock().ok());
        let held = match free {
            Some(held) => held,
            None => self.connections[start % count]
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        };
        match held.as_ref() {
            Some(connection) => read(connection).map_err(store_error),
            None => Err(StoreError::Unavailable(sqlx::Error::PoolClosed)),
        }
    }

    /// Closes every connection. Called before the writer closes: the last connection to
    /// close checkpoints the WAL into the database file, and a read-only one cannot.
    pub fn close(&self) {
        for slot in &self.connections {
            drop(slot.lock().unwrap_or_else(PoisonError::into_inner).take());
        }
    }
}

fn open_one(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A reader waits only while a WAL is being recovered; the same bound as the pools'.
    connection.busy_timeout(Duration::from_secs(5))?;
    // A small page cache, as the pool's readers have: the OS caches the file.
    connection.pragma_update(None, "cache_size", -512)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// A rusqlite error as the store reports it: the same storage problems as sqlx's errors
/// (a full disk, a vanished or failing file), a busy database as unavailable.
fn store_error(error: rusqlite::Error) -> StoreError {
    let code = match &error {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.extended_code),
        _ => None,
    };
    let wrapped = sqlx::Error::Io(std::io::Error::other(error));
    match code.and_then(storage::sqlite_problem) {
        Some(StorageProblem::Full) => StoreError::Full(wrapped),
        Some(StorageProblem::Fault) => StoreError::Fault(wrapped),
        None if code.is_some_and(super::sqlite_busy) => StoreError::Unavailable(wrapped),
        None => StoreError::Database(wrapped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(extended_code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(extended_code), None)
    }

    #[test]
    fn sqlite_failures_are_told_apart_as_sqlx_errors_are() {
        // SQLITE_FULL, SQLITE_IOERR_READ, SQLITE_READONLY_DBMOVED, SQLITE_BUSY, SQLITE_ERROR.
        assert!(matches!(store_error(failure(13)), StoreError::Full(_)));
        assert!(matches!(store_error(failure(266)), StoreError::Fault(_)));
        assert!(matches!(store_error(failure(1032)), StoreError::Fault(_)));
        assert!(matches!(
            store_error(failure(5)),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(store_error(failure(1)), StoreError::Database(_)));
        assert!(matches!(
            store_error(rusqlite::Error::InvalidColumnIndex(9)),
            StoreError::Database(_)
        ));
    }

    #[test]
    fn reads_run_on_the_file_and_refuse_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("larder.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "pragma journal_mode = wal; create table t (x); insert into t values (7);",
            )
            .unwrap();
        let readers = DirectReaders::open(&DatabaseFile::open(&path).unwrap(), 2).unwrap();
        let x: i64 = readers
            .read(|connection| connection.query_row("select x from t", [], |row| row.get(0)))
            .unwrap();
        assert_eq!(x, 7);
        let refused = readers.read(|connection| connection.execute("insert into t values (8)", []));
        assert!(matches!(refused, Err(StoreError::Fault(_))), "{refused:?}");
    }
}
