//! `ls SNAPSHOT[:PATH]`: the entries of a directory in a snapshot, in name
//! order, and with `recursive` everything below it, each directory's
//! entries right after it. Trees are read as the walk reaches them, and
//! the walk keeps its own stack: memory holds the trees on the path being
//! walked, not the snapshot.

use std::path::Path;

use crate::error::Result;
use crate::object::snapshot::Snapshot;
use crate::object::tree::{Node, NodeKind, Tree};
use crate::repository::Repository;
use crate::restorer::locate;

/// Calls `visit` with the absolute path (as raw bytes) and the node of
/// every entry of the directory at `path` in `snapshot` (the root if
/// none), or of the one entry if `path` is not a directory; with
/// `recursive`, of everything below too. Stops at the first error `visit`
/// returns.
pub fn list(
    repository: &Repository,
    snapshot: &Snapshot,
    path: Option<&Path>,
    recursive: bool,
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<()> {
    let (tree, node, refused) = locate(repository, snapshot, path)?;
    // A listing must not hide entries: a tree that restore would take
    // apart entry by entry is an error here.
    if let Some((_, error)) = refused.into_iter().next() {
        return Err(error);
    }
    let base = path
        .map(|p| p.as_os_str().as_encoded_bytes().to_vec())
        .unwrap_or_default();
    if let Some(node) = node {
        return visit(&base, &node);
    }
    let base = trim_slashes(base);
    // Each level: its path, and its entries still to visit, last first.
    let mut stack: Vec<(Vec<u8>, Vec<Node>)> = vec![(base, reversed(tree))];
    while let Some((dir, entries)) = stack.last_mut() {
        let Some(node) = entries.pop() else {
            stack.pop();
            continue;
        };
        let mut child = dir.clone();
        child.push(b'/');
        child.extend_from_slice(&node.name);
        visit(&child, &node)?;
        if let (true, NodeKind::Directory { subtree }) = (recursive, &node.kind) {
            let tree = repository.read_tree(subtree)?;
            stack.push((child, reversed(tree)));
        }
    }
    Ok(())
}

/// `path` without trailing slashes (`/` becomes empty: entries of the root
/// are `/name`).
fn trim_slashes(mut path: Vec<u8>) -> Vec<u8> {
    while path.last() == Some(&b'/') {
        path.pop();
    }
    path
}

/// A tree's entries in name order, last first, for popping.
fn reversed(mut tree: Tree) -> Vec<Node> {
    tree.nodes.sort_by(|a, b| b.name.cmp(&a.name));
    tree.nodes
}
