//! Opening a repository and reading and writing through it (SPEC.md §15).
//!
//! All operations reach storage through here, which enforces the write
//! order: session object, then packs, then the index segment naming them,
//! then the snapshot naming their trees. A crash at any point leaves only
//! unreferenced objects, never a reference to something missing.

pub(crate) mod packer;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use rayon::prelude::*;

use crate::backend::{object_name, Backend, ObjectKind};
use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::{self, Sealer};
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, PackId, SegmentId, SessionId, SnapshotId};
use crate::index::{BlobLocation, IndexCache, OpenedCache};
use crate::object::blob::{self, BlobType, MAX_BLOB_LEN};
use crate::object::config::{Config, ConfigError, DEFAULT_PACK_TARGET_BYTES, REPOSITORY_VERSION};
use crate::object::key_file::{self, KdfParams, KeyFileError, MasterKeys};
use crate::object::sealed::ObjectError;
use crate::object::segment::{IndexSegment, IndexedPack, MAX_SEGMENT_LEN};
use crate::object::session::{self, Session, SESSION_LEN};
use crate::object::snapshot::{Snapshot, MAX_SNAPSHOT_LEN};
use crate::object::tree::Tree;
use crate::repository::packer::{Job, Packer, PackerConfig};

/// Settings for a new repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// Default zstd level (0 stores raw).
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_target_bytes: u32,
    /// Argon2id cost of the first key file.
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::DEFAULT,
            compression_level: crate::object::config::DEFAULT_COMPRESSION_LEVEL,
            pack_target_bytes: DEFAULT_PACK_TARGET_BYTES,
            kdf: KdfParams::DEFAULT,
        }
    }
}

/// An open repository: config, keys and an index cache in step with storage.
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: Config,
    keys: MasterKeys,
    index_sealer: Sealer,
    chunker: Chunker,
    /// Behind a lock so that a damaged cache can be swapped for a rebuilt
    /// one while other threads read through the repository.
    index: RwLock<IndexCache>,
    /// How many times the cache was rebuilt since open.
    index_rebuilds: AtomicU64,
    sessions: Mutex<HashMap<SessionId, Sealer>>,
    damaged_segments: Vec<Error>,
    /// Lines for the user about the cache (rebuilt, or a stand-in used).
    notices: Mutex<Vec<String>>,
}

/// Rebuilds of the index cache allowed per open repository, after the one
/// that opening may do: enough to heal a cache damaged under us even after
/// one rebuild was spent on a blob that is really damaged, without
/// rebuilding it again and again for data that is really missing.
const MAX_INDEX_REBUILDS: u64 = 2;

/// What [`Repository::rebuild_index`] did.
enum Rebuild {
    /// Rebuilt; with the line to tell the user, if any.
    Done(Option<String>),
    /// Another thread rebuilt it since the caller looked: try again.
    ByAnotherThread,
    /// The rebuilds allowed are used up: trying again is not worth it.
    Exhausted,
}

/// Intact sessions a key is tried against, at most, to tell whether it is
/// this repository's. It stops at the first that opens, so this many are
/// read only for a key that opens none: a repository's own key is never
/// refused because some sessions (planted, or left by another key) do not
/// open with it. Past this many, the check gives up and accepts the key.
const KEY_CHECK_SESSIONS: usize = 1024;

/// What trying a key against a repository's sessions showed.
enum KeyCheck {
    /// It opened one of them.
    Confirmed,
    /// There was nothing intact to try it on (a new repository).
    Unknown,
    /// Intact sessions exist and it opened none of them: this one, say.
    Refuted(String),
}

/// Whether a failed blob read could come from a cache that disagrees with
/// the repository's segments, so that rebuilding the cache might help.
fn may_be_stale_cache(error: &Error) -> bool {
    matches!(
        error,
        Error::BlobNotIndexed { .. }
            | Error::Corrupted { .. }
            | Error::MissingObject { .. }
            | Error::Unauthenticated { .. }
            | Error::IndexCache { .. }
    )
}

/// The error for a sealed object that did not open: unauthenticated if it
/// failed authentication (its bytes matched its name), damaged otherwise.
fn open_error(object: String, error: ObjectError) -> Error {
    match error {
        ObjectError::Authentication => Error::Unauthenticated { object },
        ObjectError::Malformed(_) | ObjectError::Undecodable(_) => Error::corrupted(object, error),
    }
}

/// Snapshots as listed: those that could be read, and why others could not.
#[derive(Debug, Default)]
pub struct SnapshotList {
    /// Readable snapshots, oldest first.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    /// One error, naming the object, per snapshot that could not be read.
    pub damaged: Vec<Error>,
}

/// Index segments are written once they list this many blobs, so that no
/// segment grows past what a reader accepts.
const SEGMENT_ENTRY_LIMIT: usize = 100_000;

/// Errors unless `level` is a compression level cairn writes with.
fn check_compression_level(level: i32) -> Result<()> {
    if crate::object::config::COMPRESSION_LEVELS.contains(&level) {
        Ok(())
    } else {
        Err(Error::OutOfRange {
            setting: "compression level",
            value: level.to_string(),
            allowed: "0..=22",
        })
    }
}

/// The id a stored object's name stands for: exactly 64 lowercase hex
/// digits. Anything else (a stray file, a temporary name) is not an object.
fn parse_name(name: &str) -> Option<Id> {
    Id::from_hex(name).filter(|id| id.to_hex() == name)
}

