//! Which packs prune keeps, deletes or repacks, worked out one index
//! segment at a time: what it holds per pack is a few counters. The index
//! entries are sorted on disk and joined with the (sorted) live blobs, so
//! nothing per blob is held in memory, and which pack holds the kept copy
//! of each live blob is written out, sorted by pack, for repacking.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::MaxUnused;
use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{PackId, SegmentId, SessionId};
use crate::object::pack::{entries_digest, FOOTER_LEN};
use crate::object::segment::{IndexSegment, IndexedPack};
use crate::repository::Repository;
use crate::scratch::{from_sort_key, sort_key, Sorted, Spill};

/// What becomes of a pack the index lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Kept as it is.
    Keep,
    /// Holds no live blob: deleted.
    Delete,
    /// Its live blobs are copied into new packs, then it is deleted.
    Repack,
    /// Not stored: its listing is dropped from the index.
    Unlist,
}

/// A pack as the segments list it, with how much of it is live.
pub(super) struct PackUse {
    /// Its size in bytes, from its listing.
    pub(super) size: u64,
    /// Live blobs whose kept copy is this pack's.
    pub(super) used_blobs: u64,
    /// Their stored bytes.
    pub(super) used_bytes: u64,
    /// Stored bytes of the other blobs: dead, or copies kept elsewhere.
    pub(super) unused_bytes: u64,
    pub(super) fate: Fate,
    /// A hash of the listing, to notice segments (or its trailer) that
    /// disagree.
    pub(super) digest: blake3::Hash,
    /// Its place in the order packs were first listed.
    seq: u32,
}

/// An index entry, as sorted for the join with the live blobs: blob id,
/// the listing's sequence number (big-endian, so that the first listing
/// sorts first), stored length, and whether the copy is readable.
type EntryRecord = [u8; 41];

/// A kept copy, as sorted for repacking: the holding pack's sequence
/// number (big-endian) and the blob id.
type HolderRecord = [u8; 36];

/// Every listed pack's use, and which pack holds each live blob's kept
/// copy (on disk, in pack order).
pub(super) struct Plan {
    packs: BTreeMap<PackId, PackUse>,
    /// The packs by sequence number.
    order: Vec<PackId>,
    holders: Option<Spill<36>>,
    /// Distinct live blobs.
    pub(super) live_blobs: u64,
}

impl Plan {
    /// Reads every segment once, then joins its entries with `live` (the
    /// ids of every live blob, duplicates allowed) in id order. Each live
    /// blob is given to the first listed pack that holds it, is stored,
    /// and whose session is stored and opens. Refuses if a live blob is in
    /// no such pack, or segments disagree about a pack.
    pub(super) fn build(
        repository: &Repository,
        segments: &[SegmentId],
        stored: &HashSet<PackId>,
        live: Spill<32>,
    ) -> Result<Plan> {
        let scratch = repository.scratch_dir();
        let mut packs: BTreeMap<PackId, PackUse> = BTreeMap::new();
        let mut order: Vec<PackId> = Vec::new();
        let mut entries: Spill<41> = Spill::new(&scratch)?;
        let mut sessions = Sessions::listed(repository)?;
        for id in segments {
            for listing in read_segment(repository, *id)?.packs {
                let digest = digest(&listing);
                if let Some(known) = packs.get(&listing.pack) {
                    if known.digest != digest {
                        return Err(Error::PruneUnsafe {
                            reason: format!(
                                "index segments disagree about {}",
                                object_name(ObjectKind::Pack, &listing.pack.to_string())
                            ),
                        });
                    }
                    continue;
                }
                let seq = u32::try_from(order.len()).map_err(|_| Error::PruneUnsafe {
                    reason: "more than 4 billion packs".into(),
                })?;
                let present = stored.contains(&listing.pack);
                // Only a copy that could be read back may be the one kept.
                let readable = present && sessions.opens(repository, listing.session);
                for entry in &listing.entries {
                    let mut record: EntryRecord = [0; 41];
                    record[..32].copy_from_slice(&entry.id.0 .0);
                    record[32..36].copy_from_slice(&sort_key(seq));
                    record[36..40].copy_from_slice(&entry.stored_len.to_le_bytes());
                    record[40] = u8::from(readable);
                    entries.push(record)?;
                }
                order.push(listing.pack);
                let fate = if present { Fate::Keep } else { Fate::Unlist };
                packs.insert(
                    listing.pack,
                    PackUse {
                        size: pack_size(&listing),
                        used_blobs: 0,
                        used_bytes: 0,
                        unused_bytes: 0,
                        fate,
                        digest,
                        seq,
                    },
                );
            }
        }
        let mut plan = Plan {
            packs,
            order,
            holders: Some(Spill::new(&scratch)?),
            live_blobs: 0,
        };
        let unheld = plan.join(live, entries)?;
        if unheld > 0 {
            return Err(Error::PruneUnsafe {
                reason: format!(
                    "{unheld} blobs the snapshots need are in no stored, readable pack that an index segment lists (if a segment was lost, `cairn repair index` lists its packs again; if a pack or session is lost, see `cairn repair snapshots`)"
                ),
            });
        }
        for usage in plan.packs.values_mut() {
            if usage.fate == Fate::Keep && usage.used_blobs == 0 {
                usage.fate = Fate::Delete;
            }
        }
        Ok(plan)
    }

