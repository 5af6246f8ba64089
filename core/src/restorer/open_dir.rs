//! Restored directories whose metadata waits: a directory's mode and
//! times are applied only once everything in it is written, its own
//! entries, its files queued for the writers and its subdirectories, so
//! that writing into it neither fails on its mode nor changes its mtime.

use std::path::PathBuf;

use super::walk::Restorer;
use crate::object::tree::Node;

/// Names an [`OpenDir`] for the life of one restore.
pub(super) type DirKey = u64;

/// A restored directory whose metadata waits until everything in it is
/// written: its own entries, the files queued for the writers, and its
/// subdirectories.
pub(super) struct OpenDir {
    node: Node,
    on_disk: PathBuf,
    in_restore: PathBuf,
    parent: Option<DirKey>,
    /// Files queued in it plus subdirectories not finished yet.
    pub(super) pending: usize,
    /// Whether the walk has been through all its entries.
    walked: bool,
}

impl Restorer<'_, '_> {
    /// Records a restored directory whose metadata must wait for what is
    /// written into it; `None` in a dry run, which applies no metadata.
    pub(super) fn open_dir(
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
    pub(super) fn close_dir(&mut self, key: DirKey) {
        if let Some(dir) = self.open_dirs.get_mut(&key) {
            dir.walked = true;
        }
        self.finish_dir_if_done(key);
    }

    /// One thing pending in a directory is done.
    pub(super) fn settle(&mut self, key: DirKey) {
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
}
