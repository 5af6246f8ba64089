//! prune: delete what no snapshot needs (SPEC.md §25).
//!
//! Under an exclusive lock: mark every blob reachable from every snapshot
//! (in a set kept on disk), find the packs that hold no live blob (and
//! packs no segment lists: leftovers of writers that stopped), store new
//! index segments that list only the packs kept, delete the old segments,
//! and only then delete the packs. A crash at any point leaves a valid
//! repository: before the old segments go, both indexes are valid; after,
//! the packs still to delete are merely unlisted.
//!
//! Packs that hold some live blobs are kept whole in this version: the
//! space of their dead blobs is reported, not reclaimed.

mod live;

use std::collections::{BTreeMap, HashSet};

use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{Id, PackId, SegmentId};
use crate::object::segment::IndexedPack;
use crate::object::tree::NodeKind;
use crate::repository::lock::RepositoryLock;
use crate::repository::Repository;
use live::LiveSet;

/// What a prune found, and (unless a dry run) did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Snapshots whose blobs were marked.
    pub snapshots: usize,
    /// Distinct live blobs (data and trees).
    pub live_blobs: u64,
    /// Packs holding no live blob, deleted (or, in a dry run, to delete).
    pub packs_removed: usize,
    /// Their size in bytes.
    pub bytes_removed: u64,
    /// Packs no segment listed, deleted (or to delete).
    pub unindexed_packs_removed: usize,
    /// Their size in bytes.
    pub unindexed_bytes_removed: u64,
    /// Packs no segment lists whose trailer does not open: not known to be
    /// garbage, so kept.
    pub unreadable_packs_kept: usize,
    /// Packs kept.
    pub packs_kept: usize,
    /// Bytes of dead blobs inside kept packs, not reclaimed.
    pub dead_bytes_kept: u64,
    /// Old segments replaced.
    pub segments_removed: usize,
    /// New segments stored.
    pub segments_written: usize,
}

/// A pack as the old segments list it, with how much of it is live.
struct PackUse {
    listing: IndexedPack,
    live_entries: usize,
    dead_bytes: u64,
}

