//! The backup pipeline (SPEC.md §16): walk → read → chunk → hash →
//! compress + seal → pack → index → tree → snapshot.
//!
//! The walk is depth first: a directory's tree blob is stored once all its
//! entries are, so a tree only ever names blobs that exist. A file whose
//! type, size, mtime, ctime and inode equal its entry in the parent snapshot
//! is not read again: its content list is reused.

pub(crate) mod exclude;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::archiver::exclude::{ExcludeOptions, Excluder};
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::object::blob::{BlobType, MAX_BLOB_LEN};
use crate::object::snapshot::{Snapshot, Summary};
use crate::object::tree::{Node, NodeKind, Timestamp, Tree, Xattr};
use crate::progress::Progress;
use crate::repository::{BlobWriter, Repository};

/// What to back up and how to label it.
pub struct BackupOptions {
    /// Source paths; made absolute before use.
    pub paths: Vec<PathBuf>,
    /// Streams stored as files at the snapshot's root, beside the paths.
    pub streams: Vec<StreamSource>,
    /// Host name recorded; the machine's when `None`.
    pub hostname: Option<String>,
    /// Tags recorded.
    pub tags: Vec<String>,
    /// Snapshot time in nanoseconds since the epoch; now when `None`.
    pub time_ns: Option<i64>,
    /// zstd level for this run; the repository's default when `None`.
    pub compression_level: Option<i32>,
    /// The parent snapshot (an id, a prefix or `latest`); when `None`, the
    /// latest snapshot of the same host and paths.
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent.
    pub force: bool,
    /// What to leave out.
    pub excludes: ExcludeOptions,
}

impl BackupOptions {
    /// Options for backing up `paths` with every other setting defaulted.
    pub fn new(paths: Vec<PathBuf>) -> BackupOptions {
        BackupOptions {
            paths,
            streams: Vec::new(),
            hostname: None,
            tags: Vec::new(),
            time_ns: None,
            compression_level: None,
            parent: None,
            force: false,
            excludes: ExcludeOptions::default(),
        }
    }
}

/// A file whose content is a stream rather than a file on disk.
pub enum StreamSource {
    /// Everything a reader yields, such as standard input.
    Reader {
        /// The file's name at the snapshot's root.
        name: String,
        /// Where the content comes from.
        reader: Box<dyn Read + Send>,
    },
    /// The standard output of a command, run without a shell. If it exits
    /// unsuccessfully, no snapshot is saved.
    Command {
        /// The file's name at the snapshot's root.
        name: String,
        /// Program and arguments.
        argv: Vec<OsString>,
        /// Variables taken out of the environment the command inherits:
        /// the caller's own settings, such as a repository password, which
        /// must not reach the command or its children.
        env_remove: Vec<OsString>,
    },
}

