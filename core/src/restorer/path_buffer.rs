//! The paths the walk is at: one buffer each, extended by a name on the
//! way down and cut back on the way up.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path the walk extends by one name on the way down and cuts back on
/// the way up: one buffer however deep the tree, where a path per level
/// would take memory quadratic in the depth. A directory's path is a
/// prefix of its entries' paths, so a level needs only its length.
pub(super) struct PathBuffer {
    bytes: Vec<u8>,
}

impl PathBuffer {
    pub(super) fn new(base: &Path) -> PathBuffer {
        PathBuffer {
            bytes: base.as_os_str().as_bytes().to_vec(),
        }
    }

    pub(super) fn push(&mut self, name: &[u8]) {
        if !self.bytes.is_empty() && !self.bytes.ends_with(b"/") {
            self.bytes.push(b'/');
        }
        self.bytes.extend_from_slice(name);
    }

    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
    }

    /// The path as it was when it was `len` bytes long.
    pub(super) fn prefix(&self, len: usize) -> &Path {
        Path::new(OsStr::from_bytes(&self.bytes[..len]))
    }

    pub(super) fn as_path(&self) -> &Path {
        self.prefix(self.len())
    }
}
