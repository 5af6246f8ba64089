//! `diff SNAPSHOT1 SNAPSHOT2 [PATH]`: what changed from one snapshot to
//! the other, in path order, each directory before what is below it.
//!
//! Both trees are walked side by side; a directory whose tree id is the
//! same on both sides is identical below and is not read. What is below an
//! added or removed directory is listed entry by entry. A change counts as
//! content (`modified`) when a file's blobs, a link's target or a device's
//! number differ, and as `metadata` when only what restore would set on
//! the entry differs: mode, owner, group, mtime, extended attributes.
//! Access and change times, inode numbers and link counts are not
//! compared: they change without anything being done to the entry. A
//! directory's mtime moves whenever an entry is added to it, removed from
//! it or replaced; that alone is not reported as a change of the
//! directory, whose mtime is compared only when each of its names is the
//! same entry on both sides (same kind, same inode). Its mode, owner and
//! attributes are always compared. The directories above the source paths
//! (`/`, `/home` for a backup of `/home/alice`) are not part of the backup
//! and their metadata is not compared.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use crate::browse::{base_path, child_path, resolve, Trees};
use crate::error::Result;
use crate::id::BlobId;
use crate::object::snapshot::Snapshot;
use crate::object::tree::{Node, NodeKind, Tree};

/// How an entry differs between the two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only in the second.
    Added,
    /// Only in the first.
    Removed,
    /// In both, with different content.
    Modified,
    /// In both, of different kinds (a file became a directory).
    TypeChanged,
    /// In both, same content, different metadata.
    Metadata,
}

impl Change {
    /// The one-character marker of the text output.
    pub fn marker(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::TypeChanged => 'T',
            Change::Metadata => 'U',
        }
    }

    /// The name of the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Modified => "modified",
            Change::TypeChanged => "type",
            Change::Metadata => "metadata",
        }
    }
}

/// One changed entry.
#[derive(Debug)]
pub struct DiffEntry<'a> {
    /// Absolute path, raw bytes.
    pub path: &'a [u8],
    /// What changed.
    pub change: Change,
    /// The entry in the first snapshot, if there.
    pub old: Option<&'a Node>,
    /// The entry in the second snapshot, if there.
    pub new: Option<&'a Node>,
}

/// Counts of a diff.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiffSummary {
    /// Entries only in the second snapshot.
    pub added: u64,
    /// Entries only in the first.
    pub removed: u64,
    /// Entries whose content (or kind) changed.
    pub modified: u64,
    /// Entries whose metadata alone changed.
    pub metadata: u64,
    /// Content bytes new in the second snapshot: added files, and the
    /// chunks of modified files that the old version did not have.
    pub bytes_added: u64,
    /// Content bytes gone: removed files, and the chunks of modified files
    /// that the new version no longer has.
    pub bytes_removed: u64,
}

/// One directory being compared: its path, and the entries of each side
/// still to look at, last first.
struct Level {
    path: Vec<u8>,
    old: Vec<Node>,
    new: Vec<Node>,
}

/// Compares `path` (the whole snapshot if none) in `first` and `second`,
/// calling `visit` for each change; returns the counts. `path` must exist
/// in at least one of them.
pub fn diff(
    trees: &mut Trees<'_>,
    first: &Snapshot,
    second: &Snapshot,
    path: Option<&Path>,
    visit: &mut dyn FnMut(&DiffEntry<'_>) -> Result<()>,
) -> Result<DiffSummary> {
    let old = resolve(trees, first, path);
    let new = resolve(trees, second, path);
    let (old, new) = match (old, new) {
        (Err(e), Err(_)) => return Err(e),
        (old, new) => (old.ok(), new.ok()),
    };
    let mut walk = Walk {
        trees,
        visit,
        summary: DiffSummary::default(),
        sources: first.paths.iter().chain(&second.paths).cloned().collect(),
    };
    let base = base_path(path);
    let mut stack = Vec::new();
    match (old, new) {
        (Some(old), Some(new)) if is_dir(&old) && is_dir(&new) => {
            walk.pair_of_dirs(&mut stack, base, old, new)?;
        }
        (old, new) => {
            let parent = base[..base.iter().rposition(|&b| b == b'/').unwrap_or(0)].to_vec();
            stack.push(Level {
                path: parent,
                old: old.into_iter().collect(),
                new: new.into_iter().collect(),
            });
        }
    }
    while let Some(level) = stack.last_mut() {
        let next = match (level.old.last(), level.new.last()) {
            (None, None) => {
                stack.pop();
                continue;
            }
            (Some(o), Some(n)) if o.name == n.name => (level.old.pop(), level.new.pop()),
            (Some(o), Some(n)) if o.name < n.name => (level.old.pop(), None),
            (Some(_), Some(_)) => (None, level.new.pop()),
            (Some(_), None) => (level.old.pop(), None),
            (None, Some(_)) => (None, level.new.pop()),
        };
        let dir = level.path.clone();
        match next {
            (Some(old), Some(new)) => walk.pair(&mut stack, &dir, old, new)?,
            (Some(old), None) => walk.one_side(&mut stack, &dir, old, Change::Removed)?,
            (None, Some(new)) => walk.one_side(&mut stack, &dir, new, Change::Added)?,
            (None, None) => unreachable!("one side has an entry"),
        }
    }
    Ok(walk.summary)
}

struct Walk<'t, 'r, 'v> {
    trees: &'t mut Trees<'r>,
    visit: &'v mut dyn FnMut(&DiffEntry<'_>) -> Result<()>,
    summary: DiffSummary,
    /// Both snapshots' source paths.
    sources: Vec<Vec<u8>>,
}

