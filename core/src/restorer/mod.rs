//! The restore pipeline (SPEC.md §17): snapshot → tree → blobs → files.
//!
//! Restore never writes outside its target: names come from trees that
//! refused unsafe names when decoded, every directory on the way is one this
//! restore created or found to be a real directory, and nothing is opened
//! through a symlink. Metadata is applied after content, and a directory's
//! after all its entries, so that its mtime and permissions stick.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use filetime::FileTime;
use rayon::prelude::*;
use xattr::FileExt;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::object::blob::BlobType;
use crate::object::snapshot::Snapshot;
use crate::object::tree::{Node, NodeKind, Timestamp, Tree};
use crate::pattern::{MatchState, Patterns};
use crate::progress::Progress;
use crate::repository::Repository;

/// A regular file restored by a parallel worker.
struct RestoredFile {
    bytes: u64,
    verified: bool,
}

/// Blobs of one file fetched and opened at once, in parallel.
const BLOBS_PER_BATCH: usize = 8;

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Directory to restore into; created if missing.
    pub target: PathBuf,
    /// Path inside the snapshot to restore (`/home/me/src`); the whole
    /// snapshot when `None`. A directory's contents go into the target; any
    /// other entry goes into the target under its own name.
    pub subpath: Option<PathBuf>,
    /// Restore only entries matching one of these (and what they contain).
    pub includes: Vec<String>,
    /// Skip entries matching one of these (and what they contain).
    pub excludes: Vec<String>,
    /// Report what would be restored without writing anything.
    pub dry_run: bool,
    /// Re-read every restored file and compare it with the stored blob ids.
    pub verify: bool,
}

/// Counters of a finished restore.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Regular files restored (hard links included).
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks, FIFOs and devices restored.
    pub others: u64,
    /// Bytes of file content restored.
    pub bytes: u64,
    /// Files re-read and found equal to the snapshot (with `verify`).
    pub verified_files: u64,
    /// Entries that could not be restored; each was reported as a warning.
    pub errors: u64,
}

impl RestoreSummary {
    /// Whether every selected entry was restored.
    pub fn is_complete(&self) -> bool {
        self.errors == 0
    }
}

/// Directory levels a restore walks into at most, its starting tree being
/// the first (SPEC.md §17). A directory that would open a deeper level is
/// reported as an error and skipped with everything below it, and the walk
/// goes on. Nothing in the format bounds how deep trees nest; this bound
/// keeps the walk's memory finite on a hostile snapshot, far beyond any
/// tree a real file system holds.
pub const MAX_TREE_DEPTH: usize = 65_536;

/// A subtree walked unselected is remembered as selecting nothing only if
/// its walk visited at least this many entries not already covered by a
/// remembered subtree below it: small walks are cheap to repeat, and
/// counting each visit towards one entry at most keeps the memo to one
/// entry per this many visits.
const BARREN_MIN_VISITS: u64 = 256;

/// Remembered barren subtrees at most; the memo is emptied when full, so
/// the subtrees met most recently, those a shared subtree's next reference
/// needs, are the ones kept.
const BARREN_CAPACITY: usize = 1 << 16;

/// A subtree and how far the patterns got along the path it was met at:
/// what decides, with nothing above selected, whether anything below is.
#[derive(PartialEq, Eq, Hash)]
struct BarrenKey {
    subtree: BlobId,
    includes: MatchState,
    excludes: MatchState,
}

/// A path the walk extends by one name on the way down and cuts back on
/// the way up: one buffer however deep the tree, where a path per level
/// would take memory quadratic in the depth. A directory's path is a
/// prefix of its entries' paths, so a level needs only its length.
struct PathBuffer {
    bytes: Vec<u8>,
}

impl PathBuffer {
    fn new(base: &Path) -> PathBuffer {
        PathBuffer {
            bytes: base.as_os_str().as_bytes().to_vec(),
        }
    }

    fn push(&mut self, name: &[u8]) {
        if !self.bytes.is_empty() && !self.bytes.ends_with(b"/") {
            self.bytes.push(b'/');
        }
        self.bytes.extend_from_slice(name);
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
    }

    /// The path as it was when it was `len` bytes long.
    fn prefix(&self, len: usize) -> &Path {
        Path::new(OsStr::from_bytes(&self.bytes[..len]))
    }

    fn as_path(&self) -> &Path {
        self.prefix(self.len())
    }
}

/// Whether a directory level on the walk's stack exists yet.
enum Level {
    /// Created (in a dry run: would be); its metadata waits as this key,
    /// if it does.
    Created(Option<DirKey>),
    /// Not created, because it does not match the includes and nothing
    /// below it has been selected yet: it is created, with the pending
    /// levels above it, once something is, and dropped if nothing is.
    Pending { node: Box<Node>, subtree: BlobId },
}

