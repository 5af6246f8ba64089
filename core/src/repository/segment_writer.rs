//! Index segments, gathered pack by pack and stored once they are big
//! enough (SPEC.md §12, "When segments are written").

use crate::backend::{Backend, ObjectKind};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::{Id, SegmentId, SessionId};
use crate::object::segment::{IndexSegment, IndexedPack};

/// Index segments are stored once they list this many blobs, so that no
/// segment grows past what a reader accepts.
pub(crate) const SEGMENT_ENTRY_LIMIT: usize = 100_000;

/// An index segment stored, for the caller's cache.
pub type StoredSegment = (SegmentId, IndexSegment);

/// Gathers pack listings and stores a segment for them once they hold
/// [`SEGMENT_ENTRY_LIMIT`] entries, and at [`SegmentWriter::finish`].
pub(crate) struct SegmentWriter {
    session: SessionId,
    index_sealer: Sealer,
    waiting: Vec<IndexedPack>,
    waiting_entries: usize,
}

impl SegmentWriter {
    /// Segments sealed with `index_sealer`, naming `session` as their
    /// writer.
    pub(crate) fn new(session: SessionId, index_sealer: Sealer) -> SegmentWriter {
        SegmentWriter {
            session,
            index_sealer,
            waiting: Vec::new(),
            waiting_entries: 0,
        }
    }

    /// Adds a pack, which must be stored already; returns the segment
    /// stored if this filled one.
    pub(crate) fn add(
        &mut self,
        backend: &dyn Backend,
        pack: IndexedPack,
    ) -> Result<Option<StoredSegment>> {
        self.waiting_entries += pack.entries.len();
        self.waiting.push(pack);
        if self.waiting_entries >= SEGMENT_ENTRY_LIMIT {
            return self.finish(backend);
        }
        Ok(None)
    }

    /// Stores a segment for the packs added since the last one, if any.
    pub(crate) fn finish(&mut self, backend: &dyn Backend) -> Result<Option<StoredSegment>> {
        if self.waiting.is_empty() {
            return Ok(None);
        }
        let segment = IndexSegment {
            packs: std::mem::take(&mut self.waiting),
        };
        self.waiting_entries = 0;
        let bytes = segment.seal(self.session, &self.index_sealer);
        let id = SegmentId(Id::of_bytes(&bytes));
        let name = id.to_string();
        backend
            .put(ObjectKind::Index, &name, &bytes)
            .map_err(|e| Error::storage(ObjectKind::Index, &name, e))?;
        Ok(Some((id, segment)))
    }
}
