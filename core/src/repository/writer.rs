//! The write side (SPEC.md §15, §16): a session starts, blobs are queued
//! to the packer, packs are indexed by segments, and the snapshot is the
//! last object stored.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::packer::{Job, Packer, PackerConfig};
use super::segment_writer::{SegmentWriter, StoredSegment};
use super::{check_compression_level, parse_name, Repository};
use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, PackId, SegmentId, SessionId, SnapshotId};
use crate::object::blob::{BlobType, MAX_BLOB_LEN};
use crate::object::segment::IndexedPack;
use crate::object::session::{self, Session};
use crate::object::snapshot::Snapshot;

impl Repository {
    /// Starts a write session: stores a fresh session object and returns a
    /// writer whose packs, index and snapshot are sealed under it. Sealing
    /// and storing run in background threads until [`BlobWriter::flush`].
    /// Packs that a stopped writer left stored but unindexed are indexed
    /// first, so that their blobs are reused (SPEC.md §16).
    pub fn start_write(&self, compression_level: i32) -> Result<BlobWriter<'_>> {
        self.start_session(compression_level, true)
    }

    /// [`Repository::start_write`] for prune and repair, which decide
    /// themselves what becomes of unindexed packs: they are not indexed.
    pub(crate) fn start_copying(&self, compression_level: i32) -> Result<BlobWriter<'_>> {
        self.start_session(compression_level, false)
    }

    fn start_session(&self, compression_level: i32, adopt: bool) -> Result<BlobWriter<'_>> {
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
        self.check_no_newer_epoch()?;
        let (check, warnings, unindexed) = self.check_packs()?;
        // Adopting reads trailers, which a write-only key cannot open: the
        // packs wait for a full key, and their blobs are stored again.
        if adopt && self.keys.private.is_some() {
            self.adopt_unindexed(&unindexed)?;
        }
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
            index_sealer: self.index_sealer.clone(),
            compression_level,
            pack_target_bytes: u64::from(self.config.pack_target_bytes),
            connections: self.connections,
            trees: self.trees.clone(),
        });
        Ok(BlobWriter {
            repository: self,
            session,
            packer: Some(packer),
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
    /// each missing object (at most [`MAX_MISSING_WARNINGS`], then a count),
    /// and the packs stored that the cache does not know.
    fn check_packs(&self) -> Result<(PackCheck, Vec<String>, Vec<PackId>)> {
        let listed = |kind: ObjectKind| {
            self.backend
                .list(kind)
                .map_err(|e| Error::storage(kind, "", e))
        };
        let packs: HashSet<Id> = listed(ObjectKind::Pack)?
            .iter()
            .filter_map(|n| parse_name(n))
            .collect();
        let sessions: HashSet<SessionId> = self.stored_sessions()?;
        let mut check = PackCheck::default();
        let mut missing = Vec::new();
        let mut known: HashSet<PackId> = HashSet::new();
        self.with_index(|index| {
            known.clear();
            index.for_each_pack(|_, pack, session| {
                known.insert(pack);
                if !packs.contains(&pack.0) && check.missing_packs.insert(pack) {
                    missing.push(object_name(ObjectKind::Pack, &pack.to_string()));
                }
                if !sessions.contains(&session) && check.bad_sessions.insert(session) {
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
        let unindexed = packs
            .into_iter()
            .map(PackId)
            .filter(|pack| !known.contains(pack))
            .collect();
        Ok((check, warnings, unindexed))
    }

    /// Indexes packs that are stored but that no segment lists, as a
    /// backup killed before its segment leaves them, from their trailers:
    /// this session then reuses their blobs rather than store them again.
    /// A pack whose trailer does not open is left for `check` to report.
    /// A pack of a backup still running may be indexed twice, by its
    /// writer and here: both listings come from the same trailer, and
    /// each is valid (SPEC.md §12).
    fn adopt_unindexed(&self, unindexed: &[PackId]) -> Result<()> {
        let mut sink = self.segment_sink();
        for pack in unindexed {
            if let Ok((session, entries)) = self.read_pack_trailer(&pack.to_string()) {
                sink.add(IndexedPack {
                    pack: *pack,
                    session,
                    entries,
                })?;
            }
        }
        if !sink.finish()?.is_empty() {
            // Segments damaged at open were reported then.
            self.with_index(|index| self.sync_index(index).map(drop))?;
        }
        Ok(())
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
            // A write-only key opens no session: a listed one is trusted.
            Some(_) if repository.keys.private.is_none() => true,
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
    /// order. Ids are computed here, on the caller's thread; compression,
    /// encryption and storage happen in the background. Errors if a blob
    /// is larger than `MAX_BLOB_LEN` (128 MiB), which readers would refuse,
    /// if the writer was flushed, or if the background pipeline failed.
    pub fn add_blobs(&mut self, blob_type: BlobType, blobs: Vec<Bytes>) -> Result<Vec<BlobId>> {
        check_blob_lens(blob_type, &blobs)?;
        let repository = self.repository;
        // Not on rayon's pool: there a hashing job waits behind the sealing
        // tasks in flight, so the caller stalled until the pool drained, and
        // the pool then idled while the caller read the next chunks.
        let ids: Vec<BlobId> = blobs
            .iter()
            .map(|b| repository.blob_id(blob_type, b))
            .collect();
        self.queue(blob_type, &ids, blobs)?;
        Ok(ids)
    }

    /// [`BlobWriter::add_blobs`] for blobs whose ids the caller already
    /// computed with [`Repository::blob_id`] (the archiver hashes small
    /// files on the threads that read them).
    pub(crate) fn add_identified(
        &mut self,
        blob_type: BlobType,
        ids: &[BlobId],
        blobs: Vec<Bytes>,
    ) -> Result<()> {
        debug_assert_eq!(ids.len(), blobs.len());
        check_blob_lens(blob_type, &blobs)?;
        self.queue(blob_type, ids, blobs)
    }

    /// Hands the blobs not known yet to the packer.
    fn queue(&mut self, blob_type: BlobType, ids: &[BlobId], blobs: Vec<Bytes>) -> Result<()> {
        let repository = self.repository;
        for (id, plaintext) in ids.iter().zip(blobs) {
            if let (BlobType::Tree, Some(written)) = (blob_type, &repository.written) {
                if let Err(e) = written.stage_tree(*id, &plaintext) {
                    repository.notices_lock().push(format!(
                        "{e}: the backup goes on, but this key will not show it or compare against it"
                    ));
                }
            }
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
        self.absorb(stored)
    }

    /// Queues a blob that prune read back, verified, from a pack it is
    /// about to delete: stored again although the index knows it, since
    /// the only copy the index knows is in that pack.
    pub(crate) fn copy_blob(
        &mut self,
        id: BlobId,
        blob_type: BlobType,
        plaintext: Bytes,
    ) -> Result<()> {
        if !self.written.insert(id) {
            return Ok(());
        }
        let packer = self.packer.as_mut().ok_or(Error::WriterFlushed)?;
        packer.submit(Job {
            id,
            blob_type,
            plaintext,
        })?;
        let stored = packer.take_stored();
        self.absorb(stored)
    }

    /// Stores one blob (if new) and returns its id.
    pub fn add_blob(&mut self, blob_type: BlobType, plaintext: impl Into<Bytes>) -> Result<BlobId> {
        Ok(self.add_blobs(blob_type, vec![plaintext.into()])?[0])
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

    /// Adds the segments the packer stored to the local cache.
    fn absorb(&mut self, segments: Vec<StoredSegment>) -> Result<()> {
        for (id, segment) in segments {
            self.repository
                .with_index(|index| index.absorb(id, &segment))?;
            // The index finds these now: forgetting them keeps memory flat
            // however many blobs one session writes.
            for entry in segment.packs.iter().flat_map(|p| &p.entries) {
                self.written.remove(&entry.id);
            }
        }
        Ok(())
    }

    /// Waits until every queued blob is stored and indexed.
    /// After this no blob can be added; the counters are final.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(packer) = self.packer.take() {
            let finished = packer.finish()?;
            self.bytes_added = finished.bytes_added;
            self.blobs_added = finished.blobs_added;
            self.absorb(finished.segments)?;
        }
        Ok(())
    }

    /// Flushes, then stores `snapshot`: the last write, so a snapshot never
    /// names data that is not stored and indexed. Refuses if a lock this
    /// process took on the repository was removed meanwhile (see
    /// [`Repository::ensure_locks_held`]).
    /// A write-only key also records the snapshot on this host; if that
    /// fails, the snapshot is stored all the same, and a warning says so.
    pub fn commit(mut self, snapshot: &Snapshot) -> Result<SnapshotId> {
        let id = self.store_snapshot(snapshot)?;
        if let Some(written) = &self.repository.written {
            if let Err(e) = written.commit(id, snapshot) {
                self.repository.notices_lock().push(format!(
                    "{e}: snapshot {id} is stored, but this key will not show it or compare against it"
                ));
            }
        }
        Ok(id)
    }

    /// [`BlobWriter::commit`] without ending the session, for commands that
    /// store several snapshots and no blobs after them (tag).
    pub(crate) fn store_snapshot(&mut self, snapshot: &Snapshot) -> Result<SnapshotId> {
        self.flush()?;
        self.repository.ensure_locks_held()?;
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

impl Repository {
    /// A sink for index segments listing packs already stored (repair and
    /// prune, which index packs anew), sealed in a new session that is
    /// stored with the first segment.
    pub(crate) fn segment_sink(&self) -> SegmentSink<'_> {
        SegmentSink {
            repository: self,
            writer: None,
            stored: Vec::new(),
        }
    }

    /// Stores index segments listing `packs` (see
    /// [`Repository::segment_sink`]) and returns their ids.
    pub(crate) fn store_segments(&self, packs: Vec<IndexedPack>) -> Result<Vec<SegmentId>> {
        let mut sink = self.segment_sink();
        for pack in packs {
            sink.add(pack)?;
        }
        sink.finish()
    }

    /// Deletes an index segment (repair, once its replacement is stored);
    /// one already gone is done.
    pub(crate) fn delete_segment(&self, id: SegmentId) -> Result<()> {
        let name = id.to_string();
        match self.backend.delete(ObjectKind::Index, &name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::storage(ObjectKind::Index, &name, e))
            }
            _ => Ok(()),
        }
    }
}

/// Index segments for packs already stored: see
/// [`Repository::segment_sink`].
pub(crate) struct SegmentSink<'r> {
    repository: &'r Repository,
    /// Started, with its session stored, at the first pack.
    writer: Option<SegmentWriter>,
    stored: Vec<SegmentId>,
}

impl SegmentSink<'_> {
    /// Adds a pack's listing; a segment is stored once enough are waiting.
    pub(crate) fn add(&mut self, pack: IndexedPack) -> Result<()> {
        let repository = self.repository;
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                let (session, bytes) = session::create(&repository.keys.public());
                let name = session.id.to_string();
                repository
                    .backend
                    .put(ObjectKind::Session, &name, &bytes)
                    .map_err(|e| Error::storage(ObjectKind::Session, &name, e))?;
                self.writer.insert(SegmentWriter::new(
                    session.id,
                    repository.index_sealer.clone(),
                ))
            }
        };
        if let Some((id, _)) = writer.add(repository.backend.as_ref(), pack)? {
            self.stored.push(id);
        }
        Ok(())
    }

    /// Stores the last segment and returns the ids of all stored.
    pub(crate) fn finish(mut self) -> Result<Vec<SegmentId>> {
        if let Some(writer) = &mut self.writer {
            if let Some((id, _)) = writer.finish(self.repository.backend.as_ref())? {
                self.stored.push(id);
            }
        }
        Ok(self.stored)
    }
}

/// Refuses a blob larger than readers accept.
fn check_blob_lens(blob_type: BlobType, blobs: &[Bytes]) -> Result<()> {
    match blobs.iter().find(|b| b.len() > MAX_BLOB_LEN as usize) {
        Some(big) => Err(Error::BlobTooLarge {
            blob_type: match blob_type {
                BlobType::Data => "data",
                BlobType::Tree => "tree",
            },
            len_bytes: big.len(),
            limit_bytes: MAX_BLOB_LEN,
        }),
        None => Ok(()),
    }
}
