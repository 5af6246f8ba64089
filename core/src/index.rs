//! The index: where each blob lives (SPEC.md §12).
//!
//! Every write session stores one or more index segments in `index/`,
//! sealed with the repository's index key. The local cache is a redb
//! database kept in step with those segments on open: new segments are
//! added, and if one vanished or the database is damaged it is rebuilt from
//! scratch. Lookups go to redb, so memory does not grow with the repository.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

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

/// A blob's row: pack number (u32), type, compression, offset, stored and
/// raw length.
const LOCATION_LEN: usize = 4 + 1 + 1 + 4 + 4 + 4;

// The cache's tables. The suffix is the layout's version: tables of any
// other name (an older layout) are deleted on open, and the cache refilled
// from the segments.
/// Blob id → [`LOCATION_LEN`] bytes.
const BLOBS: TableDefinition<[u8; 32], [u8; LOCATION_LEN]> = TableDefinition::new("blobs.v2");
/// Pack number → pack id (32) || session id (32). Numbering packs keeps
/// 64 bytes out of every blob's row, which halves the cache on disk.
const PACKS: TableDefinition<u32, [u8; 64]> = TableDefinition::new("packs.v2");
/// Pack id → pack number.
const PACK_NUMBERS: TableDefinition<[u8; 32], u32> = TableDefinition::new("pack_numbers.v2");
/// Segment id → entries absorbed from it.
const SEGMENTS: TableDefinition<[u8; 32], u64> = TableDefinition::new("segments.v2");
/// The names of the tables above.
const TABLE_NAMES: [&str; 4] = ["blobs.v2", "packs.v2", "pack_numbers.v2", "segments.v2"];

fn encode_location(pack_number: u32, entry: &PackEntry) -> [u8; LOCATION_LEN] {
    let mut out = [0u8; LOCATION_LEN];
    out[0..4].copy_from_slice(&pack_number.to_le_bytes());
    out[4] = entry.blob_type;
    out[5] = entry.compression;
    out[6..10].copy_from_slice(&entry.offset.to_le_bytes());
    out[10..14].copy_from_slice(&entry.stored_len.to_le_bytes());
    out[14..18].copy_from_slice(&entry.raw_len.to_le_bytes());
    out
}

/// The pack number and the entry of a blob's row.
fn decode_location(id: BlobId, bytes: &[u8; LOCATION_LEN]) -> (u32, PackEntry) {
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let entry = PackEntry {
        id,
        blob_type: bytes[4],
        compression: bytes[5],
        offset: u32_at(6),
        stored_len: u32_at(10),
        raw_len: u32_at(14),
    };
    (u32_at(0), entry)
}

fn encode_pack(pack: &IndexedPack) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&pack.pack.0 .0);
    out[32..].copy_from_slice(&pack.session.0 .0);
    out
}