impl Repository {
    /// Creates a repository in an empty location, with one key file for
    /// `password`, and opens it.
    pub fn init(
        backend: Box<dyn Backend>,
        password: &[u8],
        options: &InitOptions,
        cache_dir: &Path,
    ) -> Result<Repository> {
        if !options.kdf.is_bounded() {
            let kdf = options.kdf;
            return Err(Error::OutOfRange {
                setting: "key derivation (KiB, passes, lanes)",
                value: format!(
                    "{}, {}, {}",
                    kdf.memory_kib, kdf.iterations, kdf.parallelism
                ),
                allowed: "8..=1048576 KiB (at least 8 per lane), 1..=64 passes, 1..=16 lanes",
            });
        }
        if !options.chunker.is_valid() {
            let chunker = options.chunker;
            return Err(Error::OutOfRange {
                setting: "chunk sizes (min, avg, max)",
                value: format!(
                    "{}, {}, {}",
                    chunker.min_bytes, chunker.avg_bytes, chunker.max_bytes
                ),
                allowed: "64..=1 MiB, 256..=4 MiB (a power of two), 1 KiB..=16 MiB, \
                          with min <= avg <= max",
            });
        }
        check_compression_level(options.compression_level)?;
        if !crate::object::config::PACK_TARGET_RANGE.contains(&options.pack_target_bytes) {
            return Err(Error::OutOfRange {
                setting: "pack size",
                value: format!("{} bytes", options.pack_target_bytes),
                allowed: "1 MiB..=1 GiB",
            });
        }
        let location = backend.location();
        match backend.get(ObjectKind::Config, "") {
            Ok(_) => return Err(Error::RepositoryExists { location }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::storage(ObjectKind::Config, "", e)),
        }
        backend.create().map_err(|e| match e.kind() {
            _ if crate::backend::is_location_not_empty(&e) => Error::LocationNotEmpty {
                location: backend.location(),
            },
            io::ErrorKind::AlreadyExists => Error::RepositoryExists {
                location: location.clone(),
            },
            _ => Error::Storage {
                object: "the repository's layout".into(),
                error: e,
            },
        })?;
        // Key files without a config: an init that crashed. A new key beside
        // them would make `open` pick whichever the password opens first.
        let leftover = backend
            .list(ObjectKind::Key)
            .map_err(|e| Error::storage(ObjectKind::Key, "", e))?;
        if !leftover.is_empty() {
            return Err(Error::UnfinishedInit {
                location: backend.location(),
            });
        }
        let keys = MasterKeys::generate();
        let config = Config {
            version: REPOSITORY_VERSION,
            id: Id(crypto::random_bytes()),
            chunker: options.chunker,
            compression_level: options.compression_level,
            pack_target_bytes: options.pack_target_bytes,
        };
        let key_file = key_file::seal_key_file(&keys, password, options.kdf);
        let key_name = Id::of_bytes(&key_file).to_hex();
        // The key goes first: a config without a key would be a repository
        // nobody can open, while a key without a config is simply not one.
        backend
            .put(ObjectKind::Key, &key_name, &key_file)
            .map_err(|e| Error::storage(ObjectKind::Key, &key_name, e))?;
        backend
            .put(ObjectKind::Config, "", &config.to_bytes())
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Error::RepositoryExists {
                    location: location.clone(),
                },
                _ => Error::storage(ObjectKind::Config, "", e),
            })?;
        Repository::assemble(backend, config, keys, cache_dir)
    }

    /// Checks that `backend` holds no repository yet, without needing a
    /// password: so that `init` can say so before asking for one twice.
    pub fn ensure_absent(backend: &dyn Backend) -> Result<()> {
        match backend.size(ObjectKind::Config, "") {
            Ok(_) => Err(Error::RepositoryExists {
                location: backend.location(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage(ObjectKind::Config, "", e)),
        }
    }

    /// Checks that `backend` holds a repository, without needing a password:
    /// so a caller can say "no repository" before asking for one.
    pub fn ensure_exists(backend: &dyn Backend) -> Result<()> {
        match backend.size(ObjectKind::Config, "") {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::RepositoryNotFound {
                location: backend.location(),
            }),
            Err(e) => Err(Error::storage(ObjectKind::Config, "", e)),
        }
    }

    /// Opens an existing repository with `password`, bringing the index
    /// cache under `cache_dir` in step with the stored index.
    pub fn open(
        backend: Box<dyn Backend>,
        password: &[u8],
        cache_dir: &Path,
    ) -> Result<Repository> {
        let location = backend.location();
        Repository::ensure_exists(backend.as_ref())?;
        let config_len = backend
            .size(ObjectKind::Config, "")
            .map_err(|e| Error::storage(ObjectKind::Config, "", e))?;
        if config_len > crate::object::config::MAX_CONFIG_LEN as u64 {
            return Err(Error::corrupted("config", "longer than any config"));
        }
        let config_bytes = backend
            .get(ObjectKind::Config, "")
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::RepositoryNotFound {
                    location: location.clone(),
                },
                _ => Error::storage(ObjectKind::Config, "", e),
            })?;
        let config = Config::from_bytes(&config_bytes).map_err(|e| match e {
            ConfigError::Version(version) => Error::UnsupportedVersion {
                object: "config".into(),
                version,
            },
            ConfigError::Malformed(reason) => Error::corrupted("config", reason),
        })?;
        let keys = Repository::unlock(backend.as_ref(), password)?;
        Repository::assemble(backend, config, keys, cache_dir)
    }

    /// Tries every key file with `password`. Only when every key file is
    /// damaged is that the error; otherwise a failure is a wrong password,
    /// since a sealed key file cannot tell the two apart.
    fn unlock(backend: &dyn Backend, password: &[u8]) -> Result<MasterKeys> {
        let names = backend
            .list(ObjectKind::Key)
            .map_err(|e| Error::storage(ObjectKind::Key, "", e))?;
        let mut damaged = None;
        let mut foreign = None;
        let mut well_formed = 0;
        for name in names {
            let object = object_name(ObjectKind::Key, &name);
            let len = backend
                .size(ObjectKind::Key, &name)
                .map_err(|e| Error::storage(ObjectKind::Key, &name, e))?;
            if len != key_file::KEY_FILE_LEN as u64 {
                damaged.get_or_insert_with(|| {
                    Error::corrupted(
                        &object,
                        format!("length {len}, not {}", key_file::KEY_FILE_LEN),
                    )
                });
                continue;
            }
            let bytes = backend
                .get(ObjectKind::Key, &name)
                .map_err(|e| Error::storage(ObjectKind::Key, &name, e))?;
            match key_file::open_key_file(&bytes, password) {
                Ok(keys) => match Repository::check_key(backend, &keys)? {
                    KeyCheck::Confirmed | KeyCheck::Unknown => return Ok(keys),
                    // Another repository's key under the same password: try
                    // the other key files before saying so.
                    KeyCheck::Refuted(refuting) => {
                        foreign.get_or_insert(Error::ForeignKey {
                            key: object,
                            object: refuting,
                        });
                    }
                },
                Err(KeyFileError::WrongPassword) => well_formed += 1,
                Err(e @ KeyFileError::Malformed(_)) => {
                    damaged.get_or_insert_with(|| Error::corrupted(&object, e));
                }
            }
        }
        if let Some(foreign) = foreign {
            return Err(foreign);
        }
        if damaged.is_none() && well_formed == 0 {
            return Err(Error::corrupted("keys/", "the repository has no key files"));
        }
        match damaged {
            Some(error) if well_formed == 0 => Err(error),
            _ => Err(Error::WrongPassword),
        }
    }

    /// Tries `keys` on the repository's sessions until one opens (at most
    /// [`KEY_CHECK_SESSIONS`] intact ones): every writing command stores
    /// one first, so a repository that was ever written to has one its own
    /// key opens. Damaged sessions (bytes that do not match their name)
    /// prove nothing and are passed over.
    fn check_key(backend: &dyn Backend, keys: &MasterKeys) -> Result<KeyCheck> {
        let names = backend
            .list(ObjectKind::Session)
            .map_err(|e| Error::storage(ObjectKind::Session, "", e))?;
        let mut refuting = None;
        let mut intact = 0;
        for name in names.iter().filter(|n| parse_name(n).is_some()) {
            if intact == KEY_CHECK_SESSIONS {
                return Ok(KeyCheck::Unknown);
            }
            let Ok(bytes) = backend.get(ObjectKind::Session, name) else {
                continue;
            };
            if bytes.len() != SESSION_LEN || Id::of_bytes(&bytes).to_hex() != *name {
                continue;
            }
            intact += 1;
            match session::open(&bytes, &keys.private) {
                Ok(_) => return Ok(KeyCheck::Confirmed),
                Err(session::SessionError::Authentication) => {
                    refuting.get_or_insert_with(|| object_name(ObjectKind::Session, name));
                }
                Err(session::SessionError::Malformed(_)) => {}
            }
        }
        Ok(refuting.map_or(KeyCheck::Unknown, KeyCheck::Refuted))
    }

    fn assemble(
        backend: Box<dyn Backend>,
        config: Config,
        keys: MasterKeys,
        cache_dir: &Path,
    ) -> Result<Repository> {
        // Named by a keyed hash of the repository id: the config is not
        // authenticated, and a repository claiming another's id must not
        // share (and so trust) that repository's index cache.
        let cache_name = blake3::keyed_hash(&keys.id_key.0, &config.id.0).to_hex();
        let index_path = cache_dir.join(cache_name.as_str()).join("index.redb");
        let opened = IndexCache::open(&index_path)?;
        let mut repository = Repository {
            damaged_segments: Vec::new(),
            chunker: Chunker::new(config.chunker, keys.chunker_seed),
            index_sealer: Sealer::new(&keys.index_key),
            index: RwLock::new(opened.cache),
            index_rebuilds: AtomicU64::new(0),
            sessions: Mutex::new(HashMap::new()),
            backend: Arc::from(backend),
            config,
            keys,
            notices: Mutex::new(opened.notice.into_iter().collect()),
        };
        let synced = repository.sync_index(&repository.index());
        repository.damaged_segments = match synced {
            Ok(damaged) => damaged,
            // The cache failed while being filled: start it afresh once.
            Err(Error::IndexCache { reason, .. }) => {
                let failed = repository.index().rebuilt(&reason)?;
                let (cache, notice, damaged) = repository.synced(failed)?;
                *repository.index.write().unwrap_or_else(|p| p.into_inner()) = cache;
                repository.notices_lock().extend(notice);
                damaged
            }
            Err(e) => return Err(e),
        };
        Ok(repository)
    }

    fn index(&self) -> RwLockReadGuard<'_, IndexCache> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn notices_lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.notices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lines for the user gathered since the last call: the index cache was
    /// rebuilt, or a temporary one used in its place.
    pub fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices_lock())
    }

    /// Runs `op` on the index cache. If the cache fails (a redb error, or a
    /// damaged file), it is rebuilt from the segments and `op` runs again.
    fn with_index<T>(&self, mut op: impl FnMut(&IndexCache) -> Result<T>) -> Result<T> {
        let seen = self.index_rebuilds.load(Ordering::SeqCst);
        // Bound first, so that the read guard is dropped before a rebuild
        // takes the write lock.
        let outcome = op(&self.index());
        match outcome {
            Err(Error::IndexCache { reason, .. }) => match self.rebuild_index(seen, &reason)? {
                Rebuild::Done(notice) => {
                    self.notices_lock().extend(notice);
                    op(&self.index())
                }
                Rebuild::ByAnotherThread => op(&self.index()),
                Rebuild::Exhausted => Err(Error::IndexCache {
                    path: self.index().path().to_path_buf(),
                    reason,
                }),
            },
            other => other,
        }
    }

    /// Replaces the cache by one rebuilt from the stored segments, unless
    /// another thread did so since it saw `seen` rebuilds, or the rebuilds
    /// allowed are used up.
    fn rebuild_index(&self, seen: u64, reason: &str) -> Result<Rebuild> {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let done = self.index_rebuilds.load(Ordering::SeqCst);
        if done != seen {
            return Ok(Rebuild::ByAnotherThread);
        }
        if done >= MAX_INDEX_REBUILDS {
            return Ok(Rebuild::Exhausted);
        }
        self.index_rebuilds.fetch_add(1, Ordering::SeqCst);
        let fresh = index.rebuilt(reason)?;
        // Segments that cannot be read were reported when the repository
        // was opened; their blobs stay unknown, as they were.
        let (cache, notice, _) = self.synced(fresh)?;
        *index = cache;
        Ok(Rebuild::Done(notice))
    }

    /// Fills a fresh cache from the segments. If the cache file fails while
    /// being filled (a full disk, say), a temporary one is filled instead.
    /// Returns the cache, the notice for the user, and the segments that
    /// could not be read.
    fn synced(&self, fresh: OpenedCache) -> Result<(IndexCache, Option<String>, Vec<Error>)> {
        match self.sync_index(&fresh.cache) {
            Ok(damaged) => Ok((fresh.cache, fresh.notice, damaged)),
            Err(Error::IndexCache { path, reason }) if fresh.cache.is_persistent() => {
                let stand_in = IndexCache::fallback(&path, &reason)?;
                let damaged = self.sync_index(&stand_in.cache)?;
                Ok((stand_in.cache, stand_in.notice, damaged))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads a whole object of at most `max_len` bytes and checks that its
    /// name is the hash of its bytes.
    fn get_verified(&self, kind: ObjectKind, name: &str, max_len: u64) -> Result<Vec<u8>> {
        let size = self
            .backend
            .size(kind, name)
            .map_err(|e| Error::storage(kind, name, e))?;
        if size > max_len {
            return Err(Error::corrupted(
                object_name(kind, name),
                format!("length {size} exceeds the limit of {max_len}"),
            ));
        }
        let bytes = self
            .backend
            .get(kind, name)
            .map_err(|e| Error::storage(kind, name, e))?;
        if Id::of_bytes(&bytes).to_hex() != name {
            return Err(Error::corrupted(
                object_name(kind, name),
                "content does not match its name",
            ));
        }
        Ok(bytes)
    }

    /// Adds new index segments to the cache; rebuilds it if one vanished.
    /// Returns the segments that could not be read.
    fn sync_index(&self, cache: &IndexCache) -> Result<Vec<Error>> {
        let stored: HashSet<SegmentId> = self
            .backend
            .list(ObjectKind::Index)
            .map_err(|e| Error::storage(ObjectKind::Index, "", e))?
            .iter()
            .filter_map(|name| parse_name(name).map(SegmentId))
            .collect();
        let mut known = cache.known_segments()?;
        if !known.is_subset(&stored) {
            cache.clear()?;
            known.clear();
        }
        let mut damaged = Vec::new();
        for id in stored.difference(&known) {
            match self.read_segment(*id) {
                Ok(segment) => cache.absorb(*id, &segment)?,
                // The blobs it lists are then unknown: a backup stores them
                // again, a restore that needs them names them. Neither is
                // worse than refusing to open the repository at all. (A
                // segment this key cannot open makes writing refuse: see
                // `start_write`.)
                Err(
                    e @ (Error::Corrupted { .. }
                    | Error::MissingObject { .. }
                    | Error::Unauthenticated { .. }),
                ) => damaged.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok(damaged)
    }

    fn read_segment(&self, id: SegmentId) -> Result<IndexSegment> {
        let name = id.to_string();
        let bytes = self.get_verified(ObjectKind::Index, &name, MAX_SEGMENT_LEN)?;
        IndexSegment::open(&bytes, &self.index_sealer)
            .map_err(|e| open_error(object_name(ObjectKind::Index, &name), e))
    }

    /// Index segments that could not be read when the repository was
    /// opened; their blobs are treated as absent.
    pub fn damaged_segments(&self) -> &[Error] {
        &self.damaged_segments
    }

    /// Where the repository is, for messages.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The repository's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The chunker configured for this repository.
    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// The id of a blob of `blob_type` holding `plaintext` in this repository.
    pub fn blob_id(&self, blob_type: BlobType, plaintext: &[u8]) -> BlobId {
        self.keys.id_key.blob_id(blob_type.to_byte(), plaintext)
    }

    /// Where a blob is stored, if it is.
    pub fn locate(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        self.with_index(|index| index.lookup(id))
    }

    fn session_sealer(&self, id: SessionId) -> Result<Sealer> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sealer) = sessions.get(&id) {
            return Ok(sealer.clone());
        }
        let name = id.to_string();
        let bytes = self.get_verified(ObjectKind::Session, &name, SESSION_LEN as u64)?;
        let object = object_name(ObjectKind::Session, &name);
        let opened = session::open(&bytes, &self.keys.private).map_err(|e| match e {
            session::SessionError::Authentication => Error::Unauthenticated { object },
            session::SessionError::Malformed(_) => Error::corrupted(object, e),
        })?;
        sessions.insert(id, opened.sealer.clone());
        Ok(opened.sealer)
    }

    /// Reads, authenticates and checks one blob. If its location fails,
    /// any other location the index has for it is tried; if all fail in a
    /// way a stale cache could explain, the cache is rebuilt (once per
    /// open repository) and the read tried again.
    pub fn read_blob(&self, id: &BlobId, expected: BlobType) -> Result<Vec<u8>> {
        let seen = self.index_rebuilds.load(Ordering::SeqCst);
        match self.read_blob_anywhere(id, expected) {
            Err(e) if may_be_stale_cache(&e) => {
                let reason = format!("out of step with the repository (blob {id}: {e})");
                // If the rebuild fails too, the read's own error is the one
                // that tells the user what is missing.
                let notice = match self.rebuild_index(seen, &reason) {
                    Ok(Rebuild::Done(notice)) => notice,
                    Ok(Rebuild::ByAnotherThread) => None,
                    Ok(Rebuild::Exhausted) | Err(_) => return Err(e),
                };
                let again = self.read_blob_anywhere(id, expected);
                // Only worth saying if the rebuild is what made it readable:
                // data really missing is reported as such by the caller.
                if again.is_ok() {
                    self.notices_lock().extend(notice);
                }
                again
            }
            other => other,
        }
    }

    /// [`Repository::read_blob`] from the locations the cache has now.
    fn read_blob_anywhere(&self, id: &BlobId, expected: BlobType) -> Result<Vec<u8>> {
        let primary = self.with_index(|index| index.locations(id, false))?;
        let Some((_, location)) = primary.first() else {
            return Err(Error::BlobNotIndexed { id: id.to_string() });
        };
        let first_error = match self.read_blob_at(id, expected, location) {
            Ok(plaintext) => return Ok(plaintext),
            Err(e) => e,
        };
        let all = self.with_index(|index| index.locations(id, true))?;
        for (_, other) in all.iter().skip(1) {
            if let Ok(plaintext) = self.read_blob_at(id, expected, other) {
                return Ok(plaintext);
            }
        }
        Err(first_error)
    }

    /// Reads one blob from one location.
    fn read_blob_at(
        &self,
        id: &BlobId,
        expected: BlobType,
        location: &BlobLocation,
    ) -> Result<Vec<u8>> {
        let what = format!("blob {id} in pack {}", location.pack);
        let entry = location.entry;
        if entry.blob_type() != Some(expected) || !entry.is_plausible() {
            return Err(Error::corrupted(what, "index entry has the wrong type"));
        }
        let compression = entry
            .compression()
            .expect("plausible entries have a known compression");
        let sealer = self.session_sealer(location.session)?;
        let pack_name = location.pack.to_string();
        let stored = self
            .backend
            .get_range(
                ObjectKind::Pack,
                &pack_name,
                u64::from(entry.offset),
                u64::from(entry.stored_len),
            )
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => Error::corrupted(
                    object_name(ObjectKind::Pack, &pack_name),
                    format!("truncated: blob {id} lies beyond its end"),
                ),
                _ => Error::storage(ObjectKind::Pack, &pack_name, e),
            })?;
        blob::open(
            id,
            expected,
            compression,
            entry.raw_len,
            stored,
            &sealer,
            &self.keys.id_key,
        )
        .map_err(|e| Error::corrupted(what, e))
    }

    /// Reads and decodes a tree blob.
    pub fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(id, BlobType::Tree)?;
        Tree::decode(&bytes).map_err(|e| Error::corrupted(format!("tree {id}"), e))
    }

    /// All snapshots, oldest first. A damaged snapshot does not hide the
    /// others: it is reported in [`SnapshotList::damaged`].
    pub fn snapshots(&self) -> Result<SnapshotList> {
        let names = self
            .backend
            .list(ObjectKind::Snapshot)
            .map_err(|e| Error::storage(ObjectKind::Snapshot, "", e))?;
        let mut list = SnapshotList::default();
        for name in names {
            let Some(id) = parse_name(&name) else {
                continue;
            };
            match self.read_snapshot(&name) {
                Ok(snapshot) => list.snapshots.push((SnapshotId(id), snapshot)),
                // Removed since the listing (by a concurrent forget): it is
                // simply not there, which is not damage.
                Err(Error::MissingObject { object })
                    if object == object_name(ObjectKind::Snapshot, &name) => {}
                Err(
                    e @ (Error::Corrupted { .. }
                    | Error::MissingObject { .. }
                    | Error::Unauthenticated { .. }),
                ) => list.damaged.push(e),
                Err(e) => return Err(e),
            }
        }
        list.snapshots.sort_by_key(|(id, s)| (s.time_ns, *id));
        Ok(list)
    }

    fn read_snapshot(&self, name: &str) -> Result<Snapshot> {
        let object = object_name(ObjectKind::Snapshot, name);
        let bytes = self.get_verified(ObjectKind::Snapshot, name, MAX_SNAPSHOT_LEN)?;
        let session = Snapshot::session_of(&bytes).map_err(|e| Error::corrupted(&object, e))?;
        // Named as the snapshot's failure, so that a listing says which
        // snapshot is lost, not only which session.
        let sealer = self.session_sealer(session).map_err(|e| match e {
            Error::Unauthenticated { object: session } => Error::Unauthenticated {
                object: format!("{object} (through its session {session})"),
            },
            Error::MissingObject { object: session } => {
                Error::corrupted(&object, format!("its session {session} is missing"))
            }
            Error::Corrupted {
                object: session,
                reason,
            } => Error::corrupted(
                &object,
                format!("its session {session} is damaged: {reason}"),
            ),
            other => other,
        })?;
        Snapshot::open(&bytes, &sealer).map_err(|e| open_error(object, e))
    }

    /// Finds a snapshot by full id, unique id prefix, or `latest`, over
    /// every snapshot object. Errors if the one selected cannot be read;
    /// for `latest`, if any snapshot cannot be read, since its time (sealed
    /// inside it) is unknown and it might be the newest: a restore of
    /// "latest" must never quietly restore an older one.
    pub fn resolve_snapshot(&self, reference: &str) -> Result<(SnapshotId, Snapshot)> {
        if reference == "latest" {
            let mut list = self.snapshots()?;
            if !list.damaged.is_empty() {
                return Err(Error::LatestUnknown {
                    error: Box::new(list.damaged.remove(0)),
                });
            }
            return list.snapshots.pop().ok_or_else(|| Error::SnapshotNotFound {
                reference: reference.into(),
            });
        }
        let wanted = reference.to_ascii_lowercase();
        if wanted.is_empty() || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound {
                reference: reference.into(),
            });
        }
        let names = self
            .backend
            .list(ObjectKind::Snapshot)
            .map_err(|e| Error::storage(ObjectKind::Snapshot, "", e))?;
        let matches: Vec<&String> = names
            .iter()
            .filter(|n| parse_name(n).is_some() && n.starts_with(&wanted))
            .collect();
        match matches.as_slice() {
            [] => Err(Error::SnapshotNotFound {
                reference: reference.into(),
            }),
            [name] => {
                let id = Id::from_hex(name).ok_or_else(|| Error::SnapshotNotFound {
                    reference: reference.into(),
                })?;
                Ok((SnapshotId(id), self.read_snapshot(name)?))
            }
            many => Err(Error::AmbiguousSnapshot {
                reference: reference.into(),
                count: many.len(),
            }),
        }
    }

    /// Starts a write session: stores a fresh session object and returns a
    /// writer whose packs, index and snapshot are sealed under it. Sealing
    /// and storing run in background threads until [`BlobWriter::flush`].
    pub fn start_write(&self, compression_level: i32) -> Result<BlobWriter<'_>> {
        check_compression_level(compression_level)?;
        // A segment intact but sealed under another key means this key may
        // not be the one the repository's readers hold: writing under it
        // could store what they cannot read back.
        if let Some(Error::Unauthenticated { object }) = self
            .damaged_segments
            .iter()
            .find(|e| matches!(e, Error::Unauthenticated { .. }))
        {
            return Err(Error::Unauthenticated {
                object: object.clone(),
            });
        }
        let (check, warnings) = self.check_packs()?;
        let (session, bytes) = session::create(&self.keys.public());
        let name = session.id.to_string();
        self.backend
            .put(ObjectKind::Session, &name, &bytes)
            .map_err(|e| Error::storage(ObjectKind::Session, &name, e))?;
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.id, session.sealer.clone());
        let packer = Packer::start(PackerConfig {
            backend: Arc::clone(&self.backend),
            session: session.id,
            sealer: session.sealer.clone(),
            compression_level,
            pack_target_bytes: u64::from(self.config.pack_target_bytes),
        });
        Ok(BlobWriter {
            repository: self,
            session,
            packer: Some(packer),
            unindexed: Vec::new(),
            unindexed_entries: 0,
            written: HashSet::new(),
            bytes_added: 0,
            blobs_added: 0,
            check,
            warnings,
        })
    }

    /// Which indexed packs a backup may deduplicate against: lists `data/`
    /// and `sessions/` once, and marks the packs the cache knows that are
    /// missing, or whose session is. Returns the check and a warning for
    /// each missing object (at most [`MAX_MISSING_WARNINGS`], then a count).
    fn check_packs(&self) -> Result<(PackCheck, Vec<String>)> {
        let listed = |kind: ObjectKind| {
            self.backend
                .list(kind)
                .map_err(|e| Error::storage(kind, "", e))
        };
        let packs: HashSet<Id> = listed(ObjectKind::Pack)?
            .iter()
            .filter_map(|n| parse_name(n))
            .collect();
        let sessions: HashSet<Id> = listed(ObjectKind::Session)?
            .iter()
            .filter_map(|n| parse_name(n))
            .collect();
        let mut check = PackCheck::default();
        let mut missing = Vec::new();
        self.with_index(|index| {
            index.for_each_pack(|_, pack, session| {
                if !packs.contains(&pack.0) && check.missing_packs.insert(pack) {
                    missing.push(object_name(ObjectKind::Pack, &pack.to_string()));
                }
                if !sessions.contains(&session.0) && check.bad_sessions.insert(session) {
                    missing.push(object_name(ObjectKind::Session, &session.to_string()));
                }
            })
        })?;
        let mut warnings: Vec<String> = missing
            .iter()
            .take(MAX_MISSING_WARNINGS)
            .map(|object| {
                format!("{object} is missing from the repository: the blobs the index places there are stored again")
            })
            .collect();
        if missing.len() > MAX_MISSING_WARNINGS {
            warnings.push(format!(
                "{} more packs and sessions are missing from the repository: their blobs are stored again",
                missing.len() - MAX_MISSING_WARNINGS
            ));
        }
        check.rebuilds = self.index_rebuilds.load(Ordering::SeqCst);
        Ok((check, warnings))
    }
}

