//! `stats [SNAPSHOT...]`: what snapshots hold and what they take.
//!
//! The restore size adds up every snapshot's files as restore would write
//! them; the blob counts and sizes count each distinct blob once, however
//! many files and snapshots share it. Each snapshot's trees are walked in
//! full for the first; for the second, a tree already seen is not walked
//! again, and blob ids are sorted on disk to count them: memory stays flat
//! however many blobs there are.

use crate::browse::Trees;
use crate::error::Result;
use crate::id::{BlobId, Id};
use crate::object::blob::BlobType;
use crate::object::snapshot::Snapshot;
use crate::object::tree::NodeKind;
use crate::scratch::{BlobSet, Spill};

/// What a set of snapshots holds and takes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Regular files, over all snapshots.
    pub files: u64,
    /// Directories, over all snapshots (not counting their roots).
    pub dirs: u64,
    /// Other entries (links, devices, pipes), over all snapshots.
    pub others: u64,
    /// Bytes of file content a restore of every snapshot writes.
    pub restore_bytes: u64,
    /// Distinct data blobs.
    pub data_blobs: u64,
    /// Distinct tree blobs.
    pub tree_blobs: u64,
    /// Plaintext bytes of the distinct data blobs: the deduplicated size
    /// of the content.
    pub data_bytes: u64,
    /// Plaintext bytes of the distinct tree blobs.
    pub tree_bytes: u64,
    /// Their bytes as stored, compressed and encrypted.
    pub stored_bytes: u64,
    /// Distinct blobs referenced but not in the index.
    pub missing_blobs: u64,
}

impl Stats {
    /// Restore size over deduplicated size: how many times over
    /// deduplication saves the content (1 when nothing is shared).
    pub fn dedup_ratio(&self) -> f64 {
        ratio(self.restore_bytes, self.data_bytes)
    }

    /// Plaintext bytes of the distinct blobs over their stored bytes: what
    /// compression saves (below 1 where encryption's overhead is more).
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.data_bytes + self.tree_bytes, self.stored_bytes)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Counts `snapshots` (see the module's doc).
pub fn stats(trees: &mut Trees<'_>, snapshots: &[Snapshot]) -> Result<Stats> {
    let repository = trees.repository();
    let scratch = repository.scratch_dir();
    let mut seen = BlobSet::new(&scratch)?;
    let mut blobs: Spill<32> = Spill::new(&scratch)?;
    let mut stats = Stats {
        snapshots: snapshots.len() as u64,
        ..Stats::default()
    };
    for snapshot in snapshots {
        // Trees to walk, each with whether it is new to `seen` (whose
        // blobs then still need counting).
        let mut stack = vec![(snapshot.tree, seen.insert(&snapshot.tree)?)];
        while let Some((id, new)) = stack.pop() {
            if new {
                blobs.push(id.0 .0)?;
            }
            let tree = trees.get(&id)?;
            for node in &tree.nodes {
                match &node.kind {
                    NodeKind::File { size, content, .. } => {
                        stats.files += 1;
                        stats.restore_bytes += size;
                        if new {
                            for blob in content {
                                blobs.push(blob.0 .0)?;
                            }
                        }
                    }
                    NodeKind::Directory { subtree } => {
                        stats.dirs += 1;
                        stack.push((*subtree, seen.insert(subtree)?));
                    }
                    _ => stats.others += 1,
                }
            }
        }
    }
    let mut sorted = blobs.into_sorted()?;
    while let Some(id) = sorted.next_distinct()? {
        let Some(location) = repository.locate(&BlobId(Id(id)))? else {
            stats.missing_blobs += 1;
            continue;
        };
        let raw = u64::from(location.entry.raw_len);
        match location.entry.blob_type() {
            Some(BlobType::Tree) => {
                stats.tree_blobs += 1;
                stats.tree_bytes += raw;
            }
            _ => {
                stats.data_blobs += 1;
                stats.data_bytes += raw;
            }
        }
        stats.stored_bytes += u64::from(location.entry.stored_len);
    }
    Ok(stats)
}
