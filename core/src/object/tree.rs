//! Trees: one blob per directory, listing its entries and their metadata
//! (SPEC.md §13).
//!
//! Entries are sorted by name bytes and names are unique, so the same
//! directory always encodes to the same bytes and so the same blob id.
//! Decoding refuses names that could escape a restore target.

use crate::codec;
use crate::id::BlobId;

/// A point in time: seconds and nanoseconds since the Unix epoch. Seconds
/// may be negative (before 1970) and go far past 2038.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    bincode::Encode,
    bincode::Decode,
)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds within the second, below 10^9.
    pub nanos: u32,
}

/// An extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Xattr {
    /// Full name, namespace included (`user.comment`).
    pub name: Vec<u8>,
    /// Binary value.
    pub value: Vec<u8>,
}

/// What kind of entry a node is, with what that kind alone carries.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum NodeKind {
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// Data blobs, in order; concatenated they are the content.
        content: Vec<BlobId>,
        /// Whether the file had holes (fewer blocks than its length needs);
        /// restore then leaves zero runs as holes.
        sparse: bool,
    },
    /// A directory; its entries are in the tree blob `subtree`.
    Directory {
        /// The directory's tree blob.
        subtree: BlobId,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, as raw bytes.
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Node {
    /// The entry's name: raw bytes, never containing `/` or NUL.
    pub name: Vec<u8>,
    /// Kind and kind-specific data.
    pub kind: NodeKind,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Owner's name when it could be looked up.
    pub user: Option<Vec<u8>>,
    /// Group's name when it could be looked up.
    pub group: Option<Vec<u8>>,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// Status change time (not restorable; used to detect changes).
    pub ctime: Timestamp,
    /// Device of the source file system.
    pub device: u64,
    /// Inode number on that device.
    pub inode: u64,
    /// Hard link count.
    pub links: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// A node of `kind` called `name` with no metadata to speak of: mode 0,
    /// owned by 0:0, all times at the epoch, one link, no xattrs. For nodes
    /// made rather than read from a file system (the root above the source
    /// paths, crafted trees in tests); set the fields that matter on top.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: Timestamp::default(),
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            device: 0,
            inode: 0,
            links: 1,
            xattrs: Vec::new(),
        }
    }

    /// Whether this file shares its inode with other names (a hard link).
    pub fn is_hardlinked(&self) -> bool {
        matches!(self.kind, NodeKind::File { .. }) && self.links > 1
    }
}

/// An entry a tree holds but restore leaves out: its name, and why.
pub type RefusedEntry = (Vec<u8>, codec::DecodeError);

/// A directory's entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Tree {
    /// Entries sorted by name, names unique.
    pub nodes: Vec<Node>,
}

/// Whether `name` is safe as one path component: not empty, not `.` or
/// `..`, no `/` or NUL, at most 255 bytes.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b == 0)
}

impl Tree {
    /// Sorts entries by name so equal directories encode equally.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The plaintext of the tree blob. The tree must be sorted.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a tree blob, refusing unsafe, unsorted or duplicate names and
    /// out-of-range times.
    pub fn decode(bytes: &[u8]) -> Result<Tree, codec::DecodeError> {
        let (tree, mut refused) = Tree::decode_lenient(bytes)?;
        match refused.is_empty() {
            true => Ok(tree),
            false => Err(refused.swap_remove(0).1),
        }
    }

    /// Decodes a tree blob, leaving out each entry [`Tree::decode`] would
    /// refuse the whole tree for (an unsafe name, a name not after the
    /// entry before it, an out-of-range time), and returning those with
    /// why. Restore uses it: a hostile entry is refused, the others are
    /// still restored. A blob that does not decode at all is an error.
    pub fn decode_lenient(bytes: &[u8]) -> Result<(Tree, Vec<RefusedEntry>), codec::DecodeError> {
        let decoded: Tree = codec::decode(bytes)?;
        let mut nodes: Vec<Node> = Vec::with_capacity(decoded.nodes.len());
        let mut refused = Vec::new();
        for node in decoded.nodes {
            let why = if !is_safe_name(&node.name) {
                Some(codec::DecodeError::UnsafeName(
                    String::from_utf8_lossy(&node.name).into_owned(),
                ))
            } else if nodes.last().is_some_and(|last| last.name >= node.name) {
                Some(codec::DecodeError::UnsortedEntries)
            } else if [node.mtime, node.atime, node.ctime]
                .iter()
                .any(|t| t.nanos >= 1_000_000_000)
            {
                Some(codec::DecodeError::TimestampOutOfRange)
            } else {
                None
            };
            match why {
                Some(why) => refused.push((node.name, why)),
                None => nodes.push(node),
            }
        }
        Ok((Tree { nodes }, refused))
    }

    /// The entry called `name`.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    pub(crate) fn node(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::Fifo,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            user: Some(b"alice".to_vec()),
            group: None,
            mtime: Timestamp { secs: -5, nanos: 7 },
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            device: 1,
            inode: 2,
            links: 1,
            xattrs: vec![],
        }
    }

    #[test]
    fn round_trip_sorted() {
        let mut tree = Tree {
            nodes: vec![node(b"b"), node(b"a\nnewline"), node(&[0xff, 0xfe])],
        };
        tree.nodes[0].kind = NodeKind::File {
            size: 3,
            content: vec![BlobId(Id([1; 32]))],
            sparse: false,
        };
        tree.sort();
        let back = Tree::decode(&tree.encode()).unwrap();
        assert_eq!(back, tree);
        assert!(back.find(b"b").is_some());
        assert!(back.find(b"c").is_none());
    }

    #[test]
    fn refuses_escaping_and_duplicate_names() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"nul\0"] {
            let tree = Tree {
                nodes: vec![node(bad)],
            };
            assert!(Tree::decode(&tree.encode()).is_err(), "{bad:?}");
        }
        let dup = Tree {
            nodes: vec![node(b"x"), node(b"x")],
        };
        assert!(Tree::decode(&dup.encode()).is_err());
        let unsorted = Tree {
            nodes: vec![node(b"y"), node(b"x")],
        };
        assert!(Tree::decode(&unsorted.encode()).is_err());
        assert!(is_safe_name(&[b'a'; 255]));
        assert!(!is_safe_name(&[b'a'; 256]));
    }
}
