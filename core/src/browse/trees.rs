//! Trees read more than once in one command (the same directory in many
//! snapshots, both sides of a diff) are kept decoded, within a bound on
//! memory: the least recently used go first.

use std::sync::Arc;

use lru::LruCache;

use crate::error::Result;
use crate::id::BlobId;
use crate::object::tree::{Node, NodeKind, Tree};
use crate::repository::Repository;

/// Memory the decoded trees of one command may take, by estimate.
pub const TREE_CACHE_BYTES: usize = 64 << 20;

/// A repository's trees, read through a bounded cache.
pub struct Trees<'r> {
    repository: &'r Repository,
    cache: LruCache<BlobId, (Arc<Tree>, usize)>,
    bytes: usize,
    bound: usize,
}

impl<'r> Trees<'r> {
    /// Trees of `repository`, keeping at most about `bound` bytes decoded.
    pub fn new(repository: &'r Repository, bound: usize) -> Trees<'r> {
        Trees {
            repository,
            cache: LruCache::unbounded(),
            bytes: 0,
            bound,
        }
    }

    /// The repository read from.
    pub fn repository(&self) -> &'r Repository {
        self.repository
    }

    /// The tree `id`, from the cache or read and decoded.
    pub fn get(&mut self, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some((tree, _)) = self.cache.get(id) {
            return Ok(Arc::clone(tree));
        }
        let tree = Arc::new(self.repository.read_tree(id)?);
        let size = estimated_size(&tree);
        if size <= self.bound {
            self.bytes += size;
            self.cache.put(*id, (Arc::clone(&tree), size));
            while self.bytes > self.bound {
                match self.cache.pop_lru() {
                    Some((_, (_, evicted))) => self.bytes -= evicted,
                    None => break,
                }
            }
        }
        Ok(tree)
    }
}

impl std::fmt::Debug for Trees<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trees")
            .field("cached", &self.cache.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Roughly the memory a decoded tree takes.
fn estimated_size(tree: &Tree) -> usize {
    const NODE: usize = std::mem::size_of::<Node>();
    tree.nodes
        .iter()
        .map(|node| {
            let kind = match &node.kind {
                NodeKind::File { content, .. } => content.len() * std::mem::size_of::<BlobId>(),
                NodeKind::Symlink { target } => target.len(),
                _ => 0,
            };
            let xattrs: usize = node
                .xattrs
                .iter()
                .map(|x| x.name.len() + x.value.len() + 48)
                .sum();
            NODE + node.name.len() + kind + xattrs
        })
        .sum::<usize>()
        + 64
}
