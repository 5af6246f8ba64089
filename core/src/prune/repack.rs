//! Copies the live blobs of the packs prune repacks into new packs, each
//! blob read back and verified first, so that damage is never copied.

use std::collections::HashSet;

use super::plan::{read_segment, Fate, Plan};
use super::spill::{from_sort_key, Sorted};
use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{PackId, SegmentId};
use crate::repository::Repository;

/// Reads each pack to repack once, whole, and queues the live blobs whose
/// kept copy it holds into a new write session; returns the blobs and
/// bytes stored. The new packs and their segments are stored when this
/// returns. A blob that does not read back stops prune before anything is
/// deleted.
pub(super) fn copy_live_blobs(
    repository: &Repository,
    segments: &[SegmentId],
    plan: &mut Plan,
) -> Result<(u64, u64)> {
    // Packs are visited in the order they were first listed, which is the
    // order of their sequence numbers, and so of the holder records.
    let mut holders = plan.take_holders()?;
    let mut writer = repository.start_copying(repository.config().compression_level)?;
    let mut copied: HashSet<PackId> = HashSet::new();
    for id in segments {
        for listing in read_segment(repository, *id)?.packs {
            if plan.fate(&listing.pack) != Some(Fate::Repack) || !copied.insert(listing.pack) {
                continue;
            }
            let name = listing.pack.to_string();
            let object = object_name(ObjectKind::Pack, &name);
            // The size is bounded before the pack is read whole.
            let storage = |e| Error::storage(ObjectKind::Pack, &name, e);
            let size = repository
                .backend()
                .size(ObjectKind::Pack, &name)
                .map_err(storage)?;
            if Some(size) != plan.size(&listing.pack) {
                return Err(Error::PruneUnsafe {
                    reason: format!("{object} is {size} bytes, not what its index listing says"),
                });
            }
            let bytes = repository
                .backend()
                .get(ObjectKind::Pack, &name)
                .map_err(storage)?;
            let sealer = repository.session_sealer(listing.session)?;
            let kept = kept_copies(&mut holders, plan.seq(&listing.pack))?;
            for entry in &listing.entries {
                if !kept.contains(&entry.id.0 .0) {
                    continue;
                }
                let unreadable = |why: String| Error::PruneUnsafe {
                    reason: format!("blob {} in {object} does not read back: {why}", entry.id),
                };
                let blob_type = entry
                    .blob_type()
                    .filter(|_| entry.is_plausible())
                    .ok_or_else(|| unreadable("its index entry is implausible".into()))?;
                let start = entry.offset as usize;
                let stored = bytes
                    .get(start..start + entry.stored_len as usize)
                    .ok_or_else(|| unreadable("it lies beyond the pack's end".into()))?;
                let plaintext = repository
                    .open_blob(entry, blob_type, stored.to_vec(), &sealer)
                    .map_err(|e| unreadable(e.to_string()))?;
                writer.copy_blob(entry.id, blob_type, plaintext)?;
            }
        }
    }
    writer.flush()?;
    Ok((writer.blobs_added(), writer.bytes_added()))
}

/// The blobs whose kept copy is in the pack numbered `seq`, taken from the
/// front of `holders` (records of earlier packs are passed over).
fn kept_copies(holders: &mut Sorted<36>, seq: Option<u32>) -> Result<HashSet<[u8; 32]>> {
    let mut kept = HashSet::new();
    let Some(seq) = seq else {
        return Ok(kept);
    };
    while let Some(record) = holders.peek() {
        let of = from_sort_key(record[..4].try_into().expect("4 bytes"));
        if of > seq {
            break;
        }
        let record = holders.next_record()?.expect("just peeked");
        if of == seq {
            kept.insert(record[4..].try_into().expect("32 bytes"));
        }
    }
    Ok(kept)
}