/// Prunes `repository` under `lock`, which must be exclusive. With
/// `dry_run`, only says what it would do. Refuses, deleting nothing, if
/// any snapshot, tree or segment cannot be read: what is live would then
/// be unknown.
pub fn prune(repository: &Repository, lock: &RepositoryLock, dry_run: bool) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let live = mark(repository, &mut report)?;

    // Every pack the segments list, with its use.
    let segments = list_ids(repository, ObjectKind::Index)?;
    let mut packs: BTreeMap<PackId, PackUse> = BTreeMap::new();
    // The live blobs some listing holds: every live blob must be among
    // them, or pruning would act on an index that misses data.
    let mut listed_live = LiveSet::new(&repository.scratch_dir())?;
    for id in &segments {
        let segment = repository
            .read_segment(SegmentId(*id))
            .map_err(|e| Error::PruneUnsafe {
                reason: e.to_string(),
            })?;
        for listing in segment.packs {
            if let Some(known) = packs.get(&listing.pack) {
                if known.listing != listing {
                    return Err(Error::PruneUnsafe {
                        reason: format!(
                            "index segments disagree about {}",
                            object_name(ObjectKind::Pack, &listing.pack.to_string())
                        ),
                    });
                }
                continue;
            }
            let mut live_entries = 0;
            let mut dead_bytes = 0;
            for entry in &listing.entries {
                if live.contains(&entry.id)? {
                    live_entries += 1;
                    listed_live.insert(&entry.id)?;
                } else {
                    dead_bytes += u64::from(entry.stored_len);
                }
            }
            packs.insert(
                listing.pack,
                PackUse {
                    listing,
                    live_entries,
                    dead_bytes,
                },
            );
        }
    }
    listed_live.flush()?;
    if listed_live.len() < live.len() {
        return Err(Error::PruneUnsafe {
            reason: format!(
                "{} blobs the snapshots need are in no index segment; run `cairn repair index`",
                live.len() - listed_live.len()
            ),
        });
    }
    let stored: HashSet<PackId> = list_ids(repository, ObjectKind::Pack)?
        .into_iter()
        .map(PackId)
        .collect();
    let size_of = |pack: &PackId| {
        repository
            .backend()
            .size(ObjectKind::Pack, &pack.to_string())
            .unwrap_or(0)
    };

    let mut doomed: Vec<PackId> = Vec::new();
    let mut kept: Vec<IndexedPack> = Vec::new();
    for (pack, usage) in packs {
        if usage.live_entries == 0 {
            if stored.contains(&pack) {
                report.packs_removed += 1;
                report.bytes_removed += size_of(&pack);
                doomed.push(pack);
            }
        } else {
            report.packs_kept += 1;
            report.dead_bytes_kept += usage.dead_bytes;
            kept.push(usage.listing);
        }
    }
    let listed: HashSet<PackId> = kept
        .iter()
        .map(|p| p.pack)
        .chain(doomed.iter().copied())
        .collect();
    // Packs no segment lists are leftovers, unless their trailers say
    // they hold something live (a lost segment): then repair comes first.
    let mut unindexed: Vec<PackId> = Vec::new();
    for pack in stored.iter().filter(|p| !listed.contains(p)) {
        let name = pack.to_string();
        match repository.read_pack_trailer(&name) {
            Ok((_, entries)) => {
                if holds_live(&entries, &live)? {
                    return Err(Error::PruneUnsafe {
                        reason: format!(
                            "{} holds blobs snapshots need, but no index segment lists it; run `cairn repair index`",
                            object_name(ObjectKind::Pack, &name)
                        ),
                    });
                }
                report.unindexed_packs_removed += 1;
                report.unindexed_bytes_removed += size_of(pack);
                unindexed.push(*pack);
            }
            // Unreadable: not known to be garbage, so kept.
            Err(_) => report.unreadable_packs_kept += 1,
        }
    }
    // A dead pack's own trailer must agree that nothing in it is live.
    for pack in &doomed {
        if let Ok((_, entries)) = repository.read_pack_trailer(&pack.to_string()) {
            if holds_live(&entries, &live)? {
                return Err(Error::PruneUnsafe {
                    reason: format!(
                        "the trailer of {} lists a live blob its index entry does not",
                        object_name(ObjectKind::Pack, &pack.to_string())
                    ),
                });
            }
        }
    }
    let reindex = report.packs_removed > 0;
    if dry_run || (!reindex && unindexed.is_empty()) {
        if reindex {
            report.segments_removed = segments.len();
        }
        return Ok(report);
    }

    // New index first, old segments after, packs last; and only while
    // the exclusive lock is still ours.
    lock.ensure_held()?;
    if reindex {
        let written: HashSet<SegmentId> = repository.store_segments(kept)?.into_iter().collect();
        report.segments_written = written.len();
        for id in segments
            .into_iter()
            .map(SegmentId)
            .filter(|id| !written.contains(id))
        {
            repository.delete_segment(id)?;
            report.segments_removed += 1;
        }
    }
    lock.ensure_held()?;
    for pack in doomed.iter().chain(&unindexed) {
        let name = pack.to_string();
        match repository.backend().delete(ObjectKind::Pack, &name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::storage(ObjectKind::Pack, &name, e)),
        }
    }
    Ok(report)
}

/// Marks every blob reachable from every snapshot.
fn mark(repository: &Repository, report: &mut PruneReport) -> Result<LiveSet> {
    let list = repository.snapshots()?;
    if let Some(damaged) = list.damaged.first() {
        return Err(Error::PruneUnsafe {
            reason: damaged.to_string(),
        });
    }
    let mut live = LiveSet::new(&repository.scratch_dir())?;
    report.snapshots = list.snapshots.len();
    for (id, snapshot) in &list.snapshots {
        let mut trees = vec![snapshot.tree];
        while let Some(tree_id) = trees.pop() {
            if !live.insert(&tree_id)? {
                continue;
            }
            let tree = repository
                .read_tree(&tree_id)
                .map_err(|e| Error::PruneUnsafe {
                    reason: format!("snapshot {}: {e}", id.0.short()),
                })?;
            for node in tree.nodes {
                match node.kind {
                    NodeKind::Directory { subtree } => trees.push(subtree),
                    NodeKind::File { content, .. } => {
                        for blob in &content {
                            live.insert(blob)?;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    live.flush()?;
    report.live_blobs = live.len();
    Ok(live)
}

/// Whether any of `entries` is live.
fn holds_live(entries: &[crate::object::pack::PackEntry], live: &LiveSet) -> Result<bool> {
    for entry in entries {
        if live.contains(&entry.id)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn list_ids(repository: &Repository, kind: ObjectKind) -> Result<Vec<Id>> {
    let mut ids: Vec<Id> = repository
        .backend()
        .list(kind)
        .map_err(|e| Error::storage(kind, "", e))?
        .iter()
        .filter_map(|name| Id::from_hex(name).filter(|id| id.to_hex() == *name))
        .collect();
    ids.sort();
    Ok(ids)
}
