//! The walk: depth first over the sources, directory by directory, in
//! name order. A directory's tree is stored once all its entries are, so a
//! tree only ever names blobs that exist.

use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::exclude::Excluder;
use super::read_ahead::{group_end, Examined, Examiner, ReadAhead};
use super::sources::SourceLayout;
use super::Archiver;
use crate::error::Result;
use crate::id::BlobId;
use crate::object::tree::{Node, NodeKind, Tree, Xattr};
use crate::pattern::MatchState;
use crate::progress::Progress;

impl Archiver<'_, '_> {
    pub(super) fn mark_unreadable(&mut self, path: &Path, error: &io::Error) {
        self.progress.warning(path, &error.to_string());
        self.unreadable.push(path.as_os_str().as_bytes().to_vec());
    }

    /// The entries of a directory above the source paths: only the
    /// children that lead to a source, each archived.
    pub(super) fn layout_children(
        &mut self,
        dir: &Path,
        layout: &SourceLayout,
        parent_tree: Option<&Tree>,
    ) -> Result<Vec<Node>> {
        let mut nodes = Vec::new();
        for (name, child) in &layout.children {
            let path = dir.join(OsStr::from_bytes(name));
            let parent = parent_tree.and_then(|t| t.find(name));
            // A source itself is recorded as it is (a symlink stays one); a
            // directory above it is what the path goes through, so a symlink
            // there is followed and the real directory's metadata recorded.
            let meta = if child.is_source {
                fs::symlink_metadata(&path)
            } else {
                fs::metadata(&path)
            };
            let meta = match meta {
                Ok(meta) => meta,
                Err(e) => {
                    self.mark_unreadable(&path, &e);
                    continue;
                }
            };
            let node = if child.is_source {
                self.source_device = meta.dev();
                let state = self.excluder.state_of(&path);
                self.archive_entry(name, &path, &meta, parent, &state, Ahead::default())?
            } else {
                let parent_subtree = self.parent_subtree(&path, parent);
                let children = self.layout_children(&path, child, parent_subtree.as_ref())?;
                let subtree = self.store_tree(
                    &path,
                    Tree { nodes: children },
                    parent,
                    parent_subtree.as_ref(),
                )?;
                Some(self.node(name, &path, &meta, NodeKind::Directory { subtree }))
            };
            nodes.extend(node);
        }
        Ok(nodes)
    }

    /// Archives one entry of any type; `None` for what is skipped (sockets).
    /// `ahead` holds what was read of it ahead of the walk.
    pub(super) fn archive_entry(
        &mut self,
        name: &[u8],
        path: &Path,
        meta: &Metadata,
        parent: Option<&Node>,
        state: &MatchState,
        ahead: Ahead,
    ) -> Result<Option<Node>> {
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            let subtree = self.archive_dir(path, parent, state)?;
            NodeKind::Directory { subtree }
        } else if file_type.is_file() {
            match self.archive_file(path, meta, parent, ahead.content)? {
                Some(kind) => kind,
                None => return Ok(None),
            }
        } else if file_type.is_symlink() {
            // Reading a link updates its access time, which no flag avoids:
            // record the metadata as the read left it, so the next backup
            // sees the same and the directory's tree is unchanged.
            let read = fs::read_link(path).and_then(|t| Ok((t, fs::symlink_metadata(path)?)));
            match read {
                Ok((target, after)) if after.file_type().is_symlink() => {
                    let kind = NodeKind::Symlink {
                        target: target.into_os_string().into_vec(),
                    };
                    return Ok(Some(self.node(name, path, &after, kind)));
                }
                Ok(_) => {
                    let e = io::Error::other("changed from a symlink during backup");
                    self.mark_unreadable(path, &e);
                    return Ok(None);
                }
                Err(e) => {
                    self.mark_unreadable(path, &e);
                    return Ok(None);
                }
            }
        } else if file_type.is_fifo() {
            NodeKind::Fifo
        } else if file_type.is_char_device() {
            NodeKind::CharDevice { rdev: meta.rdev() }
        } else if file_type.is_block_device() {
            NodeKind::BlockDevice { rdev: meta.rdev() }
        } else {
            self.progress.warning(path, "socket skipped");
            return Ok(None);
        };
        Ok(Some(self.node_with_xattrs(
            name,
            path,
            meta,
            kind,
            ahead.xattrs,
        )))
    }

    /// Archives a directory whose exclude state is `state`, and returns
    /// its tree's id. Its names are examined in groups, and its small
    /// files read in waves, ahead of the walk (see [`super::read_ahead`]).
    pub(super) fn archive_dir(
        &mut self,
        path: &Path,
        parent: Option<&Node>,
        state: &MatchState,
    ) -> Result<BlobId> {
        let parent_tree = self.parent_subtree(path, parent);
        let mut tree = Tree::default();
        let mut names = match list_dir(path) {
            Ok(names) => names,
            Err(e) => {
                self.mark_unreadable(path, &e);
                Vec::new()
            }
        };
        let examiner = Examiner {
            repository: self.repository,
            excluder: self.excluder,
            parent_tree: parent_tree.as_ref(),
            force: self.force,
        };
        while !names.is_empty() {
            let rest = names.split_off(group_end(&names));
            let entries = examiner.examine(path, state, std::mem::replace(&mut names, rest));
            let mut start = 0;
            while start < entries.len() {
                let (end, content) = examiner.read_wave(&entries, start);
                for (entry, content) in entries[start..end].iter().zip(content) {
                    let node = self.archive_examined(entry, parent_tree.as_ref(), content)?;
                    tree.nodes.extend(node);
                }
                start = end;
            }
        }
        self.store_tree(path, tree, parent, parent_tree.as_ref())
    }

    /// Archives one examined entry of a directory whose parent tree is
    /// `parent_tree`, with its content if it was read ahead.
    fn archive_examined(
        &mut self,
        entry: &Examined,
        parent_tree: Option<&Tree>,
        content: Option<io::Result<ReadAhead>>,
    ) -> Result<Option<Node>> {
        let meta = match &entry.meta {
            Ok(meta) => meta,
            Err(e) => {
                self.mark_unreadable(&entry.path, e);
                return Ok(None);
            }
        };
        if entry.excluded {
            return Ok(None);
        }
        let name = entry.name.as_bytes();
        let child_parent = parent_tree.and_then(|t| t.find(name));
        if self.excluder.stops_at(meta, self.source_device) {
            // A mount point: recorded, but not descended into.
            let subtree = self.store_tree(&entry.path, Tree::default(), child_parent, None)?;
            let kind = NodeKind::Directory { subtree };
            return Ok(Some(self.node(name, &entry.path, meta, kind)));
        }
        let ahead = Ahead {
            xattrs: entry.xattrs.clone(),
            content,
        };
        self.archive_entry(name, &entry.path, meta, child_parent, &entry.state, ahead)
    }
}

