//! Opening a repository and reading and writing through it (SPEC.md §15).
//!
//! All operations reach storage through here, which enforces the write
//! order: session object, then packs, then the index segment naming them,
//! then the snapshot naming their trees. A crash at any point leaves only
//! unreferenced objects, never a reference to something missing.

mod index_sync;
pub(crate) mod lock;
mod pack_cache;
pub(crate) mod packer;
mod read;
pub(crate) mod segment_writer;
mod snapshots;
#[cfg(test)]
mod tests;
mod tree_cache;
mod unlock;
mod writer;
mod written;

pub(crate) use pack_cache::PackCache;
pub use snapshots::SnapshotList;
pub use writer::BlobWriter;

use unlock::Unlocked;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use crate::backend::{Backend, ObjectKind};
use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::{self, Sealer};
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, SessionId};
use crate::index::IndexCache;
use crate::object::blob::BlobType;
use crate::object::config::{Config, ConfigError, DEFAULT_PACK_TARGET_BYTES, REPOSITORY_VERSION};
use crate::object::key_file::{
    self, KdfParams, KeyFileHeader, KeyFileSpec, KeyLabels, KeyRole, MasterKeys,
};
use crate::object::sealed::ObjectError;

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
    /// Host and user recorded in the first key file (SPEC.md §5).
    pub labels: KeyLabels,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::DEFAULT,
            compression_level: crate::object::config::DEFAULT_COMPRESSION_LEVEL,
            pack_target_bytes: DEFAULT_PACK_TARGET_BYTES,
            kdf: KdfParams::DEFAULT,
            labels: KeyLabels::default(),
        }
    }
}

/// An open repository: config, keys and an index cache in step with storage.
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: Config,
    keys: MasterKeys,
    /// The key file the password opened (`keys/<name>`); it changes when
    /// `key passwd` replaces it.
    key_name: Mutex<String>,
    /// Its clear header: role and epoch.
    key_header: KeyFileHeader,
    /// For a write-only key, what it wrote, kept on this host; `None` for
    /// a full key, or if the file cannot be used (then a notice says so).
    written: Option<written::Written>,
    /// For a key of epoch 1 or more, where earlier sessions' data keys are.
    epoch: unlock::EpochSessions,
    index_sealer: Sealer,
    chunker: Chunker,
    /// Behind a lock so that a damaged cache can be swapped for a rebuilt
    /// one while other threads read through the repository.
    index: RwLock<IndexCache>,
    /// How many times the cache was rebuilt since open.
    index_rebuilds: AtomicU64,
    sessions: Mutex<HashMap<SessionId, Sealer>>,
    damaged_segments: Vec<Error>,
    /// Lines for the user about the cache (rebuilt, or a stand-in used)
    /// and about locks (stale ones removed, unreadable ones passed over).
    notices: Mutex<Vec<String>>,
    /// The clock and process table locks use.
    lock_host: Arc<dyn lock::LockHost>,
    /// The locks this process took on the repository, while they are held.
    held_locks: Mutex<Vec<std::sync::Weak<Mutex<lock::Held>>>>,
    /// Tree blobs kept on this host, for a remote store (and a full key).
    trees: Option<Arc<tree_cache::TreeCache>>,
    /// Set while a check or repair runs: they judge what storage holds, so
    /// they read every tree from there, through a cache of their own for
    /// the run ([`TreeCache::temporary`]) if the store is remote.
    trees_from_storage: Mutex<RunTrees>,
    /// Packs stored at once by a writer.
    connections: usize,
}

/// The error for a sealed object that did not open: unauthenticated if it
/// failed authentication (its bytes matched its name), damaged otherwise.
fn open_error(object: String, error: ObjectError) -> Error {
    match error {
        ObjectError::Authentication => Error::Unauthenticated { object },
        ObjectError::Malformed(_) | ObjectError::Undecodable(_) => Error::corrupted(object, error),
    }
}

/// See [`Repository::read_trees_from_storage`].
pub(crate) struct TreesFromStorage<'a>(&'a Repository);

