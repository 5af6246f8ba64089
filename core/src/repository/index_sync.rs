//! Keeping the local index cache in step with the stored segments
//! (SPEC.md §12): filled on open, rebuilt when it fails or disagrees with
//! storage, and asked where each blob lives.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::RwLockReadGuard;

use super::{open_error, parse_name, Repository};
use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{BlobId, SegmentId};
use crate::index::{BlobLocation, IndexCache, OpenedCache};
use crate::object::segment::{IndexSegment, MAX_SEGMENT_LEN};

/// Rebuilds of the index cache allowed per open repository, after the one
/// that opening may do: enough to heal a cache damaged under us even after
/// one rebuild was spent on a blob that is really damaged, without
/// rebuilding it again and again for data that is really missing.
pub(super) const MAX_INDEX_REBUILDS: u64 = 2;

/// What [`Repository::rebuild_index`] did.
pub(super) enum Rebuild {
    /// Rebuilt; with the line to tell the user, if any.
    Done(Option<String>),
    /// Another thread rebuilt it since the caller looked: try again.
    ByAnotherThread,
    /// The rebuilds allowed are used up: trying again is not worth it.
    Exhausted,
}

/// Whether a failed blob read could come from a cache that disagrees with
/// the repository's segments, so that rebuilding the cache might help.
pub(super) fn may_be_stale_cache(error: &Error) -> bool {
    matches!(
        error,
        Error::BlobNotIndexed { .. }
            | Error::Corrupted { .. }
            | Error::MissingObject { .. }
            | Error::Unauthenticated { .. }
            | Error::IndexCache { .. }
    )
}

impl Repository {
    pub(super) fn index(&self) -> RwLockReadGuard<'_, IndexCache> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn notices_lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.notices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lines for the user gathered since the last call: the index cache was
    /// rebuilt, or a temporary one used in its place.
    pub fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices_lock())
    }

    /// Runs `op` on the index cache. If the cache fails (a redb error, or a
    /// damaged file), it is rebuilt from the segments and `op` runs again.
    pub(super) fn with_index<T>(&self, mut op: impl FnMut(&IndexCache) -> Result<T>) -> Result<T> {
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
    pub(super) fn rebuild_index(&self, seen: u64, reason: &str) -> Result<Rebuild> {
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
    pub(super) fn synced(
        &self,
        fresh: OpenedCache,
    ) -> Result<(IndexCache, Option<String>, Vec<Error>)> {
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

    /// Adds new index segments to the cache; rebuilds it if one vanished.
    /// Returns the segments that could not be read.
    pub(super) fn sync_index(&self, cache: &IndexCache) -> Result<Vec<Error>> {
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

    pub(crate) fn read_segment(&self, id: SegmentId) -> Result<IndexSegment> {
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

    /// Every location the index has for a blob, the one absorbed last
    /// first.
    pub(crate) fn locations(&self, id: &BlobId) -> Result<Vec<BlobLocation>> {
        let all = self.with_index(|index| index.locations(id, true))?;
        Ok(all.into_iter().map(|(_, location)| location).collect())
    }

    /// Where a blob is stored, if it is.
    pub fn locate(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        self.with_index(|index| index.lookup(id))
    }
}