/// Warnings given one by one for missing packs and sessions; beyond this
/// many, one line counts the rest.
const MAX_MISSING_WARNINGS: usize = 20;

/// What a writer knows about which indexed packs it may deduplicate
/// against: a blob is only reused if it could be read back.
#[derive(Default)]
struct PackCheck {
    /// Indexed packs missing from `data/` when the writer started.
    missing_packs: HashSet<PackId>,
    /// Sessions missing from `sessions/`, or that failed to open.
    bad_sessions: HashSet<SessionId>,
    /// Verdicts by the cache's pack number, valid while the cache is not
    /// rebuilt (which renumbers packs).
    verdicts: HashMap<u32, bool>,
    /// The cache rebuilds counted when `verdicts` were made.
    rebuilds: u64,
}

/// Adds blobs and finally a snapshot within one session.
pub struct BlobWriter<'r> {
    repository: &'r Repository,
    session: Session,
    /// Running until [`BlobWriter::flush`].
    packer: Option<Packer>,
    unindexed: Vec<IndexedPack>,
    unindexed_entries: usize,
    /// Blobs this session queued or stored that no index segment lists yet.
    written: HashSet<BlobId>,
    /// Final counts, once flushed.
    bytes_added: u64,
    blobs_added: u64,
    /// Which packs deduplication may rely on.
    check: PackCheck,
    /// Warnings not yet taken by the caller.
    warnings: Vec<String>,
}

