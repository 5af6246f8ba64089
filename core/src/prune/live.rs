//! Blob ids kept on disk: a prune of a repository of ten million blobs
//! must not hold ten million ids in memory.

use std::collections::HashMap;
use std::path::Path;

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use crate::error::{Error, Result};
use crate::id::BlobId;

const BLOBS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("blobs");

/// Inserts are committed in batches of this many, so the write buffer
/// stays small.
const BATCH: usize = 50_000;

/// Memory redb may use for its page cache.
const CACHE_BYTES: usize = 16 << 20;

/// A map from blob ids to short values (empty for a set), in an unnamed
/// temporary redb file. Lookups share one read transaction until the next
/// write.
pub(crate) struct BlobMap {
    db: Database,
    /// Inserted since the last flush (at most [`BATCH`]).
    pending: HashMap<[u8; 32], Vec<u8>>,
    reader: Option<ReadOnlyTable<[u8; 32], &'static [u8]>>,
    len: u64,
}

fn error(e: impl std::fmt::Display) -> Error {
    Error::PruneScratch {
        reason: e.to_string(),
    }
}

impl BlobMap {
    /// An empty map in a temporary file under `dir`.
    pub(crate) fn new(dir: &Path) -> Result<BlobMap> {
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
        Ok(BlobMap {
            db,
            pending: HashMap::new(),
            reader: None,
            len: 0,
        })
    }

    /// Adds `id` with `value` unless it is present; returns whether it was
    /// new.
    pub(crate) fn insert(&mut self, id: &BlobId, value: &[u8]) -> Result<bool> {
        if self.contains(id)? {
            return Ok(false);
        }
        self.pending.insert(id.0 .0, value.to_vec());
        self.len += 1;
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(true)
    }

    /// Whether `id` is present.
    pub(crate) fn contains(&mut self, id: &BlobId) -> Result<bool> {
        Ok(self.get(id)?.is_some())
    }

    /// The value stored for `id`.
    pub(crate) fn get(&mut self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.pending.get(&id.0 .0) {
            return Ok(Some(value.clone()));
        }
        if self.reader.is_none() {
            let txn = self.db.begin_read().map_err(error)?;
            self.reader = Some(txn.open_table(BLOBS).map_err(error)?);
        }
        let table = self.reader.as_ref().expect("just opened");
        Ok(table
            .get(&id.0 .0)
            .map_err(error)?
            .map(|value| value.value().to_vec()))
    }

    /// How many ids the map holds.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Writes the pending ids.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.reader = None;
        let txn = self.db.begin_write().map_err(error)?;
        {
            let mut table = txn.open_table(BLOBS).map_err(error)?;
            for (id, value) in self.pending.drain() {
                table.insert(&id, value.as_slice()).map_err(error)?;
            }
            debug_assert_eq!(table.len().map_err(error)?, self.len);
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
        let mut map = BlobMap::new(dir.path()).unwrap();
        let id = |n: u32| BlobId(Id::of_bytes(&n.to_le_bytes()));
        for n in 0..(BATCH as u32 + 10) {
            assert!(map.insert(&id(n), &n.to_le_bytes()).unwrap());
        }
        assert!(!map.insert(&id(3), b"other").unwrap());
        map.flush().unwrap();
        assert_eq!(map.len(), BATCH as u64 + 10);
        assert_eq!(map.get(&id(3)).unwrap(), Some(3u32.to_le_bytes().to_vec()));
        assert_eq!(
            map.get(&id(BATCH as u32 + 9)).unwrap().map(|v| v.len()),
            Some(4)
        );
        assert!(!map.contains(&id(u32::MAX)).unwrap());
    }
}