/// One directory the walk is in.
struct Frame {
    /// Its entries not walked yet.
    nodes: std::vec::IntoIter<Node>,
    /// Whether it, or a directory above it, matched an include: then
    /// everything below is selected and includes are not matched.
    selected: bool,
    /// How far the include patterns got along its path.
    includes: MatchState,
    /// How far the exclude patterns got along its path.
    excludes: MatchState,
    level: Level,
    /// Lengths of the two path buffers with its name on them.
    on_disk_len: usize,
    in_restore_len: usize,
    /// Entries visited below it, not counting those of remembered barren
    /// subtrees.
    visits: u64,
    /// Errors counted when the walk entered it: a subtree whose walk had
    /// any is not remembered as barren, so that meeting it again reports
    /// them again.
    errors_before: u64,
}

/// Restores `snapshot` (or part of it) as `options` say.
///
/// One thread walks the trees, creates directories, links and special
/// files, and writes the first name of each hard-linked file; other regular
/// files go to writer threads through a bounded queue, so files in
/// different directories are written at once. A directory's metadata is
/// applied as soon as everything in it is written, so memory holds only
/// the directories still being filled.
///
/// The walk keeps its own stack of directory levels, so a tree of any
/// depth cannot overflow the thread's; a directory deeper than
/// [`MAX_TREE_DEPTH`] levels is reported as an error, and so is a path
/// longer than the system allows, and the restore goes on. Errors on
/// entries are counted in the summary; this returns an error only if the
/// starting tree cannot be read, a pattern is invalid or the target cannot
/// be created.
pub fn restore(
    repository: &Repository,
    snapshot: &Snapshot,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    restore_to_depth(repository, snapshot, options, progress, MAX_TREE_DEPTH)
}

/// [`restore`], with `max_depth` levels in place of [`MAX_TREE_DEPTH`]:
/// tests reach the bound without storing 65,536 trees.
fn restore_to_depth(
    repository: &Repository,
    snapshot: &Snapshot,
    options: &RestoreOptions,
    progress: &dyn Progress,
    max_depth: usize,
) -> Result<RestoreSummary> {
    let (tree, start_node) = locate(repository, snapshot, options.subpath.as_deref())?;
    let in_snapshot = options.subpath.as_deref().unwrap_or(Path::new("/"));
    // A directory's entries go into the target; any other entry goes there
    // under its own name, as if the target were its parent.
    let (nodes, top_in_snapshot) = match start_node {
        None => (tree.nodes, in_snapshot),
        Some(node) => (vec![node], in_snapshot.parent().unwrap_or(Path::new("/"))),
    };
    let includes = Patterns::new(&options.includes)?;
    let excludes = Patterns::new(&options.excludes)?;
    if !options.dry_run {
        fs::create_dir_all(&options.target).map_err(|e| Error::io(&options.target, e))?;
    }
    let files = FileRestorer {
        repository,
        verify: options.verify,
        progress,
        is_root: nix::unistd::geteuid().is_root(),
    };
    let workers = if options.dry_run {
        0
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    };
    // Everything that connects the walk and the writers lives inside the
    // scope: if either side panics, its end of a channel is dropped while
    // unwinding, the other side stops, and the panic is not a hang.
    let summary = std::thread::scope(|scope| {
        let (jobs, job_queue) = mpsc::sync_channel::<FileJob>(FILE_QUEUE);
        let job_queue = Arc::new(Mutex::new(job_queue));
        let (outcomes_tx, outcomes) = mpsc::channel::<FileOutcome>();
        for _ in 0..workers {
            let outcomes = outcomes_tx.clone();
            let job_queue = Arc::clone(&job_queue);
            let files = &files;
            scope.spawn(move || loop {
                let job = job_queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(job) = job else { return };
                let result = files.restore_file(&job.node, &job.on_disk, &job.in_restore);
                let outcome = FileOutcome {
                    dir: job.dir,
                    in_restore: job.in_restore,
                    result,
                };
                if outcomes.send(outcome).is_err() {
                    return;
                }
            });
        }
        drop((job_queue, outcomes_tx));
        let mut restorer = Restorer {
            files: &files,
            options,
            includes,
            excludes,
            summary: RestoreSummary::default(),
            hardlinks: HashMap::new(),
            jobs: Some(jobs),
            outcomes,
            open_dirs: HashMap::new(),
            next_dir: 0,
            stack: Vec::new(),
            created: 0,
            on_disk: PathBuffer::new(&options.target),
            in_restore: PathBuffer::new(Path::new("/")),
            barren: HashSet::new(),
            max_depth,
        };
        let top_includes = restorer.includes.top_state(top_in_snapshot);
        let top_excludes = restorer.excludes.top_state(top_in_snapshot);
        restorer.walk(nodes, top_includes, top_excludes);
        // Closing the queue lets the writers finish and stop.
        restorer.jobs = None;
        restorer.collect_outcomes(true);
        restorer.summary
    });
    Ok(summary)
}

