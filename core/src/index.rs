//! The index: where each blob lives (SPEC.md §12).
//!
//! Every write session stores one or more index segments in `index/`,
//! sealed with the repository's index key. The local cache is a redb
//! database kept in step with those segments on open: new segments are
//! added, and if one vanished or the database is damaged it is rebuilt from
//! scratch. Lookups go to redb, so memory does not grow with the repository.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::codec;
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, PackId, SegmentId, SessionId};
use crate::pack::PackEntry;

/// Largest index segment read from storage.
pub const MAX_SEGMENT_LEN: u64 = 64 << 20;

/// One pack's entries within an index segment.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct IndexedPack {
    /// The pack.
    pub pack: PackId,
    /// The session whose key sealed the pack's blobs.
    pub session: SessionId,
    /// The blobs in the pack.
    pub entries: Vec<PackEntry>,
}

/// The plaintext of an index segment.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct IndexSegment {
    /// Packs this segment describes.
    pub packs: Vec<IndexedPack>,
}

impl IndexSegment {
    /// Encodes the segment's plaintext.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and checks a segment's plaintext.
    pub fn decode(bytes: &[u8]) -> Result<IndexSegment, String> {
        let segment: IndexSegment = codec::decode(bytes).map_err(|e| e.to_string())?;
        for pack in &segment.packs {
            if let Some(bad) = pack.entries.iter().find(|e| !e.is_plausible()) {
                return Err(format!("implausible entry for blob {}", bad.id));
            }
        }
        Ok(segment)
    }
}

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

const LOCATION_LEN: usize = 32 + 32 + 1 + 1 + 4 + 4 + 4;

const BLOBS: TableDefinition<[u8; 32], [u8; LOCATION_LEN]> = TableDefinition::new("blobs");
const SEGMENTS: TableDefinition<[u8; 32], u64> = TableDefinition::new("segments");

fn encode_location(location: &BlobLocation) -> [u8; LOCATION_LEN] {
    let mut out = [0u8; LOCATION_LEN];
    out[0..32].copy_from_slice(&location.pack.0 .0);
    out[32..64].copy_from_slice(&location.session.0 .0);
    out[64] = location.entry.blob_type;
    out[65] = location.entry.compression;
    out[66..70].copy_from_slice(&location.entry.offset.to_le_bytes());
    out[70..74].copy_from_slice(&location.entry.stored_len.to_le_bytes());
    out[74..78].copy_from_slice(&location.entry.raw_len.to_le_bytes());
    out
}

fn decode_location(id: BlobId, bytes: &[u8; LOCATION_LEN]) -> BlobLocation {
    let id32 = |at: usize| {
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes[at..at + 32]);
        Id(out)
    };
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    BlobLocation {
        pack: PackId(id32(0)),
        session: SessionId(id32(32)),
        entry: PackEntry {
            id,
            blob_type: bytes[64],
            compression: bytes[65],
            offset: u32_at(66),
            stored_len: u32_at(70),
            raw_len: u32_at(74),
        },
    }
}

/// Memory redb may use for its page cache and write buffer. redb's default
/// (1 GiB) would let memory grow with the repository; with this bound a
/// lookup in a large index reads pages through the operating system's
/// cache instead.
const CACHE_BYTES: usize = 16 << 20;

/// The local redb cache of the repository's index.
pub struct IndexCache {
    db: Database,
    path: PathBuf,
    /// Kept so a fallback database in a temporary file lives as long as we do.
    _temp: Option<tempfile::NamedTempFile>,
}

