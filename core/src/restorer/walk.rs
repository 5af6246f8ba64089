//! The walk through the snapshot's trees: which entries are selected, and
//! which directories exist.
//!
//! The walk keeps the directories it is in on a stack of its own, so that a
//! hostile tree thousands of levels deep cannot overflow the thread's
//! stack. An unselected directory is only pending: it is created, with the
//! pending ones above it, once something below it is selected. A pending
//! subtree that selected nothing is remembered, so that a subtree shared by
//! many directories is not searched again and again.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};

use super::file::{FileJob, FileOutcome, FileRestorer};
use super::open_dir::{DirKey, OpenDir};
use super::overwrite::{Action, Reason};
use super::path_buffer::PathBuffer;
use super::{RestoreOptions, RestoreSummary};
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::object::tree::{Node, NodeKind};
use crate::pattern::{MatchState, Patterns};

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
pub(super) struct BarrenKey {
    subtree: BlobId,
    includes: MatchState,
    excludes: MatchState,
}

/// Whether a directory level on the walk's stack exists yet.
pub(super) enum Level {
    /// Created (in a dry run: would be); its metadata waits as this key,
    /// if it does.
    Created(Option<DirKey>),
    /// Not created, because it does not match the includes and nothing
    /// below it has been selected yet: it is created, with the pending
    /// levels above it, once something is, and dropped if nothing is.
    Pending { node: Box<Node>, subtree: BlobId },
}

/// One directory the walk is in.
pub(super) struct Frame {
    /// Its entries not walked yet.
    nodes: std::vec::IntoIter<Node>,
    /// Whether it, or a directory above it, matched an include: then
    /// everything below is selected and includes are not matched.
    selected: bool,
    /// How far the include patterns got along its path.
    includes: MatchState,
    /// How far the exclude patterns got along its path.
    excludes: MatchState,
    pub(super) level: Level,
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

/// The walk: selection, directories, links and special files.
pub(super) struct Restorer<'a, 'r> {
    pub(super) files: &'a FileRestorer<'r>,
    pub(super) options: &'a RestoreOptions,
    pub(super) includes: Patterns,
    pub(super) excludes: Patterns,
    pub(super) summary: RestoreSummary,
    /// First restored path of each multiply-linked inode, by (device, inode).
    pub(super) hardlinks: HashMap<(u64, u64), PathBuf>,
    /// Open while the walk runs.
    pub(super) jobs: Option<SyncSender<FileJob>>,
    pub(super) outcomes: Receiver<FileOutcome>,
    /// Directories whose metadata is not applied yet: those the walk is in,
    /// and those with files still queued.
    pub(super) open_dirs: HashMap<DirKey, OpenDir>,
    pub(super) next_dir: DirKey,
    /// The directories the walk is in, outermost first. The first
    /// `created` of them exist; the rest are pending.
    pub(super) stack: Vec<Frame>,
    pub(super) created: usize,
    /// Where the entry being walked goes, and its path below the restored
    /// subtree (what is reported).
    pub(super) on_disk: PathBuffer,
    pub(super) in_restore: PathBuffer,
    /// Subtrees known to select nothing when met in a given state.
    pub(super) barren: HashSet<BarrenKey>,
    /// Directory levels the walk enters at most: [`MAX_TREE_DEPTH`](super::MAX_TREE_DEPTH).
    pub(super) max_depth: usize,
    /// Where `--delete` removes what the snapshot does not hold.
    pub(super) delete: Option<DeleteScope>,
}

/// Where `--delete` may remove entries: in restored directories at or
/// below one of the snapshot's source paths.
pub(super) struct DeleteScope {
    /// The snapshot path the target stands for.
    pub(super) top_in_snapshot: PathBuf,
    /// The snapshot's source paths.
    pub(super) sources: Vec<PathBuf>,
    /// Whether the target itself is a restored directory (not the parent
    /// of one file restored into it).
    pub(super) at_top: bool,
}

impl DeleteScope {
    /// Whether the restored directory at `in_restore` (below the target)
    /// is at or below a source path.
    fn covers(&self, in_restore: &Path) -> bool {
        let relative = in_restore.strip_prefix("/").unwrap_or(in_restore);
        let in_snapshot = self.top_in_snapshot.join(relative);
        self.sources
            .iter()
            .any(|source| in_snapshot.starts_with(source))
    }
}

impl Restorer<'_, '_> {
    pub(super) fn report(&mut self, path: &Path, error: &Error) {
        self.files.progress.warning(path, &error.to_string());
        self.summary.errors += 1;
    }

