//! Storage faults: a full disk, and a SQLite file that is deleted, replaced or unwritable.
//!
//! Two promises rest on this module (docs/reliability.md):
//! - a write answered 2xx is in the file larder's path names. The SQLite writer checks, in a
//!   commit hook, that the database file and its WAL are still the files it opened; if not,
//!   the hook turns the commit into a rollback, so the write fails before it is acknowledged.
//! - `/readyz` says when writes cannot succeed. A storage fault marks the database unhealthy;
//!   only a write that succeeds afterwards (the readiness probe's) clears it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{StoreError, StoreResult};

/// What the last storage fault was, until a write succeeds again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageProblem {
    /// The disk (or PostgreSQL's) is full: 507 to writes.
    Full,
    /// The file is gone, replaced, read-only or failing: 503 to writes.
    Fault,
}

const HEALTHY: u8 = 0;
const FULL: u8 = 1;
const FAULT: u8 = 2;

/// Whether writes can be expected to succeed; shared by every clone of a `Db`.
#[derive(Debug, Default)]
pub struct StorageHealth {
    state: AtomicU8,
    /// The SQLite file, if the database is one.
    file: Option<DatabaseFile>,
}

impl StorageHealth {
    pub fn new(file: Option<DatabaseFile>) -> StorageHealth {
        StorageHealth {
            state: AtomicU8::new(HEALTHY),
            file,
        }
    }

    pub fn file(&self) -> Option<&DatabaseFile> {
        self.file.as_ref()
    }

    /// Checked before each write: a write is not even tried on a file that is no longer the
    /// one larder opened (a connection opened on a replacement would share its WAL and
    /// shared-memory files with the connections still on the original).
    pub fn before_write(&self) -> StoreResult<()> {
        let Some(Err(problem)) = self.file.as_ref().map(DatabaseFile::check) else {
            return Ok(());
        };
        let refused = Err(StoreError::Fault(sqlx::Error::Io(std::io::Error::other(
            problem,
        ))));
        self.observe(&refused);
        refused
    }

    /// The outcome of a write, told truly and recorded. A write that failed for another
    /// reason while the database file is no longer the one larder opened failed because of
    /// that (a replacement file may lack the tables): a storage fault too.
    pub fn settle<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        let result = match (result, &self.file) {
            (Err(StoreError::Database(cause)), Some(file)) if file.check().is_err() => {
                Err(StoreError::Fault(cause))
            }
            (result, _) => result,
        };
        self.observe(&result);
        result
    }

    /// Records the outcome of a write: a storage fault marks the database unhealthy (logged
    /// once, when it starts), anything else leaves the state as it is.
    pub fn observe<T>(&self, result: &StoreResult<T>) {
        let (state, problem) = match result {
            Err(StoreError::Full(cause)) => (FULL, cause.to_string()),
            Err(StoreError::Fault(cause)) => (FAULT, cause.to_string()),
            _ => return,
        };
        if self.state.swap(state, Ordering::AcqRel) != state {
            let what = if state == FULL {
                "storage is full: writes are refused with 507 until space is freed"
            } else {
                "storage fault: writes are refused with 503 until the database file is writable again"
            };
            tracing::error!(error = %problem, "{what}");
        }
    }

    /// A write succeeded: storage is healthy again.
    pub fn recovered(&self) {
        if self.state.swap(HEALTHY, Ordering::AcqRel) != HEALTHY {
            tracing::warn!("storage is writable again");
        }
    }

    pub fn problem(&self) -> Option<StorageProblem> {
        match self.state.load(Ordering::Acquire) {
            FULL => Some(StorageProblem::Full),
            FAULT => Some(StorageProblem::Fault),
            _ => None,
        }
    }
}

/// Which file a path named when larder opened it: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
}

