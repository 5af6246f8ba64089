//! The index: where each blob lives (SPEC.md §12).
//!
//! Every write session stores one or more index segments in `index/`,
//! sealed with the repository's index key. The local cache is a redb
//! database kept in step with those segments on open: new segments are
//! added, and if one vanished or the database is damaged it is rebuilt from
//! scratch. Lookups go to redb, so memory does not grow with the repository.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use redb::{
    Database, MultimapTableDefinition, MultimapTableHandle, ReadableDatabase, ReadableTable,
    TableDefinition, TableHandle,
};

use crate::error::{Error, Result};
use crate::id::{BlobId, Id, PackId, SegmentId, SessionId};
use crate::object::pack::PackEntry;
use crate::object::segment::{IndexSegment, IndexedPack};

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
/// Blob id → [`LOCATION_LEN`] bytes: the location absorbed last.
const BLOBS: TableDefinition<[u8; 32], [u8; LOCATION_LEN]> = TableDefinition::new("blobs.v3");
/// Blob id → its other locations, in packs other than its `blobs.v3` row's.
/// A blob stored again (because its first pack went missing, say) keeps
/// both, so that whichever is readable serves it.
const DUPLICATES: MultimapTableDefinition<[u8; 32], [u8; LOCATION_LEN]> =
    MultimapTableDefinition::new("duplicates.v3");
/// Pack number → pack id (32) || session id (32). Numbering packs keeps
/// 64 bytes out of every blob's row, which halves the cache on disk.
const PACKS: TableDefinition<u32, [u8; 64]> = TableDefinition::new("packs.v3");
/// Pack id → pack number.
const PACK_NUMBERS: TableDefinition<[u8; 32], u32> = TableDefinition::new("pack_numbers.v3");
/// Segment id → entries absorbed from it.
const SEGMENTS: TableDefinition<[u8; 32], u64> = TableDefinition::new("segments.v3");
/// The names of the tables above.
const TABLE_NAMES: [&str; 5] = [
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

thread_local! {
    /// Set while this thread is inside redb, so that the panic hook keeps
    /// quiet about a panic that [`IndexCache::guarded`] turns into an error.
    static IN_REDB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent for panics inside redb
/// calls and hands every other panic to the hook that was there before.
fn quiet_redb_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_REDB.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `op` on redb, turning a panic into `Err` with its message.
fn catch_redb<T>(op: impl FnOnce() -> T) -> std::result::Result<T, String> {
    quiet_redb_panics();
    let was_inside = IN_REDB.with(|inside| inside.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(op));
    IN_REDB.with(|inside| inside.set(was_inside));
    outcome.map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        format!("the database is damaged (redb: {message})")
    })
}

/// Why the cache file could not be opened.
enum OpenFailure {
    /// Another process has it open.
    Busy,
    /// The file is not a usable database: replace it.
    Damaged(String),
    /// The folder or file cannot be created or written.
    Unusable(String),
}

