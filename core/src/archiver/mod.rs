//! The backup pipeline (SPEC.md §16): walk → read → chunk → hash →
//! compress + seal → pack → index → tree → snapshot.
//!
//! [`backup`] checks the [`sources`], picks the parent snapshot, starts a
//! write session and runs the [`walk`] over the sources while [`stream`]s
//! are read beside it; each regular [`file`] is chunked and its chunks
//! handed to the writer by [`store`]; each directory becomes a [`tree`]
//! blob whose entries [`node`] fills from the file system; [`exclude`]
//! decides what is left out. The snapshot is stored last, so it only ever
//! names blobs that exist. A file whose type, size, mtime, ctime and inode
//! equal its entry in the parent snapshot is not read again: its content
//! list is reused.

pub(crate) mod exclude;
mod file;
mod node;
mod read_ahead;
mod sources;
mod store;
mod stream;
#[cfg(test)]
mod tests;
mod tree;
mod walk;

pub use sources::{normalize_path, StreamSource};
pub(crate) use store::store_chunks;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::object::snapshot::{Snapshot, Summary};
use crate::object::tree::{Node, NodeKind, Tree};
use crate::progress::Progress;
use crate::repository::{BlobWriter, Repository};
use exclude::{ExcludeOptions, Excluder};
use node::NameCache;
use sources::{check_sources, CheckedSources, SourceLayout};
use stream::archive_stream;
use walk::scan;

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
                .archive_dir(
                    root_dir,
                    parent_root_node.as_ref(),
                    &excluder.state_of(root_dir),
                )
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
        original: None,
    };
    let snapshot_id = writer.commit(&snapshot)?;
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
    })
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
}
