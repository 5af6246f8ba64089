//! prune: delete what no snapshot needs (SPEC.md §25).
//!
//! Under an exclusive lock: mark every blob reachable from every snapshot
//! (in a set kept on disk), then read the index one segment at a time and
//! give each live blob to one pack that holds it. Packs left with no live
//! blob are deleted; packs whose unused share is over `--max-unused` are
//! repacked: their live blobs are copied into new packs, with segments of
//! their own. Then new segments list the packs kept, the old segments are
//! deleted, and only then the packs. A crash at any point leaves a valid
//! repository: until the old segments go, every index is valid (new packs
//! only duplicate blobs); after, the packs still to delete are unlisted.

mod plan;
mod repack;

use std::collections::HashSet;
use std::str::FromStr;

use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{PackId, SegmentId};
use crate::object::segment::IndexedPack;
use crate::object::tree::NodeKind;
use crate::repository::lock::RepositoryLock;
use crate::repository::Repository;
use crate::scratch::{BlobSet, Spill};
use plan::{Fate, PackUse, Plan};

/// Temporary files younger than this may belong to a writer still at
/// work (one that runs with `--no-lock`), so prune leaves them.
pub const LEFTOVER_MIN_AGE_SECS: u64 = 3600;

/// How much unused space prune may leave inside the packs it keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// At most this percentage (0 to 100) of the kept packs' bytes.
    Percent(f64),
    /// At most this many bytes.
    Bytes(u64),
    /// Any amount: nothing is repacked.
    Unlimited,
}

impl MaxUnused {
    /// The unused bytes allowed beside `used` bytes of live blobs.
    fn allowed(self, used: u64) -> u64 {
        match self {
            MaxUnused::Unlimited => u64::MAX,
            MaxUnused::Bytes(bytes) => bytes,
            MaxUnused::Percent(p) if p >= 100.0 => u64::MAX,
            // unused / (used + unused) ≤ p / 100
            MaxUnused::Percent(p) => (used as f64 * p / (100.0 - p)) as u64,
        }
    }
}

impl FromStr for MaxUnused {
    type Err = String;

    /// `5%`, `unlimited`, or a size: `500M`, `2GiB`, `1048576` (units are
    /// powers of 1024).
    fn from_str(text: &str) -> std::result::Result<MaxUnused, String> {
        let text = text.trim();
        let bad =
            || format!("{text:?}: expected a percentage (5%), a size (500M, 2GiB) or unlimited");
        if text.eq_ignore_ascii_case("unlimited") {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(number) = text.strip_suffix('%') {
            let p: f64 = number.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!(
                    "{text:?}: a percentage must be between 0% and 100%"
                ));
            }
            return Ok(MaxUnused::Percent(p));
        }
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(bad()),
        };
        number
            .checked_mul(1 << shift)
            .map(MaxUnused::Bytes)
            .ok_or_else(bad)
    }
}

/// How to prune.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Only say what would be done.
    pub dry_run: bool,
    /// When to repack packs that hold unused blobs.
    pub max_unused: MaxUnused,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused: MaxUnused::Percent(5.0),
        }
    }
}

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
    /// Packs whose live blobs were copied into new packs, then deleted.
    pub packs_repacked: usize,
    /// Their size in bytes.
    pub bytes_repacked: u64,
    /// Live blobs copied.
    pub blobs_repacked: u64,
    /// Bytes the copies take in the new packs (in a dry run, an estimate).
    pub bytes_rewritten: u64,
    /// Packs no segment listed, deleted (or to delete).
    pub unindexed_packs_removed: usize,
    /// Their size in bytes.
    pub unindexed_bytes_removed: u64,
    /// Packs no segment lists whose trailer does not open: not known to be
    /// garbage, so kept.
    pub unreadable_packs_kept: usize,
    /// Packs that segments list but that are not stored: dropped from the
    /// index (they held nothing live, or prune would have refused).
    pub missing_packs_unlisted: usize,
    /// Packs kept as they are.
    pub packs_kept: usize,
    /// Bytes of unused blobs left inside kept packs (within `--max-unused`).
    pub dead_bytes_kept: u64,
    /// Old segments replaced.
    pub segments_removed: usize,
    /// New segments stored.
    pub segments_written: usize,
    /// Temporary files of stopped writers removed (or to remove).
    pub leftovers_removed: usize,
}

