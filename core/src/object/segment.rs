//! Index segments: which pack holds which blob (SPEC.md §12).
//!
//! Every write session stores one or more segments in `index/`, sealed
//! with the repository's index key, so that a reader finds a blob without
//! opening every pack. Together the segments are the index; the local redb
//! cache ([`crate::index`]) is derived from them and can always be rebuilt.

use crate::codec;
use crate::crypto::Sealer;
use crate::id::{PackId, SessionId};
use crate::object::pack::PackEntry;
use crate::object::sealed::{self, ObjectError, SealedKind};

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
    pub fn decode(bytes: &[u8]) -> Result<IndexSegment, codec::DecodeError> {
        let segment: IndexSegment = codec::decode(bytes)?;
        for pack in &segment.packs {
            if let Some(bad) = pack.entries.iter().find(|e| !e.is_plausible()) {
                return Err(codec::DecodeError::ImplausibleEntry(bad.id.to_string()));
            }
        }
        Ok(segment)
    }

    /// Seals the segment for storage by `session`, under the index key.
    pub fn seal(&self, session: SessionId, index_sealer: &Sealer) -> Vec<u8> {
        sealed::seal(
            SealedKind::IndexSegment,
            session,
            index_sealer,
            &self.encode(),
        )
    }

    /// Opens a stored segment with the index key and decodes it.
    pub fn open(bytes: &[u8], index_sealer: &Sealer) -> Result<IndexSegment, ObjectError> {
        let plain = sealed::open(SealedKind::IndexSegment, index_sealer, bytes)?;
        Ok(IndexSegment::decode(&plain)?)
    }
}