/// Finds the tree to restore from: the root, or the entry at `subpath`.
/// Returns the directory's tree, or for a non-directory the node itself.
fn locate(
    repository: &Repository,
    snapshot: &Snapshot,
    subpath: Option<&Path>,
) -> Result<(Tree, Option<Node>)> {
    let mut tree = repository.read_tree(&snapshot.tree)?;
    let Some(subpath) = subpath else {
        return Ok((tree, None));
    };
    let not_found = || Error::PathNotInSnapshot {
        path: subpath.display().to_string(),
    };
    if subpath
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::ParentInSnapshotPath {
            path: subpath.to_path_buf(),
        });
    }
    let components: Vec<&OsStr> = subpath
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    for (i, name) in components.iter().enumerate() {
        let node = tree.find(name.as_bytes()).ok_or_else(not_found)?.clone();
        match &node.kind {
            NodeKind::Directory { subtree } => tree = repository.read_tree(subtree)?,
            _ if i + 1 == components.len() => return Ok((Tree::default(), Some(node))),
            _ => return Err(not_found()),
        }
    }
    Ok((tree, None))
}

/// Regular files waiting for a writer thread: enough to keep every writer
/// busy, few enough that a tree of millions of files does not queue up.
const FILE_QUEUE: usize = 64;

/// A regular file for a writer thread.
struct FileJob {
    node: Node,
    on_disk: PathBuf,
    in_restore: PathBuf,
    /// The directory it is in, if its metadata waits for it.
    dir: Option<DirKey>,
}

/// What a writer thread did with a [`FileJob`].
struct FileOutcome {
    dir: Option<DirKey>,
    in_restore: PathBuf,
    result: Result<RestoredFile>,
}

/// Names an [`OpenDir`] for the life of one restore.
type DirKey = u64;

/// A restored directory whose metadata waits until everything in it is
/// written: its own entries, the files queued for the writers, and its
/// subdirectories.
struct OpenDir {
    node: Node,
    on_disk: PathBuf,
    in_restore: PathBuf,
    parent: Option<DirKey>,
    /// Files queued in it plus subdirectories not finished yet.
    pending: usize,
    /// Whether the walk has been through all its entries.
    walked: bool,
}

/// Writes regular files, with their metadata. Shared by the writer threads.
struct FileRestorer<'r> {
    repository: &'r Repository,
    verify: bool,
    progress: &'r dyn Progress,
    is_root: bool,
}

/// The walk: selection, directories, links and special files.
struct Restorer<'a, 'r> {
    files: &'a FileRestorer<'r>,
    options: &'a RestoreOptions,
    includes: Patterns,
    excludes: Patterns,
    summary: RestoreSummary,
    /// First restored path of each multiply-linked inode, by (device, inode).
    hardlinks: HashMap<(u64, u64), PathBuf>,
    /// Open while the walk runs.
    jobs: Option<SyncSender<FileJob>>,
    outcomes: Receiver<FileOutcome>,
    /// Directories whose metadata is not applied yet: those the walk is in,
    /// and those with files still queued.
    open_dirs: HashMap<DirKey, OpenDir>,
    next_dir: DirKey,
    /// The directories the walk is in, outermost first. The first
    /// `created` of them exist; the rest are pending.
    stack: Vec<Frame>,
    created: usize,
    /// Where the entry being walked goes, and its path below the restored
    /// subtree (what is reported).
    on_disk: PathBuffer,
    in_restore: PathBuffer,
    /// Subtrees known to select nothing when met in a given state.
    barren: HashSet<BarrenKey>,
    /// Directory levels the walk enters at most: [`MAX_TREE_DEPTH`].
    max_depth: usize,
}

/// Removes whatever is at `path` unless it is a real directory, so nothing
/// is ever written through a symlink left in the target.
fn clear_for(path: &Path, want_dir: bool) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() && want_dir => Ok(true),
        // An empty directory in the way goes; a full one is never deleted.
        Ok(meta) if meta.is_dir() => fs::remove_dir(path).map(|_| false).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTEMPTY) {
                io::Error::other("a non-empty directory is in the way")
            } else {
                e
            }
        }),
        Ok(_) => fs::remove_file(path).map(|_| false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn file_time(t: Timestamp) -> FileTime {
    FileTime::from_unix_time(t.secs, t.nanos)
}

/// Creates an entry with `create`. If something is in the way, it is
/// cleared as [`clear_for`] allows and the creation tried once more: in a
/// fresh target nothing is ever in the way, and the `stat` is saved.
fn create_or_replace<T>(path: &Path, create: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            clear_for(path, false)?;
            create()
        }
        other => other,
    }
}

impl Restorer<'_, '_> {
    fn report(&mut self, path: &Path, error: &Error) {
        self.files.progress.warning(path, &error.to_string());
        self.summary.errors += 1;
    }

    /// Counts what the writer threads finished; with `all`, waits for
    /// every one of them (the queue must be closed).
    fn collect_outcomes(&mut self, all: bool) {
        let outcomes: Vec<FileOutcome> = if all {
            self.outcomes.iter().collect()
        } else {
            self.outcomes.try_iter().collect()
        };
        for outcome in outcomes {
            match outcome.result {
                Ok(file) => {
                    self.summary.files += 1;
                    self.summary.bytes = self.summary.bytes.saturating_add(file.bytes);
                    self.summary.verified_files += u64::from(file.verified);
                }
                Err(error) => self.report(&outcome.in_restore, &error),
            }
            if let Some(dir) = outcome.dir {
                self.settle(dir);
            }
        }
    }

