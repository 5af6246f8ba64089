//! `find PATTERN...`: the paths that match, across snapshots, each with
//! its versions: the snapshots that hold it and what it was in each.
//!
//! Patterns are those of excludes (SPEC.md §16, "Patterns"): one without
//! a leading `/` matches at any depth, so `notes.txt` finds every entry of
//! that name and `/home/*/notes.txt` one place. A walk goes below a
//! directory only while some pattern could still match there, so finding
//! one path reads the directories on its way and no others.

use std::collections::BTreeMap;

use crate::browse::{child_path, Trees};
use crate::error::Result;
use crate::id::SnapshotId;
use crate::object::snapshot::Snapshot;
use crate::object::tree::{Node, NodeKind, Timestamp};
use crate::pattern::{MatchState, Patterns};

/// What to find.
#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    /// Patterns matched with regard to case.
    pub patterns: Vec<String>,
    /// Patterns matched without regard to case.
    pub case_insensitive: Vec<String>,
    /// Only entries modified at or after this time (ns since the epoch).
    pub newer_ns: Option<i64>,
    /// Only entries modified at or before this time.
    pub older_ns: Option<i64>,
}

/// A matching path in one snapshot.
#[derive(Debug, Clone)]
pub struct Version {
    /// The snapshot holding it.
    pub snapshot: SnapshotId,
    /// That snapshot's time.
    pub snapshot_time_ns: i64,
    /// The entry, without its content list.
    pub node: Node,
}

/// Every path of `snapshots` (in the order given) that a pattern of
/// `options` matches, in path order, with the versions of it in snapshot
/// order. Memory holds the matches and the trees on the path being
/// walked.
pub fn find(
    trees: &mut Trees<'_>,
    snapshots: &[(SnapshotId, Snapshot)],
    options: &FindOptions,
) -> Result<BTreeMap<Vec<u8>, Vec<Version>>> {
    let patterns = Patterns::new(&options.patterns, &options.case_insensitive)?;
    let mut found: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
    let root = patterns.state_of(std::path::Path::new("/"));
    for (id, snapshot) in snapshots {
        // Each level: its path, its state, and its entries still to visit.
        let mut stack: Vec<(Vec<u8>, MatchState, Vec<Node>)> = Vec::new();
        if patterns.can_match_below(&root) {
            let tree = trees.get(&snapshot.tree)?;
            stack.push((Vec::new(), root.clone(), tree.nodes.clone()));
        }
        while let Some((dir, state, entries)) = stack.last_mut() {
            let Some(mut node) = entries.pop() else {
                stack.pop();
                continue;
            };
            let path = child_path(dir, &node.name);
            let child = patterns.descend(state, &node.name);
            if let NodeKind::Directory { subtree } = &node.kind {
                if patterns.can_match_below(&child) {
                    let tree = trees.get(subtree)?;
                    stack.push((path.clone(), child.clone(), tree.nodes.clone()));
                }
            }
            let is_dir = matches!(node.kind, NodeKind::Directory { .. });
            if !patterns.is_match(&child, is_dir) || !in_range(node.mtime, options) {
                continue;
            }
            if let NodeKind::File { content, .. } = &mut node.kind {
                *content = Vec::new();
            }
            found.entry(path).or_default().push(Version {
                snapshot: *id,
                snapshot_time_ns: snapshot.time_ns,
                node,
            });
        }
    }
    Ok(found)
}

/// Whether `mtime` is within `--newer` and `--older`.
fn in_range(mtime: Timestamp, options: &FindOptions) -> bool {
    let ns = i128::from(mtime.secs) * 1_000_000_000 + i128::from(mtime.nanos);
    options.newer_ns.is_none_or(|t| ns >= i128::from(t))
        && options.older_ns.is_none_or(|t| ns <= i128::from(t))
}