impl PruneReport {
    /// Bytes the repository shrinks by.
    pub fn bytes_freed(&self) -> u64 {
        (self.bytes_removed + self.bytes_repacked + self.unindexed_bytes_removed)
            .saturating_sub(self.bytes_rewritten)
    }
}

/// Prunes `repository` under `lock`, which must be exclusive. With
/// `options.dry_run`, only says what it would do. Refuses, deleting
/// nothing, if any snapshot, tree or segment cannot be read, or a live
/// blob is in no stored pack the index lists: what is live, or where,
/// would then be unknown.
pub fn prune(
    repository: &Repository,
    lock: &RepositoryLock,
    options: &PruneOptions,
) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let live = mark(repository, &mut report)?;
    let segments: Vec<SegmentId> = repository
        .list_ids(ObjectKind::Index)?
        .into_iter()
        .map(SegmentId)
        .collect();
    let stored: HashSet<PackId> = repository
        .list_ids(ObjectKind::Pack)?
        .into_iter()
        .map(PackId)
        .collect();
    let mut plan = Plan::build(repository, &segments, &stored, live)?;
    report.live_blobs = plan.live_blobs;
    plan.choose_repacks(options.max_unused);
    let unindexed = find_unindexed(repository, &plan, &stored, &mut report)?;
    for (pack, usage) in plan.packs() {
        match usage.fate {
            Fate::Delete => {
                report.packs_removed += 1;
                report.bytes_removed += usage.size;
            }
            Fate::Repack => {
                report.packs_repacked += 1;
                report.bytes_repacked += usage.size;
                report.blobs_repacked += usage.used_blobs;
                report.bytes_rewritten += usage.used_bytes;
            }
            Fate::Unlist => report.missing_packs_unlisted += 1,
            Fate::Keep => {
                report.packs_kept += 1;
                report.dead_bytes_kept += usage.unused_bytes;
            }
        }
        if usage.fate == Fate::Delete {
            ensure_trailer_agrees(repository, pack, usage)?;
        }
    }
    let leftovers = old_leftovers(repository)?;
    report.leftovers_removed = leftovers.len();
    let reindex = plan.changes_index();
    if options.dry_run {
        if reindex {
            report.segments_removed = segments.len();
        }
        return Ok(report);
    }

    // New packs first, then the new index, old segments after, packs
    // last; and only while the exclusive lock is still ours.
    if report.packs_repacked > 0 {
        lock.ensure_held()?;
        let (blobs, bytes) = repack::copy_live_blobs(repository, &segments, &mut plan)?;
        report.blobs_repacked = blobs;
        report.bytes_rewritten = bytes;
    }
    if reindex {
        lock.ensure_held()?;
        let written = plan.store_kept_segments(repository, &segments)?;
        report.segments_written = written.len();
        for id in segments.iter().filter(|id| !written.contains(id)) {
            repository.delete_segment(*id)?;
            report.segments_removed += 1;
        }
    }
    lock.ensure_held()?;
    let gone = plan
        .packs()
        .filter(|(_, usage)| matches!(usage.fate, Fate::Delete | Fate::Repack))
        .map(|(pack, _)| *pack);
    for pack in gone.chain(unindexed) {
        let name = pack.to_string();
        match repository.backend().delete(ObjectKind::Pack, &name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::storage(ObjectKind::Pack, &name, e)),
        }
    }
    for name in leftovers {
        match repository.backend().remove_leftover(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::storage(ObjectKind::Pack, &name, e)),
        }
    }
    Ok(report)
}