    /// Records a restored directory whose metadata must wait for what is
    /// written into it; `None` in a dry run, which applies no metadata.
    fn open_dir(
        &mut self,
        node: Node,
        on_disk: PathBuf,
        in_restore: PathBuf,
        parent: Option<DirKey>,
    ) -> Option<DirKey> {
        if self.options.dry_run {
            return None;
        }
        if let Some(parent) = parent.and_then(|p| self.open_dirs.get_mut(&p)) {
            parent.pending += 1;
        }
        let key = self.next_dir;
        self.next_dir += 1;
        self.open_dirs.insert(
            key,
            OpenDir {
                node,
                on_disk,
                in_restore,
                parent,
                pending: 0,
                walked: false,
            },
        );
        Some(key)
    }

    /// Marks a directory walked, and applies its metadata if nothing in it
    /// is pending.
    fn close_dir(&mut self, key: DirKey) {
        if let Some(dir) = self.open_dirs.get_mut(&key) {
            dir.walked = true;
        }
        self.finish_dir_if_done(key);
    }

    /// One thing pending in a directory is done.
    fn settle(&mut self, key: DirKey) {
        if let Some(dir) = self.open_dirs.get_mut(&key) {
            dir.pending -= 1;
        }
        self.finish_dir_if_done(key);
    }

    /// Applies a directory's metadata once it is walked and nothing in it is
    /// pending; then its parent has one thing less to wait for.
    fn finish_dir_if_done(&mut self, key: DirKey) {
        let done = self
            .open_dirs
            .get(&key)
            .is_some_and(|dir| dir.walked && dir.pending == 0);
        if !done {
            return;
        }
        let dir = self.open_dirs.remove(&key).expect("checked above");
        if let Err(error) = self.files.apply_metadata(&dir.node, &dir.on_disk) {
            self.report(&dir.in_restore, &error);
        }
        if let Some(parent) = dir.parent {
            self.settle(parent);
        }
    }

    /// Restores `nodes`, the entries of the restore's top directory (the
    /// target), and everything below them, in order. `includes` and
    /// `excludes` are the patterns' states at the top. A failed entry is
    /// reported and counted, and the rest are still restored: on a bad day,
    /// everything that can be had back matters more than stopping at the
    /// first error.
    ///
    /// One entry at a time, with the directories the walk is in on an
    /// explicit stack: a hostile tree thousands of levels deep must not
    /// overflow the thread's stack.
    fn walk(&mut self, nodes: Vec<Node>, includes: MatchState, excludes: MatchState) {
        self.stack.push(Frame {
            nodes: nodes.into_iter(),
            selected: false,
            includes,
            excludes,
            level: Level::Created(None),
            on_disk_len: self.on_disk.len(),
            in_restore_len: self.in_restore.len(),
            visits: 0,
            errors_before: self.summary.errors,
        });
        self.created = 1;
        while let Some(frame) = self.stack.last_mut() {
            match frame.nodes.next() {
                Some(node) => self.visit(node),
                None => self.leave(),
            }
        }
    }

    /// Walks one entry of the directory on top of the stack.
    fn visit(&mut self, node: Node) {
        let frame = self.stack.last_mut().expect("the walk is in a directory");
        frame.visits += 1;
        self.on_disk.push(&node.name);
        self.in_restore.push(&node.name);
        if let Err(error) = self.restore_entry(node) {
            let path = self.in_restore.as_path().to_path_buf();
            self.report(&path, &error);
        }
        // Back to the directory now on top: the entry's, the entry itself
        // if it was a directory entered, or an outer one if a pending
        // directory could not be created.
        let top = self.stack.last().expect("the walk is in a directory");
        self.on_disk.truncate(top.on_disk_len);
        self.in_restore.truncate(top.in_restore_len);
    }

    /// Leaves the directory on top of the stack, all its entries walked:
    /// its metadata is applied once its files are written, or, if it is
    /// still pending, it is dropped and its subtree remembered as barren.
    fn leave(&mut self) {
        let frame = self.stack.pop().expect("the walk is in a directory");
        self.created = self.created.min(self.stack.len());
        let mut visits = frame.visits;
        match frame.level {
            Level::Created(Some(key)) => self.close_dir(key),
            Level::Created(None) => {}
            Level::Pending { subtree, .. } => {
                if visits >= BARREN_MIN_VISITS && self.summary.errors == frame.errors_before {
                    self.remember_barren(BarrenKey {
                        subtree,
                        includes: frame.includes,
                        excludes: frame.excludes,
                    });
                    visits = 0;
                }
            }
        }
        if let Some(parent) = self.stack.last_mut() {
            parent.visits += visits;
            self.on_disk.truncate(parent.on_disk_len);
            self.in_restore.truncate(parent.in_restore_len);
        }
    }

