//! What a backup leaves out (SPEC.md §16).
//!
//! Patterns follow gitignore: `*`, `**`, `?` and `[classes]`; a pattern with
//! a leading or inner `/` is anchored at the file system root, any other
//! matches at any depth; `!` re-includes; a trailing `/` matches only
//! directories. Matching uses the `ignore` crate, with `/` as the root.

use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};

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
    patterns: Gitignore,
    case_insensitive: Gitignore,
    options: ExcludeOptions,
}

fn build(patterns: &[String], case_insensitive: bool) -> Result<Gitignore> {
    let mut builder = GitignoreBuilder::new("/");
    builder
        .case_insensitive(case_insensitive)
        .map_err(|e| Error::InvalidExcludes {
            reason: e.to_string(),
        })?;
    for pattern in patterns {
        builder
            .add_line(None, pattern)
            .map_err(|e| Error::InvalidPattern {
                pattern: pattern.clone(),
                reason: e.to_string(),
            })?;
    }
    builder.build().map_err(|e| Error::InvalidExcludes {
        reason: e.to_string(),
    })
}

impl Excluder {
    /// Compiles the options; errors on an invalid pattern.
    pub fn new(options: &ExcludeOptions) -> Result<Excluder> {
        Ok(Excluder {
            patterns: build(&options.patterns, false)?,
            case_insensitive: build(&options.case_insensitive_patterns, true)?,
            options: options.clone(),
        })
    }

    /// Whether the entry at absolute `path`, with metadata `meta`, is left
    /// out: by a pattern, by its size, or as a tagged directory.
    pub fn excludes(&self, path: &Path, meta: &Metadata) -> bool {
        let is_dir = meta.is_dir();
        // Only the entry itself: the walk never enters an excluded
        // directory, and what lies above a source path is never excluded.
        if self.patterns.matched(path, is_dir).is_ignore()
            || self.case_insensitive.matched(path, is_dir).is_ignore()
        {
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
    fn gitignore_semantics() {
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
        let meta = |p: &str| std::fs::metadata(root.join(p)).unwrap();
        assert!(excluder.excludes(&root.join("a/x.TMP"), &meta("a/x.TMP")));
        assert!(excluder.excludes(&root.join("a/cache"), &meta("a/cache")));
        assert!(!excluder.excludes(&root.join("a/keep.txt"), &meta("a/keep.txt")));
        assert!(Excluder::new(&ExcludeOptions {
            patterns: vec!["a[z-a]".into()],
            ..Default::default()
        })
        .is_err());
    }
}