/// Creates the cache's folder (0700) and opens or creates its file (0600),
/// whatever the umask: the cache tells which blobs a repository holds.
fn open_cache_file(path: &Path) -> std::result::Result<std::fs::File, OpenFailure> {
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
fn open_database(file: std::fs::File) -> std::result::Result<Database, OpenFailure> {
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
    fn guarded<T>(
        &self,
        op: impl FnOnce(&Database) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        match catch_redb(|| op(&self.db)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(e)),
            Err(panic) => Err(self.error(panic)),
        }
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
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
fn open_tables(txn: &redb::WriteTransaction) -> std::result::Result<(), redb::TableError> {
    txn.open_table(BLOBS)?;
    txn.open_multimap_table(DUPLICATES)?;
    txn.open_table(PACKS)?;
    txn.open_table(PACK_NUMBERS)?;
    txn.open_table(SEGMENTS)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

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
        let cache = IndexCache::open(&path).unwrap().cache;
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
        assert!(cache.pack_number(&BlobId(Id([4; 32]))).unwrap().is_some());
        assert!(cache.pack_number(&BlobId(Id([9; 32]))).unwrap().is_none());
        assert_eq!(cache.blob_count().unwrap(), 2);
        assert_eq!(cache.known_segments().unwrap().len(), 1);
        drop(cache);
        // Reopening keeps the data; a damaged file is replaced.
        assert_eq!(
            IndexCache::open(&path).unwrap().cache.blob_count().unwrap(),
            2
        );
        std::fs::write(&path, b"not a database at all").unwrap();
        let cache = IndexCache::open(&path).unwrap().cache;
        assert_eq!(cache.blob_count().unwrap(), 0);
        cache.absorb(SegmentId(Id([5; 32])), &segment).unwrap();
        cache.clear().unwrap();
        assert_eq!(cache.blob_count().unwrap(), 0);
    }

    #[test]
    fn packs_are_numbered_once_and_lookups_name_the_right_pack() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::open(&dir.path().join("index.redb"))
            .unwrap()
            .cache;
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
        assert!(cache.pack_number(&BlobId(Id([10; 32]))).unwrap().is_none());
    }

    #[test]
    fn a_cache_of_an_older_layout_is_emptied_and_refilled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let old_blobs: TableDefinition<[u8; 32], [u8; 18]> = TableDefinition::new("blobs.v2");
            let old_segments: TableDefinition<[u8; 32], u64> = TableDefinition::new("segments.v2");
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(old_blobs)
                .unwrap()
                .insert([3; 32], [0; 18])
                .unwrap();
            txn.open_table(old_segments)
                .unwrap()
                .insert([5; 32], 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let cache = IndexCache::open(&path).unwrap().cache;
        assert!(
            cache.known_segments().unwrap().is_empty(),
            "so sync absorbs every segment"
        );
        let txn = cache.db.begin_read().unwrap();
        let mut names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .chain(
                txn.list_multimap_tables()
                    .unwrap()
                    .map(|t| t.name().to_string()),
            )
            .collect();
        names.sort();
        let mut expected = TABLE_NAMES.map(String::from).to_vec();
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn a_table_of_the_wrong_type_is_damage_and_the_cache_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let wrong: TableDefinition<u64, u64> = TableDefinition::new("blobs.v3");
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(wrong).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
        }
        let cache = IndexCache::open(&path).unwrap().cache;
        assert_eq!(cache.blob_count().unwrap(), 0);
        assert!(cache.known_segments().unwrap().is_empty());
    }

    #[test]
    fn a_blob_stored_again_keeps_every_location() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::open(&dir.path().join("index.redb"))
            .unwrap()
            .cache;
        let pack = |n: u8| IndexedPack {
            pack: PackId(Id([n; 32])),
            session: SessionId(Id([n + 100; 32])),
            entries: vec![entry(7)],
        };
        let blob = BlobId(Id([7; 32]));
        for (segment, n) in [(1, 1), (2, 2), (3, 2), (4, 3)] {
            cache
                .absorb(
                    SegmentId(Id([segment; 32])),
                    &IndexSegment {
                        packs: vec![pack(n)],
                    },
                )
                .unwrap();
        }
        let found: Vec<PackId> = cache
            .locations(&blob, true)
            .unwrap()
            .into_iter()
            .map(|(_, location)| location.pack)
            .collect();
        assert_eq!(
            found[0],
            PackId(Id([3; 32])),
            "the last absorbed comes first"
        );
        let mut others = found[1..].to_vec();
        others.sort_by_key(|p| p.0 .0);
        assert_eq!(others, [PackId(Id([1; 32])), PackId(Id([2; 32]))]);
        assert_eq!(cache.locations(&blob, false).unwrap().len(), 1);
        assert_eq!(
            cache
                .pack(cache.pack_number(&blob).unwrap().unwrap())
                .unwrap(),
            Some((PackId(Id([3; 32])), SessionId(Id([103; 32]))))
        );
    }

    #[test]
    fn an_unusable_cache_folder_falls_back_to_a_temporary_index() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"").unwrap();
        let opened = IndexCache::open(&blocked.join("index.redb")).unwrap();
        assert!(!opened.cache.is_persistent());
        assert!(opened.notice.unwrap().contains("temporary"));
        opened
            .cache
            .absorb(SegmentId(Id([1; 32])), &IndexSegment::default())
            .unwrap();
        assert_eq!(opened.cache.known_segments().unwrap().len(), 1);
    }

    #[test]
    fn a_second_opener_gets_a_private_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let first = IndexCache::open(&path).unwrap().cache;
        let second = IndexCache::open(&path).unwrap().cache;
        assert_eq!(second.blob_count().unwrap(), 0);
        drop(first);
    }
}
