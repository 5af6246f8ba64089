//! The index: where each blob lives (SPEC.md §12).
//!
//! Every write session stores one or more index segments in `index/`,
//! sealed with the repository's index key. The local cache is a redb
//! database kept in step with those segments on open: new segments are
//! added, and if one vanished or the database is damaged it is rebuilt from
//! scratch. Lookups go to redb, so memory does not grow with the repository.
//!
//! This module opens the cache: its file, recreated if damaged, or when
//! the file cannot be used a private temporary database, on disk or in
//! memory. The parts:
//!
//! - `tables`: the cache's tables, how a blob's location and a pack are
//!   stored in them, and absorbing segments into them and looking blobs up.
//! - `redb_guard`: calls into redb with its panics turned into errors, as a
//!   damaged file can make redb panic.

mod redb_guard;
mod tables;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use redb::{Database, MultimapTableHandle, TableHandle};

use crate::error::{Error, Result};
use crate::id::{PackId, SessionId};
use crate::object::pack::PackEntry;
pub(crate) use redb_guard::catch_redb;
use tables::{open_tables, TABLE_NAMES};

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// The session whose key sealed it.
    pub session: SessionId,
    /// Its entry in that pack.
    pub entry: PackEntry,
}

/// Memory redb may use for its page cache and write buffer. redb's default
/// (1 GiB) would let memory grow with the repository; with this bound a
/// lookup in a large index reads pages through the operating system's
/// cache instead.
const CACHE_BYTES: usize = 16 << 20;

/// Where an open cache's database lives.
enum Storage {
    /// The cache file itself.
    File,
    /// A private file without a name, gone when the cache is dropped.
    Temporary,
    /// Memory only: nothing on disk could be used. It grows with the
    /// index, so it is the last resort.
    Memory,
}

/// The local redb cache of the repository's index.
///
/// Every call into redb goes through [`IndexCache::guarded`]: a damaged
/// file can make redb panic as well as fail, and either way the caller gets
/// an [`Error::IndexCache`], which the repository answers by rebuilding.
pub struct IndexCache {
    db: Database,
    path: PathBuf,
    storage: Storage,
}

/// An opened cache, and what the user should be told about how it was
/// opened (a rebuild, or a fallback to a temporary database).
pub struct OpenedCache {
    /// The cache, ready for the sync.
    pub cache: IndexCache,
    /// One line for the user, if the cache is not the usual file.
    pub notice: Option<String>,
}

/// Why the cache file could not be opened.
pub(crate) enum OpenFailure {
    /// Another process has it open.
    Busy,
    /// The file is not a usable database: replace it.
    Damaged(String),
    /// The folder or file cannot be created or written.
    Unusable(String),
}

/// Creates the cache's folder (0700) and opens or creates its file (0600),
/// whatever the umask: the cache tells which blobs a repository holds.
pub(crate) fn open_cache_file(path: &Path) -> std::result::Result<std::fs::File, OpenFailure> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| OpenFailure::Unusable(format!("{}: {e}", dir.display())))?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| OpenFailure::Unusable(format!("{}: {e}", path.display())))
}

/// Opens a redb database in `file`.
pub(crate) fn open_database(file: std::fs::File) -> std::result::Result<Database, OpenFailure> {
    let opened = catch_redb(|| {
        let backend = redb::backends::FileBackend::new(file)?;
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(OpenFailure::Busy),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))) => {
            Err(OpenFailure::Unusable(e.to_string()))
        }
        Ok(Err(e)) => Err(OpenFailure::Damaged(e.to_string())),
        Err(panic) => Err(OpenFailure::Damaged(panic)),
    }
}

impl IndexCache {
    /// Opens (or creates) the cache at `path`. It fails only if not even a
    /// database in memory can be made: the cache never stops a command. A
    /// damaged file is replaced (and the sync refills it); a file held by
    /// another process is left alone and a private
    /// temporary database used instead; if nothing can be created at
    /// `path`, a temporary database elsewhere (or in memory) is used.
    pub fn open(path: &Path) -> Result<OpenedCache> {
        let first = open_cache_file(path).and_then(open_database);
        let db = match first {
            Ok(db) => IndexCache::ready(db, path, Storage::File),
            Err(failure) => Err(failure),
        };
        let failure = match db {
            Ok(cache) => {
                return Ok(OpenedCache {
                    cache,
                    notice: None,
                })
            }
            Err(failure) => failure,
        };
        match failure {
            OpenFailure::Busy => {
                let cache = IndexCache::temporary(path, path.parent())?;
                Ok(OpenedCache {
                    cache,
                    notice: Some(format!(
                        "index cache {} is in use by another process; \
                         using a private temporary index for this run (slower)",
                        path.display()
                    )),
                })
            }
            OpenFailure::Damaged(reason) => IndexCache::recreate(path, &reason),
            OpenFailure::Unusable(reason) => IndexCache::fallback(path, &reason),
        }
    }