impl IndexCache {
    /// Opens (or creates) the cache at `path`. A damaged file is replaced;
    /// one held by another process is left alone and a private temporary
    /// cache is used instead.
    pub fn open(path: &Path) -> Result<IndexCache> {
        let dir = path.parent().expect("cache paths have a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cache_error = |reason: String| Error::IndexCache {
            path: path.to_path_buf(),
            reason,
        };
        let create = |path: &Path| Database::builder().set_cache_size(CACHE_BYTES).create(path);
        match create(path) {
            Ok(db) => return IndexCache::ready(db, path.to_path_buf(), None),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                let temp = tempfile::Builder::new()
                    .prefix("index-")
                    .suffix(".redb")
                    .tempfile_in(dir)
                    .map_err(|e| Error::io(dir, e))?;
                let db = create(temp.path()).map_err(|e| cache_error(e.to_string()))?;
                return IndexCache::ready(db, temp.path().to_path_buf(), Some(temp));
            }
            Err(_) => {}
        }
        // Damaged: the cache holds nothing that the segments do not.
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        let db = create(path).map_err(|e| cache_error(e.to_string()))?;
        IndexCache::ready(db, path.to_path_buf(), None)
    }

    fn ready(
        db: Database,
        path: PathBuf,
        temp: Option<tempfile::NamedTempFile>,
    ) -> Result<IndexCache> {
        let cache = IndexCache {
            db,
            path,
            _temp: temp,
        };
        let txn = cache.db.begin_write().map_err(|e| cache.error(e))?;
        txn.open_table(BLOBS).map_err(|e| cache.error(e))?;
        txn.open_table(SEGMENTS).map_err(|e| cache.error(e))?;
        txn.commit().map_err(|e| cache.error(e))?;
        Ok(cache)
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::IndexCache {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Segments the cache has absorbed.
    pub fn known_segments(&self) -> Result<HashSet<SegmentId>> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(SEGMENTS).map_err(|e| self.error(e))?;
        let mut out = HashSet::new();
        for row in table.iter().map_err(|e| self.error(e))? {
            let (key, _) = row.map_err(|e| self.error(e))?;
            out.insert(SegmentId(Id(key.value())));
        }
        Ok(out)
    }

    /// Empties the cache, before a rebuild.
    pub fn clear(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        txn.delete_table(BLOBS).map_err(|e| self.error(e))?;
        txn.delete_table(SEGMENTS).map_err(|e| self.error(e))?;
        txn.open_table(BLOBS).map_err(|e| self.error(e))?;
        txn.open_table(SEGMENTS).map_err(|e| self.error(e))?;
        txn.commit().map_err(|e| self.error(e))
    }

    /// Adds a segment's entries in one transaction, and records the segment.
    pub fn absorb(&self, id: SegmentId, segment: &IndexSegment) -> Result<()> {
        // Inserted in key order: the B-tree's pages are then touched one
        // after another rather than at random, which makes absorbing a
        // segment into a large cache much faster. Only positions are
        // sorted, so the segment is not copied; the sort is stable, so of
        // two entries for one blob the later still wins.
        let mut order: Vec<(u32, u32)> = segment
            .packs
            .iter()
            .enumerate()
            .flat_map(|(p, pack)| (0..pack.entries.len()).map(move |e| (p as u32, e as u32)))
            .collect();
        let entry = |&(p, e): &(u32, u32)| (&segment.packs[p as usize], e as usize);
        order.sort_by_key(|at| {
            let (pack, e) = entry(at);
            pack.entries[e].id.0 .0
        });
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(|e| self.error(e))?;
            for at in &order {
                let (pack, e) = entry(at);
                let location = BlobLocation {
                    pack: pack.pack,
                    session: pack.session,
                    entry: pack.entries[e],
                };
                blobs
                    .insert(location.entry.id.0 .0, encode_location(&location))
                    .map_err(|e| self.error(e))?;
            }
            let count = order.len() as u64;
            let mut segments = txn.open_table(SEGMENTS).map_err(|e| self.error(e))?;
            segments.insert(id.0 .0, count).map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
    }

    /// Where `id` is stored, if anywhere.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(BLOBS).map_err(|e| self.error(e))?;
        let found = table.get(id.0 .0).map_err(|e| self.error(e))?;
        Ok(found.map(|value| decode_location(*id, &value.value())))
    }

    /// Number of blobs indexed.
    pub fn blob_count(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(BLOBS).map_err(|e| self.error(e))?;
        table.len().map_err(|e| self.error(e))
    }
}

/// Seals a segment for storage.
pub fn seal_segment(segment: &IndexSegment, session: SessionId, index_sealer: &Sealer) -> Vec<u8> {
    crate::object::seal(
        crate::object::SealedKind::IndexSegment,
        session,
        index_sealer,
        &segment.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> PackEntry {
        PackEntry {
            id: BlobId(Id([n; 32])),
            blob_type: 0,
            compression: 1,
            offset: u32::from(n) * 100,
            stored_len: 100,
            raw_len: 200,
        }
    }

    #[test]
    fn absorb_lookup_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/index.redb");
        let cache = IndexCache::open(&path).unwrap();
        let segment = IndexSegment {
            packs: vec![IndexedPack {
                pack: PackId(Id([1; 32])),
                session: SessionId(Id([2; 32])),
                entries: vec![entry(3), entry(4)],
            }],
        };
        let decoded = IndexSegment::decode(&segment.encode()).unwrap();
        assert_eq!(decoded, segment);
        cache.absorb(SegmentId(Id([5; 32])), &segment).unwrap();
        let found = cache.lookup(&BlobId(Id([4; 32]))).unwrap().unwrap();
        assert_eq!(found.pack, PackId(Id([1; 32])));
        assert_eq!(found.session, SessionId(Id([2; 32])));
        assert_eq!(found.entry, entry(4));
        assert!(cache.lookup(&BlobId(Id([9; 32]))).unwrap().is_none());
        assert_eq!(cache.blob_count().unwrap(), 2);
        assert_eq!(cache.known_segments().unwrap().len(), 1);
        drop(cache);
        // Reopening keeps the data; a damaged file is replaced.
        assert_eq!(IndexCache::open(&path).unwrap().blob_count().unwrap(), 2);
        std::fs::write(&path, b"not a database at all").unwrap();
        let cache = IndexCache::open(&path).unwrap();
        assert_eq!(cache.blob_count().unwrap(), 0);
        cache.absorb(SegmentId(Id([5; 32])), &segment).unwrap();
        cache.clear().unwrap();
        assert_eq!(cache.blob_count().unwrap(), 0);
    }

    #[test]
    fn a_second_opener_gets_a_private_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let first = IndexCache::open(&path).unwrap();
        let second = IndexCache::open(&path).unwrap();
        assert_eq!(second.blob_count().unwrap(), 0);
        drop(first);
    }
}
