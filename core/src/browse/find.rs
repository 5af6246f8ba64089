//! `find PATTERN...`: the paths that match, across snapshots, each with
//! its versions: the snapshots that hold it and what it was in each.
//!
//! Patterns are those of excludes (SPEC.md §16, "Patterns"): one without
//! a leading `/` matches at any depth, so `notes.txt` finds every entry of
//! that name and `/home/*/notes.txt` one place. A walk goes below a
//! directory only while some pattern could still match there, so finding
//! one path reads the directories on its way and no others. A directory
//! met again at the same path with the same tree, as most are in the next
//! snapshot, gives the matches remembered from the last time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::browse::{child_path, Trees};
use crate::error::Result;
use crate::id::{BlobId, SnapshotId};
use crate::object::snapshot::Snapshot;
use crate::object::tree::{Node, NodeKind, Timestamp, Tree};
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

/// Matches below one directory: full path and entry (without content).
type Matches = Vec<(Vec<u8>, Node)>;

/// Directories whose matches are remembered at most: a directory met
/// again at the same path with the same tree (the same directory in the
/// next snapshot) then gives its matches without being walked.
const MEMO_DIRECTORIES: usize = 1 << 16;

/// Matches one remembered directory may hold at most: beyond that the
/// walk is cheaper than the copy.
const MEMO_MATCHES: usize = 4096;

/// One directory being walked.
struct Level {
    path: Vec<u8>,
    state: MatchState,
    tree: Arc<Tree>,
    next: usize,
    subtree: BlobId,
    /// The matches below it so far.
    matches: Matches,
}

/// Every path of `snapshots` (in the order given) that a pattern of
/// `options` matches, in path order, with the versions of it in snapshot
/// order. Memory holds the matches, the trees on the path being walked and
/// a bounded memo of directories already walked.
pub fn find(
    trees: &mut Trees<'_>,
    snapshots: &[(SnapshotId, Snapshot)],
    options: &FindOptions,
) -> Result<BTreeMap<Vec<u8>, Vec<Version>>> {
    let patterns = Patterns::new(&options.patterns, &options.case_insensitive)?;
    let mut found: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
    let mut memo: HashMap<(BlobId, Vec<u8>), Matches> = HashMap::new();
    let root = patterns.state_of(std::path::Path::new("/"));
    for (id, snapshot) in snapshots {
        if !patterns.can_match_below(&root) {
            break;
        }
        let mut stack = vec![Level {
            path: Vec::new(),
            state: root.clone(),
            tree: trees.get(&snapshot.tree)?,
            next: 0,
            subtree: snapshot.tree,
            matches: Vec::new(),
        }];
        let mut matches = Matches::new();
        while let Some(level) = stack.last_mut() {
            let Some(node) = level.tree.nodes.get(level.next) else {
                let done = stack.pop().expect("a level");
                if done.matches.len() <= MEMO_MATCHES && memo.len() < MEMO_DIRECTORIES {
                    memo.insert((done.subtree, done.path), done.matches.clone());
                }
                match stack.last_mut() {
                    Some(parent) => parent.matches.extend(done.matches),
                    None => matches = done.matches,
                }
                continue;
            };
            level.next += 1;
            let path = child_path(&level.path, &node.name);
            let state = patterns.descend(&level.state, &node.name);
            let is_dir = matches!(node.kind, NodeKind::Directory { .. });
            if patterns.is_match(&state, is_dir) && in_range(node.mtime, options) {
                let mut node = node.clone();
                if let NodeKind::File { content, .. } = &mut node.kind {
                    *content = Vec::new();
                }
                level.matches.push((path.clone(), node));
            }
            let NodeKind::Directory { subtree } = node.kind else {
                continue;
            };
            if !patterns.can_match_below(&state) {
                continue;
            }
            let key = (subtree, path);
            if let Some(known) = memo.get(&key) {
                level.matches.extend(known.iter().cloned());
                continue;
            }
            let tree = trees.get(&subtree)?;
            stack.push(Level {
                path: key.1,
                state,
                tree,
                next: 0,
                subtree,
                matches: Vec::new(),
            });
        }
        for (path, node) in matches {
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