    /// Deletes the cache file at `path` and creates it afresh (to be
    /// refilled by a sync), or falls back to a temporary database if that
    /// fails. `reason` says what was wrong with the old one.
    pub fn recreate(path: &Path, reason: &str) -> Result<OpenedCache> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return IndexCache::fallback(path, &format!("{reason}; removing it: {e}")),
        }
        let fresh = open_cache_file(path)
            .and_then(open_database)
            .and_then(|db| IndexCache::ready(db, path, Storage::File));
        match fresh {
            Ok(cache) => Ok(OpenedCache {
                cache,
                notice: Some(format!(
                    "index cache {}: {reason}; rebuilt from the repository's index",
                    path.display()
                )),
            }),
            Err(OpenFailure::Busy) => IndexCache::fallback(path, reason),
            Err(OpenFailure::Damaged(again) | OpenFailure::Unusable(again)) => {
                IndexCache::fallback(path, &format!("{reason}; then {again}"))
            }
        }
    }

    /// A fresh, empty cache in place of this one, which failed for
    /// `reason`: the file recreated, or for a temporary stand-in, another.
    pub fn rebuilt(&self, reason: &str) -> Result<OpenedCache> {
        match self.storage {
            Storage::File => IndexCache::recreate(&self.path, reason),
            Storage::Temporary | Storage::Memory => IndexCache::fallback(&self.path, reason),
        }
    }

    /// A temporary database in place of the cache at `path`, which cannot
    /// be used for `reason`: in the system's temporary folder, or in memory.
    pub fn fallback(path: &Path, reason: &str) -> Result<OpenedCache> {
        let notice = Some(format!(
            "index cache {}: {reason}; using a temporary index for this run (slower)",
            path.display()
        ));
        let cache = IndexCache::temporary(path, Some(&std::env::temp_dir()))
            .or_else(|_| IndexCache::in_memory(path))?;
        Ok(OpenedCache { cache, notice })
    }

    /// A private temporary database in `dir`, deleted on drop; in memory if
    /// no file can be created there.
    fn temporary(path: &Path, dir: Option<&Path>) -> Result<IndexCache> {
        // Unnamed (O_TMPFILE, or unlinked at once): however the process
        // ends, nothing is left behind.
        let Some(file) = dir.and_then(|dir| tempfile::tempfile_in(dir).ok()) else {
            return IndexCache::in_memory(path);
        };
        match open_database(file) {
            Ok(db) => IndexCache::ready(db, path, Storage::Temporary)
                .or_else(|_| IndexCache::in_memory(path)),
            Err(_) => IndexCache::in_memory(path),
        }
    }

    /// A database in memory, for when no file can be used.
    fn in_memory(path: &Path) -> Result<IndexCache> {
        let error = |reason: String| Error::IndexCache {
            path: path.to_path_buf(),
            reason,
        };
        let db = catch_redb(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(redb::backends::InMemoryBackend::new())
        })
        .map_err(error)?
        .map_err(|e| error(e.to_string()))?;
        IndexCache::ready(db, path, Storage::Memory).map_err(|failure| match failure {
            OpenFailure::Busy => error("busy".into()),
            OpenFailure::Damaged(reason) | OpenFailure::Unusable(reason) => error(reason),
        })
    }

    /// A cache without its tables, so that every lookup fails: for tests of
    /// what the repository does when the cache breaks under it.
    #[cfg(test)]
    pub(crate) fn without_tables(path: &Path) -> IndexCache {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        IndexCache {
            db,
            path: path.to_path_buf(),
            storage: Storage::Memory,
        }
    }

    /// Makes sure the tables exist. Tables of an older layout are deleted
    /// (the sync then refills the cache) and their space compacted away.
    fn ready(
        db: Database,
        path: &Path,
        storage: Storage,
    ) -> std::result::Result<IndexCache, OpenFailure> {
        let mut cache = IndexCache {
            db,
            path: path.to_path_buf(),
            storage,
        };
        let migrated = cache
            .guarded(|db| {
                let txn = db.begin_write()?;
                let stale: Vec<_> = txn
                    .list_tables()?
                    .filter(|table| !TABLE_NAMES.contains(&table.name()))
                    .collect();
                let stale_multimaps: Vec<_> = txn
                    .list_multimap_tables()?
                    .filter(|table| !TABLE_NAMES.contains(&table.name()))
                    .collect();
                let migrated = !stale.is_empty() || !stale_multimaps.is_empty();
                for table in stale {
                    txn.delete_table(table)?;
                }
                for table in stale_multimaps {
                    txn.delete_multimap_table(table)?;
                }
                open_tables(&txn)?;
                txn.commit()?;
                Ok(migrated)
            })
            .map_err(|e| OpenFailure::Damaged(e.to_string()))?;
        if migrated {
            // Best effort: a cache that keeps the old space still works.
            let _ = catch_redb(|| cache.db.compact());
        }
        Ok(cache)
    }

    /// Runs `op` on the database. A redb error or a panic inside redb (which
    /// a damaged file can cause) becomes an [`Error::IndexCache`].
    pub(super) fn guarded<T>(
        &self,
        op: impl FnOnce(&Database) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        match catch_redb(|| op(&self.db)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(e)),
            Err(panic) => Err(self.error(panic)),
        }
    }

    pub(super) fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::IndexCache {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Whether this cache is the file at its path, rather than a temporary
    /// stand-in.
    pub fn is_persistent(&self) -> bool {
        matches!(self.storage, Storage::File)
    }

    /// The cache file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
