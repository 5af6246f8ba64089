//! cairn-core: a content-addressed, deduplicating, encrypted snapshot store.
//!
//! Files are cut into chunks by content (FastCDC), named by keyed BLAKE3,
//! compressed and sealed, and collected into packfiles whose index is cached
//! in redb. Each directory becomes a [`Tree`] blob, and a [`Snapshot`] names
//! the root tree. Everything stored is described byte by byte in
//! `format-spec/SPEC.md`.
//!
//! The public API is what a program embedding cairn needs: open or create a
//! [`Repository`] on a [`backend`], [`backup`] into it, list its snapshots,
//! [`restore`] one, and report through [`progress`]. Errors are one
//! [`Error`] type whose variants name the object or path they concern.
//!
//! ```no_run
//! use cairn_core::{backend, progress::Silent, BackupOptions, InitOptions, Repository};
//! # fn main() -> cairn_core::Result<()> {
//! let cache = std::path::Path::new("/tmp/cairn-cache");
//! let repo = Repository::init(backend::open("/tmp/repo")?, b"pw", &InitOptions::default(), cache)?;
//! let options = BackupOptions::new(vec!["/etc".into()]);
//! let outcome = cairn_core::backup(&repo, options, &Silent)?;
//! println!("snapshot {}", outcome.snapshot_id);
//! # Ok(()) }
//! ```
//!
//! # A tour of the source
//!
//! The modules are layers, lowest first; each uses only those above it in
//! this list (and `error`, `id`, which everything uses).
//!
//! - `codec`, `crypto`, `id`, `chunker`: bytes ↔ structures (bincode,
//!   versioned), sealing (AES-256-GCM-SIV, X25519, Argon2id), content ids
//!   (keyed BLAKE3), and content-defined chunking (FastCDC).
//! - `object/`: the stored objects, one file each, each owning its bytes
//!   and its seal/open pair: `config`, `key_file`, `session`, `sealed` (the
//!   envelope), `blob`, `pack`, `tree`, `snapshot`, `segment` (of the index).
//! - [`backend`]: storage of opaque objects by kind and name. The trait,
//!   `local` (a directory) and `memory` (a map, optionally kept in an image
//!   file), and [`backend::open`], which picks one by location. Nothing
//!   above it builds a path from a repository location.
//! - `index/`: the redb cache of where every blob lives, derived from the
//!   stored segments and rebuilt whenever it fails or disagrees.
//! - `repository/`: an open repository. `unlock` (key files, the key
//!   check, session keys), `index_sync` (the cache kept in step), `read`
//!   (verified reads), `snapshots` (listing, resolving `latest`), `writer`
//!   (session start, blob writer, commit) and `packer` (sealing as tasks on
//!   rayon's pool, and the pack thread, which also stores index segments).
//! - `pattern`: the one pattern dialect, matched component by component.
//! - `archiver/`: backup, as walk → chunk → store → tree → snapshot:
//!   `sources`, `stream`, `walk`, `file`, `store`, `tree`, `node`, `exclude`.
//! - `restorer/`: restore, as snapshot → tree → blobs → files: `walk`,
//!   `file`, `create`, `open_dir`, `metadata`, `path_buffer`.
//! - [`forget`]: retention policies (restic's semantics) and removing
//!   snapshots.
//! - [`progress`]: how the pipelines report to a user interface.
//!
//! Unit tests of a module live beside it (`tests.rs` where they are long);
//! `roundtrip` holds the property tests of every stored structure and
//! `vectors` checks the format's test vectors.
#![deny(missing_docs)]

pub mod allocator;
pub(crate) mod archiver;
pub mod backend;
pub mod browse;
pub mod check;
pub(crate) mod chunker;
pub(crate) mod codec;
pub mod copy;
pub(crate) mod crypto;
pub(crate) mod error;
pub mod forget;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod id;
pub(crate) mod index;
pub mod keys;
pub(crate) mod object;
pub mod operate;
mod pattern;
pub mod progress;
pub mod prune;
pub mod repair;
pub(crate) mod repository;
pub(crate) mod restorer;
#[cfg(test)]
mod roundtrip;
mod scratch;
pub mod select;
pub mod tag;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod vectors;
mod xorshift;

// The public API: what a program embedding cairn needs. Everything else is
// crate-private, so that core can be reshaped without breaking callers.
pub use archiver::exclude::ExcludeOptions;
pub use archiver::{
    backup, local_hostname, local_username, normalize_path, BackupOptions, BackupOutcome,
    StreamSource,
};
pub use chunker::ChunkerParams;
pub use error::{Error, Result};
pub use id::{BlobId, Id, SnapshotId};
pub use object::blob::BlobType;
pub use object::config::{Config, DEFAULT_COMPRESSION_LEVEL};
pub use object::key_file::{KdfParams, KeyFileHeader, KeyLabels, KeyRole};
pub use object::snapshot::{Snapshot, Summary};
pub use object::tree::{Node, NodeKind, Timestamp, Tree, Xattr};
pub use repository::lock::{
    release_held_locks, take_unremoved_locks, LockHost, LockKind, RepositoryLock,
};
pub use repository::{BlobWriter, InitOptions, Repository, SnapshotList};
pub use restorer::overwrite::{Action as RestoreAction, Overwrite, Reason as RestoreReason};
pub use restorer::{restore, RestoreOptions, RestoreSummary};

/// Internals that the fuzz targets and the stage benchmarks reach: the
/// decoders of stored bytes and the pipeline's stages. Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::chunker::Chunker;
    pub use crate::crypto::{IdKey, Sealer, SecretKey};
    pub use crate::object::blob::Encoder;
    pub use crate::object::pack::{open_trailer, trailer_bounds, trailer_session, FOOTER_LEN};
    pub use crate::object::segment::IndexSegment;
    pub use crate::xorshift::Xorshift64;
}
