//! A set of blob ids kept on disk (the trees a walk has seen): a walk of
//! a repository of millions of directories must not hold their ids in
//! memory.

use std::collections::HashSet;
use std::path::Path;

use redb::{Database, ReadOnlyTable, ReadableDatabase, TableDefinition};

use crate::error::{Error, Result};
use crate::id::BlobId;

const BLOBS: TableDefinition<[u8; 32], ()> = TableDefinition::new("blobs");

/// Inserts are committed in batches of this many, so the write buffer
/// stays small.
const BATCH: usize = 50_000;

/// Memory redb may use for its page cache.
const CACHE_BYTES: usize = 16 << 20;

/// Blob ids in an unnamed temporary redb file. Lookups share one read
/// transaction until the next write.
pub(crate) struct BlobSet {
    db: Database,
    /// Inserted since the last flush (at most [`BATCH`]).
    pending: HashSet<[u8; 32]>,
    reader: Option<ReadOnlyTable<[u8; 32], ()>>,
}

fn error(e: impl std::fmt::Display) -> Error {
    Error::Scratch {
        reason: e.to_string(),
    }
}

impl BlobSet {
    /// An empty set in a temporary file under `dir`.
    pub(crate) fn new(dir: &Path) -> Result<BlobSet> {
        std::fs::create_dir_all(dir).map_err(error)?;
        let file = tempfile::tempfile_in(dir).map_err(error)?;
        let backend = redb::backends::FileBackend::new(file).map_err(error)?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(error)?;
        let txn = db.begin_write().map_err(error)?;
        txn.open_table(BLOBS).map_err(error)?;
        txn.commit().map_err(error)?;
        Ok(BlobSet {
            db,
            pending: HashSet::new(),
            reader: None,
        })
    }

    /// Adds `id`; returns whether it was new.
    pub(crate) fn insert(&mut self, id: &BlobId) -> Result<bool> {
        if self.contains(id)? {
            return Ok(false);
        }
        self.pending.insert(id.0 .0);
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(true)
    }

    /// Whether `id` is present.
    pub(crate) fn contains(&mut self, id: &BlobId) -> Result<bool> {
        if self.pending.contains(&id.0 .0) {
            return Ok(true);
        }
        if self.reader.is_none() {
            let txn = self.db.begin_read().map_err(error)?;
            self.reader = Some(txn.open_table(BLOBS).map_err(error)?);
        }
        let table = self.reader.as_ref().expect("just opened");
        Ok(table.get(&id.0 .0).map_err(error)?.is_some())
    }

    /// Writes the pending ids.
    fn flush(&mut self) -> Result<()> {
        self.reader = None;
        let txn = self.db.begin_write().map_err(error)?;
        {
            let mut table = txn.open_table(BLOBS).map_err(error)?;
            for id in self.pending.drain() {
                table.insert(&id, ()).map_err(error)?;
            }
        }
        txn.commit().map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn holds_what_was_inserted_across_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = BlobSet::new(dir.path()).unwrap();
        let id = |n: u32| BlobId(Id::of_bytes(&n.to_le_bytes()));
        for n in 0..(BATCH as u32 + 10) {
            assert!(set.insert(&id(n)).unwrap());
        }
        assert!(!set.insert(&id(3)).unwrap());
        assert!(!set.insert(&id(BATCH as u32 + 9)).unwrap());
        assert!(!set.contains(&id(u32::MAX)).unwrap());
    }
}