impl BlobWriter<'_> {
    /// Whether `id` is queued in this session, or stored in a pack that is
    /// present and whose session opens: a snapshot must never name a blob
    /// that cannot be read back. Errors if a session is intact but does
    /// not open with this repository's key.
    fn is_known(&mut self, id: &BlobId) -> Result<bool> {
        if self.written.contains(id) {
            return Ok(true);
        }
        // Pack numbers belong to one build of the cache: if it was rebuilt
        // meanwhile (by this thread or another), the answer may rest on a
        // number that now names another pack, so it is worked out again.
        // Rebuilds are bounded, and so is this loop.
        loop {
            let rebuilds = self.repository.index_rebuilds.load(Ordering::SeqCst);
            let known = self.is_usable_in_cache(id)?;
            if self.repository.index_rebuilds.load(Ordering::SeqCst) == rebuilds {
                return Ok(known);
            }
        }
    }

    /// [`BlobWriter::is_known`] for a blob not written by this session,
    /// from the cache as it is.
    fn is_usable_in_cache(&mut self, id: &BlobId) -> Result<bool> {
        let repository = self.repository;
        let Some(number) = repository.with_index(|index| index.pack_number(id))? else {
            return Ok(false);
        };
        if self.is_usable(number)? {
            return Ok(true);
        }
        // Stored again since, perhaps: any readable copy will do.
        let all = repository.with_index(|index| index.locations(id, true))?;
        for (number, _) in all.iter().skip(1) {
            if self.is_usable(*number)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the pack the cache numbers `number` may be deduplicated
    /// against.
    fn is_usable(&mut self, number: u32) -> Result<bool> {
        let repository = self.repository;
        let rebuilds = repository.index_rebuilds.load(Ordering::SeqCst);
        if rebuilds != self.check.rebuilds {
            self.check.verdicts.clear();
            self.check.rebuilds = rebuilds;
        }
        if let Some(verdict) = self.check.verdicts.get(&number) {
            return Ok(*verdict);
        }
        let verdict = match repository.with_index(|index| index.pack(number))? {
            None => false,
            Some((pack, _)) if self.check.missing_packs.contains(&pack) => false,
            Some((_, session)) if self.check.bad_sessions.contains(&session) => false,
            Some((_, session)) => match repository.session_sealer(session) {
                Ok(_) => true,
                Err(e @ Error::Unauthenticated { .. }) => return Err(e),
                Err(e) => {
                    self.check.bad_sessions.insert(session);
                    self.warnings.push(format!(
                        "{e}: the blobs in the packs it sealed are stored again"
                    ));
                    false
                }
            },
        };
        self.check.verdicts.insert(number, verdict);
        Ok(verdict)
    }

    /// Warnings gathered since the last call: packs or sessions missing or
    /// damaged, whose blobs are therefore stored again.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Whether every blob of `ids` is stored (readably) or queued in this
    /// session.
    pub fn contains_all(&mut self, ids: &[BlobId]) -> Result<bool> {
        for id in ids {
            if !self.is_known(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Queues the blobs not stored yet and returns every blob's id, in
    /// order. Ids are computed here (in parallel); compression, encryption
    /// and storage happen in the background. Errors if a blob is larger
    /// than [`MAX_BLOB_LEN`], which readers would refuse, if the writer was
    /// flushed, or if the background pipeline failed.
    pub fn add_blobs(&mut self, blob_type: BlobType, blobs: Vec<Vec<u8>>) -> Result<Vec<BlobId>> {
        if let Some(big) = blobs.iter().find(|b| b.len() > MAX_BLOB_LEN as usize) {
            return Err(Error::BlobTooLarge {
                blob_type: match blob_type {
                    BlobType::Data => "data",
                    BlobType::Tree => "tree",
                },
                len_bytes: big.len(),
                limit_bytes: MAX_BLOB_LEN,
            });
        }
        let repository = self.repository;
        let ids: Vec<BlobId> = if blobs.len() > 1 {
            blobs
                .par_iter()
                .map(|b| repository.blob_id(blob_type, b))
                .collect()
        } else {
            blobs
                .iter()
                .map(|b| repository.blob_id(blob_type, b))
                .collect()
        };
        for (id, plaintext) in ids.iter().zip(blobs) {
            if self.is_known(id)? {
                continue;
            }
            self.written.insert(*id);
            let packer = self.packer.as_mut().ok_or(Error::WriterFlushed)?;
            packer.submit(Job {
                id: *id,
                blob_type,
                plaintext,
            })?;
        }
        let stored = self
            .packer
            .as_ref()
            .map(Packer::take_stored)
            .unwrap_or_default();
        self.note_stored(stored)?;
        Ok(ids)
    }

    /// Stores one blob (if new) and returns its id.
    pub fn add_blob(&mut self, blob_type: BlobType, plaintext: Vec<u8>) -> Result<BlobId> {
        Ok(self.add_blobs(blob_type, vec![plaintext])?[0])
    }

    /// Sealed bytes added to the repository: those sealed so far, or all
    /// once flushed.
    pub fn bytes_added(&self) -> u64 {
        self.packer
            .as_ref()
            .map_or(self.bytes_added, Packer::bytes_added)
    }

    /// Blobs added to the repository: those sealed so far, or all once
    /// flushed.
    pub fn blobs_added(&self) -> u64 {
        self.packer
            .as_ref()
            .map_or(self.blobs_added, Packer::blobs_added)
    }

    /// Records stored packs for the index, writing a segment once enough
    /// entries wait.
    fn note_stored(&mut self, packs: Vec<IndexedPack>) -> Result<()> {
        for pack in packs {
            self.unindexed_entries += pack.entries.len();
            self.unindexed.push(pack);
            if self.unindexed_entries >= SEGMENT_ENTRY_LIMIT {
                self.write_segment()?;
            }
        }
        Ok(())
    }

    /// Stores an index segment for the packs written since the last one,
    /// and adds it to the local cache.
    fn write_segment(&mut self) -> Result<()> {
        if self.unindexed.is_empty() {
            return Ok(());
        }
        let segment = IndexSegment {
            packs: std::mem::take(&mut self.unindexed),
        };
        self.unindexed_entries = 0;
        let bytes = segment.seal(self.session.id, &self.repository.index_sealer);
        let id = SegmentId(Id::of_bytes(&bytes));
        let name = id.to_string();
        self.repository
            .backend
            .put(ObjectKind::Index, &name, &bytes)
            .map_err(|e| Error::storage(ObjectKind::Index, &name, e))?;
        self.repository
            .with_index(|index| index.absorb(id, &segment))?;
        // The index finds these now: forgetting them keeps memory flat
        // however many blobs one session writes.
        for entry in segment.packs.iter().flat_map(|p| &p.entries) {
            self.written.remove(&entry.id);
        }
        Ok(())
    }

    /// Waits until every queued blob is stored, then indexes the packs.
    /// After this no blob can be added; the counters are final.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(packer) = self.packer.take() {
            let finished = packer.finish()?;
            self.bytes_added = finished.bytes_added;
            self.blobs_added = finished.blobs_added;
            self.note_stored(finished.packs)?;
        }
        self.write_segment()
    }

    /// Flushes, then stores `snapshot`: the last write, so a snapshot never
    /// names data that is not stored and indexed.
    pub fn commit(mut self, snapshot: &Snapshot) -> Result<SnapshotId> {
        self.flush()?;
        let bytes = snapshot.seal(self.session.id, &self.session.sealer);
        let id = SnapshotId(Id::of_bytes(&bytes));
        let name = id.to_string();
        self.repository
            .backend
            .put(ObjectKind::Snapshot, &name, &bytes)
            .map_err(|e| Error::storage(ObjectKind::Snapshot, &name, e))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::testing::{fast_options, memory_repository, memory_repository_on};

    fn sample_snapshot(tree: BlobId) -> Snapshot {
        Snapshot {
            time_ns: 1,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec![b"/p".to_vec()],
            tags: vec![],
            parent: None,
            tree,
            program_version: "test".into(),
            summary: Default::default(),
            unreadable: vec![],
        }
    }

    /// Writes one blob and a snapshot naming it; returns the blob's id.
    fn write_one(repo: &Repository, content: &[u8]) -> BlobId {
        let mut writer = repo.start_write(3).unwrap();
        let id = writer.add_blob(BlobType::Data, content.to_vec()).unwrap();
        let tree = writer
            .add_blob(BlobType::Tree, Tree::default().encode())
            .unwrap();
        writer.commit(&sample_snapshot(tree)).unwrap();
        id
    }

    #[test]
    fn blobs_written_by_one_handle_are_found_by_another() {
        let backend = MemoryBackend::default();
        let cache_a = tempfile::tempdir().unwrap();
        let cache_b = tempfile::tempdir().unwrap();
        let a = Repository::init(
            Box::new(backend.clone()),
            b"pw",
            &fast_options(),
            cache_a.path(),
        )
        .unwrap();
        let b = Repository::open(Box::new(backend.clone()), b"pw", cache_b.path()).unwrap();
        let id = write_one(&a, b"written by a");
        assert!(b.locate(&id).unwrap().is_none(), "b has not synced yet");
        let b = Repository::open(Box::new(backend.clone()), b"pw", cache_b.path()).unwrap();
        assert_eq!(b.read_blob(&id, BlobType::Data).unwrap(), b"written by a");
        assert!(b.read_blob(&id, BlobType::Tree).is_err(), "type is checked");
        assert!(matches!(
            Repository::open(Box::new(backend), b"wrong", cache_b.path()),
            Err(Error::WrongPassword)
        ));
    }

    #[test]
    fn duplicate_content_is_stored_once() {
        let (_cache, repo) = memory_repository();
        let mut writer = repo.start_write(3).unwrap();
        let ids = writer
            .add_blobs(
                BlobType::Data,
                vec![b"same".to_vec(), b"same".to_vec(), b"other".to_vec()],
            )
            .unwrap();
        assert_eq!(ids[0], ids[1]);
        let again = writer.add_blob(BlobType::Data, b"same".to_vec()).unwrap();
        assert_eq!(again, ids[0]);
        writer.flush().unwrap();
        assert_eq!(writer.blobs_added(), 2);
        assert!(
            writer.add_blob(BlobType::Data, b"late".to_vec()).is_err(),
            "flushed writers take no blobs"
        );
    }

    #[test]
    fn vanished_segment_or_damaged_cache_rebuilds_the_index() {
        let backend = MemoryBackend::default();
        let (cache, repo) = memory_repository_on(&backend);
        let first = write_one(&repo, b"first");
        let second = write_one(&repo, b"second");
        drop(repo);

        // Remove the segment that lists `first`: it must leave the index.
        let segments = backend.list(ObjectKind::Index).unwrap();
        assert_eq!(segments.len(), 2);
        let repo = Repository::open(Box::new(backend.clone()), b"pw", cache.path()).unwrap();
        let holder = segments
            .iter()
            .find(|name| {
                let bytes = backend.get(ObjectKind::Index, name).unwrap();
                IndexSegment::open(&bytes, &repo.index_sealer)
                    .unwrap()
                    .packs
                    .iter()
                    .any(|p| p.entries.iter().any(|e| e.id == first))
            })
            .unwrap()
            .clone();
        drop(repo);
        backend.delete(ObjectKind::Index, &holder).unwrap();
        let repo = Repository::open(Box::new(backend.clone()), b"pw", cache.path()).unwrap();
        assert!(repo.locate(&first).unwrap().is_none());
        assert!(repo.locate(&second).unwrap().is_some());
        drop(repo);

        // A damaged cache file is replaced and refilled.
        let db = std::fs::read_dir(cache.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("index.redb");
        std::fs::write(&db, b"garbage").unwrap();
        let repo = Repository::open(Box::new(backend), b"pw", cache.path()).unwrap();
        assert_eq!(repo.read_blob(&second, BlobType::Data).unwrap(), b"second");
    }

    #[test]
    fn a_cache_that_breaks_during_a_run_is_rebuilt_and_the_read_retried() {
        let (_cache, repo) = memory_repository();
        let id = write_one(&repo, b"kept");
        let path = repo.index().path().to_path_buf();
        *repo.index.write().unwrap() = IndexCache::without_tables(&path);
        assert_eq!(repo.read_blob(&id, BlobType::Data).unwrap(), b"kept");
        let notices = repo.take_notices();
        assert!(
            notices.iter().any(|n| n.contains("temporary")),
            "{notices:?}"
        );
        // Rebuilds are bounded: breaks beyond them are errors, not a loop.
        for _ in 1..MAX_INDEX_REBUILDS {
            *repo.index.write().unwrap() = IndexCache::without_tables(&path);
            assert!(repo.read_blob(&id, BlobType::Data).is_ok());
        }
        *repo.index.write().unwrap() = IndexCache::without_tables(&path);
        assert!(matches!(
            repo.read_blob(&id, BlobType::Data),
            Err(Error::IndexCache { .. })
        ));
    }

    #[test]
    fn a_backup_does_not_deduplicate_against_a_missing_pack() {
        let backend = MemoryBackend::default();
        let (cache, repo) = memory_repository_on(&backend);
        let id = write_one(&repo, b"lost then stored again");
        for pack in backend.list(ObjectKind::Pack).unwrap() {
            backend.delete(ObjectKind::Pack, &pack).unwrap();
        }
        let mut writer = repo.start_write(3).unwrap();
        let warnings = writer.take_warnings();
        assert!(warnings.iter().any(|w| w.contains("data/")), "{warnings:?}");
        assert!(!writer.contains_all(&[id]).unwrap());
        writer
            .add_blob(BlobType::Data, b"lost then stored again".to_vec())
            .unwrap();
        writer.flush().unwrap();
        assert_eq!(writer.blobs_added(), 1, "stored again");
        assert_eq!(
            repo.read_blob(&id, BlobType::Data).unwrap(),
            b"lost then stored again"
        );
        // A rebuild absorbs the segments in any order: the readable copy
        // still serves the read.
        drop(writer);
        drop(repo);
        std::fs::remove_dir_all(cache.path()).unwrap();
        let repo = Repository::open(Box::new(backend), b"pw", cache.path()).unwrap();
        assert_eq!(
            repo.read_blob(&id, BlobType::Data).unwrap(),
            b"lost then stored again"
        );
        let mut writer = repo.start_write(3).unwrap();
        assert!(writer.contains_all(&[id]).unwrap());
    }

    #[test]
    fn snapshot_references_resolve() {
        let (cache, repo) = memory_repository();
        assert!(matches!(
            repo.resolve_snapshot("latest"),
            Err(Error::SnapshotNotFound { .. })
        ));
        write_one(&repo, b"a");
        let (id, _) = repo.resolve_snapshot("latest").unwrap();
        assert_eq!(repo.resolve_snapshot(&id.0.short()).unwrap().0, id);
        assert_eq!(
            repo.resolve_snapshot(&id.to_string().to_uppercase())
                .unwrap()
                .0,
            id
        );
        assert!(matches!(
            repo.resolve_snapshot("not-hex"),
            Err(Error::SnapshotNotFound { .. })
        ));
        assert!(matches!(
            Repository::init(
                Box::new(MemoryBackend::default()),
                b"pw",
                &InitOptions {
                    compression_level: 99,
                    ..fast_options()
                },
                cache.path()
            ),
            Err(Error::OutOfRange { .. })
        ));
    }
}