impl StreamSource {
    fn name(&self) -> &str {
        match self {
            StreamSource::Reader { name, .. } | StreamSource::Command { name, .. } => name,
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

/// Backs up `options.paths` and `options.streams` into `repository` as
/// one new snapshot.
///
/// Source paths that do not exist and entries that cannot be read are
/// reported through `progress` and listed in the snapshot's `unreadable`;
/// if no source exists at all, nothing is stored and this errors. Streams
/// are read concurrently with the walk; if a command fails, no snapshot is
/// saved and this errors naming it.
pub fn backup(
    repository: &Repository,
    options: BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let hostname = options.hostname.clone().unwrap_or_else(local_hostname);
    let excluder = &Excluder::new(&options.excludes)?;
    let CheckedSources {
        present,
        all: mut snapshot_paths,
        missing: unreadable,
    } = check_sources(&options, progress)?;
    for stream in &options.streams {
        snapshot_paths.push(format!("/{}", stream.name()).into_bytes());
    }
    // Component-wise, as the source paths were sorted (`/a/b` before `/a-b`).
    snapshot_paths
        .sort_by(|a, b| Path::new(OsStr::from_bytes(a)).cmp(Path::new(OsStr::from_bytes(b))));
    let snapshots = readable_snapshots(repository, progress)?;
    let parent = match &options.parent {
        Some(reference) => Some(repository.resolve_snapshot(reference)?),
        None => snapshots
            .into_iter()
            .rev()
            .find(|(_, s)| s.hostname == hostname && s.paths == snapshot_paths),
    };
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
    let mut writer = repository.start_write(level)?;
    warn_all(repository, progress, writer.take_warnings());
    let writer = Mutex::new(writer);
    let mut archiver = Archiver {
        repository,
        writer: &writer,
        progress,
        excluder,
        force: options.force,
        source_device: 0,
        summary: Summary::default(),
        unreadable,
        names: NameCache::default(),
        hardlinks: HashMap::new(),
        chunk_buffer: Vec::new(),
    };
    let layout = SourceLayout::new(&present);
    let root_dir = Path::new("/");
    let parent_root_node = parent.as_ref().map(|(_, s)| root_node(s.tree));
    let (walked, streamed) = std::thread::scope(|scope| {
        let handles: Vec<_> = options
            .streams
            .into_iter()
            .map(|stream| scope.spawn(|| archive_stream(repository, &writer, stream)))
            .collect();
        if progress.wants_totals() {
            scope.spawn(|| scan(&present, excluder, progress));
        }
        let walked = if layout.is_source {
            // `backup /`: the root is archived whole.
            archiver.source_device = fs::symlink_metadata(root_dir).map(|m| m.dev()).unwrap_or(0);
            archiver
                .archive_dir(root_dir, parent_root_node.as_ref())
                .map(RootWalk::Whole)
        } else {
            archiver
                .layout_children(root_dir, &layout, parent_root.as_ref())
                .map(RootWalk::Children)
        };
        let streamed: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        (walked, streamed)
    });
    let mut streamed_nodes = Vec::new();
    for result in streamed {
        streamed_nodes.push(result?);
    }
    let root = match walked? {
        // Streams beside a backup of / were refused by check_stream_names.
        RootWalk::Whole(id) => id,
        RootWalk::Children(mut nodes) => {
            for (name, size, content) in streamed_nodes {
                // check_stream_names made sure no source path takes its name.
                let node = archiver.stream_node(name, size, content, parent_root.as_ref())?;
                nodes.push(node);
            }
            archiver.store_tree(
                root_dir,
                Tree { nodes },
                parent_root_node.as_ref(),
                parent_root.as_ref(),
            )?
        }
    };
    let Archiver {
        mut summary,
        unreadable,
        ..
    } = archiver;
    let mut writer = writer.into_inner().unwrap_or_else(|p| p.into_inner());
    writer.flush()?;
    warn_all(repository, progress, writer.take_warnings());
    summary.bytes_added = writer.bytes_added();
    summary.blobs_added = writer.blobs_added();
    summary.duration_ns = started.elapsed().as_nanos() as u64;
    let snapshot = Snapshot {
        time_ns: options.time_ns.unwrap_or_else(now_ns),
        hostname,
        username: local_username(),
        paths: snapshot_paths,
        tags: options.tags,
        parent: parent.map(|(id, _)| id),
        tree: root,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary,
        unreadable,
    };
    let snapshot_id = writer.commit(&snapshot)?;
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
    })
}

/// The source paths of a run, checked.
struct CheckedSources {
    /// Those that exist.
    present: Vec<PathBuf>,
    /// All of them, as raw bytes, for `Snapshot.paths`.
    all: Vec<Vec<u8>>,
    /// Those that do not exist, as raw bytes, for `Snapshot.unreadable`.
    missing: Vec<Vec<u8>>,
}

/// Normalises the source paths and checks they exist, and checks the
/// stream names.
fn check_sources(options: &BackupOptions, progress: &dyn Progress) -> Result<CheckedSources> {
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
    if paths.is_empty() && options.streams.is_empty() {
        return Err(Error::NothingToBackUp);
    }
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for path in &paths {
        match fs::symlink_metadata(path) {
            Ok(_) => present.push(path.clone()),
            Err(e) if paths.len() == 1 && options.streams.is_empty() => {
                return Err(Error::Source {
                    path: path.clone(),
                    error: e,
                })
            }
            Err(e) => {
                progress.warning(path, &e.to_string());
                missing.push(path.as_os_str().as_bytes().to_vec());
            }
        }
    }
    if present.is_empty() && options.streams.is_empty() {
        return Err(Error::NoSourceExists);
    }
    check_stream_names(options, &paths)?;
    let all = paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    Ok(CheckedSources {
        present,
        all,
        missing,
    })
}

/// Checks stream names before any stream is read: a pipe cannot be read
/// twice, so a name refused after reading would lose its data.
fn check_stream_names(options: &BackupOptions, paths: &[PathBuf]) -> Result<()> {
    let mut taken: HashSet<Vec<u8>> = paths
        .iter()
        .filter_map(|p| {
            p.components().find_map(|c| match c {
                Component::Normal(name) => Some(name.as_bytes().to_vec()),
                _ => None,
            })
        })
        .collect();
    for stream in &options.streams {
        let name = stream.name().as_bytes();
        if !crate::object::tree::is_safe_name(name) {
            return Err(Error::StreamName {
                name: stream.name().to_string(),
                reason: "must be one path component",
            });
        }
        if paths.iter().any(|p| p == Path::new("/")) {
            return Err(Error::StreamsBesideRoot);
        }
        if !taken.insert(name.to_vec()) {
            return Err(Error::StreamName {
                name: stream.name().to_string(),
                reason: "is already taken by another stream or a source path at the root",
            });
        }
    }
    Ok(())
}

/// Reads a stream to its end and stores it. Returns the file's name, size
/// and content; errors if a command cannot be run or exits unsuccessfully.
fn archive_stream(
    repository: &Repository,
    writer: &Mutex<BlobWriter<'_>>,
    stream: StreamSource,
) -> Result<(String, u64, Vec<BlobId>)> {
    match stream {
        StreamSource::Reader { name, reader } => {
            let (size, content) =
                store_stream(repository, writer, reader)?.map_err(|e| Error::Source {
                    path: PathBuf::from(format!("/{name}")),
                    error: e,
                })?;
            Ok((name, size, content))
        }
        StreamSource::Command {
            name,
            argv,
            env_remove,
        } => {
            let shown = argv
                .iter()
                .map(|a| quote(&a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ");
            let failed = |status: String| Error::CommandFailed {
                command: shown.clone(),
                status,
            };
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| failed("empty command".into()))?;
            let mut command = Command::new(program);
            for key in env_remove {
                command.env_remove(key);
            }
            let mut child = command
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| failed(format!("could not start: {e}")))?;
            let stdout = child.stdout.take().expect("stdout is piped");
            let stored = store_stream(repository, writer, stdout);
            if !matches!(stored, Ok(Ok(_))) {
                let _ = child.kill();
            }
            let status = child.wait().map_err(|e| failed(e.to_string()))?;
            let (size, content) =
                stored?.map_err(|e| failed(format!("reading its output: {e}")))?;
            if !status.success() {
                return Err(failed(status.to_string()));
            }
            Ok((name, size, content))
        }
    }
}

/// Chunks and stores everything `reader` yields. The outer error is the
/// repository's; the inner one the reader's.
fn store_stream(
    repository: &Repository,
    writer: &Mutex<BlobWriter<'_>>,
    reader: impl Read,
) -> Result<io::Result<(u64, Vec<BlobId>)>> {
    store_chunks(writer, repository.chunker().stream(reader), |_| {})
}

/// Stores the chunks of one file or stream, handing them to the writer in
/// batches of [`CHUNKS_PER_BATCH`] so that the sealing workers get work in
/// bulk, and calls `read` with the bytes of each batch read (the last one
/// too, if reading fails). Returns the size and the blob ids. The outer
/// error is the repository's (fatal); the inner one the source's.
fn store_chunks(
    writer: &Mutex<BlobWriter<'_>>,
    chunks: impl Iterator<Item = io::Result<Vec<u8>>>,
    mut read: impl FnMut(u64),
) -> Result<io::Result<(u64, Vec<BlobId>)>> {
    let mut size = 0u64;
    let mut content = Vec::new();
    let mut batch = Vec::with_capacity(CHUNKS_PER_BATCH);
    let mut batch_bytes = 0u64;
    for chunk in chunks {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                read(batch_bytes);
                return Ok(Err(e));
            }
        };
        size += chunk.len() as u64;
        batch_bytes += chunk.len() as u64;
        batch.push(chunk);
        if batch.len() == CHUNKS_PER_BATCH {
            content.extend(lock(writer).add_blobs(BlobType::Data, std::mem::take(&mut batch))?);
            read(std::mem::take(&mut batch_bytes));
        }
    }
    content.extend(lock(writer).add_blobs(BlobType::Data, batch)?);
    read(batch_bytes);
    Ok(Ok((size, content)))
}

