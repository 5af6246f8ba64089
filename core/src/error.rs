//! The crate's error type. Every variant names the object or path it concerns.

use std::path::PathBuf;

/// Result alias used throughout `cairn-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `cairn-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository exists at the given location.
    #[error("no repository at {location}")]
    RepositoryNotFound {
        /// Where one was expected.
        location: String,
    },
    /// The store holding the repository could not be reached at all (no
    /// connection), so whether a repository is there is not known.
    #[error("cannot reach the repository at {location}: {error}")]
    Unreachable {
        /// Where it was looked for.
        location: String,
        /// The backend's error.
        error: std::io::Error,
    },
    /// `init` was asked to create a repository where one already exists.
    #[error("a repository already exists at {location}")]
    RepositoryExists {
        /// Where the existing repository is.
        location: String,
    },
    /// No key file could be opened with the given password.
    #[error("wrong password: no key file in the repository opens with it")]
    WrongPassword,
    /// The password opened a key file that a key rotation superseded.
    #[error(
        "{key}: this key was revoked by a key rotation (it is of epoch {epoch}, the repository's keys of epoch {newest}); ask for a new key"
    )]
    KeyRevoked {
        /// The key file, as `keys/id`.
        key: String,
        /// Its epoch.
        epoch: u32,
        /// The newest epoch of the repository's key files.
        newest: u32,
    },
    /// A key rotation was started and not finished: nothing may be written.
    #[error(
        "epochs/: a key rotation to epoch {epoch} was started and not finished ({reason}); nothing is written until `cairn key rotate` is run again to completion"
    )]
    RotationUnfinished {
        /// The epoch the rotation was going to.
        epoch: u32,
        /// What shows it.
        reason: String,
    },
    /// A location that does not say where a repository is.
    #[error("{location}: not a repository location; expected {expected}")]
    BadLocation {
        /// The location given.
        location: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A write-only key was asked to read or delete.
    #[error("refused: the key in use is write-only, and cannot {action}; use a full key")]
    WriteOnly {
        /// What it was asked to do.
        action: &'static str,
    },
    /// An I/O operation on a local path failed.
    #[error("{path}: {error}")]
    Io {
        /// The path the operation concerned.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A storage operation on an object (or a folder of them, `kind/`)
    /// failed for another reason than its absence.
    #[error("{object}: {error}")]
    Storage {
        /// The object, as `kind/name`.
        object: String,
        /// The backend's error.
        error: std::io::Error,
    },
    /// A repository location names a kind of store this build cannot use.
    #[error("{location}: {scheme} repositories are not supported yet; give a local directory")]
    UnsupportedLocation {
        /// The location given.
        location: String,
        /// Its scheme.
        scheme: String,
    },
    /// A stored object is missing.
    #[error("{object}: missing from the repository")]
    MissingObject {
        /// The object, as `kind/id`.
        object: String,
    },
    /// A stored object failed authentication, decoding or a bounds check.
    #[error("{object}: damaged: {reason}")]
    Corrupted {
        /// The object, as `kind/id` or `blob id in pack id`.
        object: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A stored object is intact (its bytes match its name) but the
    /// repository's keys do not open it: it was sealed under another key,
    /// or forged. Writing commands refuse to go on past one.
    #[error(
        "{object}: intact, but this repository's key does not open it \
         (written under another key, or forged)"
    )]
    Unauthenticated {
        /// The object, as `kind/id`, and what led to it.
        object: String,
    },
    /// A key file opens with the password but holds another repository's
    /// keys: the repository's own objects do not open with them.
    #[error(
        "{key} opens with this password but is not this repository's key: \
         {object} does not open with it"
    )]
    ForeignKey {
        /// The key file, as `keys/id`.
        key: String,
        /// An intact object of the repository that the key does not open.
        object: String,
    },
    /// `latest` cannot be decided because a snapshot cannot be read: it
    /// might be the newest.
    #[error(
        "cannot tell which snapshot is the latest: {error}; \
         name a snapshot by id (see `cairn snapshots`)"
    )]
    LatestUnknown {
        /// Why the unreadable snapshot could not be read; it names it.
        error: Box<Error>,
    },
    /// `init` was pointed at a location that holds something other than a
    /// repository.
    #[error("{location} is not empty and is not a cairn repository; init needs a new or empty directory")]
    LocationNotEmpty {
        /// The location.
        location: String,
    },
    /// The repository uses a format version this build cannot read.
    #[error("{object}: unsupported format version {version}")]
    UnsupportedVersion {
        /// The object carrying the version.
        object: String,
        /// The version found.
        version: u32,
    },
    /// A blob referenced by a tree or snapshot is not in the index.
    #[error("blob {id} is not in the index")]
    BlobNotIndexed {
        /// The blob id.
        id: String,
    },
    /// A snapshot reference matched nothing.
    #[error("no snapshot matches {reference:?}")]
    SnapshotNotFound {
        /// What the user gave.
        reference: String,
    },
    /// A snapshot reference that does not parse.
    #[error("snapshot {reference:?}: {reason}")]
    BadSnapshotReference {
        /// What the user gave.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path that must be a regular file is something else.
    #[error("{path}: {kind}, not a file")]
    NotAFile {
        /// The path in the snapshot.
        path: String,
        /// What it is.
        kind: String,
    },
    /// Standard output (or whatever the command writes to) failed.
    #[error("cannot write the output: {error}")]
    Output {
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// A snapshot id prefix matched several snapshots.
    #[error("snapshot prefix {reference:?} is ambiguous: it matches {count} snapshots")]
    AmbiguousSnapshot {
        /// What the user gave.
        reference: String,
        /// How many matched.
        count: usize,
    },
    /// A path inside a snapshot does not exist.
    #[error("{path}: no such path in the snapshot")]
    PathNotInSnapshot {
        /// The path looked up.
        path: String,
    },
    /// A local cache other than the index could not be used.
    #[error("local cache {path}: {reason}")]
    LocalCache {
        /// The cache database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The local index cache could not be used.
    #[error("index cache {path}: {reason}")]
    IndexCache {
        /// The cache database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A restore verification found a file whose content differs from the snapshot.
    #[error("{path}: restored content does not match the snapshot")]
    VerifyMismatch {
        /// The restored file.
        path: PathBuf,
    },
    /// A command whose output was being backed up did not succeed; no
    /// snapshot was saved.
    #[error("command `{command}` (for /{name}) failed: {status}; no snapshot was saved")]
    CommandFailed {
        /// The file its output was to become.
        name: String,
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
    },
    /// A setting given by the caller is outside what cairn accepts.
    #[error("{setting} {value}: out of range {allowed}")]
    OutOfRange {
        /// The setting, as the user knows it.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// An include or exclude pattern cannot be compiled.
    #[error("pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Why it is refused.
        reason: String,
    },
    /// An earlier `init` stopped after writing key files but before the
    /// config.
    #[error(
        "{location} holds key files but no config: an earlier init did not finish; \
         remove the directory and run init again"
    )]
    UnfinishedInit {
        /// The repository's location.
        location: String,
    },
    /// A blob is larger than any reader accepts.
    #[error("a {blob_type} blob of {len_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    BlobTooLarge {
        /// `data` or `tree`.
        blob_type: &'static str,
        /// Its length.
        len_bytes: usize,
        /// The limit, `MAX_BLOB_LEN`.
        limit_bytes: u32,
    },
    /// A directory has so many entries that its tree exceeds the blob limit.
    #[error(
        "{path}: directory has too many entries: its tree of {len_bytes} bytes \
         exceeds the limit of {limit_bytes}"
    )]
    DirectoryTooLarge {
        /// The directory.
        path: PathBuf,
        /// The encoded tree's length.
        len_bytes: usize,
        /// The limit, `MAX_BLOB_LEN`.
        limit_bytes: u32,
    },
    /// The background sealing and packing threads stopped without saying
    /// why (one of them panicked, and the panic was reported).
    #[error("the packer stopped after an earlier failure")]
    PackerStopped,
    /// A held lock's object is gone: another process removed it as stale.
    #[error("{object}: this process's lock was removed by another one; stopped before storing or deleting anything more")]
    LockLost {
        /// The lock object.
        object: String,
    },
    /// Prune cannot tell what is live, so it deletes nothing.
    #[error("prune refused, nothing was deleted: {reason}; run `cairn check`, and repair first")]
    PruneUnsafe {
        /// What could not be read.
        reason: String,
    },
    /// repair snapshots would take what it cannot see for lost.
    #[error("repair refused, nothing was written: {reason}")]
    RepairRefused {
        /// Why.
        reason: String,
    },
    /// A retagged snapshot was stored but the old one could not be
    /// removed: both are in the repository.
    #[error("snapshot {new} replaces {old}, but {old} could not be removed (remove it with `cairn forget {old}`): {error}")]
    TagIncomplete {
        /// The snapshot retagged.
        old: String,
        /// Its replacement.
        new: String,
        /// Why the removal failed.
        error: Box<Error>,
    },
    /// A file's blobs do not add up to its size (a snapshot written wrong,
    /// or a blob that decodes to another length).
    #[error("{path}: the content is {actual} bytes where the file's size is {expected}")]
    ContentLength {
        /// The file.
        path: String,
        /// The size the tree gives.
        expected: u64,
        /// What the blobs hold.
        actual: u64,
    },
    /// No key file's name starts with the reference given.
    #[error("no key file {reference}…: see `cairn key list`")]
    KeyNotFound {
        /// The prefix given.
        reference: String,
    },
    /// Several key files' names start with the reference given.
    #[error("{reference} names {count} key files: give more of the id")]
    AmbiguousKey {
        /// The prefix given.
        reference: String,
        /// How many it matches.
        count: usize,
    },
    /// A key file may not be removed.
    #[error("{key}: not removed: {reason}")]
    KeyRefused {
        /// The key file.
        key: String,
        /// Why not.
        reason: String,
    },
    /// `restore --delete` was refused before anything was written.
    #[error("restore --delete refused: {reason}")]
    DeleteRefused {
        /// Why.
        reason: String,
    },
    /// Scratch space on disk (prune's and stats' sets of blobs) failed.
    #[error("a scratch file in the cache directory failed: {reason}")]
    Scratch {
        /// Why.
        reason: String,
    },
    /// Another process holds a lock that conflicts with the one wanted.
    #[error("the repository is locked: {holder}; wait for it (--retry-lock), or if that process is gone, run `cairn unlock`")]
    Locked {
        /// Who holds the lock, since when, and its object.
        holder: String,
    },
    /// A retention policy was asked for while a snapshot cannot be read:
    /// its group and time are unknown, so what the policy keeps is too.
    #[error("cannot apply a retention policy: {error}; forget snapshots by id, or repair the repository first")]
    PolicyUnknown {
        /// Why the snapshot could not be read.
        error: Box<Error>,
    },
    /// `forget` was given no rule.
    #[error("no policy given: use --keep-* options, --keep-none, or name the snapshots to forget")]
    EmptyPolicy,
    /// `--keep-none` together with keep rules.
    #[error("--keep-none cannot be combined with --keep-* options")]
    PolicyConflict,
    /// A policy would remove every snapshot of a group.
    #[error("the policy would remove all {count} snapshots of {group}: refused; use --keep-none to remove them all, or name them")]
    PolicyRemovesAll {
        /// The group, as shown to the user.
        group: String,
        /// How many snapshots it holds.
        count: usize,
    },
    /// A blob was given to a writer after it was flushed: a caller's bug.
    #[error("blob added after the writer was flushed")]
    WriterFlushed,
    /// A backup was given neither paths nor streams.
    #[error("nothing to back up: no paths and no streams given")]
    NothingToBackUp,
    /// None of a backup's source paths exist, and there is no stream.
    #[error("none of the source paths exist")]
    NoSourceExists,
    /// Streams were given beside a backup of `/`, whose root they would
    /// have to join.
    #[error("streams cannot be stored beside a backup of / itself")]
    StreamsBesideRoot,
    /// A stream's name cannot be used.
    #[error("stream name {name:?} {reason}")]
    StreamName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A path inside a snapshot (`SNAPSHOT:PATH`) contains `..`.
    #[error("{path}: a path inside a snapshot cannot contain ..")]
    ParentInSnapshotPath {
        /// The path given.
        path: PathBuf,
    },
    /// A source path given to backup could not be found or read.
    #[error("{path}: {error}")]
    Source {
        /// The source path.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    /// Builds an [`Error::Corrupted`] for `object`.
    pub fn corrupted(object: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::Corrupted {
            object: object.to_string(),
            reason: reason.to_string(),
        }
    }
}
