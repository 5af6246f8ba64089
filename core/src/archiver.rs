//! The backup pipeline (SPEC.md §16): walk → read → chunk → hash →
//! compress + seal → pack → index → tree → snapshot.
//!
//! The walk is depth first: a directory's tree blob is stored once all its
//! entries are, so a tree only ever names blobs that exist. A file whose
//! type, size, mtime, ctime and inode equal its entry in the parent snapshot
//! is not read again: its content list is reused.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::blob::{BlobType, MAX_BLOB_LEN};
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::progress::Progress;
use crate::repository::{BlobWriter, Repository};
use crate::snapshot::{Snapshot, Summary};
use crate::tree::{Node, NodeKind, Timestamp, Tree, Xattr};

/// What to back up and how to label it.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Source paths; made absolute before use.
    pub paths: Vec<PathBuf>,
    /// Host name recorded; the machine's when `None`.
    pub hostname: Option<String>,
    /// Tags recorded.
    pub tags: Vec<String>,
    /// Snapshot time in nanoseconds since the epoch; now when `None`.
    pub time_ns: Option<i64>,
    /// zstd level for this run; the repository's default when `None`.
    pub compression_level: Option<i32>,
}

impl BackupOptions {
    /// Options for backing up `paths` with every other setting defaulted.
    pub fn new(paths: Vec<PathBuf>) -> BackupOptions {
        BackupOptions {
            paths,
            hostname: None,
            tags: Vec::new(),
            time_ns: None,
            compression_level: None,
        }
    }
}

/// What a finished backup produced.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub snapshot_id: SnapshotId,
    /// The new snapshot.
    pub snapshot: Snapshot,
}

/// The machine's host name.
pub fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|| "localhost".into())
}

/// The name of the user running this process.
pub fn local_username() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Makes `path` absolute and removes `.` and `..` lexically, without
/// following symlinks, so that a symlink given as a source is kept as one.
pub fn normalize_path(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut out = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Backs up `options.paths` into `repository` as one new snapshot.
///
/// Source paths that do not exist and entries that cannot be read are
/// reported through `progress` and listed in the snapshot's `unreadable`;
/// if no source path exists at all, nothing is stored and this errors.
pub fn backup(
    repository: &Repository,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let hostname = options.hostname.clone().unwrap_or_else(local_hostname);
    let mut paths = Vec::new();
    for path in &options.paths {
        let normalized = normalize_path(path).map_err(|e| Error::Source {
            path: path.clone(),
            error: e,
        })?;
        paths.push(normalized);
    }
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        return Err(Error::InvalidArgument("no source paths given".into()));
    }
    let mut unreadable = Vec::new();
    let mut present = Vec::new();
    for path in &paths {
        match fs::symlink_metadata(path) {
            Ok(_) => present.push(path.clone()),
            Err(e) => {
                if paths.len() == 1 {
                    return Err(Error::Source {
                        path: path.clone(),
                        error: e,
                    });
                }
                progress.warning(path, &e.to_string());
                unreadable.push(path.as_os_str().as_bytes().to_vec());
            }
        }
    }
    if present.is_empty() {
        return Err(Error::InvalidArgument(
            "none of the source paths exist".into(),
        ));
    }
    let path_bytes: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    let parent = find_parent(repository, &hostname, &path_bytes, progress)?;
    let parent_root = parent.as_ref().and_then(|(id, snapshot)| {
        // The parent only saves work: if it cannot be read, read everything.
        repository
            .read_tree(&snapshot.tree)
            .map_err(|e| {
                progress.warning(
                    Path::new(&format!("snapshot {id}")),
                    &format!("parent not used: {e}"),
                )
            })
            .ok()
    });

    let level = options
        .compression_level
        .unwrap_or(repository.config().compression_level);
    let mut archiver = Archiver {
        repository,
        writer: repository.start_write(level)?,
        progress,
        summary: Summary::default(),
        unreadable,
        names: NameCache::default(),
        hardlinks: HashMap::new(),
    };
    let layout = SourceLayout::new(&present);
    let parent_root_node = parent.as_ref().map(|(_, s)| root_node(s.tree));
    let root = archiver.archive_layout(
        Path::new("/"),
        &layout,
        parent_root.as_ref(),
        parent_root_node.as_ref(),
    )?;
    archiver.summary.bytes_added = archiver.writer.bytes_added();
    archiver.summary.blobs_added = archiver.writer.blobs_added();
    archiver.summary.duration_ns = started.elapsed().as_nanos() as u64;
    let snapshot = Snapshot {
        time_ns: options.time_ns.unwrap_or_else(now_ns),
        hostname,
        username: local_username(),
        paths: path_bytes,
        tags: options.tags.clone(),
        parent: parent.map(|(id, _)| id),
        tree: root,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: archiver.summary,
        unreadable: archiver.unreadable,
    };
    let snapshot_id = archiver.writer.commit(&snapshot)?;
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
    })
}