    /// Walks the live ids and the entries together, in id order: counts
    /// each pack's used and unused bytes and records the kept copies.
    /// Returns how many live blobs have no readable copy.
    fn join(&mut self, live: Spill<32>, entries: Spill<41>) -> Result<u64> {
        let mut live = live.into_sorted()?;
        let mut entries = entries.into_sorted()?;
        let mut holders = self.holders.take().expect("set in build");
        let mut unheld = 0;
        let mut current = live.next_distinct()?;
        while let Some(mut record) = entries.next_record()? {
            let id: [u8; 32] = record[..32].try_into().expect("32 bytes");
            // Live blobs before this one have no entry at all.
            while current.is_some_and(|l| l < id) {
                self.live_blobs += 1;
                unheld += 1;
                current = live.next_distinct()?;
            }
            let is_live = current == Some(id);
            if is_live {
                self.live_blobs += 1;
                current = live.next_distinct()?;
            }
            let mut held = false;
            loop {
                let seq = from_sort_key(record[32..36].try_into().expect("4 bytes"));
                let len = u64::from(u32::from_le_bytes(
                    record[36..40].try_into().expect("4 bytes"),
                ));
                let readable = record[40] == 1;
                let usage = self
                    .packs
                    .get_mut(&self.order[seq as usize])
                    .expect("every sequence number names a pack");
                if is_live && !held && readable {
                    held = true;
                    usage.used_blobs += 1;
                    usage.used_bytes += len;
                    let mut holder: HolderRecord = [0; 36];
                    holder[..4].copy_from_slice(&sort_key(seq));
                    holder[4..].copy_from_slice(&id);
                    holders.push(holder)?;
                } else {
                    usage.unused_bytes += len;
                }
                match entries.peek() {
                    Some(next) if next[..32] == id => {
                        record = entries.next_record()?.expect("just peeked");
                    }
                    _ => break,
                }
            }
            if is_live && !held {
                unheld += 1;
            }
        }
        while current.is_some() {
            self.live_blobs += 1;
            unheld += 1;
            current = live.next_distinct()?;
        }
        self.holders = Some(holders);
        Ok(unheld)
    }