/// What was read of an entry ahead of the walk.
#[derive(Default)]
pub(super) struct Ahead {
    /// Its extended attributes.
    xattrs: Option<Vec<Xattr>>,
    /// Its content, for a small regular file.
    content: Option<io::Result<ReadAhead>>,
}

/// Counts the regular files and bytes below `sources` that a backup will
/// process, applying the same excludes, and reports the totals: they let
/// a progress display estimate the time left. Runs beside the backup.
pub(super) fn scan(sources: &[PathBuf], excluder: &Excluder, progress: &dyn Progress) {
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut stack: Vec<(PathBuf, u64, MatchState)> = Vec::new();
    for source in sources {
        if let Ok(meta) = fs::symlink_metadata(source) {
            if meta.is_file() {
                files += 1;
                bytes += meta.len();
            } else if meta.is_dir() {
                stack.push((source.clone(), meta.dev(), excluder.state_of(source)));
            }
        }
    }
    while let Some((dir, device, state)) = stack.pop() {
        for Listed { name, .. } in list_dir(&dir).unwrap_or_default() {
            let child_state = excluder.child(&state, name.as_bytes());
            let path = dir.join(name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if excluder.excludes(&child_state, &path, &meta) {
                continue;
            }
            if meta.is_file() {
                files += 1;
                bytes += meta.len();
            } else if meta.is_dir() && !excluder.stops_at(&meta, device) {
                stack.push((path, device, child_state));
            }
        }
    }
    progress.scan_finished(files, bytes);
}

/// A name in a directory, as listed.
pub(super) struct Listed {
    pub(super) name: OsString,
    /// Whether the listing says it is a directory, or does not say.
    pub(super) may_be_dir: bool,
}

/// The names in a directory, sorted by bytes. The directory is opened with
/// `O_NOATIME` where allowed, so a backup does not change the access time it
/// records, which would make the next backup's tree differ.
pub(super) fn list_dir(path: &Path) -> io::Result<Vec<Listed>> {
    use nix::fcntl::OFlag;
    let open = |extra: OFlag| {
        nix::dir::Dir::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra,
            nix::sys::stat::Mode::empty(),
        )
    };
    let mut dir = match open(OFlag::O_NOATIME) {
        Err(nix::errno::Errno::EPERM) => open(OFlag::empty()),
        other => other,
    }
    .map_err(io::Error::from)?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(Listed {
                name: OsString::from_vec(name.to_vec()),
                may_be_dir: matches!(entry.file_type(), Some(nix::dir::Type::Directory) | None),
            });
        }
    }
    names.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(names)
}