/// An argument as a shell would need it written, for messages.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn lock<'a, 'r>(writer: &'a Mutex<BlobWriter<'r>>) -> std::sync::MutexGuard<'a, BlobWriter<'r>> {
    writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the walk of the root produced.
enum RootWalk {
    /// The tree of `/`, archived whole.
    Whole(BlobId),
    /// The entries leading to the source paths, to be joined by streams.
    Children(Vec<Node>),
}

/// A stand-in entry for the parent's root, so the root directory is
/// counted against it like any other.
fn root_node(tree: BlobId) -> Node {
    Node {
        links: 0,
        ..Node::new(Vec::new(), NodeKind::Directory { subtree: tree })
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Reports each of `warnings` about the repository through `progress`.
fn warn_all(repository: &Repository, progress: &dyn Progress, warnings: Vec<String>) {
    for warning in warnings {
        progress.warning(Path::new(&repository.location()), &warning);
    }
}

/// The snapshots a backup may take its parent from (the latest of the same
/// host and paths, unless the user names one), oldest first. Damaged ones
/// are passed over with a warning, but one sealed under another key fails
/// the backup, whichever parent is used.
fn readable_snapshots(
    repository: &Repository,
    progress: &dyn Progress,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut list = repository.snapshots()?;
    // A snapshot sealed under another key: this key may not be the one
    // the repository's readers use, so nothing must be written with it.
    if let Some(at) = list
        .damaged
        .iter()
        .position(|e| matches!(e, Error::Unauthenticated { .. }))
    {
        return Err(list.damaged.swap_remove(at));
    }
    for damaged in &list.damaged {
        progress.warning(Path::new(&repository.location()), &damaged.to_string());
    }
    Ok(list.snapshots)
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

struct Archiver<'a, 'r> {
    repository: &'r Repository,
    writer: &'a Mutex<BlobWriter<'r>>,
    progress: &'a dyn Progress,
    excluder: &'a Excluder,
    /// Read every file, even those unchanged since the parent.
    force: bool,
    /// Device of the source path being walked, for `one_file_system`.
    source_device: u64,
    summary: Summary,
    unreadable: Vec<Vec<u8>>,
    names: NameCache,
    /// Content of files with several links, by (device, inode), so a hard
    /// link is read once.
    hardlinks: HashMap<(u64, u64), (u64, Vec<BlobId>)>,
    /// The chunker's buffer, kept from one file to the next.
    chunk_buffer: Vec<u8>,
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

impl Archiver<'_, '_> {
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
    /// changed or unmodified against its parent entry. A tree equal to the
    /// parent's (`parent_tree`, read from `parent`) is not encoded again:
    /// its id is the parent's.
    fn store_tree(
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

    /// The entries of a directory above the source paths: only the
    /// children that lead to a source, each archived.
    fn layout_children(
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
                self.archive_entry(name, &path, &meta, parent)?
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

    /// The node of a stream stored at the root, owned by the user running
    /// the backup, stamped with the current time.
    fn stream_node(
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
            if self.excluder.excludes(&child_path, &meta) {
                continue;
            }
            let child_parent = parent_tree.as_ref().and_then(|t| t.find(name.as_bytes()));
            let node = if self.excluder.stops_at(&meta, self.source_device) {
                // A mount point: recorded, but not descended into.
                let subtree = self.store_tree(&child_path, Tree::default(), child_parent, None)?;
                Some(self.node(
                    name.as_bytes(),
                    &child_path,
                    &meta,
                    NodeKind::Directory { subtree },
                ))
            } else {
                self.archive_entry(name.as_bytes(), &child_path, &meta, child_parent)?
            };
            tree.nodes.extend(node);
        }
        self.store_tree(path, tree, parent, parent_tree.as_ref())
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
            if unchanged && !self.force && lock(self.writer).contains_all(content)? {
                self.summary.files_unmodified += 1;
                self.progress.bytes_processed(*size);
                self.progress.file_finished(path);
                return Ok(Some(NodeKind::File {
                    size: *size,
                    content: content.clone(),
                    sparse,
                }));
            }
        }
        self.progress.file_started(path);
        let link_key = (meta.dev(), meta.ino());
        let known_link = (meta.nlink() > 1)
            .then(|| self.hardlinks.get(&link_key))
            .flatten();
        let (size, content) = match known_link {
            Some((size, content)) => (*size, content.clone()),
            None => match self.read_content(path, meta)? {
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
        self.progress.file_finished(path);
        Ok(Some(NodeKind::File {
            size,
            content,
            sparse,
        }))
    }

    /// Reads, chunks and stores a file. The outer error is the repository's
    /// (fatal); the inner one is the source file's (the file is skipped).
    /// A file whose size or mtime differs after the read from what the walk
    /// saw (`meta`) was written to meanwhile: that is reported, and what
    /// was read is stored.
    fn read_content(
        &mut self,
        path: &Path,
        meta: &Metadata,
    ) -> Result<io::Result<(u64, Vec<BlobId>)>> {
        let file = match open_source(path) {
            Ok(file) => file,
            Err(e) => return Ok(Err(e)),
        };
        let repository = self.repository;
        let buffer = std::mem::take(&mut self.chunk_buffer);
        let mut chunks = repository.chunker().stream_with_buffer(&file, buffer);
        let progress = self.progress;
        let bytes_read = &mut self.summary.bytes_read;
        let stored = store_chunks(self.writer, chunks.by_ref(), |bytes| {
            *bytes_read += bytes;
            progress.bytes_processed(bytes);
        });
        // The buffer comes back even when storing failed, for the next file.
        self.chunk_buffer = chunks.into_buffer();
        let (size, content) = match stored? {
            Ok(stored) => stored,
            Err(e) => return Ok(Err(e)),
        };
        let after = match file.metadata() {
            Ok(after) => after,
            Err(e) => return Ok(Err(e)),
        };
        let unchanged = size == meta.len()
            && after.len() == meta.len()
            && (after.mtime(), after.mtime_nsec()) == (meta.mtime(), meta.mtime_nsec());
        if !unchanged {
            self.progress.warning(
                path,
                &format!(
                    "changed while being read ({} bytes when listed, {} read, {} now); \
                     the snapshot holds what was read",
                    meta.len(),
                    size,
                    after.len()
                ),
            );
        }
        Ok(Ok((size, content)))
    }
}

/// Counts the regular files and bytes below `sources` that a backup will
/// process, applying the same excludes, and reports the totals: they let
/// a progress display estimate the time left. Runs beside the backup.
fn scan(sources: &[PathBuf], excluder: &Excluder, progress: &dyn Progress) {
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut stack: Vec<(PathBuf, u64)> = Vec::new();
    for source in sources {
        if let Ok(meta) = fs::symlink_metadata(source) {
            if meta.is_file() {
                files += 1;
                bytes += meta.len();
            } else if meta.is_dir() {
                stack.push((source.clone(), meta.dev()));
            }
        }
    }
    while let Some((dir, device)) = stack.pop() {
        for name in list_dir(&dir).unwrap_or_default() {
            let path = dir.join(name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if excluder.excludes(&path, &meta) {
                continue;
            }
            if meta.is_file() {
                files += 1;
                bytes += meta.len();
            } else if meta.is_dir() && !excluder.stops_at(&meta, device) {
                stack.push((path, device));
            }
        }
    }
    progress.scan_finished(files, bytes);
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
            // O_NONBLOCK: if a FIFO was swapped in since the walk saw a
            // file, the open must not wait for a writer. Reads of regular
            // files ignore it.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | flags)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::memory_repository;

    #[test]
    fn chunks_are_stored_in_batches_and_ids_come_back_in_order() {
        let (_cache, repo) = memory_repository();
        let writer = Mutex::new(repo.start_write(3).unwrap());
        let chunks: Vec<Vec<u8>> = (0..2 * CHUNKS_PER_BATCH + 3)
            .map(|i| vec![i as u8; 100 + i])
            .collect();
        let mut batches = Vec::new();
        let (size, content) = store_chunks(&writer, chunks.clone().into_iter().map(Ok), |bytes| {
            batches.push(bytes)
        })
        .unwrap()
        .unwrap();
        let lens: Vec<u64> = chunks.iter().map(|c| c.len() as u64).collect();
        assert_eq!(size, lens.iter().sum::<u64>());
        assert_eq!(
            batches,
            [
                lens[..CHUNKS_PER_BATCH].iter().sum::<u64>(),
                lens[CHUNKS_PER_BATCH..2 * CHUNKS_PER_BATCH].iter().sum(),
                lens[2 * CHUNKS_PER_BATCH..].iter().sum(),
            ]
        );
        let expected: Vec<BlobId> = chunks
            .iter()
            .map(|c| repo.blob_id(BlobType::Data, c))
            .collect();
        assert_eq!(content, expected);
        let mut writer = writer.into_inner().unwrap();
        writer.flush().unwrap();
        assert_eq!(writer.blobs_added(), chunks.len() as u64);
        assert_eq!(
            repo.read_blob(&content[5], BlobType::Data).unwrap(),
            chunks[5]
        );
    }

    #[test]
    fn a_read_error_is_the_sources_and_what_was_read_is_counted() {
        let (_cache, repo) = memory_repository();
        let writer = Mutex::new(repo.start_write(3).unwrap());
        let chunks = (0..CHUNKS_PER_BATCH + 2)
            .map(|i| Ok(vec![i as u8; 10]))
            .chain(std::iter::once(Err(io::Error::other("disk fell off"))));
        let mut read = 0;
        let outcome = store_chunks(&writer, chunks, |bytes| read += bytes).unwrap();
        assert_eq!(outcome.unwrap_err().to_string(), "disk fell off");
        assert_eq!(read, 10 * (CHUNKS_PER_BATCH as u64 + 2));
    }

    #[test]
    fn a_stream_is_chunked_and_stored() {
        let (_cache, repo) = memory_repository();
        let writer = Mutex::new(repo.start_write(3).unwrap());
        let data = crate::testing::pseudo_random(3 << 20, 7);
        let (size, content) = store_stream(&repo, &writer, &data[..]).unwrap().unwrap();
        assert_eq!(size, data.len() as u64);
        writer.into_inner().unwrap().flush().unwrap();
        let restored: Vec<u8> = content
            .iter()
            .flat_map(|id| repo.read_blob(id, BlobType::Data).unwrap())
            .collect();
        assert_eq!(restored, data);
    }
}
