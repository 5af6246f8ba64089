//! Creating entries in the target: directories, hard links, symlinks,
//! FIFOs and devices.
//!
//! Nothing is created through what is in the way: where a directory goes,
//! a real directory already there is kept; anything else in the way is
//! removed first, an empty directory included, but a full directory never
//! is. Regular files go to the writer threads, except hard-linked ones:
//! their first name is written here and the others are linked to it.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::overwrite::{plan, Action, Overwrite, Plan, Reason};
use super::walk::{Level, Restorer};
use crate::error::{Error, Result};
use crate::object::tree::{Node, NodeKind};

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

/// Creates an entry with `create`. If something is in the way, it is
/// cleared as [`clear_for`] allows and the creation tried once more: in a
/// fresh target nothing is ever in the way, and the `stat` is saved.
pub(super) fn create_or_replace<T>(
    path: &Path,
    create: impl Fn() -> io::Result<T>,
) -> io::Result<T> {
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            clear_for(path, false)?;
            create()
        }
        other => other,
    }
}

impl Restorer<'_, '_> {
    /// Restores a selected entry other than a directory into the directory
    /// on top of the stack, which exists, as `--overwrite` says.
    pub(super) fn restore_leaf(&mut self, node: Node) -> Result<()> {
        let dir_key = match self.stack.last().map(|frame| &frame.level) {
            Some(Level::Created(key)) => *key,
            _ => None,
        };
        let on_disk = self.on_disk.as_path().to_path_buf();
        let in_restore = self.in_restore.as_path().to_path_buf();
        let is_file = matches!(node.kind, NodeKind::File { .. });
        if is_file && !node.is_hardlinked() {
            if self.options.dry_run {
                let file = self.files.restore_file(&node, &on_disk, &in_restore)?;
                self.count_file(&file);
                return Ok(());
            }
            return self.queue_file(node, on_disk, in_restore, dir_key);
        }
        let on_disk = &on_disk;
        if is_file {
            let key = (node.device, node.inode);
            if let Some(first) = self.hardlinks.get(&key).cloned() {
                return self.restore_hard_link(&node, &first, on_disk, &in_restore);
            }
            // Its first name, written here so the others can link to it:
            // once it holds the snapshot's content. If it failed, or a file
            // kept in its place differs, the next name is written whole.
            let file = self.files.restore_file(&node, on_disk, &in_restore)?;
            if file.holds_content {
                self.hardlinks.insert(key, on_disk.clone());
            }
            self.count_file(&file);
            return Ok(());
        }
        let existing = super::file::existing(on_disk)?;
        let action = match plan(self.options.overwrite, &node, on_disk, existing.as_ref()) {
            Plan::Act(action) => action,
            Plan::CompareContent => unreachable!("only regular files have content"),
        };
        self.files.progress.restored(&in_restore, action);
        if let Action::Skip(reason) = action {
            self.summary.skipped += 1;
            if reason == Reason::Unchanged && !self.options.dry_run {
                self.files.apply_metadata(&node, on_disk)?;
            }
            return Ok(());
        }
        if self.options.dry_run {
            self.count(&node);
            return Ok(());
        }
        match &node.kind {
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
            NodeKind::Directory { .. } | NodeKind::File { .. } => {
                unreachable!("directories are entered and files written elsewhere")
            }
        }
        self.count(&node);
        self.files.apply_metadata(&node, on_disk)
    }

    /// Restores a second name of a hard-linked file whose first name is
    /// `first`: left alone if it already is that file (unless
    /// `--overwrite always`), otherwise linked as `--overwrite` says.
    fn restore_hard_link(
        &mut self,
        node: &Node,
        first: &Path,
        on_disk: &Path,
        in_restore: &Path,
    ) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let existing = super::file::existing(on_disk)?;
        let same_file = existing.as_ref().is_some_and(|there| {
            fs::symlink_metadata(first)
                .is_ok_and(|f| (f.dev(), f.ino()) == (there.dev(), there.ino()))
        });
        let action = match (self.options.overwrite, same_file) {
            (Overwrite::Always, _) | (_, false) => {
                match plan(self.options.overwrite, node, on_disk, existing.as_ref()) {
                    Plan::Act(action) => action,
                    Plan::CompareContent => Action::Write(Reason::Changed),
                }
            }
            (_, true) => Action::Skip(Reason::Unchanged),
        };
        self.files.progress.restored(in_restore, action);
        if matches!(action, Action::Skip(_)) {
            self.summary.skipped += 1;
            return Ok(());
        }
        if !self.options.dry_run {
            create_or_replace(on_disk, || fs::hard_link(first, on_disk))
                .map_err(|e| Error::io(on_disk, e))?;
        }
        self.summary.files += 1;
        Ok(())
    }

    /// Creates a directory, or keeps a real one in the way, and makes it
    /// mode 0700 (whatever the umask) while entries are restored into it;
    /// its real mode is applied once they are.
    pub(super) fn make_dir(&self, path: &Path) -> Result<()> {
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