impl Walk<'_, '_, '_> {
    /// Whether `path` is a source path or inside one, rather than a
    /// directory above them.
    fn is_backed_up(&self, path: &[u8]) -> bool {
        self.sources.iter().any(|source| {
            let source = source.strip_suffix(b"/").unwrap_or(source);
            path.starts_with(source) && (path.len() == source.len() || path[source.len()] == b'/')
        })
    }

    /// An entry on one side only: it, and for a directory everything below.
    fn one_side(
        &mut self,
        stack: &mut Vec<Level>,
        dir: &[u8],
        node: Node,
        change: Change,
    ) -> Result<()> {
        let path = child_path(dir, &node.name);
        let (old, new) = match change {
            Change::Removed => (Some(&node), None),
            _ => (None, Some(&node)),
        };
        self.report(&path, change, old, new)?;
        if let NodeKind::Directory { subtree } = &node.kind {
            let entries = reversed(self.trees.get(subtree)?);
            let (old, new) = match change {
                Change::Removed => (entries, Vec::new()),
                _ => (Vec::new(), entries),
            };
            stack.push(Level { path, old, new });
        }
        Ok(())
    }

    /// An entry on both sides.
    fn pair(&mut self, stack: &mut Vec<Level>, dir: &[u8], old: Node, new: Node) -> Result<()> {
        let path = child_path(dir, &old.name);
        if is_dir(&old) && is_dir(&new) {
            return self.pair_of_dirs(stack, path, old, new);
        }
        if !same_kind(&old, &new) {
            self.report(&path, Change::TypeChanged, Some(&old), Some(&new))?;
            // What a directory on either side held is gone or new.
            for (node, change) in [(&old, Change::Removed), (&new, Change::Added)] {
                if let NodeKind::Directory { subtree } = &node.kind {
                    let entries = reversed(self.trees.get(subtree)?);
                    let (old, new) = match change {
                        Change::Removed => (entries, Vec::new()),
                        _ => (Vec::new(), entries),
                    };
                    stack.push(Level {
                        path: path.clone(),
                        old,
                        new,
                    });
                }
            }
            return Ok(());
        }
        if content_differs(&old.kind, &new.kind) {
            self.report(&path, Change::Modified, Some(&old), Some(&new))
        } else if metadata_differs(&old, &new, true) {
            self.report(&path, Change::Metadata, Some(&old), Some(&new))
        } else {
            Ok(())
        }
    }

    /// A directory on both sides: its own change (if it was backed up),
    /// then (unless the trees are the same) its entries.
    fn pair_of_dirs(
        &mut self,
        stack: &mut Vec<Level>,
        path: Vec<u8>,
        old: Node,
        new: Node,
    ) -> Result<()> {
        let report = self.is_backed_up(&path);
        let (old_tree, new_tree) = (subtree(&old), subtree(&new));
        if old_tree == new_tree {
            if report && metadata_differs(&old, &new, true) {
                self.report(&path, Change::Metadata, Some(&old), Some(&new))?;
            }
            return Ok(());
        }
        let old_entries = self.trees.get(&old_tree)?;
        let new_entries = self.trees.get(&new_tree)?;
        // Adding, removing or replacing an entry moves the mtime: compare
        // it only if every name is the same file as before.
        let same_entries = old_entries.nodes.len() == new_entries.nodes.len()
            && old_entries
                .nodes
                .iter()
                .zip(&new_entries.nodes)
                .all(|(a, b)| a.name == b.name && a.inode == b.inode && same_kind(a, b));
        if report && metadata_differs(&old, &new, same_entries) {
            self.report(&path, Change::Metadata, Some(&old), Some(&new))?;
        }
        stack.push(Level {
            path,
            old: reversed(old_entries),
            new: reversed(new_entries),
        });
        Ok(())
    }

    fn report(
        &mut self,
        path: &[u8],
        change: Change,
        old: Option<&Node>,
        new: Option<&Node>,
    ) -> Result<()> {
        let summary = &mut self.summary;
        match change {
            Change::Added => summary.added += 1,
            Change::Removed => summary.removed += 1,
            Change::Modified | Change::TypeChanged => summary.modified += 1,
            Change::Metadata => summary.metadata += 1,
        }
        let (added, removed) = content_bytes(self.trees, old, new)?;
        self.summary.bytes_added += added;
        self.summary.bytes_removed += removed;
        (self.visit)(&DiffEntry {
            path,
            change,
            old,
            new,
        })
    }
}