    /// Reports each entry of the directory the buffers hold that its tree
    /// refused (an unsafe or repeated name): not restored, and an error.
    pub(super) fn report_refused(&mut self, refused: super::Refused) {
        let dir = self.in_restore.as_path().display().to_string();
        for (name, error) in refused {
            // Shown, not joined: joining `/x` or `..` would change the path.
            let shown = format!(
                "{}/{}",
                dir.trim_end_matches('/'),
                String::from_utf8_lossy(&name)
            );
            self.report(Path::new(&shown), &error);
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
    /// `top_refused` are the names of the top directory's entries its tree
    /// refused: in the snapshot, so never deleted.
    pub(super) fn walk(
        &mut self,
        nodes: Vec<Node>,
        top_refused: Vec<Vec<u8>>,
        includes: MatchState,
        excludes: MatchState,
    ) {
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
        if self.includes.is_empty() && self.delete.as_ref().is_some_and(|d| d.at_top) {
            let frame = self.stack.last().expect("just pushed");
            let mut names: HashSet<Vec<u8>> = frame
                .nodes
                .as_slice()
                .iter()
                .map(|n| n.name.clone())
                .collect();
            names.extend(top_refused);
            let excludes = frame.excludes.clone();
            self.delete_extra(&names, &excludes);
        }
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
        let is_dir = matches!(node.kind, NodeKind::Directory { .. });
        let excludes = self.excludes.descend(&parent.excludes, &node.name);
        if self.excludes.is_match(&excludes, is_dir) {
            return Ok(());
        }
        let (selected, includes) = if parent.selected || self.includes.is_empty() {
            (true, MatchState::default())
        } else {
            let includes = self.includes.descend(&parent.includes, &node.name);
            if self.includes.is_match(&includes, is_dir) {
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
        let (tree, refused) = self.files.repository.read_tree_lenient(&key.subtree)?;
        let refused_names: Vec<Vec<u8>> = refused.iter().map(|(name, _)| name.clone()).collect();
        if selected {
            self.report_refused(refused);
        }
        let level = if selected {
            if !self.create_pending() {
                return Ok(());
            }
            let (on_disk_len, in_restore_len) = (self.on_disk.len(), self.in_restore.len());
            let created = Level::Created(self.create_dir(node, on_disk_len, in_restore_len)?);
            if self.delete.is_some() {
                let mut names: HashSet<Vec<u8>> =
                    tree.nodes.iter().map(|n| n.name.clone()).collect();
                names.extend(refused_names);
                self.delete_extra(&names, &key.excludes);
            }
            created
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
        let reason = match super::file::existing(on_disk)? {
            Some(meta) if meta.is_dir() => Reason::Exists,
            Some(_) => Reason::Replaced,
            None => Reason::New,
        };
        self.make_dir(on_disk)?;
        let on_disk = on_disk.to_path_buf();
        let in_restore = self.in_restore.prefix(in_restore_len).to_path_buf();
        self.summary.dirs += 1;
        self.files
            .progress
            .restored(&in_restore, Action::Write(reason));
        let parent = match self.created.checked_sub(1).map(|i| &self.stack[i].level) {
            Some(Level::Created(key)) => *key,
            _ => None,
        };
        Ok(self.open_dir(node, on_disk, in_restore, parent))
    }

    /// With `--delete`, removes from the directory the buffers hold what
    /// is not among `names` (its entries in the snapshot, refused ones
    /// included) and that no exclude pattern matches (from the directory's
    /// state `excludes`): the user left those out of the restore, not out
    /// of the target. Never crosses into another file system: a directory
    /// that is a mount point is not cleaned, and a directory to delete that
    /// holds another file system, or something an exclude pattern matches,
    /// is kept and reported.
    fn delete_extra(&mut self, names: &HashSet<Vec<u8>>, excludes: &MatchState) {
        use std::os::unix::fs::MetadataExt;
        let in_restore = self.in_restore.as_path().to_path_buf();
        if !self.delete.as_ref().is_some_and(|d| d.covers(&in_restore)) {
            return;
        }
        let dir = self.on_disk.as_path().to_path_buf();
        let device = |path: &Path| std::fs::symlink_metadata(path).map(|m| m.dev()).ok();
        let here = device(&dir);
        if here.is_some() && here != device(&dir.join("..")) && dir != self.options.target {
            let error = Error::io(
                &dir,
                std::io::Error::other("a mount point: --delete does not clean other file systems"),
            );
            return self.files.progress.warning(&in_restore, &error.to_string());
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // In a dry run a directory to create is not there yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => return self.report(&in_restore, &Error::io(&dir, e)),
        };
        let mut doomed = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return self.report(&in_restore, &Error::io(&dir, e)),
            };
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            if names.contains(name) {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let state = self.excludes.descend(excludes, name);
            if self.excludes.is_match(&state, is_dir) {
                continue;
            }
            let shown = in_restore.join(std::ffi::OsStr::from_bytes(name));
            if is_dir {
                let kept = self.keeps(&entry.path(), state, here);
                if let Some(why) = kept {
                    self.files
                        .progress
                        .warning(&shown, &format!("not deleted: {why}"));
                    continue;
                }
            }
            doomed.push((entry.path(), shown, is_dir));
        }
        doomed.sort();
        for (path, shown, is_dir) in doomed {
            self.files.progress.restored(&shown, Action::Delete);
            if self.options.dry_run {
                self.summary.deleted += 1;
                continue;
            }
            let removed = if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Ok(()) => self.summary.deleted += 1,
                Err(e) => self.report(&shown, &Error::io(&path, e)),
            }
        }
    }

    /// Why the directory `dir`, not in the snapshot, must not be deleted
    /// whole: something below it matches an exclude pattern (the walk
    /// starts from `state`, the directory's own), or another file system
    /// is mounted at or below it (`device` is its parent's). Walks it
    /// without following symlinks.
    fn keeps(&self, dir: &Path, state: MatchState, device: Option<u64>) -> Option<&'static str> {
        use std::os::unix::fs::MetadataExt;
        let mut stack = vec![(dir.to_path_buf(), state)];
        while let Some((dir, state)) = stack.pop() {
            if std::fs::symlink_metadata(&dir).map(|m| m.dev()).ok() != device {
                return Some("another file system is mounted there");
            }
            if !self.excludes.can_match_below(&state) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return Some("it could not be read to check it against the excludes");
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let child = self.excludes.descend(&state, name.as_encoded_bytes());
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if self.excludes.is_match(&child, is_dir) {
                    return Some("an exclude pattern matches something inside it");
                }
                if is_dir {
                    stack.push((entry.path(), child));
                }
            }
        }
        None
    }

    pub(super) fn count(&mut self, node: &Node) {
        match &node.kind {
            NodeKind::File { size, .. } => {
                self.summary.files += 1;
                self.summary.bytes = self.summary.bytes.saturating_add(*size);
            }
            NodeKind::Directory { .. } => self.summary.dirs += 1,
            _ => self.summary.others += 1,
        }
    }
}