impl Drop for TreesFromStorage<'_> {
    fn drop(&mut self) {
        let mut run = self.0.run_trees();
        run.guards -= 1;
        if run.guards == 0 {
            run.cache = None;
        }
    }
}

/// How trees are read while checks or repairs run: how many are running,
/// and the cache of the run they share.
#[derive(Default)]
struct RunTrees {
    guards: usize,
    cache: Option<Arc<tree_cache::TreeCache>>,
}

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

/// Entries of a tree left out because they are unsafe or repeat a name,
/// each with its error (see [`crate::object::tree::Tree::decode_lenient`]).
pub(crate) type Refused = Vec<(Vec<u8>, Error)>;

/// Errors unless `kdf` is within what a key file may ask for (SPEC.md §5).
pub(crate) fn check_kdf(kdf: KdfParams) -> Result<()> {
    if kdf.is_bounded() {
        return Ok(());
    }
    Err(Error::OutOfRange {
        setting: "key derivation (KiB, passes, lanes)",
        value: format!(
            "{}, {}, {}",
            kdf.memory_kib, kdf.iterations, kdf.parallelism
        ),
        allowed: "8..=1048576 KiB (at least 8 per lane), 1..=64 passes, 1..=16 lanes",
    })
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
        Repository::init_with_keys(
            backend,
            password,
            options,
            cache_dir,
            MasterKeys::generate(),
        )
    }

    /// [`Repository::init`] for a repository that names and cuts blobs as
    /// `like` does (its id key, chunker parameters and seed; every other
    /// key fresh), so that `copy` between them moves blobs as they are.
    /// The chunker parameters of `options` are replaced by `like`'s.
    pub fn init_naming_blobs_like(
        backend: Box<dyn Backend>,
        password: &[u8],
        options: &InitOptions,
        cache_dir: &Path,
        like: &Repository,
    ) -> Result<Repository> {
        like.require_full_key("share its chunker parameters")?;
        let options = InitOptions {
            chunker: like.config.chunker,
            ..options.clone()
        };
        Repository::init_with_keys(
            backend,
            password,
            &options,
            cache_dir,
            MasterKeys::generate().with_blob_naming_of(&like.keys),
        )
    }

    /// [`Repository::init`] with given master keys: the structure-aware
    /// fuzz target's repository, whose blob ids must not change between
    /// runs.
    pub(crate) fn init_with_keys(
        backend: Box<dyn Backend>,
        password: &[u8],
        options: &InitOptions,
        cache_dir: &Path,
        keys: MasterKeys,
    ) -> Result<Repository> {
        check_kdf(options.kdf)?;
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
        let config = Config {
            version: REPOSITORY_VERSION,
            id: Id(crypto::random_bytes()),
            chunker: options.chunker,
            compression_level: options.compression_level,
            pack_target_bytes: options.pack_target_bytes,
        };
        let spec = KeyFileSpec {
            role: KeyRole::Full,
            epoch: 0,
            labels: options.labels.clone(),
        };
        let key_file = key_file::seal_key_file(&keys, password, options.kdf, &spec)
            .expect("new master keys make a full key file");
        let header = key_file::read_header(&key_file).expect("a key file just sealed");
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
        let unlocked = Unlocked {
            keys,
            name: key_name,
            header,
            epoch: unlock::EpochSessions::default(),
        };
        Repository::assemble(backend, config, unlocked, cache_dir)
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
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Err(Error::Unreachable {
                location: backend.location(),
                error: e,
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
        let unlocked = Repository::unlock(backend.as_ref(), password)?;
        Repository::assemble(backend, config, unlocked, cache_dir)
    }

    fn assemble(
        backend: Box<dyn Backend>,
        config: Config,
        unlocked: Unlocked,
        cache_dir: &Path,
    ) -> Result<Repository> {
        let Unlocked {
            keys,
            name: key_name,
            header: key_header,
            epoch,
        } = unlocked;
        // Named by a keyed hash of the repository id: the config is not
        // authenticated, and a repository claiming another's id must not
        // share (and so trust) that repository's index cache.
        let cache_name = blake3::keyed_hash(&keys.id_key.0, &config.id.0).to_hex();
        let index_path = cache_dir.join(cache_name.as_str()).join("index.redb");
        let trees = (backend.is_remote() && keys.private.is_some())
            .then(|| {
                tree_cache::TreeCache::open(&cache_dir.join(cache_name.as_str()).join("trees.redb"))
            })
            .flatten()
            .map(Arc::new);
        let connections = backend.default_connections();
        let opened = IndexCache::open(&index_path)?;
        let mut notices: Vec<String> = opened.notice.into_iter().collect();
        let written = match keys.role() {
            KeyRole::Full => None,
            KeyRole::WriteOnly => {
                match written::Written::open(
                    &cache_dir.join(cache_name.as_str()).join("written.redb"),
                ) {
                    Ok(written) => Some(written),
                    Err(e) => {
                        notices.push(format!(
                            "{e}: this run neither shows nor compares against earlier backups"
                        ));
                        None
                    }
                }
            }
        };
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
            key_name: Mutex::new(key_name),
            key_header,
            written,
            epoch,
            notices: Mutex::new(notices),
            lock_host: Arc::new(lock::SystemHost),
            held_locks: Mutex::new(Vec::new()),
            trees,
            trees_from_storage: Mutex::new(RunTrees::default()),
            connections,
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

    /// Where the repository is, for messages.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Whether this repository names and cuts blobs as `other` does (same
    /// id key, chunker parameters and seed), so that blobs copied between
    /// them keep their ids.
    pub(crate) fn names_blobs_like(&self, other: &Repository) -> bool {
        self.keys.id_key.0 == other.keys.id_key.0
            && self.keys.chunker_seed == other.keys.chunker_seed
            && self.config.chunker == other.config.chunker
    }

    /// Reads trees from storage rather than the tree cache while the guard
    /// lives: for a check or repair, which judge what storage holds.
    pub(crate) fn read_trees_from_storage(&self) -> TreesFromStorage<'_> {
        let mut run = self.run_trees();
        if run.guards == 0 && self.trees.is_some() {
            run.cache = tree_cache::TreeCache::temporary(&self.scratch_dir()).map(Arc::new);
        }
        run.guards += 1;
        TreesFromStorage(self)
    }

    fn run_trees(&self) -> std::sync::MutexGuard<'_, RunTrees> {
        self.trees_from_storage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The tree cache reads go through now, if any.
    pub(crate) fn tree_cache(&self) -> Option<Arc<tree_cache::TreeCache>> {
        let cache = {
            let run = self.run_trees();
            if run.guards > 0 {
                run.cache.clone()
            } else {
                self.trees.clone()
            }
        };
        cache.filter(|cache| cache.is_usable())
    }

    /// How many threads should read blobs at once: one per core on a local
    /// disk; on object storage, where a read mostly waits on the network,
    /// two per connection.
    pub(crate) fn reader_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        if self.backend.is_remote() {
            cores.max(2 * self.connections)
        } else {
            cores
        }
    }

    /// Sets how many packs a writer stores at once (at least one); the
    /// default is the store's ([`Backend::default_connections`]).
    pub fn set_connections(&mut self, connections: usize) {
        self.connections = connections.max(1);
    }

    /// A folder for scratch files beside the index cache (prune's set of
    /// live blobs).
    pub(crate) fn scratch_dir(&self) -> std::path::PathBuf {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .path()
            .parent()
            .map_or_else(std::env::temp_dir, std::path::Path::to_path_buf)
    }

    /// The ids of all objects of `kind`, sorted; names that are not ids
    /// (foreign files) are left out.
    pub(crate) fn list_ids(&self, kind: ObjectKind) -> Result<Vec<Id>> {
        let mut ids: Vec<Id> = self
            .backend
            .list(kind)
            .map_err(|e| Error::storage(kind, "", e))?
            .iter()
            .filter_map(|name| parse_name(name))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The store, for commands that walk its objects (check).
    /// The name of the key file this run's password opened.
    pub fn key_in_use(&self) -> String {
        self.key_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that the key file in use is now `name` (`key passwd`).
    pub(crate) fn set_key_in_use(&self, name: String) {
        *self.key_name.lock().unwrap_or_else(|p| p.into_inner()) = name;
    }

    /// The master keys, to seal them in a new key file.
    pub(crate) fn master_keys(&self) -> &MasterKeys {
        &self.keys
    }

    /// Every session stored, by id: the version 1 objects listed, and the
    /// sessions an epoch record maps to a re-wrapped object that is listed.
    pub(crate) fn stored_sessions(&self) -> Result<std::collections::HashSet<SessionId>> {
        let listed: std::collections::HashSet<Id> =
            self.list_ids(ObjectKind::Session)?.into_iter().collect();
        let mut stored: std::collections::HashSet<SessionId> =
            listed.iter().copied().map(SessionId).collect();
        for (original, object) in &self.epoch.sessions {
            if listed.contains(object) {
                stored.insert(*original);
            }
        }
        // A write-only key cannot read the epoch record: after a rotation
        // it learns which sessions the re-wrapped objects stand for from
        // their clear headers (one small read each).
        if self.keys.private.is_none() {
            for object in &listed {
                let header = self.backend.get_range(
                    ObjectKind::Session,
                    &object.to_hex(),
                    0,
                    crate::object::session::REWRAPPED_HEADER_LEN as u64,
                );
                if let Ok((original, _)) = header
                    .as_deref()
                    .map(crate::object::session::rewrapped_header_prefix)
                    .unwrap_or(Err(crate::object::session::SessionError::Malformed(
                        "unread",
                    )))
                {
                    stored.insert(original);
                }
            }
        }
        Ok(stored)
    }

    /// Errors if an epoch record names an epoch above the key's: a
    /// rotation was started and not finished (or the records were forged),
    /// and sessions wrapped to this key's public key might be unreadable
    /// to the keys the rotation leaves (SPEC.md §18, "Writers").
    pub(crate) fn check_no_newer_epoch(&self) -> Result<()> {
        let names = self
            .backend
            .list(ObjectKind::Epoch)
            .map_err(|e| Error::storage(ObjectKind::Epoch, "", e))?;
        for name in names.iter().filter(|n| parse_name(n).is_some()) {
            let header = crate::object::epoch::read_header_of(self.backend.as_ref(), name)
                .map_err(|e| Error::storage(ObjectKind::Epoch, name, e))?;
            if let Ok(header) = header {
                if header.epoch > self.key_header.epoch {
                    return Err(Error::RotationUnfinished {
                        epoch: header.epoch,
                        reason: format!(
                            "its record is stored, and this key is of epoch {}",
                            self.key_header.epoch
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The sessions of earlier epochs the key's epoch record maps.
    pub(crate) fn rewrapped_sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.epoch.sessions.keys().copied()
    }

    /// The re-wrapped object that holds session `id`'s data key, if the
    /// key's epoch record maps it.
    pub(crate) fn rewrapped_object(&self, id: SessionId) -> Option<Id> {
        self.epoch.sessions.get(&id).copied()
    }

    /// The key's epoch record, if it has one (epoch 1 or more).
    pub(crate) fn epoch_record(&self) -> Option<Id> {
        self.epoch.record
    }

    /// The header of the key file in use: its role and epoch.
    pub fn key_header(&self) -> KeyFileHeader {
        self.key_header
    }

    /// Errors unless the key in use is a full key: what every command that
    /// reads snapshots' contents or deletes calls first, so that a
    /// write-only key is refused before any work (SPEC.md §18).
    pub fn require_full_key(&self, action: &'static str) -> Result<()> {
        match self.keys.role() {
            KeyRole::Full => Ok(()),
            KeyRole::WriteOnly => Err(Error::WriteOnly { action }),
        }
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
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
}
