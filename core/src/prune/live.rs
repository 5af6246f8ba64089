//! The set of live blobs, kept on disk: a prune of a repository of ten
//! million blobs must not hold ten million ids in memory.

use std::collections::HashSet;
use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::error::{Error, Result};
use crate::id::BlobId;

const LIVE: TableDefinition<[u8; 32], ()> = TableDefinition::new("live");

/// Inserts are committed in batches of this many, so the write buffer
/// stays small.
const BATCH: usize = 50_000;

/// Memory redb may use for its page cache.
const CACHE_BYTES: usize = 16 << 20;

/// Blob ids, in an unnamed temporary redb file.
pub(crate) struct LiveSet {
    db: Database,
    /// Inserted since the last flush (at most [`BATCH`]).
    pending: HashSet<[u8; 32]>,
    len: u64,
}

fn error(e: impl std::fmt::Display) -> Error {
    Error::PruneScratch {
        reason: e.to_string(),
    }
}

impl LiveSet {
    /// An empty set in a temporary file under `dir`.
    pub(crate) fn new(dir: &Path) -> Result<LiveSet> {
        std::fs::create_dir_all(dir).map_err(error)?;
        let file = tempfile::tempfile_in(dir).map_err(error)?;
        let backend = redb::backends::FileBackend::new(file).map_err(error)?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(error)?;
        let txn = db.begin_write().map_err(error)?;
        txn.open_table(LIVE).map_err(error)?;
        txn.commit().map_err(error)?;
        Ok(LiveSet {
            db,
            pending: HashSet::new(),
            len: 0,
        })
    }

    /// Adds `id`; returns whether it was new.
    pub(crate) fn insert(&mut self, id: &BlobId) -> Result<bool> {
        if self.contains(id)? {
            return Ok(false);
        }
        self.pending.insert(id.0 .0);
        self.len += 1;
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(true)
    }

    /// Whether `id` is in the set.
    pub(crate) fn contains(&self, id: &BlobId) -> Result<bool> {
        if self.pending.contains(&id.0 .0) {
            return Ok(true);
        }
        let txn = self.db.begin_read().map_err(error)?;
        let table = txn.open_table(LIVE).map_err(error)?;
        Ok(table.get(&id.0 .0).map_err(error)?.is_some())
    }

    /// How many ids the set holds.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Writes the pending ids.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(error)?;
        {
            let mut table = txn.open_table(LIVE).map_err(error)?;
            for id in self.pending.drain() {
                table.insert(&id, ()).map_err(error)?;
            }
        }
        txn.commit().map_err(error)
    }
}