    /// Marks for repacking the packs with the largest unused share until
    /// what stays unused in kept packs is within `max_unused`.
    pub(super) fn choose_repacks(&mut self, max_unused: MaxUnused) {
        let kept = || self.packs.values().filter(|u| u.fate == Fate::Keep);
        let used: u64 = kept().map(|u| u.used_bytes).sum();
        let mut unused: u64 = kept().map(|u| u.unused_bytes).sum();
        let allowed = max_unused.allowed(used);
        let mut candidates: Vec<(PackId, f64, u64)> = self
            .packs
            .iter()
            .filter(|(_, u)| u.fate == Fate::Keep && u.unused_bytes > 0)
            .map(|(pack, u)| (*pack, u.unused_bytes as f64 / u.size as f64, u.unused_bytes))
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)));
        for (pack, _, bytes) in candidates {
            if unused <= allowed {
                break;
            }
            if let Some(usage) = self.packs.get_mut(&pack) {
                usage.fate = Fate::Repack;
            }
            unused -= bytes;
        }
    }

    /// Every listed pack and its use, in pack order.
    pub(super) fn packs(&self) -> impl Iterator<Item = (&PackId, &PackUse)> {
        self.packs.iter()
    }

    /// Whether a segment lists `pack`.
    pub(super) fn lists(&self, pack: &PackId) -> bool {
        self.packs.contains_key(pack)
    }

    /// What becomes of `pack`, if a segment lists it.
    pub(super) fn fate(&self, pack: &PackId) -> Option<Fate> {
        self.packs.get(pack).map(|u| u.fate)
    }

    /// The size of `pack` by its listing, if a segment lists it.
    pub(super) fn size(&self, pack: &PackId) -> Option<u64> {
        self.packs.get(pack).map(|u| u.size)
    }

    /// The sequence number of `pack`, if a segment lists it.
    pub(super) fn seq(&self, pack: &PackId) -> Option<u32> {
        self.packs.get(pack).map(|u| u.seq)
    }

    /// The kept copies, sorted by the sequence number of the pack holding
    /// them, then by blob id: read once, by repacking.
    pub(super) fn take_holders(&mut self) -> Result<Sorted<36>> {
        self.holders
            .take()
            .expect("holders are taken once")
            .into_sorted()
    }

    /// Whether the index must be rewritten: some listed pack goes.
    pub(super) fn changes_index(&self) -> bool {
        self.packs.values().any(|u| u.fate != Fate::Keep)
    }

    /// Stores new segments listing the packs kept (read again from the old
    /// segments, one at a time) and returns their ids.
    pub(super) fn store_kept_segments(
        &self,
        repository: &Repository,
        segments: &[SegmentId],
    ) -> Result<HashSet<SegmentId>> {
        let mut sink = repository.segment_sink();
        let mut listed: HashSet<PackId> = HashSet::new();
        for id in segments {
            for listing in read_segment(repository, *id)?.packs {
                if self.fate(&listing.pack) == Some(Fate::Keep) && listed.insert(listing.pack) {
                    sink.add(listing)?;
                }
            }
        }
        Ok(sink.finish()?.into_iter().collect())
    }
}

/// Which sessions open, each tried once.
struct Sessions {
    listed: HashSet<SessionId>,
    opened: HashMap<SessionId, bool>,
}

impl Sessions {
    fn listed(repository: &Repository) -> Result<Sessions> {
        Ok(Sessions {
            listed: repository.stored_sessions()?,
            opened: HashMap::new(),
        })
    }

    /// Whether `session` is stored and opens. Any failure counts as not:
    /// its packs' blobs then need a copy elsewhere, or prune refuses.
    fn opens(&mut self, repository: &Repository, session: SessionId) -> bool {
        if !self.listed.contains(&session) {
            return false;
        }
        *self
            .opened
            .entry(session)
            .or_insert_with(|| repository.session_sealer(session).is_ok())
    }
}

/// Reads a segment; one that does not read makes what is live unknown.
pub(super) fn read_segment(repository: &Repository, id: SegmentId) -> Result<IndexSegment> {
    repository.read_segment(id).map_err(|e| Error::PruneUnsafe {
        reason: e.to_string(),
    })
}

/// A pack's size from its listing: its blobs, its trailer (74 + 46 bytes
/// an entry, SPEC.md §11) and its footer.
fn pack_size(listing: &IndexedPack) -> u64 {
    let blobs: u64 = listing
        .entries
        .iter()
        .map(|e| u64::from(e.stored_len))
        .sum();
    let entries = listing.entries.len() as u64;
    blobs + 74 + 46 * entries + FOOTER_LEN as u64
}

/// A hash of a pack listing: its session and entries.
pub(super) fn digest(listing: &IndexedPack) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&listing.session.0 .0);
    hasher.update(entries_digest(&listing.entries).as_bytes());
    hasher.finalize()
}