fn same_kind(a: &Node, b: &Node) -> bool {
    std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind)
}

fn is_dir(node: &Node) -> bool {
    matches!(node.kind, NodeKind::Directory { .. })
}

fn subtree(node: &Node) -> BlobId {
    match node.kind {
        NodeKind::Directory { subtree } => subtree,
        _ => unreachable!("called on directories only"),
    }
}

/// A tree's entries, last first, for popping.
fn reversed(tree: Arc<Tree>) -> Vec<Node> {
    let mut nodes = Arc::unwrap_or_clone(tree).nodes;
    nodes.reverse();
    nodes
}

/// Whether two entries of the same kind hold different content.
fn content_differs(old: &NodeKind, new: &NodeKind) -> bool {
    match (old, new) {
        (NodeKind::File { content: a, .. }, NodeKind::File { content: b, .. }) => a != b,
        (NodeKind::Directory { .. }, NodeKind::Directory { .. }) => false,
        (a, b) => a != b,
    }
}

/// Whether what restore sets on an entry differs; with `with_mtime`
/// false, the mtime is not compared.
fn metadata_differs(old: &Node, new: &Node, with_mtime: bool) -> bool {
    old.mode != new.mode
        || old.uid != new.uid
        || old.gid != new.gid
        || old.user != new.user
        || old.group != new.group
        || old.xattrs != new.xattrs
        || (with_mtime && old.mtime != new.mtime)
}

/// Content bytes a change adds and removes: whole files for files only on
/// one side; for a file on both, the lengths of the chunks only one of
/// them has.
fn content_bytes(trees: &Trees<'_>, old: Option<&Node>, new: Option<&Node>) -> Result<(u64, u64)> {
    Ok(match (file_content(old), file_content(new)) {
        (None, None) => (0, 0),
        (None, Some((_, size))) => (size, 0),
        (Some((_, size)), None) => (0, size),
        (Some((a, _)), Some((b, _))) if a == b => (0, 0),
        (Some((a, _)), Some((b, _))) => {
            let (in_a, in_b): (HashSet<_>, HashSet<_>) = (a.iter().collect(), b.iter().collect());
            let repository = trees.repository();
            let length = |ids: &Vec<BlobId>, other: &HashSet<&BlobId>| -> Result<u64> {
                let mut total = 0;
                for id in ids.iter().filter(|id| !other.contains(id)) {
                    if let Some(location) = repository.locate(id)? {
                        total += u64::from(location.entry.raw_len);
                    }
                }
                Ok(total)
            };
            (length(b, &in_a)?, length(a, &in_b)?)
        }
    })
}

/// A file's blobs and size; `None` for anything else.
fn file_content(node: Option<&Node>) -> Option<(&Vec<BlobId>, u64)> {
    match node.map(|n| &n.kind) {
        Some(NodeKind::File { content, size, .. }) => Some((content, *size)),
        _ => None,
    }
}