    fn remember_barren(&mut self, key: BarrenKey) {
        if self.barren.len() >= BARREN_CAPACITY {
            self.barren.clear();
        }
        self.barren.insert(key);
    }

    /// Restores the entry whose paths the buffers hold, in the directory
    /// on top of the stack: matches it, and enters it if it is a directory.
    fn restore_entry(&mut self, node: Node) -> Result<()> {
        let parent = self.stack.last().expect("the walk is in a directory");
        let excludes = self.excludes.descend(&parent.excludes, &node.name);
        if self.excludes.is_match(&excludes) {
            return Ok(());
        }
        let (selected, includes) = if parent.selected || self.includes.is_empty() {
            (true, MatchState::default())
        } else {
            let includes = self.includes.descend(&parent.includes, &node.name);
            if self.includes.is_match(&includes) {
                (true, MatchState::default())
            } else {
                (false, includes)
            }
        };
        if let NodeKind::Directory { subtree } = node.kind {
            let key = BarrenKey {
                subtree,
                includes,
                excludes,
            };
            return self.enter_dir(node, selected, key);
        }
        if !selected || !self.create_pending() {
            return Ok(());
        }
        self.restore_leaf(node)
    }

    /// Enters a directory: creates it if it is selected, or pushes it as
    /// pending if something below it may be. `key` holds its subtree and
    /// the patterns' states at it.
    fn enter_dir(&mut self, node: Node, selected: bool, key: BarrenKey) -> Result<()> {
        // Unselected, a subtree is walked only to look for what is, which
        // is pointless when no include can match below, or when the same
        // subtree in the same state was found to hold nothing.
        if !selected
            && (!self.includes.can_match_below(&key.includes) || self.barren.contains(&key))
        {
            return Ok(());
        }
        if self.stack.len() >= self.max_depth {
            return Err(Error::corrupted(
                format!("tree {}", key.subtree),
                format!("tree deeper than {} levels", self.max_depth),
            ));
        }
        let tree = self.files.repository.read_tree(&key.subtree)?;
        let level = if selected {
            if !self.create_pending() {
                return Ok(());
            }
            let (on_disk_len, in_restore_len) = (self.on_disk.len(), self.in_restore.len());
            Level::Created(self.create_dir(node, on_disk_len, in_restore_len)?)
        } else {
            Level::Pending {
                node: Box::new(node),
                subtree: key.subtree,
            }
        };
        let created = matches!(level, Level::Created(_));
        self.stack.push(Frame {
            nodes: tree.nodes.into_iter(),
            selected,
            includes: key.includes,
            excludes: key.excludes,
            level,
            on_disk_len: self.on_disk.len(),
            in_restore_len: self.in_restore.len(),
            visits: 0,
            errors_before: self.summary.errors,
        });
        if created {
            self.created = self.stack.len();
        }
        Ok(())
    }

    /// Creates the pending directories on the stack, outermost first, so
    /// that an entry selected below them has somewhere to go. Returns
    /// whether they all exist. One that cannot be created is reported and
    /// dropped from the walk with everything below it: one error, not one
    /// per entry below.
    fn create_pending(&mut self) -> bool {
        while self.created < self.stack.len() {
            let index = self.created;
            let frame = &mut self.stack[index];
            let Level::Pending { node, .. } =
                std::mem::replace(&mut frame.level, Level::Created(None))
            else {
                unreachable!("the levels past `created` are pending");
            };
            let (on_disk_len, in_restore_len) = (frame.on_disk_len, frame.in_restore_len);
            match self.create_dir(*node, on_disk_len, in_restore_len) {
                Ok(key) => {
                    self.stack[index].level = Level::Created(key);
                    self.created += 1;
                }
                Err(error) => {
                    let path = self.in_restore.prefix(in_restore_len).to_path_buf();
                    self.report(&path, &error);
                    self.stack.truncate(index);
                    return false;
                }
            }
        }
        true
    }

    /// Creates the directory `node` at the buffers' paths cut to these
    /// lengths, inside the directory on top of the created levels; returns
    /// the key its metadata waits as.
    fn create_dir(
        &mut self,
        node: Node,
        on_disk_len: usize,
        in_restore_len: usize,
    ) -> Result<Option<DirKey>> {
        let on_disk = self.on_disk.prefix(on_disk_len);
        self.make_dir(on_disk)?;
        let on_disk = on_disk.to_path_buf();
        let in_restore = self.in_restore.prefix(in_restore_len).to_path_buf();
        self.summary.dirs += 1;
        self.files.progress.restored(&in_restore);
        let parent = match self.created.checked_sub(1).map(|i| &self.stack[i].level) {
            Some(Level::Created(key)) => *key,
            _ => None,
        };
        Ok(self.open_dir(node, on_disk, in_restore, parent))
    }

