//! Tree blobs kept on this host, for stores where every read is a round
//! trip (object storage): `ls`, `diff`, `find`, a restore's walk and the
//! unchanged-file detection of a backup read trees, often the same ones,
//! and a tree read from storage costs a request.
//!
//! The cache holds trees as they are stored, sealed: it tells whoever
//! reads it no more than the repository does, and every cached tree is
//! authenticated and checked against its id when it is used, like one
//! read from storage. An entry that fails is dropped and the tree read
//! from storage. The cache is a redb file beside the index cache; it may
//! be deleted at any time, and if it cannot be opened (another process
//! holds it, say) the run reads from storage instead.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::id::BlobId;
use crate::index::{catch_redb, open_cache_file, open_database, OpenFailure};

/// Tree blob id → its stored bytes (sealed, as in its pack).
const SEALED_TREES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("sealed_trees.v1");

/// The cache of sealed tree blobs of one repository.
pub(crate) struct TreeCache {
    db: Database,
    /// Set once a write failed (a full disk, say): from then on the run
    /// reads trees from storage, rather than fetching whole packs' trees
    /// for a cache that does not keep them.
    failed: AtomicBool,
}

impl TreeCache {
    /// Opens (or creates) the cache file at `path`, replacing one that
    /// cannot be used; `None` if that fails too, or another process has it
    /// open: then trees are read from storage.
    pub(crate) fn open(path: &Path) -> Option<TreeCache> {
        match TreeCache::try_open(path) {
            Ok(cache) => Some(cache),
            Err(OpenFailure::Busy) => None,
            Err(OpenFailure::Damaged(_) | OpenFailure::Unusable(_)) => {
                std::fs::remove_file(path).ok()?;
                TreeCache::try_open(path).ok()
            }
        }
    }

    /// A cache for one run, in an unnamed temporary file gone with it: for
    /// a check, which must judge the trees storage holds, but may still
    /// read each pack's trees together.
    /// Lives in `dir` (beside the index cache, rather than a `/tmp` that
    /// may be memory).
    pub(crate) fn temporary(dir: &Path) -> Option<TreeCache> {
        let file = tempfile::tempfile_in(dir).ok()?;
        TreeCache::with_database(open_database(file).ok()?).ok()
    }

    fn try_open(path: &Path) -> Result<TreeCache, OpenFailure> {
        TreeCache::with_database(open_cache_file(path).and_then(open_database)?)
    }

    fn with_database(db: Database) -> Result<TreeCache, OpenFailure> {
        let cache = TreeCache {
            db,
            failed: AtomicBool::new(false),
        };
        let ready = cache.write(|txn| {
            txn.open_table(SEALED_TREES)?;
            Ok(())
        });
        match ready {
            true => Ok(cache),
            false => Err(OpenFailure::Damaged("tables".into())),
        }
    }

    /// Whether the cache still takes entries.
    pub(crate) fn is_usable(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }

    /// The stored bytes of tree `id`, if cached.
    pub(crate) fn get(&self, id: &BlobId) -> Option<Vec<u8>> {
        let read = catch_redb(|| -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(SEALED_TREES)?;
            Ok(table.get(&id.0 .0)?.map(|value| value.value().to_vec()))
        });
        read.ok()?.ok()?
    }

    /// Caches the stored bytes of each tree in `trees`.
    pub(crate) fn insert(&self, trees: &[(BlobId, &[u8])]) {
        if trees.is_empty() {
            return;
        }
        self.write(|txn| {
            let mut table = txn.open_table(SEALED_TREES)?;
            for (id, stored) in trees {
                table.insert(&id.0 .0, *stored)?;
            }
            Ok(())
        });
    }

    /// Drops the entry of tree `id` (it failed to open).
    pub(crate) fn remove(&self, id: &BlobId) {
        self.write(|txn| {
            txn.open_table(SEALED_TREES)?.remove(&id.0 .0)?;
            Ok(())
        });
    }

    /// Runs `op` in a write transaction committed without waiting for the
    /// disk: a crash loses recent entries, never the file's consistency.
    /// Whether it committed.
    fn write(&self, op: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>) -> bool {
        let done = catch_redb(|| -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::None)?;
            op(&txn)?;
            txn.commit()?;
            Ok(())
        });
        let committed = matches!(done, Ok(Ok(())));
        if !committed {
            self.failed.store(true, Ordering::Relaxed);
        }
        committed
    }
}

impl Drop for TreeCache {
    /// Makes what this run cached durable, for the next run.
    fn drop(&mut self) {
        let _ = catch_redb(|| -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            txn.commit()?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn entries_survive_a_reopen_and_can_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trees.redb");
        let one = BlobId(Id([1; 32]));
        let two = BlobId(Id([2; 32]));
        {
            let cache = TreeCache::open(&path).unwrap();
            cache.insert(&[(one, b"first"), (two, b"second")]);
            assert_eq!(cache.get(&one).as_deref(), Some(&b"first"[..]));
            cache.remove(&one);
            assert_eq!(cache.get(&one), None);
        }
        let reopened = TreeCache::open(&path).unwrap();
        assert_eq!(reopened.get(&two).as_deref(), Some(&b"second"[..]));
        assert_eq!(reopened.get(&one), None);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trees.redb");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let cache = TreeCache::open(&path).unwrap();
        let id = BlobId(Id([3; 32]));
        assert_eq!(cache.get(&id), None);
        cache.insert(&[(id, b"third")]);
        assert_eq!(cache.get(&id).as_deref(), Some(&b"third"[..]));
    }
}