impl Identity {
    fn of(path: &Path) -> std::io::Result<Identity> {
        let metadata = std::fs::metadata(path)?;
        Ok(Identity {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }
}

/// The SQLite database file as larder opened it. A write is acknowledged only while the path
/// still names that file (and its WAL the WAL the writer opened).
#[derive(Debug, Clone)]
pub struct DatabaseFile {
    path: Arc<PathBuf>,
    wal: Arc<PathBuf>,
    identity: Identity,
}

impl DatabaseFile {
    /// Remembers which file `path` names now (the database must exist).
    pub fn open(path: &Path) -> std::io::Result<DatabaseFile> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(DatabaseFile {
            identity: Identity::of(path)?,
            path: Arc::new(path.to_path_buf()),
            wal: Arc::new(PathBuf::from(wal)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok` while the path names the file larder opened; else why not, in one sentence.
    pub fn check(&self) -> Result<(), String> {
        match Identity::of(&self.path) {
            Ok(identity) if identity == self.identity => Ok(()),
            Ok(_) => Err(format!(
                "the database file {} was replaced by another file",
                self.path.display()
            )),
            Err(error) => Err(format!(
                "the database file {} is gone: {error}",
                self.path.display()
            )),
        }
    }

    /// The commit hook of one writer connection: SQLite calls it just before each commit, on
    /// the connection's thread; returning false turns the commit into a rollback, which the
    /// committing statement reports as `SQLITE_CONSTRAINT_COMMITHOOK` (a storage fault).
    /// The WAL's identity is taken at the connection's first commit: SQLite deletes the WAL
    /// when the last connection closes, so a later connection may rightly have a new one.
    pub fn commit_hook(&self) -> impl FnMut() -> bool + Send + 'static {
        let file = self.clone();
        let mut wal: Option<Identity> = None;
        move || {
            if let Err(problem) = file.check() {
                tracing::debug!(%problem, "commit refused");
                return false;
            }
            match (Identity::of(&file.wal), wal) {
                (Ok(now), None) => {
                    wal = Some(now);
                    true
                }
                (Ok(now), Some(opened)) => now == opened,
                (Err(_), _) => false,
            }
        }
    }
}

/// SQLite's extended result code for a commit a commit hook turned into a rollback.
pub(crate) const SQLITE_CONSTRAINT_COMMITHOOK: i32 = 531;

/// How a database error bears on storage, if it does.
pub(crate) fn storage_problem(error: &sqlx::Error) -> Option<StorageProblem> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return sqlite_problem(db.code().and_then(|c| c.parse().ok()).unwrap_or(0));
    }
    match db.code().as_deref() {
        // PostgreSQL: disk_full, and io_error.
        Some("53100") => Some(StorageProblem::Full),
        Some("58030") => Some(StorageProblem::Fault),
        _ => None,
    }
}

/// The storage problem an SQLite (extended) result code names, if any.
pub(crate) fn sqlite_problem(code: i32) -> Option<StorageProblem> {
    match code & 0xff {
        // SQLITE_FULL: the unix VFS reports a short write with ENOSPC so.
        13 => Some(StorageProblem::Full),
        // SQLITE_READONLY (incl. READONLY_DBMOVED), SQLITE_IOERR (EIO, EROFS, a failed
        // fsync...), SQLITE_CANTOPEN, SQLITE_NOTADB (the path now names another file).
        8 | 10 | 14 | 26 => Some(StorageProblem::Fault),
        _ if code == SQLITE_CONSTRAINT_COMMITHOOK => Some(StorageProblem::Fault),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_replaced_or_removed_at_its_path_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("larder.db");
        std::fs::write(&path, b"one").unwrap();
        let _held = std::fs::File::open(&path).unwrap();
        let file = DatabaseFile::open(&path).unwrap();
        assert_eq!(file.check(), Ok(()));
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(file.check().unwrap_err().contains("replaced"));
        std::fs::remove_file(&path).unwrap();
        assert!(file.check().unwrap_err().contains("is gone"));
    }

    #[test]
    fn the_commit_hook_refuses_once_the_wal_is_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("larder.db");
        std::fs::write(&path, b"db").unwrap();
        std::fs::write(dir.path().join("larder.db-wal"), b"wal").unwrap();
        // Held open, as SQLite holds it: its inode number cannot be reused meanwhile.
        let _held = std::fs::File::open(dir.path().join("larder.db-wal")).unwrap();
        let file = DatabaseFile::open(&path).unwrap();
        let mut hook = file.commit_hook();
        assert!(hook());
        assert!(hook());
        std::fs::remove_file(dir.path().join("larder.db-wal")).unwrap();
        assert!(!hook());
        std::fs::write(dir.path().join("larder.db-wal"), b"new wal").unwrap();
        assert!(!hook());
    }

    #[test]
    fn health_is_marked_by_storage_faults_only_and_cleared_by_a_write() {
        let health = StorageHealth::default();
        health.observe::<()>(&Err(StoreError::Database(sqlx::Error::RowNotFound)));
        assert_eq!(health.problem(), None);
        health.observe::<()>(&Err(StoreError::Full(sqlx::Error::RowNotFound)));
        assert_eq!(health.problem(), Some(StorageProblem::Full));
        health.observe::<()>(&Ok(()));
        assert_eq!(health.problem(), Some(StorageProblem::Full));
        health.recovered();
        assert_eq!(health.problem(), None);
    }
}