    /// Restores a selected entry other than a directory into the directory
    /// on top of the stack, which exists.
    fn restore_leaf(&mut self, node: Node) -> Result<()> {
        let dir_key = match self.stack.last().map(|frame| &frame.level) {
            Some(Level::Created(key)) => *key,
            _ => None,
        };
        let on_disk = self.on_disk.as_path().to_path_buf();
        let in_restore = self.in_restore.as_path().to_path_buf();
        if self.options.dry_run {
            self.files.progress.restored(&in_restore);
            self.count(&node);
            return Ok(());
        }
        if matches!(node.kind, NodeKind::File { .. }) && !node.is_hardlinked() {
            return self.queue_file(node, on_disk, in_restore, dir_key);
        }
        self.files.progress.restored(&in_restore);
        let on_disk = &on_disk;
        match &node.kind {
            NodeKind::File { .. } => {
                let key = (node.device, node.inode);
                if let Some(first) = self.hardlinks.get(&key) {
                    create_or_replace(on_disk, || fs::hard_link(first, on_disk))
                        .map_err(|e| Error::io(on_disk, e))?;
                    self.summary.files += 1;
                    return Ok(());
                }
                self.hardlinks.insert(key, on_disk.clone());
                let file = self.files.restore_file(&node, on_disk, &in_restore)?;
                self.summary.files += 1;
                self.summary.bytes = self.summary.bytes.saturating_add(file.bytes);
                self.summary.verified_files += u64::from(file.verified);
                return Ok(());
            }
            NodeKind::Symlink { target } => {
                create_or_replace(on_disk, || {
                    std::os::unix::fs::symlink(OsStr::from_bytes(target), on_disk)
                })
                .map_err(|e| Error::io(on_disk, e))?;
            }
            NodeKind::Fifo => {
                create_or_replace(on_disk, || {
                    nix::unistd::mkfifo(on_disk, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .map_err(io::Error::from)
                })
                .map_err(|e| Error::io(on_disk, e))?;
            }
            NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
                let kind = if matches!(node.kind, NodeKind::CharDevice { .. }) {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                let made = create_or_replace(on_disk, || {
                    nix::sys::stat::mknod(
                        on_disk,
                        kind,
                        nix::sys::stat::Mode::from_bits_truncate(0o600),
                        *rdev,
                    )
                    .map_err(io::Error::from)
                });
                if let Err(e) = made {
                    // Only root may create devices; the rest of the restore
                    // is still worth having.
                    self.files
                        .progress
                        .warning(on_disk, &format!("cannot create device: {e}"));
                    return Ok(());
                }
            }
            NodeKind::Directory { .. } => {
                unreachable!("directories are entered, not restored here")
            }
        }
        self.count(&node);
        self.files.apply_metadata(&node, on_disk)
    }

    /// Hands a regular file to the writer threads, waiting while the queue
    /// is full.
    fn queue_file(
        &mut self,
        node: Node,
        on_disk: PathBuf,
        in_restore: PathBuf,
        dir: Option<DirKey>,
    ) -> Result<()> {
        self.collect_outcomes(false);
        let job = FileJob {
            node,
            on_disk,
            in_restore,
            dir,
        };
        let jobs = self
            .jobs
            .as_ref()
            .expect("the queue is open during the walk");
        jobs.send(job).map_err(|_| {
            Error::io(
                &self.options.target,
                io::Error::other("the file writers stopped"),
            )
        })?;
        if let Some(dir) = dir.and_then(|d| self.open_dirs.get_mut(&d)) {
            dir.pending += 1;
        }
        Ok(())
    }

    fn count(&mut self, node: &Node) {
        match &node.kind {
            NodeKind::File { size, .. } => {
                self.summary.files += 1;
                self.summary.bytes = self.summary.bytes.saturating_add(*size);
            }
            NodeKind::Directory { .. } => self.summary.dirs += 1,
            _ => self.summary.others += 1,
        }
    }

    /// Creates a directory, or keeps a real one in the way, and makes it
    /// mode 0700 (whatever the umask) while entries are restored into it;
    /// its real mode is applied once they are.
    fn make_dir(&self, path: &Path) -> Result<()> {
        if self.options.dry_run {
            return Ok(());
        }
        let create = || fs::DirBuilder::new().mode(0o700).create(path);
        match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if clear_for(path, true).map_err(|e| Error::io(path, e))? {
                    Ok(())
                } else {
                    create()
                }
            }
            other => other,
        }
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::io(path, e))
    }
}