fn decode_pack(bytes: &[u8; 64]) -> (PackId, SessionId) {
    let mut pack = [0u8; 32];
    let mut session = [0u8; 32];
    pack.copy_from_slice(&bytes[..32]);
    session.copy_from_slice(&bytes[32..]);
    (PackId(Id(pack)), SessionId(Id(session)))
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
            Ok(db) => {
                // A table that cannot be opened is damage like any other.
                if let Ok(cache) = IndexCache::ready(db, path.to_path_buf(), None) {
                    return Ok(cache);
                }
            }
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

    /// Makes sure the tables exist. Tables of an older layout are deleted
    /// (the sync then refills the cache) and their space compacted away.
    fn ready(
        db: Database,
        path: PathBuf,
        temp: Option<tempfile::NamedTempFile>,
    ) -> Result<IndexCache> {
        let mut cache = IndexCache {
            db,
            path,
            _temp: temp,
        };
        let txn = cache.db.begin_write().map_err(|e| cache.error(e))?;
        let stale: Vec<_> = txn
            .list_tables()
            .map_err(|e| cache.error(e))?
            .filter(|table| !TABLE_NAMES.contains(&table.name()))
            .collect();
        let migrated = !stale.is_empty();
        for table in stale {
            txn.delete_table(table).map_err(|e| cache.error(e))?;
        }
        open_tables(&txn).map_err(|e| cache.error(e))?;
        txn.commit().map_err(|e| cache.error(e))?;
        if migrated {
            // Best effort: a cache that keeps the old space still works.
            let _ = cache.db.compact();
        }
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
        txn.delete_table(PACKS).map_err(|e| self.error(e))?;
        txn.delete_table(PACK_NUMBERS).map_err(|e| self.error(e))?;
        txn.delete_table(SEGMENTS).map_err(|e| self.error(e))?;
        open_tables(&txn).map_err(|e| self.error(e))?;
        txn.commit().map_err(|e| self.error(e))
    }

    /// The numbers of a segment's packs, numbering those not seen before.
    /// A pack seen before takes the session given last.
    fn number_packs(
        &self,
        txn: &redb::WriteTransaction,
        segment: &IndexSegment,
    ) -> Result<Vec<u32>> {
        let mut packs = txn.open_table(PACKS).map_err(|e| self.error(e))?;
        let mut numbers = txn.open_table(PACK_NUMBERS).map_err(|e| self.error(e))?;
        let mut out = Vec::with_capacity(segment.packs.len());
        for pack in &segment.packs {
            let known = numbers
                .get(pack.pack.0 .0)
                .map_err(|e| self.error(e))?
                .map(|n| n.value());
            let number = match known {
                Some(number) => number,
                None => {
                    // One past the highest, so that a number is never reused
                    // even if rows are one day deleted.
                    let last = packs.last().map_err(|e| self.error(e))?;
                    let number = match last {
                        None => 0,
                        Some((key, _)) => key
                            .value()
                            .checked_add(1)
                            .ok_or_else(|| self.error("more than 2^32 packs"))?,
                    };
                    numbers
                        .insert(pack.pack.0 .0, number)
                        .map_err(|e| self.error(e))?;
                    number
                }
            };
            packs
                .insert(number, encode_pack(pack))
                .map_err(|e| self.error(e))?;
            out.push(number);
        }
        Ok(out)
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
        order.sort_by_key(|&(p, e)| segment.packs[p as usize].entries[e as usize].id.0 .0);
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let numbers = self.number_packs(&txn, segment)?;
            let mut blobs = txn.open_table(BLOBS).map_err(|e| self.error(e))?;
            for &(p, e) in &order {
                let blob = &segment.packs[p as usize].entries[e as usize];
                blobs
                    .insert(blob.id.0 .0, encode_location(numbers[p as usize], blob))
                    .map_err(|e| self.error(e))?;
            }
            let count = order.len() as u64;
            let mut segments = txn.open_table(SEGMENTS).map_err(|e| self.error(e))?;
            segments.insert(id.0 .0, count).map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
    }

    /// Whether `id` is indexed: [`IndexCache::lookup`] without reading its
    /// pack's row, for deduplication.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let blobs = txn.open_table(BLOBS).map_err(|e| self.error(e))?;
        Ok(blobs.get(id.0 .0).map_err(|e| self.error(e))?.is_some())
    }

    /// Where `id` is stored, if anywhere.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let blobs = txn.open_table(BLOBS).map_err(|e| self.error(e))?;
        let Some(row) = blobs.get(id.0 .0).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        let (number, entry) = decode_location(*id, &row.value());
        let packs = txn.open_table(PACKS).map_err(|e| self.error(e))?;
        let pack = packs
            .get(number)
            .map_err(|e| self.error(e))?
            .ok_or_else(|| {
                self.error(format!(
                    "blob {id} names pack number {number}, which is unknown"
                ))
            })?;
        let (pack, session) = decode_pack(&pack.value());
        Ok(Some(BlobLocation {
            pack,
            session,
            entry,
        }))
    }

    /// Number of blobs indexed.
    pub fn blob_count(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(BLOBS).map_err(|e| self.error(e))?;
        table.len().map_err(|e| self.error(e))
    }
}

