//! From file system metadata to a tree entry: mode, owners (by id and by
//! name), times, device and inode, extended attributes.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{now_ns, Archiver};
use crate::error::Result;
use crate::id::BlobId;
use crate::object::tree::{Node, NodeKind, Timestamp, Tree, Xattr};

/// User and group names by id, looked up once each.
#[derive(Default)]
pub(super) struct NameCache {
    pub(super) users: HashMap<u32, Option<Vec<u8>>>,
    pub(super) groups: HashMap<u32, Option<Vec<u8>>>,
}

impl NameCache {
    pub(super) fn user(&mut self, uid: u32) -> Option<Vec<u8>> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name.into_bytes())
            })
            .clone()
    }

    pub(super) fn group(&mut self, gid: u32) -> Option<Vec<u8>> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name.into_bytes())
            })
            .clone()
    }
}

pub(super) fn timestamp(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs,
        nanos: nanos.clamp(0, 999_999_999) as u32,
    }
}

pub(super) fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok().flatten()?;
            Some(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

impl Archiver<'_, '_> {
    /// The entry of `path`, named `name`, holding `kind`.
    pub(super) fn node(
        &mut self,
        name: &[u8],
        path: &Path,
        meta: &Metadata,
        kind: NodeKind,
    ) -> Node {
        self.node_with_xattrs(name, path, meta, kind, None)
    }

    /// [`Archiver::node`] with the extended attributes, if they were read
    /// already.
    pub(super) fn node_with_xattrs(
        &mut self,
        name: &[u8],
        path: &Path,
        meta: &Metadata,
        kind: NodeKind,
        xattrs: Option<Vec<Xattr>>,
    ) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            user: self.names.user(meta.uid()),
            group: self.names.group(meta.gid()),
            mtime: timestamp(meta.mtime(), meta.mtime_nsec()),
            atime: timestamp(meta.atime(), meta.atime_nsec()),
            ctime: timestamp(meta.ctime(), meta.ctime_nsec()),
            device: meta.dev(),
            inode: meta.ino(),
            links: meta.nlink(),
            xattrs: xattrs.unwrap_or_else(|| read_xattrs(path)),
        }
    }

    /// The node of a stream stored at the root, owned by the user running
    /// the backup, stamped with the current time.
    pub(super) fn stream_node(
        &mut self,
        name: String,
        size: u64,
        content: Vec<BlobId>,
        parent_root: Option<&Tree>,
    ) -> Result<Node> {
        // A safe name: check_stream_names refused any other.
        let name = name.into_bytes();
        match parent_root.and_then(|t| t.find(&name)).map(|n| &n.kind) {
            Some(NodeKind::File { .. }) => self.summary.files_changed += 1,
            _ => self.summary.files_new += 1,
        }
        self.summary.bytes_read += size;
        let now = now_ns();
        let time = Timestamp {
            secs: now.div_euclid(1_000_000_000),
            nanos: now.rem_euclid(1_000_000_000) as u32,
        };
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        Ok(Node {
            name,
            kind: NodeKind::File {
                size,
                content,
                sparse: false,
            },
            mode: 0o644,
            uid,
            gid,
            user: self.names.user(uid),
            group: self.names.group(gid),
            mtime: time,
            atime: time,
            ctime: time,
            device: 0,
            inode: 0,
            links: 1,
            xattrs: Vec::new(),
        })
    }
}
