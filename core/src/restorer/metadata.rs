//! Metadata of restored entries: owner, mode, extended attributes and
//! times, set through the open file for a regular file and by path for
//! anything else, never following a symlink.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use filetime::FileTime;
use xattr::FileExt;

use super::file::FileRestorer;
use crate::error::{Error, Result};
use crate::object::tree::{Node, NodeKind, Timestamp};

fn file_time(t: Timestamp) -> FileTime {
    FileTime::from_unix_time(t.secs, t.nanos)
}

impl FileRestorer<'_> {
    /// [`FileRestorer::apply_metadata`] through an open regular file: no
    /// path is looked up again.
    pub(super) fn apply_file_metadata(&self, node: &Node, file: &File, path: &Path) -> Result<()> {
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
    pub(super) fn apply_metadata(&self, node: &Node, path: &Path) -> Result<()> {
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
