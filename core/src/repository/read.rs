//! Verified reads: every object is checked against its name, every blob
//! authenticated and checked against its id before anyone sees it.

use std::io;

use rayon::prelude::*;
use std::sync::atomic::Ordering;

use super::index_sync::{may_be_stale_cache, Rebuild};
use super::{Refused, Repository};
use crate::backend::{object_name, ObjectKind};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::id::{BlobId, Id};
use crate::index::BlobLocation;
use crate::object::blob::{self, BlobType};
use crate::object::pack::{
    open_trailer, trailer_bounds, trailer_session, PackEntry, PackError, FOOTER_LEN,
};
use crate::object::tree::Tree;

use super::pack_cache::PackCache;
use super::tree_cache::TreeCache;

/// Tree blobs of a pack are read together when the bytes between them
/// are at most this many...
const TREE_RUN_GAP: u32 = 256 << 10;
/// ...and the read is at most this long.
const TREE_RUN_BYTES: u32 = 8 << 20;

/// Data blobs are read together while they follow one another in one
/// pack, up to this many bytes in one read.
const DATA_RUN_BYTES: u64 = 8 << 20;

/// `located` cut into runs of consecutive indices whose blobs lie one
/// right after another in one pack (with plausible data entries), each
/// at most [`DATA_RUN_BYTES`] long; a blob not found, or not a plausible
/// data entry, is a run of its own.
fn adjacent_runs(located: &[Option<BlobLocation>]) -> Vec<std::ops::Range<usize>> {
    fn usable(l: &Option<BlobLocation>) -> Option<&BlobLocation> {
        l.as_ref()
            .filter(|l| l.entry.blob_type() == Some(BlobType::Data) && l.entry.is_plausible())
    }
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for i in 0..located.len() {
        let joins = runs.last().is_some_and(|run| {
            let (Some(first), Some(prev), Some(next)) = (
                usable(&located[run.start]),
                usable(&located[i - 1]),
                usable(&located[i]),
            ) else {
                return false;
            };
            let prev_end = u64::from(prev.entry.offset) + u64::from(prev.entry.stored_len);
            let next_end = u64::from(next.entry.offset) + u64::from(next.entry.stored_len);
            next.pack == prev.pack
                && next.session == prev.session
                && u64::from(next.entry.offset) == prev_end
                && next_end - u64::from(first.entry.offset) <= DATA_RUN_BYTES
        });
        match runs.last_mut() {
            Some(run) if joins => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// Where a run of entries ends (they are sorted by offset and plausible).
fn run_end(run: &[&PackEntry]) -> u32 {
    run.iter()
        .map(|e| e.offset.saturating_add(e.stored_len))
        .max()
        .unwrap_or(0)
}

/// `entries`, sorted by offset, cut into runs each read with one range
/// read: close together, and not too long in all.
fn tree_runs<'a>(entries: &'a [&'a PackEntry]) -> Vec<&'a [&'a PackEntry]> {
    let mut runs = Vec::new();
    let (mut first, mut end) = (0, 0u32);
    for (i, entry) in entries.iter().enumerate() {
        let entry_end = entry.offset.saturating_add(entry.stored_len);
        let joins = i > first
            && entry.offset <= end.saturating_add(TREE_RUN_GAP)
            && entry_end.max(end) - entries[first].offset <= TREE_RUN_BYTES;
        if i > first && !joins {
            runs.push(&entries[first..i]);
            first = i;
            end = 0;
        }
        end = end.max(entry_end);
    }
    if first < entries.len() {
        runs.push(&entries[first..]);
    }
    runs
}

impl Repository {
    /// Reads a whole object of at most `max_len` bytes and checks that its
    /// name is the hash of its bytes.
    pub(super) fn get_verified(
        &self,
        kind: ObjectKind,
        name: &str,
        max_len: u64,
    ) -> Result<Vec<u8>> {
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

    /// Reads the data blobs `ids`, in order, as [`Repository::read_blob`]
    /// would, but with one range read for each run of blobs stored one
    /// after another in one pack (a file's chunks usually are): on object
    /// storage each read is a round trip. Runs are fetched, and blobs
    /// opened, in parallel. A blob whose run fails to read or that fails to
    /// open is read alone, with every fallback of `read_blob`.
    ///
    /// With `packs` (a restore from a remote store, see
    /// [`Repository::whole_packs`]), each pack is fetched whole instead, once.
    pub(crate) fn read_data_blobs(
        &self,
        ids: &[BlobId],
        packs: Option<&PackCache>,
    ) -> Vec<Result<Vec<u8>>> {
        let located: Vec<Option<BlobLocation>> = ids
            .iter()
            .map(|id| self.with_index(|index| index.lookup(id)).ok().flatten())
            .collect();
        if let Some(packs) = packs {
            return ids
                .par_iter()
                .zip(&located)
                .map(|(id, location)| {
                    let opened = location.as_ref().and_then(|location| {
                        let pack = packs.pack(self.backend.as_ref(), &location.pack)?;
                        let at = location.entry.offset as usize;
                        let stored = pack.get(at..at + location.entry.stored_len as usize)?;
                        let sealer = self.session_sealer(location.session).ok()?;
                        self.open_blob(&location.entry, BlobType::Data, stored.to_vec(), &sealer)
                            .ok()
                    });
                    match opened {
                        Some(plaintext) => Ok(plaintext),
                        None => self.read_blob(id, BlobType::Data),
                    }
                })
                .collect();
        }
        let runs = adjacent_runs(&located);
        let fetched: Vec<Option<Vec<u8>>> = runs
            .par_iter()
            .map(|run| {
                let first = located[run.start].as_ref()?;
                let last = located[run.end - 1].as_ref()?;
                let start = u64::from(first.entry.offset);
                let end = u64::from(last.entry.offset) + u64::from(last.entry.stored_len);
                self.backend
                    .get_range(
                        ObjectKind::Pack,
                        &first.pack.to_string(),
                        start,
                        end - start,
                    )
                    .ok()
            })
            .collect();
        (0..ids.len())
            .into_par_iter()
            .map(|i| {
                let run = runs.partition_point(|run| run.end <= i);
                let stored =
                    located[i]
                        .as_ref()
                        .zip(fetched[run].as_ref())
                        .and_then(|(location, bytes)| {
                            let base = located[runs[run].start].as_ref()?.entry.offset;
                            let at = (location.entry.offset - base) as usize;
                            let stored = bytes.get(at..at + location.entry.stored_len as usize)?;
                            Some((location, stored.to_vec()))
                        });
                let opened = stored.and_then(|(location, stored)| {
                    let sealer = self.session_sealer(location.session).ok()?;
                    self.open_blob(&location.entry, BlobType::Data, stored, &sealer)
                        .ok()
                });
                match opened {
                    Some(plaintext) => Ok(plaintext),
                    None => self.read_blob(&ids[i], BlobType::Data),
                }
            })
            .collect()
    }

    /// A cache of whole packs for a restore, if the store is remote (see
    /// [`PackCache`]); `None` for a local disk, where range reads cost
    /// little.
    pub(crate) fn whole_packs(&self) -> Option<PackCache> {
        self.backend.is_remote().then(PackCache::default)
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
        let sealer = self.session_sealer(location.session)?;
        let trees = self.tree_cache();
        if let (BlobType::Tree, Some(trees)) = (expected, trees.as_deref()) {
            if let Some(plaintext) = self.cached_tree(trees, &entry, &sealer) {
                return Ok(plaintext);
            }
            if let Some(stored) = self.fetch_pack_trees(trees, location) {
                return self
                    .open_blob(&entry, expected, stored, &sealer)
                    .map_err(|e| Error::corrupted(what, e));
            }
        }
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
        self.open_blob(&entry, expected, stored, &sealer)
            .map_err(|e| Error::corrupted(what, e))
    }

    /// The plaintext of a tree from the tree cache, if it is there and
    /// opens; an entry that does not is dropped.
    fn cached_tree(
        &self,
        trees: &TreeCache,
        entry: &PackEntry,
        sealer: &Sealer,
    ) -> Option<Vec<u8>> {
        let stored = trees
            .get(&entry.id)
            .filter(|stored| stored.len() == entry.stored_len as usize)?;
        match self.open_blob(entry, BlobType::Tree, stored, sealer) {
            Ok(plaintext) => Some(plaintext),
            Err(_) => {
                trees.remove(&entry.id);
                None
            }
        }
    }

    /// Reads every tree blob of `location`'s pack, in as few range reads
    /// as their places allow, into the tree cache, and returns the stored
    /// bytes of the one `location` names: a walk goes on to the other
    /// trees, often in the same pack, and each read costs a round trip.
    /// `None` if any of it fails; the caller then reads the one blob, and
    /// that read reports what is wrong.
    fn fetch_pack_trees(&self, trees: &TreeCache, location: &BlobLocation) -> Option<Vec<u8>> {
        let name = location.pack.to_string();
        let (session, entries) = self.read_pack_trailer(&name).ok()?;
        if session != location.session {
            return None;
        }
        let mut wanted: Vec<&PackEntry> = entries
            .iter()
            .filter(|e| e.blob_type() == Some(BlobType::Tree) && e.is_plausible())
            .collect();
        wanted.sort_by_key(|e| e.offset);
        let mut fetched: Vec<(BlobId, Vec<u8>)> = Vec::with_capacity(wanted.len());
        let mut found = None;
        for run in tree_runs(&wanted) {
            let (start, end) = (run[0].offset, run_end(run));
            let bytes = self
                .backend
                .get_range(
                    ObjectKind::Pack,
                    &name,
                    u64::from(start),
                    u64::from(end - start),
                )
                .ok()?;
            for entry in run {
                let at = (entry.offset - start) as usize;
                let stored = bytes[at..at + entry.stored_len as usize].to_vec();
                if **entry == location.entry {
                    found = Some(stored.clone());
                }
                fetched.push((entry.id, stored));
            }
        }
        let cached: Vec<(BlobId, &[u8])> = fetched.iter().map(|(id, b)| (*id, &b[..])).collect();
        trees.insert(&cached);
        found
    }
    /// Authenticates, decompresses and checks one stored blob, described by
    /// its (plausible) pack entry and sealed with `sealer`.
    pub(crate) fn open_blob(
        &self,
        entry: &PackEntry,
        expected: BlobType,
        stored: Vec<u8>,
        sealer: &Sealer,
    ) -> std::result::Result<Vec<u8>, blob::BlobError> {
        let compression = entry
            .compression()
            .expect("plausible entries have a known compression");
        blob::open(
            &entry.id,
            expected,
            compression,
            entry.raw_len,
            stored,
            sealer,
            &self.keys.id_key,
        )
    }

    /// The session and entries of a pack's trailer, read with two range
    /// reads (footer, then trailer) and authenticated.
    pub(crate) fn read_pack_trailer(&self, name: &str) -> Result<(SessionId, Vec<PackEntry>)> {
        let object = object_name(ObjectKind::Pack, name);
        let storage = |e| Error::storage(ObjectKind::Pack, name, e);
        let len = self.backend.size(ObjectKind::Pack, name).map_err(storage)?;
        if len < FOOTER_LEN as u64 {
            return Err(Error::corrupted(object, "shorter than a pack footer"));
        }
        let footer = self
            .backend
            .get_range(
                ObjectKind::Pack,
                name,
                len - FOOTER_LEN as u64,
                FOOTER_LEN as u64,
            )
            .map_err(storage)?;
        let (offset, trailer_len) =
            trailer_bounds(&footer, len).map_err(|e| Error::corrupted(&object, e))?;
        let trailer = self
            .backend
            .get_range(ObjectKind::Pack, name, offset, u64::from(trailer_len))
            .map_err(storage)?;
        let session = trailer_session(&trailer).map_err(|e| Error::corrupted(&object, e))?;
        let sealer = self.session_sealer(session)?;
        let entries = open_trailer(&trailer, offset, &sealer).map_err(|e| match e {
            PackError::Authentication => Error::Unauthenticated {
                object: object.clone(),
            },
            other => Error::corrupted(&object, other),
        })?;
        Ok((session, entries))
    }

    /// A tree blob's plaintext: from storage, or for a write-only key
    /// (which cannot open it there) from the trees it wrote itself, kept
    /// on this host.
    fn tree_bytes(&self, id: &BlobId) -> Result<Vec<u8>> {
        if self.keys.private.is_some() {
            return self.read_blob(id, BlobType::Tree);
        }
        let refused = Error::WriteOnly {
            action: "read trees other than those of its own latest backups",
        };
        let bytes = match &self.written {
            Some(written) => written.tree(id)?.ok_or(refused)?,
            None => return Err(refused),
        };
        if self.blob_id(BlobType::Tree, &bytes) != *id {
            return Err(Error::corrupted(
                format!("tree {id} in the local cache"),
                "content does not match its id",
            ));
        }
        Ok(bytes)
    }

    /// Reads and decodes a tree blob.
    pub fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.tree_bytes(id)?;
        Tree::decode(&bytes).map_err(|e| Error::corrupted(format!("tree {id}"), e))
    }

    /// Reads a tree blob leaving out the entries [`Tree::decode`] refuses
    /// (see [`Tree::decode_lenient`]); returns them, each with its error.
    pub(crate) fn read_tree_lenient(&self, id: &BlobId) -> Result<(Tree, Refused)> {
        let bytes = self.tree_bytes(id)?;
        let (tree, refused) =
            Tree::decode_lenient(&bytes).map_err(|e| Error::corrupted(format!("tree {id}"), e))?;
        let refused = refused
            .into_iter()
            .map(|(name, why)| (name, Error::corrupted(format!("tree {id}"), why)))
            .collect();
        Ok((tree, refused))
    }
}