/// Opens (creating if needed) every table of the cache.
fn open_tables(txn: &redb::WriteTransaction) -> std::result::Result<(), redb::TableError> {
    txn.open_table(BLOBS)?;
    txn.open_table(PACKS)?;
    txn.open_table(PACK_NUMBERS)?;
    txn.open_table(SEGMENTS)?;
    Ok(())
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
        assert!(cache.contains(&BlobId(Id([4; 32]))).unwrap());
        assert!(!cache.contains(&BlobId(Id([9; 32]))).unwrap());
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
    fn packs_are_numbered_once_and_lookups_name_the_right_pack() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::open(&dir.path().join("index.redb")).unwrap();
        let pack = |n: u8, entries| IndexedPack {
            pack: PackId(Id([n; 32])),
            session: SessionId(Id([n + 100; 32])),
            entries,
        };
        let first = IndexSegment {
            packs: vec![
                pack(1, vec![entry(10), entry(11)]),
                pack(2, vec![entry(20)]),
            ],
        };
        cache.absorb(SegmentId(Id([1; 32])), &first).unwrap();
        // The same packs again (as after a rebuild), and a new one.
        let second = IndexSegment {
            packs: vec![pack(2, vec![entry(20)]), pack(3, vec![entry(30)])],
        };
        cache.absorb(SegmentId(Id([2; 32])), &second).unwrap();
        for (blob, pack_byte) in [(10, 1), (11, 1), (20, 2), (30, 3)] {
            let found = cache.lookup(&BlobId(Id([blob; 32]))).unwrap().unwrap();
            assert_eq!(found.pack, PackId(Id([pack_byte; 32])), "blob {blob}");
            assert_eq!(found.session, SessionId(Id([pack_byte + 100; 32])));
            assert_eq!(found.entry, entry(blob));
        }
        let txn = cache.db.begin_read().unwrap();
        assert_eq!(txn.open_table(PACKS).unwrap().len().unwrap(), 3);
        drop(txn);

        // One blob in two packs of a segment: the later entry wins; and
        // across segments, the segment absorbed last.
        let twice = IndexSegment {
            packs: vec![pack(4, vec![entry(40)]), pack(5, vec![entry(40)])],
        };
        cache.absorb(SegmentId(Id([3; 32])), &twice).unwrap();
        let found = cache.lookup(&BlobId(Id([40; 32]))).unwrap().unwrap();
        assert_eq!(found.pack, PackId(Id([5; 32])));
        let moved = IndexSegment {
            packs: vec![pack(6, vec![entry(10)])],
        };
        cache.absorb(SegmentId(Id([4; 32])), &moved).unwrap();
        let found = cache.lookup(&BlobId(Id([10; 32]))).unwrap().unwrap();
        assert_eq!(found.pack, PackId(Id([6; 32])));
        assert_eq!(found.session, SessionId(Id([106; 32])));

        // After a clear, numbering starts again and lookups still agree.
        cache.clear().unwrap();
        assert!(cache.lookup(&BlobId(Id([10; 32]))).unwrap().is_none());
        cache.absorb(SegmentId(Id([2; 32])), &second).unwrap();
        let found = cache.lookup(&BlobId(Id([30; 32]))).unwrap().unwrap();
        assert_eq!(found.pack, PackId(Id([3; 32])));
        assert_eq!(found.session, SessionId(Id([103; 32])));
        assert!(!cache.contains(&BlobId(Id([10; 32]))).unwrap());
    }

    #[test]
    fn a_cache_of_an_older_layout_is_emptied_and_refilled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let old_blobs: TableDefinition<[u8; 32], [u8; 78]> = TableDefinition::new("blobs");
            let old_segments: TableDefinition<[u8; 32], u64> = TableDefinition::new("segments");
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(old_blobs)
                .unwrap()
                .insert([3; 32], [0; 78])
                .unwrap();
            txn.open_table(old_segments)
                .unwrap()
                .insert([5; 32], 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let cache = IndexCache::open(&path).unwrap();
        assert!(
            cache.known_segments().unwrap().is_empty(),
            "so sync absorbs every segment"
        );
        let txn = cache.db.begin_read().unwrap();
        let mut names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["blobs.v2", "pack_numbers.v2", "packs.v2", "segments.v2"]
        );
    }

    #[test]
    fn a_table_of_the_wrong_type_is_damage_and_the_cache_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let wrong: TableDefinition<u64, u64> = TableDefinition::new("blobs.v2");
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(wrong).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
        }
        let cache = IndexCache::open(&path).unwrap();
        assert_eq!(cache.blob_count().unwrap(), 0);
        assert!(cache.known_segments().unwrap().is_empty());
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
