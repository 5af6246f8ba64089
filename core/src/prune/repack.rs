//! Copies the live blobs of the packs prune repacks into new packs, each
//! blob read back and verified first, so that damage is never copied.
//! Adjacent kept blobs are read together, a few MiB at a time.

use std::collections::HashSet;

use super::plan::{read_segment, Fate, Plan};
use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{PackId, SegmentId};
use crate::object::pack::PackEntry;
use crate::object::segment::IndexedPack;
use crate::repository::BlobWriter;
use crate::repository::Repository;
use crate::scratch::{from_sort_key, Sorted};

/// Reads, from each pack to repack, the live blobs whose kept copy it
/// holds, and queues them into a new write session; returns the blobs and
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
            let kept = kept_copies(&mut holders, plan.seq(&listing.pack))?;
            copy_pack(
                repository,
                &listing,
                plan.size(&listing.pack),
                &kept,
                &mut writer,
            )?;
        }
    }
    writer.flush()?;
    Ok((writer.blobs_added(), writer.bytes_added()))
}

/// Reads of a pack being repacked cover runs of adjacent kept blobs of
/// at most this many bytes (or one blob, if larger): few requests, little
/// memory.
const RUN_BYTES: u64 = 4 << 20;

/// Copies the blobs of `listing` whose ids are in `kept` into `writer`,
/// each read back and verified. The pack must be `size` bytes, as its
/// listing says.
fn copy_pack(
    repository: &Repository,
    listing: &IndexedPack,
    size: Option<u64>,
    kept: &HashSet<[u8; 32]>,
    writer: &mut BlobWriter<'_>,
) -> Result<()> {
    let name = listing.pack.to_string();
    let object = object_name(ObjectKind::Pack, &name);
    let storage = |e| Error::storage(ObjectKind::Pack, &name, e);
    let stored_size = repository
        .backend()
        .size(ObjectKind::Pack, &name)
        .map_err(storage)?;
    if Some(stored_size) != size {
        return Err(Error::PruneUnsafe {
            reason: format!("{object} is {stored_size} bytes, not what its index listing says"),
        });
    }
    let sealer = repository.session_sealer(listing.session)?;
    let mut wanted: Vec<&PackEntry> = listing
        .entries
        .iter()
        .filter(|e| kept.contains(&e.id.0 .0))
        .collect();
    wanted.sort_by_key(|e| e.offset);
    for run in runs(&wanted) {
        let start = u64::from(run[0].offset);
        let last = run[run.len() - 1];
        let end = u64::from(last.offset) + u64::from(last.stored_len);
        let bytes = repository
            .backend()
            .get_range(ObjectKind::Pack, &name, start, end - start)
            .map_err(storage)?;
        for entry in run {
            let unreadable = |why: String| Error::PruneUnsafe {
                reason: format!("blob {} in {object} does not read back: {why}", entry.id),
            };
            let blob_type = entry
                .blob_type()
                .filter(|_| entry.is_plausible())
                .ok_or_else(|| unreadable("its index entry is implausible".into()))?;
            let at = (u64::from(entry.offset) - start) as usize;
            let stored = bytes
                .get(at..at + entry.stored_len as usize)
                .ok_or_else(|| unreadable("it lies beyond the pack's end".into()))?;
            let plaintext = repository
                .open_blob(entry, blob_type, stored.to_vec(), &sealer)
                .map_err(|e| unreadable(e.to_string()))?;
            writer.copy_blob(entry.id, blob_type, plaintext.into())?;
        }
    }
    Ok(())
}

/// `entries`, sorted by offset, cut into runs of adjacent blobs of at most
/// [`RUN_BYTES`] together.
fn runs<'a>(entries: &[&'a PackEntry]) -> Vec<Vec<&'a PackEntry>> {
    let mut runs: Vec<Vec<&PackEntry>> = Vec::new();
    let mut run_bytes = 0u64;
    for entry in entries {
        let len = u64::from(entry.stored_len);
        let extends = runs.last().and_then(|run| run.last()).is_some_and(|prev| {
            u64::from(prev.offset) + u64::from(prev.stored_len) == u64::from(entry.offset)
                && run_bytes + len <= RUN_BYTES
        });
        if extends {
            runs.last_mut().expect("extends a run").push(entry);
            run_bytes += len;
        } else {
            runs.push(vec![entry]);
            run_bytes = len;
        }
    }
    runs
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{BlobId, Id};

    fn entry(offset: u32, stored_len: u32) -> PackEntry {
        PackEntry {
            id: BlobId(Id([0; 32])),
            blob_type: 0,
            compression: 0,
            offset,
            stored_len,
            raw_len: stored_len - 28,
        }
    }

    #[test]
    fn runs_join_adjacent_blobs_up_to_the_bound() {
        let mib = 1 << 20;
        let entries = [
            entry(0, mib),
            entry(mib, mib),
            // A gap: a new run.
            entry(3 * mib, 2 * mib),
            entry(5 * mib, 2 * mib),
            // Past the bound: a new run, even though adjacent.
            entry(7 * mib, mib),
            // Larger than the bound on its own.
            entry(8 * mib, 5 * mib),
        ];
        let refs: Vec<&PackEntry> = entries.iter().collect();
        let lens: Vec<usize> = runs(&refs).iter().map(Vec::len).collect();
        assert_eq!(lens, vec![2, 2, 1, 1]);
    }
}
