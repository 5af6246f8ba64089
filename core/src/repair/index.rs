//! `repair index`: a new index from the pack trailers. Every pack whose
//! trailer opens is listed as its trailer says; a pack whose trailer is
//! damaged keeps, of the entries an old segment gave it, those whose blobs
//! still authenticate. The new segments are stored first, the old ones
//! deleted after, so a crash in between leaves both: valid, only
//! redundant.

use std::collections::{HashMap, HashSet};

use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{PackId, SegmentId};
use crate::object::blob::BlobType;
use crate::object::pack::PackEntry;
use crate::object::segment::IndexedPack;
use crate::repository::Repository;

/// What `repair index` found and did.
#[derive(Debug, Default)]
pub struct IndexRepair {
    /// Packs listed in the new index as their trailers say.
    pub packs_indexed: usize,
    /// Packs whose trailer is damaged, with why; their blobs are indexed
    /// only as far as they could be verified.
    pub damaged_packs: Vec<String>,
    /// Blobs of damaged packs kept because they authenticated.
    pub blobs_salvaged: usize,
    /// Blobs of damaged packs dropped because they did not.
    pub blobs_lost: usize,
    /// Old segments that could not be read.
    pub damaged_segments: Vec<String>,
    /// New segments stored.
    pub segments_written: usize,
    /// Old segments deleted.
    pub segments_removed: usize,
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
    for (pack, why) in damaged {
        report.damaged_packs.push(format!(
            "{}: {why}",
            object_name(ObjectKind::Pack, &pack.to_string())
        ));
        if let Some(listed) = old_listing.get(&pack) {
            let (kept, lost) = salvage(repository, listed)?;
            report.blobs_salvaged += kept.entries.len();
            report.blobs_lost += lost;
            if !kept.entries.is_empty() {
                packs.push(kept);
            }
        }
    }
    packs.sort_by_key(|p| p.pack);
    let written: HashSet<SegmentId> = repository.store_segments(packs)?.into_iter().collect();
    report.segments_written = written.len();
    for id in old.into_iter().filter(|id| !written.contains(id)) {
        repository.delete_segment(id)?;
        report.segments_removed += 1;
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

/// The entries of `listed` (a damaged pack, as an old segment lists it)
/// whose blobs still authenticate, and how many did not. Errors if the
/// store fails to answer, rather than counting blobs as lost.
fn salvage(repository: &Repository, listed: &IndexedPack) -> Result<(IndexedPack, usize)> {
    let name = listed.pack.to_string();
    let mut kept: Vec<PackEntry> = Vec::new();
    let sealer = match repository.session_sealer(listed.session) {
        Ok(sealer) => Some(sealer),
        Err(e) if is_damage(&e) || matches!(e, Error::MissingObject { .. }) => None,
        Err(e) => return Err(e),
    };
    for entry in &listed.entries {
        let Some(sealer) = sealer.as_ref().filter(|_| entry.is_plausible()) else {
            continue;
        };
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
        if repository
            .open_blob(entry, blob_type, stored, sealer)
            .is_ok()
        {
            kept.push(*entry);
        }
    }
    let lost = listed.entries.len() - kept.len();
    Ok((
        IndexedPack {
            pack: listed.pack,
            session: listed.session,
            entries: kept,
        },
        lost,
    ))
}