impl FileRestorer<'_> {
    /// Writes a regular file, verifies it if asked, and applies its
    /// metadata through the open file.
    fn restore_file(&self, node: &Node, path: &Path, in_restore: &Path) -> Result<RestoredFile> {
        let NodeKind::File {
            size,
            content,
            sparse,
        } = &node.kind
        else {
            unreachable!("only regular files are restored here");
        };
        self.progress.restored(in_restore);
        let file = self.write_file(path, *size, content, *sparse)?;
        if self.verify {
            self.verify_file(path, *size, content)?;
        }
        self.apply_file_metadata(node, &file, path)?;
        Ok(RestoredFile {
            bytes: *size,
            verified: self.verify,
        })
    }

    fn write_file(&self, path: &Path, size: u64, content: &[BlobId], sparse: bool) -> Result<File> {
        let open = || {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(path)
        };
        let mut file = create_or_replace(path, open).map_err(|e| Error::io(path, e))?;
        let mut written = 0u64;
        let mut ends_in_hole = false;
        // Blobs are fetched and opened a batch at a time in parallel, and
        // written in order.
        for batch in content.chunks(BLOBS_PER_BATCH) {
            let blobs: Vec<Result<Vec<u8>>> = if batch.len() == 1 {
                vec![self.repository.read_blob(&batch[0], BlobType::Data)]
            } else {
                batch
                    .par_iter()
                    .map(|id| self.repository.read_blob(id, BlobType::Data))
                    .collect()
            };
            for data in blobs {
                let data = data?;
                ends_in_hole = self.write_blob(&mut file, path, &data, size, written, sparse)?;
                written += data.len() as u64;
            }
        }
        if written != size {
            return Err(Error::corrupted(
                path.display(),
                format!("snapshot records {size} bytes but its blobs hold {written}"),
            ));
        }
        if ends_in_hole {
            // A trailing hole was skipped, not written: set the length.
            file.set_len(size).map_err(|e| Error::io(path, e))?;
        }
        Ok(file)
    }

    /// Writes one blob at the file's position (`written` bytes in), or
    /// seeks past it to leave a hole. Returns whether it left a hole.
    fn write_blob(
        &self,
        file: &mut File,
        path: &Path,
        data: &[u8],
        size: u64,
        written: u64,
        sparse: bool,
    ) -> Result<bool> {
        // Checked per blob, so a hostile content list cannot fill the disk
        // before the total is compared.
        if written.saturating_add(data.len() as u64) > size {
            return Err(Error::corrupted(
                path.display(),
                format!("snapshot records {size} bytes but its blobs hold more"),
            ));
        }
        if sparse && data.iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(data.len() as i64))
                .map_err(|e| Error::io(path, e))?;
            return Ok(true);
        }
        file.write_all(data).map_err(|e| Error::io(path, e))?;
        Ok(false)
    }

    fn verify_file(&self, path: &Path, size: u64, content: &[BlobId]) -> Result<()> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut total = 0u64;
        for id in content {
            let location = self
                .repository
                .locate(id)?
                .ok_or_else(|| Error::BlobNotIndexed { id: id.to_string() })?;
            let mut data = vec![0u8; location.entry.raw_len as usize];
            file.read_exact(&mut data)
                .map_err(|_| Error::VerifyMismatch { path: path.into() })?;
            if self.repository.blob_id(BlobType::Data, &data) != *id {
                return Err(Error::VerifyMismatch { path: path.into() });
            }
            total += data.len() as u64;
        }
        let mut rest = [0u8; 1];
        if total != size || file.read(&mut rest).map_err(|e| Error::io(path, e))? != 0 {
            return Err(Error::VerifyMismatch { path: path.into() });
        }
        Ok(())
    }

    /// [`FileRestorer::apply_metadata`] through an open regular file: no
    /// path is looked up again.
    fn apply_file_metadata(&self, node: &Node, file: &File, path: &Path) -> Result<()> {
        if self.is_root {
            if let Err(e) = std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid)) {
                self.progress
                    .warning(path, &format!("cannot set owner: {e}"));
            }
        }
        file.set_permissions(fs::Permissions::from_mode(node.mode))
            .map_err(|e| Error::io(path, e))?;
        for attr in &node.xattrs {
            if let Err(e) = file.set_xattr(OsStr::from_bytes(&attr.name), &attr.value) {
                self.warn_xattr(path, &attr.name, &e);
            }
        }
        filetime::set_file_handle_times(
            file,
            Some(file_time(node.atime)),
            Some(file_time(node.mtime)),
        )
        .map_err(|e| Error::io(path, e))
    }

    fn warn_xattr(&self, path: &Path, name: &[u8], error: &io::Error) {
        self.progress.warning(
            path,
            &format!(
                "cannot set extended attribute {}: {error}",
                String::from_utf8_lossy(name)
            ),
        );
    }

    /// Applies owner, mode, extended attributes and times, in that order:
    /// chown clears setuid bits, so mode comes after it.
    fn apply_metadata(&self, node: &Node, path: &Path) -> Result<()> {
        let is_symlink = matches!(node.kind, NodeKind::Symlink { .. });
        if self.is_root {
            if let Err(e) = nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                path,
                Some(node.uid.into()),
                Some(node.gid.into()),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                self.progress
                    .warning(path, &format!("cannot set owner: {e}"));
            }
        }
        if !is_symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(node.mode))
                .map_err(|e| Error::io(path, e))?;
        }
        for attr in &node.xattrs {
            if let Err(e) = xattr::set(path, OsStr::from_bytes(&attr.name), &attr.value) {
                self.warn_xattr(path, &attr.name, &e);
            }
        }
        filetime::set_symlink_file_times(path, file_time(node.atime), file_time(node.mtime))
            .map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::snapshot::Summary;
    use crate::testing::memory_repository;

    /// Records what a restore reports.
    #[derive(Default)]
    struct Recorder {
        restored: Mutex<Vec<String>>,
        warnings: Mutex<Vec<String>>,
    }

    impl Progress for Recorder {
        fn warning(&self, path: &Path, message: &str) {
            let line = format!("{}: {message}", path.display());
            self.warnings.lock().unwrap().push(line);
        }

        fn restored(&self, path: &Path) {
            self.restored
                .lock()
                .unwrap()
                .push(path.display().to_string());
        }
    }

    fn directory(name: &[u8], subtree: BlobId) -> Node {
        Node {
            mode: 0o755,
            ..Node::new(name.to_vec(), NodeKind::Directory { subtree })
        }
    }

    /// A snapshot whose root holds a chain of `depth` directories `d`, an
    /// empty directory at the bottom, and an empty directory `z` after it.
    fn chain_snapshot(repository: &Repository, depth: usize) -> Snapshot {
        let mut writer = repository.start_write(3).unwrap();
        let empty = writer
            .add_blob(BlobType::Tree, Tree::default().encode())
            .unwrap();
        let mut nodes = vec![];
        for _ in 0..depth {
            let subtree = writer
                .add_blob(BlobType::Tree, Tree { nodes }.encode())
                .unwrap();
            nodes = vec![directory(b"d", subtree)];
        }
        nodes.push(directory(b"z", empty));
        let tree = writer
            .add_blob(BlobType::Tree, Tree { nodes }.encode())
            .unwrap();
        writer.flush().unwrap();
        Snapshot {
            time_ns: 0,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec![b"/x".to_vec()],
            tags: vec![],
            parent: None,
            tree,
            program_version: "test".into(),
            summary: Summary::default(),
            unreadable: vec![],
        }
    }

    #[test]
    fn a_tree_deeper_than_the_bound_is_one_error_and_the_walk_goes_on() {
        let (_cache, repository) = memory_repository();
        let snapshot = chain_snapshot(&repository, 5);
        let options = RestoreOptions {
            target: PathBuf::from("/nonexistent"),
            dry_run: true,
            ..RestoreOptions::default()
        };
        let recorder = Recorder::default();
        let summary = restore_to_depth(&repository, &snapshot, &options, &recorder, 3).unwrap();
        // The root's tree is level 1, `/d`'s level 2, `/d/d`'s level 3.
        assert_eq!(
            *recorder.restored.lock().unwrap(),
            ["/d", "/d/d", "/z"],
            "the chain up to the bound, then the next entry"
        );
        let warnings = recorder.warnings.lock().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("/d/d/d: tree ")
                && warnings[0].ends_with("deeper than 3 levels"),
            "{warnings:?}"
        );
        assert_eq!(summary.errors, 1);
        assert_eq!(summary.dirs, 3);
    }

    #[test]
    fn a_pending_directory_is_created_only_for_what_is_selected_below() {
        let (_cache, repository) = memory_repository();
        let snapshot = chain_snapshot(&repository, 3);
        let recorder = Recorder::default();
        let options = RestoreOptions {
            target: PathBuf::from("/nonexistent"),
            includes: vec!["/d/d/d".into(), "nomatch".into()],
            dry_run: true,
            ..RestoreOptions::default()
        };
        let summary = restore(&repository, &snapshot, &options, &recorder).unwrap();
        assert_eq!(*recorder.restored.lock().unwrap(), ["/d", "/d/d", "/d/d/d"]);
        assert_eq!(summary.dirs, 3);
        assert!(summary.is_complete());
    }

    #[test]
    fn verify_catches_a_file_that_differs_from_its_blobs() {
        let (_cache, repository) = memory_repository();
        let content = b"what the snapshot holds, chunk one".to_vec();
        let more = b" and chunk two".to_vec();
        let mut writer = repository.start_write(3).unwrap();
        let ids = writer
            .add_blobs(BlobType::Data, vec![content.clone(), more.clone()])
            .unwrap();
        writer.flush().unwrap();
        let files = FileRestorer {
            repository: &repository,
            verify: true,
            progress: &crate::progress::Silent,
            is_root: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let whole = [content.clone(), more.clone()].concat();
        let size = whole.len() as u64;
        fs::write(&path, &whole).unwrap();
        files.verify_file(&path, size, &ids).unwrap();

        let mut flipped = whole.clone();
        flipped[3] ^= 0x20;
        let short = whole[..whole.len() - 1].to_vec();
        let long = [whole.clone(), b"!".to_vec()].concat();
        let swapped = [more, content].concat();
        for bad in [flipped, short, long, swapped] {
            fs::write(&path, &bad).unwrap();
            let result = files.verify_file(&path, size, &ids);
            assert!(
                matches!(result, Err(Error::VerifyMismatch { .. })),
                "{:?}: {result:?}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
