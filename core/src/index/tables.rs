//! The cache's redb tables and what is stored in them.
//!
//! A blob's row names its pack by number, not by id and session, which
//! keeps the cache small; the packs table maps the numbers back. This is
//! where segments are absorbed and blobs looked up.

use std::collections::HashSet;

use redb::{MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};

use super::{BlobLocation, IndexCache};
use crate::error::Result;
use crate::id::{BlobId, Id, PackId, SegmentId, SessionId};
use crate::object::pack::PackEntry;
use crate::object::segment::{IndexSegment, IndexedPack};

/// A blob's row: pack number (u32), type, compression, offset, stored and
/// raw length.
const LOCATION_LEN: usize = 4 + 1 + 1 + 4 + 4 + 4;

// The cache's tables. The suffix is the layout's version: tables of any
// other name (an older layout) are deleted on open, and the cache refilled
// from the segments.
/// Blob id → [`LOCATION_LEN`] bytes: the location absorbed last.
const BLOBS: TableDefinition<[u8; 32], [u8; LOCATION_LEN]> = TableDefinition::new("blobs.v3");
/// Blob id → its other locations, in packs other than its `blobs.v3` row's.
/// A blob stored again (because its first pack went missing, say) keeps
/// both, so that whichever is readable serves it.
const DUPLICATES: MultimapTableDefinition<[u8; 32], [u8; LOCATION_LEN]> =
    MultimapTableDefinition::new("duplicates.v3");
/// Pack number → pack id (32) || session id (32). Numbering packs keeps
/// 64 bytes out of every blob's row, which halves the cache on disk.
pub(super) const PACKS: TableDefinition<u32, [u8; 64]> = TableDefinition::new("packs.v3");
/// Pack id → pack number.
const PACK_NUMBERS: TableDefinition<[u8; 32], u32> = TableDefinition::new("pack_numbers.v3");
/// Segment id → entries absorbed from it.
const SEGMENTS: TableDefinition<[u8; 32], u64> = TableDefinition::new("segments.v3");
/// The names of the tables above.
pub(super) const TABLE_NAMES: [&str; 5] = [
    "blobs.v3",
    "duplicates.v3",
    "packs.v3",
    "pack_numbers.v3",
    "segments.v3",
];

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

