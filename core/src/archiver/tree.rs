//! Building a directory's tree blob, and comparing it with the parent
//! snapshot's: an equal tree is not stored again, and each directory is
//! counted as new, changed or unmodified.

use std::path::Path;

use super::store::lock;
use super::Archiver;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::object::blob::{BlobType, MAX_BLOB_LEN};
use crate::object::tree::{Node, NodeKind, Tree};

impl Archiver<'_, '_> {
    /// Stores a tree and returns its id, counting the directory as new,
    /// changed or unmodified against its parent entry. A tree equal to the
    /// parent's (`parent_tree`, read from `parent`) is not encoded again:
    /// its id is the parent's.
    pub(super) fn store_tree(
        &mut self,
        dir: &Path,
        mut tree: Tree,
        parent: Option<&Node>,
        parent_tree: Option<&Tree>,
    ) -> Result<BlobId> {
        tree.sort();
        if let (Some(NodeKind::Directory { subtree }), Some(previous)) =
            (parent.map(|p| &p.kind), parent_tree)
        {
            if previous.nodes == tree.nodes {
                self.summary.dirs_unmodified += 1;
                return Ok(*subtree);
            }
        }
        let encoded = tree.encode();
        if encoded.len() > MAX_BLOB_LEN as usize {
            return Err(Error::DirectoryTooLarge {
                path: dir.to_path_buf(),
                len_bytes: encoded.len(),
                limit_bytes: MAX_BLOB_LEN,
            });
        }
        let id = lock(self.writer).add_blob(BlobType::Tree, encoded)?;
        match parent.map(|p| &p.kind) {
            Some(NodeKind::Directory { subtree }) if *subtree == id => {
                self.summary.dirs_unmodified += 1
            }
            Some(NodeKind::Directory { .. }) => self.summary.dirs_changed += 1,
            _ => self.summary.dirs_new += 1,
        }
        Ok(id)
    }

    /// The parent's tree for a directory; `None` if there is none or it
    /// cannot be read (then the directory is read in full).
    pub(super) fn parent_subtree(&self, dir: &Path, parent: Option<&Node>) -> Option<Tree> {
        match parent.map(|p| &p.kind) {
            Some(NodeKind::Directory { subtree }) => match self.repository.read_tree(subtree) {
                Ok(tree) => Some(tree),
                Err(e) => {
                    self.progress
                        .warning(dir, &format!("parent tree not used: {e}"));
                    None
                }
            },
            _ => None,
        }
    }
}
