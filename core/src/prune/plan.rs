//! Which packs prune keeps, deletes or repacks, worked out one index
//! segment at a time: what it holds per pack is a few counters, and which
//! pack holds the copy of a blob that is kept is in a map on disk.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::live::BlobMap;
use super::MaxUnused;
use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SegmentId, SessionId};
use crate::object::pack::{entries_digest, FOOTER_LEN};
use crate::object::segment::{IndexSegment, IndexedPack};
use crate::repository::Repository;

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
}

/// Every listed pack's use, and for each live blob the pack that holds
/// the copy kept.
pub(super) struct Plan {
    packs: BTreeMap<PackId, PackUse>,
    /// Live blob id → the pack (its 32 bytes) holding the copy kept.
    holders: BlobMap,
}

impl Plan {
    /// Reads every segment once. Each live blob is given to the first
    /// listed pack that holds it, is stored, and whose session is stored
    /// and opens. Refuses if a live blob is in no such pack, or segments
    /// disagree about a pack.
    pub(super) fn build(
        repository: &Repository,
        segments: &[SegmentId],
        stored: &HashSet<PackId>,
        live: &mut BlobMap,
    ) -> Result<Plan> {
        let mut packs: BTreeMap<PackId, PackUse> = BTreeMap::new();
        let mut holders = BlobMap::new(&repository.scratch_dir())?;
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
                let present = stored.contains(&listing.pack);
                // Only a copy that could be read back may be the one kept.
                let readable = present && sessions.opens(repository, listing.session);
                let mut usage = PackUse {
                    size: pack_size(&listing),
                    used_blobs: 0,
                    used_bytes: 0,
                    unused_bytes: 0,
                    fate: Fate::Keep,
                    digest,
                };
                for entry in &listing.entries {
                    let bytes = u64::from(entry.stored_len);
                    if readable
                        && live.contains(&entry.id)?
                        && holders.insert(&entry.id, &listing.pack.0 .0)?
                    {
                        usage.used_blobs += 1;
                        usage.used_bytes += bytes;
                    } else {
                        usage.unused_bytes += bytes;
                    }
                }
                usage.fate = if !present {
                    Fate::Unlist
                } else if usage.used_blobs == 0 {
                    Fate::Delete
                } else {
                    Fate::Keep
                };
                packs.insert(listing.pack, usage);
            }
        }
        holders.flush()?;
        if holders.len() < live.len() {
            return Err(Error::PruneUnsafe {
                reason: format!(
                    "{} blobs the snapshots need are in no stored, readable pack that an index segment lists (if a segment was lost, `cairn repair index` lists its packs again; if a pack or session is lost, see `cairn repair snapshots`)",
                    live.len() - holders.len()
                ),
            });
        }
        Ok(Plan { packs, holders })
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

    /// Whether the kept copy of `blob` is the one in `pack`.
    pub(super) fn is_holder(&mut self, blob: &BlobId, pack: &PackId) -> Result<bool> {
        Ok(self.holders.get(blob)?.as_deref() == Some(&pack.0 .0[..]))
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
        let listed = repository.list_ids(ObjectKind::Session)?;
        Ok(Sessions {
            listed: listed.into_iter().map(SessionId).collect(),
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
