//! The restore pipeline (SPEC.md §17): snapshot → tree → blobs → files.
//!
//! Restore never writes outside its target: names come from trees that
//! refused unsafe names when decoded, every directory on the way is one this
//! restore created or found to be a real directory, and nothing is opened
//! through a symlink. Metadata is applied after content, and a directory's
//! after all its entries, so that its mtime and permissions stick.
//!
//! [`restore`] finds the starting tree in the snapshot, then one thread
//! walks the trees while writer threads fetch the blobs of regular files
//! and write them. The parts, one module each:
//!
//! - `walk`: the [`Restorer`], walking the trees one entry at a time on a
//!   stack of its own: selection by the include and exclude patterns,
//!   directories left pending until something below them is selected, the
//!   memo of subtrees that select nothing, and the depth bound.
//! - `path_buffer`: the paths the walk extends by a name on the way down
//!   and cuts back on the way up.
//! - `create`: directories, hard links, symlinks, FIFOs and devices
//!   created in the target, clearing only what may be cleared in the way.
//! - `file`: regular files: the queue to the writer threads, writing a
//!   file's blobs (leaving holes in sparse files) and verifying them.
//! - `open_dir`: restored directories whose metadata waits for everything
//!   written into them.
//! - `metadata`: owner, mode, extended attributes and times.
//! - `overwrite`: what `--overwrite` does with an entry already in the
//!   target, and the actions a restore reports.

mod create;
mod file;
mod metadata;
mod open_dir;
pub(crate) mod overwrite;
mod path_buffer;
#[cfg(test)]
mod tests;
mod walk;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::object::snapshot::Snapshot;
use crate::object::tree::{Node, NodeKind, Tree};
use crate::pattern::Patterns;
use crate::progress::Progress;
use crate::repository::Repository;
use file::{FileJob, FileOutcome, FileRestorer, FILE_QUEUE};
use overwrite::Overwrite;
use path_buffer::PathBuffer;
use walk::Restorer;

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Directory to restore into; created if missing.
    pub target: PathBuf,
    /// Path inside the snapshot to restore (`/home/me/src`); the whole
    /// snapshot when `None`. A directory's contents go into the target; any
    /// other entry goes into the target under its own name.
    pub subpath: Option<PathBuf>,
    /// Restore only entries these patterns select (and what they contain).
    pub includes: Vec<String>,
    /// Include patterns matched without regard to case.
    pub case_insensitive_includes: Vec<String>,
    /// Skip entries these patterns select (and what they contain).
    pub excludes: Vec<String>,
    /// Exclude patterns matched without regard to case.
    pub case_insensitive_excludes: Vec<String>,
    /// Report what would be restored without writing anything.
    pub dry_run: bool,
    /// Re-read every restored file and compare it with the stored blob ids.
    pub verify: bool,
    /// What to do with entries already in the target.
    pub overwrite: Overwrite,
    /// Remove what is in the target but not in the snapshot, in the
    /// directories restored below the snapshot's source paths.
    pub delete: bool,
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
    /// Entries already in the target and left as they were.
    pub skipped: u64,
    /// Entries removed from the target (with `delete`).
    pub deleted: u64,
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
/// 65,536 levels (`MAX_TREE_DEPTH`) is reported as an error, and so is a path
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
    let (tree, start_node, refused) = locate(repository, snapshot, options.subpath.as_deref())?;
    let in_snapshot = options.subpath.as_deref().unwrap_or(Path::new("/"));
    // A directory's entries go into the target; any other entry goes there
    // under its own name, as if the target were its parent.
    let start_node_is_dir = start_node.is_none();
    let (nodes, top_in_snapshot) = match start_node {
        None => (tree.nodes, in_snapshot),
        Some(node) => (vec![node], in_snapshot.parent().unwrap_or(Path::new("/"))),
    };
    // An incomplete snapshot lists directories it could not read as empty:
    // deleting what it does not hold would delete what was never read.
    if options.delete && snapshot.is_incomplete() {
        return Err(Error::DeleteRefused {
            reason: format!(
                "the snapshot is incomplete ({} paths could not be read when it was made), \
                 so what it lacks is not known to be gone",
                snapshot.unreadable.len()
            ),
        });
    }
    let includes = Patterns::new(&options.includes, &options.case_insensitive_includes)?;
    let excludes = Patterns::new(&options.excludes, &options.case_insensitive_excludes)?;
    if !options.dry_run {
        fs::create_dir_all(&options.target).map_err(|e| Error::io(&options.target, e))?;
    }
    let files = FileRestorer {
        repository,
        verify: options.verify,
        progress,
        is_root: nix::unistd::geteuid().is_root(),
        overwrite: options.overwrite,
        dry_run: options.dry_run,
        packs: repository.whole_packs(),
    };
    // Deleting is confined to the snapshot's source paths: restoring a
    // backup of /home/alice into / must not touch /etc.
    let delete = options.delete.then(|| walk::DeleteScope {
        top_in_snapshot: top_in_snapshot.to_path_buf(),
        sources: snapshot
            .paths
            .iter()
            .map(|p| PathBuf::from(OsStr::from_bytes(p)))
            .collect(),
        at_top: start_node_is_dir,
    });
    let workers = if options.dry_run {
        0
    } else {
        repository.reader_threads()
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
            delete,
        };
        let top_refused = refused.iter().map(|(name, _)| name.clone()).collect();
        restorer.report_refused(refused);
        let top_includes = restorer.includes.top_state(top_in_snapshot);
        let top_excludes = restorer.excludes.top_state(top_in_snapshot);
        restorer.walk(nodes, top_refused, top_includes, top_excludes);
        // Closing the queue lets the writers finish and stop.
        restorer.jobs = None;
        restorer.collect_outcomes(true);
        restorer.summary
    });
    Ok(summary)
}

pub(crate) use crate::repository::Refused;

/// Finds the tree to restore from: the root, or the entry at `subpath`.
/// Returns the directory's tree, or for a non-directory the node itself;
/// and the entries of that directory's tree that were refused.
pub(crate) fn locate(
    repository: &Repository,
    snapshot: &Snapshot,
    subpath: Option<&Path>,
) -> Result<(Tree, Option<Node>, Refused)> {
    let (mut tree, mut refused) = repository.read_tree_lenient(&snapshot.tree)?;
    let Some(subpath) = subpath else {
        return Ok((tree, None, refused));
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
            NodeKind::Directory { subtree } => {
                (tree, refused) = repository.read_tree_lenient(subtree)?;
            }
            _ if i + 1 == components.len() => return Ok((Tree::default(), Some(node), Vec::new())),
            _ => return Err(not_found()),
        }
    }
    Ok((tree, None, refused))
}