/// Marks every blob reachable from every snapshot: returns their ids, to
/// be sorted (with repeats). Trees already walked are remembered in a set
/// on disk, so that a tree shared by many snapshots is read once.
fn mark(repository: &Repository, report: &mut PruneReport) -> Result<Spill<32>> {
    let list = repository.snapshots()?;
    if let Some(damaged) = list.damaged.first() {
        return Err(Error::PruneUnsafe {
            reason: damaged.to_string(),
        });
    }
    let mut walked = BlobSet::new(&repository.scratch_dir())?;
    let mut live = Spill::new(&repository.scratch_dir())?;
    report.snapshots = list.snapshots.len();
    for (id, snapshot) in &list.snapshots {
        let mut trees = vec![snapshot.tree];
        while let Some(tree_id) = trees.pop() {
            if !walked.insert(&tree_id)? {
                continue;
            }
            live.push(tree_id.0 .0)?;
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
                            live.push(blob.0 .0)?;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(live)
}

/// Packs stored that no segment lists: leftovers of writers that stopped
/// (a backup, or a prune killed while repacking), to delete. By now every
/// live blob has a kept copy in a listed pack ([`Plan::build`] refuses
/// otherwise, as after a lost segment), so whatever such a pack holds is
/// garbage or a duplicate. One whose trailer does not open is not known to
/// be a pack at all, and is kept.
fn find_unindexed(
    repository: &Repository,
    plan: &Plan,
    stored: &HashSet<PackId>,
    report: &mut PruneReport,
) -> Result<Vec<PackId>> {
    let mut unindexed = Vec::new();
    let mut candidates: Vec<&PackId> = stored.iter().filter(|p| !plan.lists(p)).collect();
    candidates.sort();
    for pack in candidates {
        let name = pack.to_string();
        match repository.read_pack_trailer(&name) {
            Ok(_) => {
                report.unindexed_packs_removed += 1;
                report.unindexed_bytes_removed += repository
                    .backend()
                    .size(ObjectKind::Pack, &name)
                    .unwrap_or(0);
                unindexed.push(*pack);
            }
            Err(_) => report.unreadable_packs_kept += 1,
        }
    }
    Ok(unindexed)
}

/// A pack to delete must hold, by its own trailer, what its listing says:
/// otherwise the index is wrong about it, and what it holds is not known.
/// (Live blobs it holds are fine: they are copies, kept elsewhere.) A
/// trailer that does not open proves nothing either way.
fn ensure_trailer_agrees(repository: &Repository, pack: &PackId, usage: &PackUse) -> Result<()> {
    if let Ok((session, entries)) = repository.read_pack_trailer(&pack.to_string()) {
        let trailer = IndexedPack {
            pack: *pack,
            session,
            entries,
        };
        if plan::digest(&trailer) != usage.digest {
            return Err(Error::PruneUnsafe {
                reason: format!(
                    "the trailer of {} disagrees with its index listing; run `cairn repair index`",
                    object_name(ObjectKind::Pack, &pack.to_string())
                ),
            });
        }
    }
    Ok(())
}

/// Temporary files of stopped writers old enough to be sure of.
fn old_leftovers(repository: &Repository) -> Result<Vec<String>> {
    Ok(repository
        .backend()
        .leftovers()
        .map_err(|e| Error::storage(ObjectKind::Pack, "", e))?
        .into_iter()
        .filter(|(_, age)| *age >= LEFTOVER_MIN_AGE_SECS)
        .map(|(name, _)| name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unused_parses_percentages_sizes_and_unlimited() {
        assert_eq!("5%".parse(), Ok(MaxUnused::Percent(5.0)));
        assert_eq!("0%".parse(), Ok(MaxUnused::Percent(0.0)));
        assert_eq!("unlimited".parse(), Ok(MaxUnused::Unlimited));
        assert_eq!("500M".parse(), Ok(MaxUnused::Bytes(500 << 20)));
        assert_eq!("2GiB".parse(), Ok(MaxUnused::Bytes(2 << 30)));
        assert_eq!("4096".parse(), Ok(MaxUnused::Bytes(4096)));
        for bad in ["", "%", "101%", "-1%", "5x", "M", "99999999999T"] {
            assert!(bad.parse::<MaxUnused>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_percentage_bounds_the_unused_share_of_what_is_kept() {
        // 5% unused beside 95 used bytes is 5 bytes.
        assert_eq!(MaxUnused::Percent(5.0).allowed(95), 5);
        assert_eq!(MaxUnused::Percent(0.0).allowed(1000), 0);
        assert_eq!(MaxUnused::Percent(100.0).allowed(1), u64::MAX);
        assert_eq!(MaxUnused::Bytes(7).allowed(1 << 40), 7);
    }
}
