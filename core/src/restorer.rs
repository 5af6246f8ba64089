//! The restore pipeline (SPEC.md §17): snapshot → tree → blobs → files.
//!
//! Restore never writes outside its target: names come from trees that
//! refused unsafe names when decoded, every directory on the way is one this
//! restore created or found to be a real directory, and nothing is opened
//! through a symlink. Metadata is applied after content, and a directory's
//! after all its entries, so that its mtime and permissions stick.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use filetime::FileTime;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use xattr::FileExt;

use crate::blob::BlobType;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Timestamp, Tree};

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

/// Glob patterns in the style of restic and gitignore: a pattern that starts
/// with `/` is anchored, any other matches at any depth.
struct Patterns {
    set: GlobSet,
}

impl Patterns {
    fn new(patterns: &[String]) -> Result<Patterns> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let trimmed = pattern.trim_end_matches('/');
            let full = if trimmed.starts_with('/') {
                trimmed.to_string()
            } else {
                format!("**/{trimmed}")
            };
            let glob = GlobBuilder::new(&full)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidArgument(format!("pattern {pattern:?}: {e}")))?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(Patterns { set })
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Matches against the entry's path in the snapshot and its path below
    /// the restored subtree, both absolute.
    fn matches(&self, entry: &EntryPath) -> bool {
        self.set.is_match(&entry.in_snapshot) || self.set.is_match(&entry.in_restore)
    }
}

/// Where an entry is, in the snapshot and in the restore.
struct EntryPath {
    in_snapshot: PathBuf,
    in_restore: PathBuf,
    on_disk: PathBuf,
}

impl EntryPath {
    fn child(&self, name: &[u8]) -> EntryPath {
        let name = OsStr::from_bytes(name);
        EntryPath {
            in_snapshot: self.in_snapshot.join(name),
            in_restore: self.in_restore.join(name),
            on_disk: self.on_disk.join(name),
        }
    }
}

/// Restores `snapshot` (or part of it) as `options` say.
///
/// One thread walks the trees, creates directories, links and special
/// files, and writes the first name of each hard-linked file; other regular
/// files go to writer threads through a bounded queue, so files in
/// different directories are written at once. A directory's metadata is
/// applied as soon as everything in it is written, so memory holds only
/// the directories still being filled.
pub fn restore(
    repository: &Repository,
    snapshot: &Snapshot,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    let (tree, start_node) = locate(repository, snapshot, options.subpath.as_deref())?;
    let base = EntryPath {
        in_snapshot: options
            .subpath
            .clone()
            .unwrap_or_else(|| PathBuf::from("/")),
        in_restore: PathBuf::from("/"),
        on_disk: options.target.clone(),
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
        };
        match start_node {
            None => restorer.restore_tree(tree, &base, false, None),
            Some(node) => {
                let base = EntryPath {
                    in_snapshot: base
                        .in_snapshot
                        .parent()
                        .unwrap_or(Path::new("/"))
                        .to_path_buf(),
                    ..base
                };
                let name = node.name.clone();
                if let Err(error) = restorer.restore_node(node, &base, false, None) {
                    restorer.report(&base.child(&name).in_restore, &error);
                }
            }
        }
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
        return Err(Error::InvalidArgument(format!(
            "{}: a path inside a snapshot cannot contain ..",
            subpath.display()
        )));
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
    fn open_dir(&mut self, node: Node, path: &EntryPath, parent: Option<DirKey>) -> Option<DirKey> {
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
                on_disk: path.on_disk.clone(),
                in_restore: path.in_restore.clone(),
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

    /// Restores a directory's entries. `selected` says an ancestor matched
    /// an include pattern, so everything below is wanted. A failed entry is
    /// reported and counted, and the rest are still restored: on a bad day,
    /// everything that can be had back matters more than stopping at the
    /// first error.
    fn restore_tree(
        &mut self,
        tree: Tree,
        dir: &EntryPath,
        selected: bool,
        dir_key: Option<DirKey>,
    ) {
        for node in tree.nodes {
            let name = node.name.clone();
            if let Err(error) = self.restore_node(node, dir, selected, dir_key) {
                self.report(&dir.child(&name).in_restore, &error);
            }
        }
    }

    /// Whether the patterns select `path`, given whether an ancestor was.
    fn is_selected(&self, path: &EntryPath, selected: bool) -> bool {
        selected || self.includes.is_empty() || self.includes.matches(path)
    }

    /// Restores one entry of the directory `dir` (whose metadata waits as
    /// `dir_key`, if it does).
    fn restore_node(
        &mut self,
        node: Node,
        dir: &EntryPath,
        selected: bool,
        dir_key: Option<DirKey>,
    ) -> Result<()> {
        let path = dir.child(&node.name);
        if self.excludes.matches(&path) {
            return Ok(());
        }
        let selected = self.is_selected(&path, selected);
        if let NodeKind::Directory { subtree } = &node.kind {
            let tree = self.files.repository.read_tree(subtree)?;
            if !selected && !self.has_selected_descendant(&tree, &path)? {
                return Ok(());
            }
            self.make_dir(&path.on_disk)?;
            self.summary.dirs += 1;
            self.files.progress.restored(&path.in_restore);
            let key = self.open_dir(node, &path, dir_key);
            self.restore_tree(tree, &path, selected, key);
            if let Some(key) = key {
                self.close_dir(key);
            }
            return Ok(());
        }
        if !selected {
            return Ok(());
        }
        if self.options.dry_run {
            self.files.progress.restored(&path.in_restore);
            self.count(&node);
            return Ok(());
        }
        if matches!(node.kind, NodeKind::File { .. }) && !node.is_hardlinked() {
            return self.queue_file(node, path, dir_key);
        }
        self.files.progress.restored(&path.in_restore);
        let on_disk = &path.on_disk;
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
                let file = self.files.restore_file(&node, on_disk, &path.in_restore)?;
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
            NodeKind::Directory { .. } => unreachable!("directories are handled above"),
        }
        self.count(&node);
        self.files.apply_metadata(&node, on_disk)
    }

    /// Hands a regular file to the writer threads, waiting while the queue
    /// is full.
    fn queue_file(&mut self, node: Node, path: EntryPath, dir: Option<DirKey>) -> Result<()> {
        self.collect_outcomes(false);
        let job = FileJob {
            node,
            on_disk: path.on_disk,
            in_restore: path.in_restore,
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

    /// Whether anything below `tree` matches the include patterns.
    fn has_selected_descendant(&self, tree: &Tree, dir: &EntryPath) -> Result<bool> {
        for node in &tree.nodes {
            let path = dir.child(&node.name);
            if self.excludes.matches(&path) {
                continue;
            }
            if self.includes.matches(&path) {
                return Ok(true);
            }
            if let NodeKind::Directory { subtree } = &node.kind {
                let subtree = self.files.repository.read_tree(subtree)?;
                if self.has_selected_descendant(&subtree, &path)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
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
                None,
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
    use crate::testing::memory_repository;

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
