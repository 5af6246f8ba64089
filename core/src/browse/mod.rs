//! Looking into snapshots without restoring them: `cat` streams one file,
//! `ls` lists a directory, `diff` compares two snapshots, `find` searches
//! paths across snapshots, `dump` writes an archive, `stats` counts what
//! snapshots take.

mod cat;
mod diff;
mod dump;
mod find;
mod ls;
mod stats;
mod trees;

use std::path::{Component, Path};

pub use cat::cat;
pub use diff::{diff, Change, DiffEntry, DiffSummary};
pub(crate) use dump::FileContent;
pub use dump::{dump, ArchiveFormat, DumpSummary};
pub use find::{find, FindOptions, Version};
pub use ls::list;
pub use stats::{stats, Stats};
pub use trees::{Trees, TREE_CACHE_BYTES};

use crate::error::{Error, Result};
use crate::object::snapshot::Snapshot;
use crate::object::tree::{Node, NodeKind};

/// The node at `path` in `snapshot` (the root, as a directory node with
/// an empty name, for `None` or `/`). Errors with
/// [`Error::PathNotInSnapshot`] naming the path if it is not there.
pub fn resolve(trees: &mut Trees<'_>, snapshot: &Snapshot, path: Option<&Path>) -> Result<Node> {
    let mut node = Node::new(
        Vec::new(),
        NodeKind::Directory {
            subtree: snapshot.tree,
        },
    );
    let Some(path) = path else {
        return Ok(node);
    };
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::ParentInSnapshotPath {
            path: path.to_path_buf(),
        });
    }
    for component in path.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        let NodeKind::Directory { subtree } = &node.kind else {
            return Err(not_found(path));
        };
        let tree = trees.get(subtree)?;
        node = tree
            .find(name.as_encoded_bytes())
            .ok_or_else(|| not_found(path))?
            .clone();
    }
    Ok(node)
}

fn not_found(path: &Path) -> Error {
    Error::PathNotInSnapshot {
        path: path.display().to_string(),
    }
}

/// `path` as raw bytes without trailing slashes (`/` becomes empty: the
/// entries of the root are `/name`).
fn base_path(path: Option<&Path>) -> Vec<u8> {
    let mut bytes = path
        .map(|p| p.as_os_str().as_encoded_bytes().to_vec())
        .unwrap_or_default();
    while bytes.last() == Some(&b'/') {
        bytes.pop();
    }
    if !bytes.is_empty() && bytes[0] != b'/' {
        bytes.insert(0, b'/');
    }
    bytes
}

/// `dir/name`.
fn child_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}