/// The pack number of a blob's row.
fn location_pack_number(bytes: &[u8; LOCATION_LEN]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
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
    (location_pack_number(bytes), entry)
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

impl IndexCache {
    /// Segments the cache has absorbed.
    pub fn known_segments(&self) -> Result<HashSet<SegmentId>> {
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(SEGMENTS)?;
            let mut out = HashSet::new();
            for row in table.iter()? {
                let (key, _) = row?;
                out.insert(SegmentId(Id(key.value())));
            }
            Ok(out)
        })
    }

    /// Empties the cache, before a rebuild.
    pub fn clear(&self) -> Result<()> {
        self.guarded(|db| {
            let txn = db.begin_write()?;
            txn.delete_table(BLOBS)?;
            txn.delete_multimap_table(DUPLICATES)?;
            txn.delete_table(PACKS)?;
            txn.delete_table(PACK_NUMBERS)?;
            txn.delete_table(SEGMENTS)?;
            open_tables(&txn)?;
            txn.commit()?;
            Ok(())
        })
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
        self.guarded(|db| {
            let txn = db.begin_write()?;
            {
                let numbers = number_packs(&txn, segment)?;
                let mut blobs = txn.open_table(BLOBS)?;
                let mut duplicates = txn.open_multimap_table(DUPLICATES)?;
                for &(p, e) in &order {
                    let blob = &segment.packs[p as usize].entries[e as usize];
                    let row = encode_location(numbers[p as usize], blob);
                    let replaced = blobs.insert(blob.id.0 .0, row)?.map(|old| old.value());
                    // The same blob in another pack: keep the old location
                    // too, so a read can fall back to it.
                    if let Some(old) = replaced {
                        if location_pack_number(&old) != location_pack_number(&row) {
                            duplicates.insert(blob.id.0 .0, old)?;
                            duplicates.remove(blob.id.0 .0, row)?;
                        }
                    }
                }
                let count = order.len() as u64;
                let mut segments = txn.open_table(SEGMENTS)?;
                segments.insert(id.0 .0, count)?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// The pack number of the location absorbed last for `id`, if it is
    /// indexed: [`IndexCache::lookup`] without reading its pack's row, for
    /// deduplication.
    pub fn pack_number(&self, id: &BlobId) -> Result<Option<u32>> {
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let blobs = txn.open_table(BLOBS)?;
            Ok(blobs
                .get(id.0 .0)?
                .map(|row| location_pack_number(&row.value())))
        })
    }

    /// The pack and session a pack number stands for.
    pub fn pack(&self, number: u32) -> Result<Option<(PackId, SessionId)>> {
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let packs = txn.open_table(PACKS)?;
            Ok(packs.get(number)?.map(|row| decode_pack(&row.value())))
        })
    }

    /// Calls `visit` with every pack the cache knows: its number, id and
    /// session.
    pub fn for_each_pack(&self, mut visit: impl FnMut(u32, PackId, SessionId)) -> Result<()> {
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let packs = txn.open_table(PACKS)?;
            for row in packs.iter()? {
                let (number, pack) = row?;
                let (pack, session) = decode_pack(&pack.value());
                visit(number.value(), pack, session);
            }
            Ok(())
        })
    }

    /// Where `id` is stored, if anywhere: the location absorbed last.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        Ok(self
            .locations(id, false)?
            .into_iter()
            .next()
            .map(|(_, l)| l))
    }

    /// Every location of `id` with its pack number, the one absorbed last
    /// first; with `all` false, only that one.
    pub fn locations(&self, id: &BlobId, all: bool) -> Result<Vec<(u32, BlobLocation)>> {
        let rows = self.guarded(|db| {
            let txn = db.begin_read()?;
            let blobs = txn.open_table(BLOBS)?;
            let Some(row) = blobs.get(id.0 .0)? else {
                return Ok(Vec::new());
            };
            let mut rows = vec![row.value()];
            if all {
                let duplicates = txn.open_multimap_table(DUPLICATES)?;
                for other in duplicates.get(id.0 .0)? {
                    rows.push(other?.value());
                }
            }
            Ok(rows)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (number, entry) = decode_location(*id, &row);
            let (pack, session) = self.pack(number)?.ok_or_else(|| {
                self.error(format!(
                    "blob {id} names pack number {number}, which is unknown"
                ))
            })?;
            out.push((
                number,
                BlobLocation {
                    pack,
                    session,
                    entry,
                },
            ));
        }
        Ok(out)
    }

    /// Number of blobs indexed.
    #[cfg(test)]
    pub fn blob_count(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(BLOBS)?;
            Ok(table.len()?)
        })
    }
}

/// The numbers of a segment's packs, numbering those not seen before.
/// A pack seen before takes the session given last.
fn number_packs(
    txn: &redb::WriteTransaction,
    segment: &IndexSegment,
) -> std::result::Result<Vec<u32>, redb::Error> {
    let mut packs = txn.open_table(PACKS)?;
    let mut numbers = txn.open_table(PACK_NUMBERS)?;
    let mut out = Vec::with_capacity(segment.packs.len());
    for pack in &segment.packs {
        let known = numbers.get(pack.pack.0 .0)?.map(|n| n.value());
        let number = match known {
            Some(number) => number,
            None => {
                // One past the highest, so that a number is never reused
                // even if rows are one day deleted.
                let last = packs.last()?.map(|(key, _)| key.value());
                let number = match last {
                    None => 0,
                    Some(last) => last
                        .checked_add(1)
                        .ok_or_else(|| redb::Error::Corrupted("more than 2^32 packs".into()))?,
                };
                numbers.insert(pack.pack.0 .0, number)?;
                number
            }
        };
        packs.insert(number, encode_pack(pack))?;
        out.push(number);
    }
    Ok(out)
}

/// Opens (creating if needed) every table of the cache.
pub(super) fn open_tables(
    txn: &redb::WriteTransaction,
) -> std::result::Result<(), redb::TableError> {
    txn.open_table(BLOBS)?;
    txn.open_multimap_table(DUPLICATES)?;
    txn.open_table(PACKS)?;
    txn.open_table(PACK_NUMBERS)?;
    txn.open_table(SEGMENTS)?;
    Ok(())
}
