//! `repair index`: a new index from the pack trailers. Every pack whose
//! trailer opens is listed as its trailer says. Of a pack whose trailer is
//! damaged, the blobs an old segment listed that still authenticate are
//! copied into new packs, and the damaged pack goes. The new packs and
//! segments are stored first, the old segments deleted after, the damaged
//! packs last, so a crash in between leaves a valid index, only redundant.

use std::collections::{HashMap, HashSet};

use crate::backend::{object_name, ObjectKind};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::{PackId, SegmentId};
use crate::object::blob::BlobType;
use crate::object::segment::IndexedPack;
use crate::repository::{BlobWriter, Repository};

/// What `repair index` found and did.
#[derive(Debug, Default)]
pub struct IndexRepair {
    /// Packs listed in the new index as their trailers say.
    pub packs_indexed: usize,
    /// Packs whose trailer is damaged, with why; their blobs are indexed
    /// only as far as they could be verified.
    pub damaged_packs: Vec<String>,
    /// Blobs of damaged packs copied into new packs because they
    /// authenticated.
    pub blobs_salvaged: usize,
    /// Blobs of damaged packs dropped because they did not.
    pub blobs_lost: usize,
    /// Old segments that could not be read.
    pub damaged_segments: Vec<String>,
    /// New segments stored.
    pub segments_written: usize,
    /// Old segments deleted.
    pub segments_removed: usize,
    /// Damaged packs deleted once what could be verified of them was
    /// copied.
    pub damaged_packs_removed: usize,
    /// Packs whose trailer did not open because their session does not:
    /// listed as the old index had them, unverified.
    pub packs_kept_unverified: usize,
    /// Nothing was wrong: the index already matched the trailers.
    pub was_complete: bool,
}

