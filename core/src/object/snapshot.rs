//! Snapshots: a root tree plus when, where and what (SPEC.md §14).

use crate::codec;
use crate::crypto::Sealer;
use crate::id::{BlobId, SessionId, SnapshotId};
use crate::object::sealed::{self, ObjectError, SealedKind};

/// Largest snapshot object read from storage.
pub const MAX_SNAPSHOT_LEN: u64 = 16 << 20;

/// The structure version snapshots are framed with: 2 added `original`
/// (SPEC.md §14).
pub const SNAPSHOT_VERSION: u8 = 2;

/// Counters describing one backup run.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Summary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files in the parent whose metadata changed.
    pub files_changed: u64,
    /// Files equal to the parent's entry.
    pub files_unmodified: u64,
    /// Directories not in the parent.
    pub dirs_new: u64,
    /// Directories whose tree differs from the parent's.
    pub dirs_changed: u64,
    /// Directories whose tree equals the parent's.
    pub dirs_unmodified: u64,
    /// Bytes of file content read from the source.
    pub bytes_read: u64,
    /// Bytes added to the repository (sealed blob bytes).
    pub bytes_added: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Wall time of the run in nanoseconds.
    pub duration_ns: u64,
}

/// A point-in-time picture of the backed-up paths.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Snapshot {
    /// Time of the snapshot, nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// Host that made it.
    pub hostname: String,
    /// User that made it.
    pub username: String,
    /// The absolute source paths, as raw bytes.
    pub paths: Vec<Vec<u8>>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// The snapshot this one was compared with, if any.
    pub parent: Option<SnapshotId>,
    /// The root tree.
    pub tree: BlobId,
    /// `cairn x.y.z` that wrote it.
    pub program_version: String,
    /// Counters of the run.
    pub summary: Summary,
    /// Source paths that could not be read; empty for a complete snapshot.
    pub unreadable: Vec<Vec<u8>>,
    /// The snapshot this one replaces (after `tag` or `repair snapshots`),
    /// if any: the first of the line, when one replaced another already.
    pub original: Option<SnapshotId>,
}

impl Snapshot {
    /// Encodes the snapshot's plaintext, as version [`SNAPSHOT_VERSION`].
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_as(SNAPSHOT_VERSION, self)
    }

    /// Decodes a snapshot's plaintext, of version 2 or 1. Version 1 ends
    /// where version 2 adds `original`, so it decodes as version 2 with
    /// `original` absent: an Option's `None` tag appended.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, codec::DecodeError> {
        match bytes.first() {
            Some(1) => {
                let mut upgraded = Vec::with_capacity(bytes.len() + 1);
                upgraded.push(SNAPSHOT_VERSION);
                upgraded.extend_from_slice(&bytes[1..]);
                upgraded.push(0);
                codec::decode_as(SNAPSHOT_VERSION, &upgraded)
            }
            _ => codec::decode_as(SNAPSHOT_VERSION, bytes),
        }
    }

    /// Seals the snapshot for storage by `session`, under its data key.
    pub fn seal(&self, session: SessionId, sealer: &Sealer) -> Vec<u8> {
        sealed::seal(SealedKind::Snapshot, session, sealer, &self.encode())
    }

    /// The session whose data key opens a stored snapshot.
    pub fn session_of(bytes: &[u8]) -> Result<SessionId, ObjectError> {
        sealed::session_of(SealedKind::Snapshot, bytes)
    }

    /// Opens a stored snapshot with its session's data key and decodes it.
    pub fn open(bytes: &[u8], sealer: &Sealer) -> Result<Snapshot, ObjectError> {
        let plain = sealed::open(SealedKind::Snapshot, sealer, bytes)?;
        Ok(Snapshot::decode(&plain)?)
    }

    /// Whether some source paths could not be read.
    pub fn is_incomplete(&self) -> bool {
        !self.unreadable.is_empty()
    }
}