/// A stand-in entry for the parent's root, so the root directory is
/// counted against it like any other.
fn root_node(tree: BlobId) -> Node {
    Node {
        name: Vec::new(),
        kind: NodeKind::Directory { subtree: tree },
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
        links: 0,
        xattrs: Vec::new(),
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The latest snapshot from `hostname` of exactly `paths`.
fn find_parent(
    repository: &Repository,
    hostname: &str,
    paths: &[Vec<u8>],
    progress: &dyn Progress,
) -> Result<Option<(SnapshotId, Snapshot)>> {
    let list = repository.snapshots()?;
    for damaged in &list.damaged {
        progress.warning(Path::new(&repository.location()), &damaged.to_string());
    }
    Ok(list
        .snapshots
        .into_iter()
        .rev()
        .find(|(_, s)| s.hostname == hostname && s.paths == paths))
}

/// The source paths arranged as a tree of path components, so that the
/// directories above them can be recorded with only the chosen children.
#[derive(Default)]
struct SourceLayout {
    /// True when this component is itself a source path: archive it whole.
    is_source: bool,
    children: BTreeMap<Vec<u8>, SourceLayout>,
}

impl SourceLayout {
    fn new(paths: &[PathBuf]) -> SourceLayout {
        let mut root = SourceLayout::default();
        for path in paths {
            let mut node = &mut root;
            for component in path.components() {
                if let Component::Normal(name) = component {
                    node = node.children.entry(name.as_bytes().to_vec()).or_default();
                }
            }
            node.is_source = true;
        }
        root
    }
}

/// User and group names by id, looked up once each.
#[derive(Default)]
struct NameCache {
    users: HashMap<u32, Option<Vec<u8>>>,
    groups: HashMap<u32, Option<Vec<u8>>>,
}

impl NameCache {
    fn user(&mut self, uid: u32) -> Option<Vec<u8>> {
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

    fn group(&mut self, gid: u32) -> Option<Vec<u8>> {
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

/// Chunks of one file handed to the writer at once: enough to keep every
/// core compressing, few enough to bound memory.
const CHUNKS_PER_BATCH: usize = 8;

struct Archiver<'r> {
    repository: &'r Repository,
    writer: BlobWriter<'r>,
    progress: &'r dyn Progress,
    summary: Summary,
    unreadable: Vec<Vec<u8>>,
    names: NameCache,
    /// Content of files with several links, by (device, inode), so a hard
    /// link is read once.
    hardlinks: HashMap<(u64, u64), (u64, Vec<BlobId>)>,
}

fn timestamp(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs,
        nanos: nanos.clamp(0, 999_999_999) as u32,
    }
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
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

impl Archiver<'_> {
    fn mark_unreadable(&mut self, path: &Path, error: &io::Error) {
        self.progress.warning(path, &error.to_string());
        self.unreadable.push(path.as_os_str().as_bytes().to_vec());
    }

    fn node(&mut self, name: &[u8], path: &Path, meta: &Metadata, kind: NodeKind) -> Node {
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
            xattrs: read_xattrs(path),
        }
    }

    /// Stores a tree and returns its id, counting the directory as new,
    /// changed or unmodified against its parent entry.
    fn store_tree(&mut self, dir: &Path, mut tree: Tree, parent: Option<&Node>) -> Result<BlobId> {
        tree.sort();
        let encoded = tree.encode();
        if encoded.len() > MAX_BLOB_LEN as usize {
            return Err(Error::InvalidArgument(format!(
                "{}: directory has too many entries: its tree of {} bytes exceeds the limit of {MAX_BLOB_LEN}",
                dir.display(),
                encoded.len()
            )));
        }
        let id = self.writer.add_blob(BlobType::Tree, encoded)?;
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
    fn parent_subtree(&self, dir: &Path, parent: Option<&Node>) -> Option<Tree> {
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

    /// Archives the directories above the source paths, holding only the
    /// children that lead to a source, and returns the root tree's id.
    fn archive_layout(
        &mut self,
        dir: &Path,
        layout: &SourceLayout,
        parent_tree: Option<&Tree>,
        parent: Option<&Node>,
    ) -> Result<BlobId> {
        if layout.is_source {
            // Only the root itself can be both a source and have children
            // here (`backup /`): everything below it is archived whole.
            return self.archive_dir(dir, parent);
        }
        let mut tree = Tree::default();
        for (name, child) in &layout.children {
            let path = dir.join(OsStr::from_bytes(name));
            let parent = parent_tree.and_then(|t| t.find(name));
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    self.mark_unreadable(&path, &e);
                    continue;
                }
            };
            let node = if child.is_source {
                self.archive_entry(name, &path, &meta, parent)?
            } else {
                let parent_subtree = self.parent_subtree(&path, parent);
                let subtree = self.archive_layout(&path, child, parent_subtree.as_ref(), parent)?;
                Some(self.node(name, &path, &meta, NodeKind::Directory { subtree }))
            };
            tree.nodes.extend(node);
        }
        self.store_tree(dir, tree, parent)
    }

    /// Archives one entry of any type; `None` for what is skipped (sockets).
    fn archive_entry(
        &mut self,
        name: &[u8],
        path: &Path,
        meta: &Metadata,
        parent: Option<&Node>,
    ) -> Result<Option<Node>> {
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            let subtree = self.archive_dir(path, parent)?;
            NodeKind::Directory { subtree }
        } else if file_type.is_file() {
            match self.archive_file(path, meta, parent)? {
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
        Ok(Some(self.node(name, path, meta, kind)))
    }

    fn archive_dir(&mut self, path: &Path, parent: Option<&Node>) -> Result<BlobId> {
        let parent_tree = self.parent_subtree(path, parent);
        let mut tree = Tree::default();
        let entries = match list_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                self.mark_unreadable(path, &e);
                Vec::new()
            }
        };
        for name in entries {
            let child_path = path.join(&name);
            let meta = match fs::symlink_metadata(&child_path) {
                Ok(meta) => meta,
                Err(e) => {
                    self.mark_unreadable(&child_path, &e);
                    continue;
                }
            };
            let child_parent = parent_tree.as_ref().and_then(|t| t.find(name.as_bytes()));
            if let Some(node) =
                self.archive_entry(name.as_bytes(), &child_path, &meta, child_parent)?
            {
                tree.nodes.push(node);
            }
        }
        self.store_tree(path, tree, parent)
    }

    /// Archives a regular file's content, reusing the parent's when the file
    /// is unchanged. `None` when it could not be read.
    fn archive_file(
        &mut self,
        path: &Path,
        meta: &Metadata,
        parent: Option<&Node>,
    ) -> Result<Option<NodeKind>> {
        let sparse = meta.blocks().saturating_mul(512) < meta.len();
        if let Some(Node {
            kind: NodeKind::File { size, content, .. },
            mtime,
            ctime,
            inode,
            ..
        }) = parent
        {
            let unchanged = *size == meta.len()
                && *mtime == timestamp(meta.mtime(), meta.mtime_nsec())
                && *ctime == timestamp(meta.ctime(), meta.ctime_nsec())
                && *inode == meta.ino();
            // Reuse the parent's content only if it is all still indexed: a
            // snapshot must never name a blob the repository cannot find.
            if unchanged && self.writer.contains_all(content)? {
                self.summary.files_unmodified += 1;
                return Ok(Some(NodeKind::File {
                    size: *size,
                    content: content.clone(),
                    sparse,
                }));
            }
        }
        let link_key = (meta.dev(), meta.ino());
        let known_link = (meta.nlink() > 1)
            .then(|| self.hardlinks.get(&link_key))
            .flatten();
        let (size, content) = match known_link {
            Some((size, content)) => (*size, content.clone()),
            None => match self.read_content(path)? {
                Ok(read) => read,
                Err(e) => {
                    self.mark_unreadable(path, &e);
                    return Ok(None);
                }
            },
        };
        if meta.nlink() > 1 {
            self.hardlinks.insert(link_key, (size, content.clone()));
        }
        if matches!(parent.map(|p| &p.kind), Some(NodeKind::File { .. })) {
            self.summary.files_changed += 1;
        } else {
            self.summary.files_new += 1;
        }
        Ok(Some(NodeKind::File {
            size,
            content,
            sparse,
        }))
    }

    /// Reads, chunks and stores a file. The outer error is the repository's
    /// (fatal); the inner one is the source file's (the file is skipped).
    fn read_content(&mut self, path: &Path) -> Result<io::Result<(u64, Vec<BlobId>)>> {
        let file = match open_source(path) {
            Ok(file) => file,
            Err(e) => return Ok(Err(e)),
        };
        let mut size = 0u64;
        let mut content = Vec::new();
        let mut batch = Vec::with_capacity(CHUNKS_PER_BATCH);
        let repository = self.repository;
        let chunker = repository.chunker();
        for chunk in chunker.stream(file) {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return Ok(Err(e)),
            };
            size += chunk.len() as u64;
            self.summary.bytes_read += chunk.len() as u64;
            batch.push(chunk);
            if batch.len() == CHUNKS_PER_BATCH {
                content.extend(self.writer.add_blobs(BlobType::Data, &batch)?);
                batch.clear();
            }
        }
        content.extend(self.writer.add_blobs(BlobType::Data, &batch)?);
        Ok(Ok((size, content)))
    }
}

/// The names in a directory, sorted by bytes. The directory is opened with
/// `O_NOATIME` where allowed, so a backup does not change the access time it
/// records, which would make the next backup's tree differ.
fn list_dir(path: &Path) -> io::Result<Vec<std::ffi::OsString>> {
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
        let name = entry
            .map_err(io::Error::from)?
            .file_name()
            .to_bytes()
            .to_vec();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsString::from_vec(name));
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Opens a source file without following a symlink swapped in since the
/// walk saw it, and without touching its access time where allowed.
fn open_source(path: &Path) -> io::Result<File> {
    let open = |flags: i32| {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | flags)
            .open(path)
    };
    let file = match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0)?,
        other => other?,
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(
            "changed from a regular file during backup",
        ));
    }
    Ok(file)
}