/// Rebuilds the index segments from the pack trailers (the caller holds
/// an exclusive lock). The local cache follows on the next open.
pub fn repair_index(repository: &Repository) -> Result<IndexRepair> {
    let mut report = IndexRepair::default();
    let mut trailers: HashMap<PackId, IndexedPack> = HashMap::new();
    let mut damaged: HashMap<PackId, String> = HashMap::new();
    for id in repository.list_ids(ObjectKind::Pack)? {
        let pack = PackId(id);
        match repository.read_pack_trailer(&pack.to_string()) {
            Ok((session, entries)) => {
                trailers.insert(
                    pack,
                    IndexedPack {
                        pack,
                        session,
                        entries,
                    },
                );
            }
            Err(e) if is_damage(&e) => {
                damaged.insert(pack, e.to_string());
            }
            // Gone since the listing: nothing to index.
            Err(Error::MissingObject { .. }) => {}
            // A store that failed to answer proves nothing: stop before
            // anything is rewritten.
            Err(e) => return Err(e),
        }
    }

    // What the old segments say, to compare and to salvage from.
    let old: Vec<SegmentId> = repository
        .list_ids(ObjectKind::Index)?
        .into_iter()
        .map(SegmentId)
        .collect();
    let mut old_listing: HashMap<PackId, IndexedPack> = HashMap::new();
    for id in &old {
        match repository.read_segment(*id) {
            Ok(segment) => {
                for pack in segment.packs {
                    old_listing.insert(pack.pack, pack);
                }
            }
            Err(e) if is_damage(&e) || matches!(e, Error::MissingObject { .. }) => {
                report.damaged_segments.push(format!(
                    "{}: {e}",
                    object_name(ObjectKind::Index, &id.to_string())
                ))
            }
            Err(e) => return Err(e),
        }
    }
    report.was_complete = report.damaged_segments.is_empty()
        && damaged.is_empty()
        && old_listing.len() == trailers.len()
        && trailers
            .iter()
            .all(|(pack, listed)| old_listing.get(pack) == Some(listed));
    if report.was_complete {
        report.packs_indexed = trailers.len();
        return Ok(report);
    }

    let mut packs: Vec<IndexedPack> = trailers.into_values().collect();
    report.packs_indexed = packs.len();
    let mut damaged: Vec<(PackId, String)> = damaged.into_iter().collect();
    damaged.sort();
    let mut writer = None;
    let mut salvaged_packs = Vec::new();
    for (pack, why) in damaged {
        report.damaged_packs.push(format!(
            "{}: {why}",
            object_name(ObjectKind::Pack, &pack.to_string())
        ));
        let Some(listed) = old_listing.get(&pack) else {
            continue;
        };
        // A pack whose session does not open is not known to be damaged
        // itself (the session may be restored): its old listing stays.
        let sealer = match repository.session_sealer(listed.session) {
            Ok(sealer) => sealer,
            Err(e) if is_damage(&e) || matches!(e, Error::MissingObject { .. }) => {
                packs.push(listed.clone());
                report.packs_kept_unverified += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(repository.start_copying(repository.config().compression_level)?),
        };
        let (kept, lost) = salvage(repository, listed, &sealer, writer)?;
        report.blobs_salvaged += kept;
        report.blobs_lost += lost;
        // Nothing verified: perhaps the listing is wrong, not the pack.
        // Kept, unlisted, for a person to look at.
        if kept > 0 {
            salvaged_packs.push(pack);
        }
    }
    // The copies, with segments of their own, before anything is deleted.
    if let Some(mut writer) = writer {
        writer.flush()?;
    }
    packs.sort_by_key(|p| p.pack);
    let written: HashSet<SegmentId> = repository.store_segments(packs)?.into_iter().collect();
    // Those just stored, and those the copies' session stored.
    let before: HashSet<SegmentId> = old.iter().copied().collect();
    report.segments_written = repository
        .list_ids(ObjectKind::Index)?
        .into_iter()
        .map(SegmentId)
        .filter(|id| !before.contains(id))
        .count();
    for id in old.into_iter().filter(|id| !written.contains(id)) {
        repository.delete_segment(id)?;
        report.segments_removed += 1;
    }
    for pack in salvaged_packs {
        let name = pack.to_string();
        match repository.backend().delete(ObjectKind::Pack, &name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::storage(ObjectKind::Pack, &name, e))
            }
            _ => report.damaged_packs_removed += 1,
        }
    }
    Ok(report)
}

/// Whether `error` shows damage, as opposed to a store that failed to
/// answer (which proves nothing about the object).
fn is_damage(error: &Error) -> bool {
    matches!(
        error,
        Error::Corrupted { .. } | Error::Unauthenticated { .. }
    )
}

/// Copies the blobs of `listed` (a damaged pack, as an old segment lists
/// it) that still authenticate into `writer`; returns how many were copied
/// and how many did not verify. Errors if the store fails to answer,
/// rather than counting blobs as lost.
fn salvage(
    repository: &Repository,
    listed: &IndexedPack,
    sealer: &Sealer,
    writer: &mut BlobWriter<'_>,
) -> Result<(usize, usize)> {
    let name = listed.pack.to_string();
    let mut kept = 0;
    for entry in listed.entries.iter().filter(|e| e.is_plausible()) {
        let stored = match repository.backend().get_range(
            ObjectKind::Pack,
            &name,
            u64::from(entry.offset),
            u64::from(entry.stored_len),
        ) {
            Ok(stored) => stored,
            // Beyond the end of a truncated pack: lost.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => continue,
            Err(e) => return Err(Error::storage(ObjectKind::Pack, &name, e)),
        };
        let blob_type = entry.blob_type().unwrap_or(BlobType::Data);
        if let Ok(plaintext) = repository.open_blob(entry, blob_type, stored, sealer) {
            writer.copy_blob(entry.id, blob_type, plaintext.into())?;
            kept += 1;
        }
    }
    Ok((kept, listed.entries.len() - kept))
}
