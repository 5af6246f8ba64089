//! What a backup leaves out (SPEC.md §16).
//!
//! Patterns are cairn's one dialect ([`crate::pattern`]), the same as
//! restore's, matched against each entry's absolute path as the walk goes
//! down: a directory's match state gives its children's.

use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::Result;
use crate::pattern::{MatchState, Patterns};

/// The tag of a cache directory, from the Cache Directory Tagging
/// Specification (bford.info/cachedir).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// What to leave out of a backup.
#[derive(Clone, Debug, Default)]
pub struct ExcludeOptions {
    /// Patterns, matched case-sensitively.
    pub patterns: Vec<String>,
    /// Patterns, matched without regard to case.
    pub case_insensitive_patterns: Vec<String>,
    /// Leave out directories holding a valid `CACHEDIR.TAG`.
    pub caches: bool,
    /// Leave out directories holding an entry of one of these names.
    pub if_present: Vec<String>,
    /// Leave out regular files larger than this many bytes.
    pub larger_than: Option<u64>,
    /// Do not descend into directories on another file system than their
    /// source path; the mount point itself is recorded, empty.
    pub one_file_system: bool,
}

/// Decides, entry by entry, what [`ExcludeOptions`] leave out.
pub struct Excluder {
    patterns: Patterns,
    options: ExcludeOptions,
}

impl Excluder {
    /// Compiles the options; errors on an invalid pattern, naming it.
    pub fn new(options: &ExcludeOptions) -> Result<Excluder> {
        Ok(Excluder {
            patterns: Patterns::new(&options.patterns, &options.case_insensitive_patterns)?,
            options: options.clone(),
        })
    }

    /// The state at the absolute path `path`, such as a source path.
    pub fn state_of(&self, path: &Path) -> MatchState {
        self.patterns.state_of(path)
    }

    /// The state at the entry `name` of the directory whose state is `dir`.
    pub fn child(&self, dir: &MatchState, name: &[u8]) -> MatchState {
        self.patterns.descend(dir, name)
    }

    /// Whether the entry at absolute `path`, whose state is `state` and
    /// metadata `meta`, is left out: by a pattern, by its size, or as a
    /// tagged directory.
    pub fn excludes(&self, state: &MatchState, path: &Path, meta: &Metadata) -> bool {
        let is_dir = meta.is_dir();
        // Only the entry itself: the walk never enters an excluded
        // directory, and what lies above a source path is never excluded.
        if self.patterns.is_match(state, is_dir) {
            return true;
        }
        if let Some(limit) = self.options.larger_than {
            if meta.is_file() && meta.len() > limit {
                return true;
            }
        }
        is_dir && self.is_tagged(path)
    }

    /// Whether a directory on `device` is a mount point not to descend into.
    pub fn stops_at(&self, meta: &Metadata, source_device: u64) -> bool {
        self.options.one_file_system && meta.is_dir() && meta.dev() != source_device
    }

    fn is_tagged(&self, dir: &Path) -> bool {
        if self
            .options
            .if_present
            .iter()
            .any(|name| fs::symlink_metadata(dir.join(name)).is_ok())
        {
            return true;
        }
        self.options.caches && has_cachedir_tag(dir)
    }
}

fn has_cachedir_tag(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    // Only a regular file counts; a FIFO planted there must not hang the
    // backup, nor a symlink lead elsewhere.
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join("CACHEDIR.TAG"))
        .and_then(|mut f| {
            if !f.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            f.read_exact(&mut head)
        })
        .is_ok()
        && head == CACHEDIR_SIGNATURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_case_and_anchoring() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/cache")).unwrap();
        std::fs::write(root.join("a/x.TMP"), b"").unwrap();
        std::fs::write(root.join("a/keep.txt"), b"").unwrap();
        let excluder = Excluder::new(&ExcludeOptions {
            patterns: vec!["*.log".into(), format!("{}/a/cache", root.display())],
            case_insensitive_patterns: vec!["*.tmp".into()],
            ..Default::default()
        })
        .unwrap();
        let excludes = |p: &str| {
            let path = root.join(p);
            let meta = std::fs::metadata(&path).unwrap();
            excluder.excludes(&excluder.state_of(&path), &path, &meta)
        };
        assert!(excludes("a/x.TMP"));
        assert!(excludes("a/cache"));
        assert!(!excludes("a/keep.txt"));
        // Stepping down name by name gives what the whole path gives.
        let a = excluder.state_of(&root.join("a"));
        let stepped = excluder.child(&a, b"x.TMP");
        let meta = std::fs::metadata(root.join("a/x.TMP")).unwrap();
        assert!(excluder.excludes(&stepped, &root.join("a/x.TMP"), &meta));
        assert!(Excluder::new(&ExcludeOptions {
            patterns: vec!["a[z-a]".into()],
            ..Default::default()
        })
        .is_err());
    }
}
