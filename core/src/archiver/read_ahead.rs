//! Work done ahead of the walk, on every core: the entries of a directory
//! are examined in parallel (lstat, excludes, extended attributes), and
//! its small files are read, cut and hashed in parallel, in waves. The
//! walk then only looks their blobs up and queues them, in name order.
//!
//! Most files of a typical tree are far smaller than one chunk: read one
//! at a time on the walk's thread, their system calls and hashing left the
//! other core idle. A wave holds at most [`WAVE_BYTES`] and ends before a
//! directory, so read-ahead memory is bounded and never held while the
//! walk descends.

use std::ffi::OsString;
use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rayon::prelude::*;

use super::exclude::Excluder;
use super::file::{looks_unchanged, open_source};
use super::node::read_xattrs;
use super::walk::Listed;
use crate::id::BlobId;
use crate::object::blob::BlobType;
use crate::object::tree::{Tree, Xattr};
use crate::pattern::MatchState;
use crate::repository::Repository;

/// Names of one directory examined at once at most: bounds the memory a
/// huge directory takes while keeping both cores busy. A group also ends
/// after the first name that may be a directory (see [`group_end`]).
pub(super) const NAMES_PER_GROUP: usize = 1024;

/// Fewer names (or files to read) than this are handled on the walk's
/// thread: handing them to the pool costs more than it saves.
const PARALLEL_FROM: usize = 4;

/// Content bytes one wave reads ahead at most.
pub(super) const WAVE_BYTES: u64 = 8 << 20;

/// Files one wave reads ahead at most.
pub(super) const WAVE_FILES: usize = 256;

/// Where the group of names that starts `names` ends: after
/// [`NAMES_PER_GROUP`] names, or after the first that may be a directory.
/// What is examined after a directory would otherwise wait for the walk of
/// its whole subtree, and be stale by the time the walk reaches it.
pub(super) fn group_end(names: &[Listed]) -> usize {
    let limit = names.len().min(NAMES_PER_GROUP);
    names[..limit]
        .iter()
        .position(|n| n.may_be_dir)
        .map_or(limit, |at| at + 1)
}

/// One directory entry as the examination found it.
pub(super) struct Examined {
    pub(super) name: OsString,
    pub(super) path: PathBuf,
    /// Its lstat, or why it failed.
    pub(super) meta: io::Result<Metadata>,
    /// Its exclude state, for its own entries if it is a directory.
    pub(super) state: MatchState,
    /// Whether the excludes leave it out.
    pub(super) excluded: bool,
    /// Its extended attributes, read for included regular files.
    pub(super) xattrs: Option<Vec<Xattr>>,
}

impl Examined {
    fn is_dir(&self) -> bool {
        matches!(&self.meta, Ok(meta) if meta.is_dir())
    }
}

/// A small file read whole, cut and hashed ahead of the walk.
pub(super) struct ReadAhead {
    /// Its chunks, sharing one buffer.
    pub(super) chunks: Vec<Bytes>,
    /// Their ids.
    pub(super) ids: Vec<BlobId>,
    /// The file's metadata once read, to notice writes during the read.
    pub(super) after: Metadata,
}

impl ReadAhead {
    /// Bytes read.
    pub(super) fn size(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }
}

/// What the examination and read-ahead need to know of the backup.
pub(super) struct Examiner<'a> {
    pub(super) repository: &'a Repository,
    pub(super) excluder: &'a Excluder,
    /// The parent snapshot's tree of this directory, if any.
    pub(super) parent_tree: Option<&'a Tree>,
    /// Read every file, even those unchanged since the parent.
    pub(super) force: bool,
}

impl Examiner<'_> {
    /// Examines `names` of the directory `dir` (whose exclude state is
    /// `state`) in parallel, keeping their order.
    pub(super) fn examine(
        &self,
        dir: &Path,
        state: &MatchState,
        names: Vec<Listed>,
    ) -> Vec<Examined> {
        let examine_one = |Listed { name, .. }| {
            let path = dir.join(&name);
            let meta = std::fs::symlink_metadata(&path);
            let state = self.excluder.child(state, name.as_bytes());
            let excluded = match &meta {
                Ok(meta) => self.excluder.excludes(&state, &path, meta),
                Err(_) => false,
            };
            let xattrs = match &meta {
                Ok(meta) if meta.is_file() && !excluded => Some(read_xattrs(&path)),
                _ => None,
            };
            Examined {
                name,
                path,
                meta,
                state,
                excluded,
                xattrs,
            }
        };
        if names.len() < PARALLEL_FROM {
            names.into_iter().map(examine_one).collect()
        } else {
            names.into_par_iter().map(examine_one).collect()
        }
    }

    /// Reads ahead the small files of `entries[start..end]` and returns
    /// `end` with the content read, by entry: the wave runs up to the next
    /// directory (or is that directory alone) and stops at
    /// [`WAVE_BYTES`] or [`WAVE_FILES`].
    pub(super) fn read_wave(
        &self,
        entries: &[Examined],
        start: usize,
    ) -> (usize, Vec<Option<io::Result<ReadAhead>>>) {
        if entries[start].is_dir() {
            return (start + 1, vec![None]);
        }
        let mut end = start;
        let mut bytes = 0u64;
        let mut files = 0usize;
        let mut wanted = Vec::new();
        while end < entries.len() && !entries[end].is_dir() {
            let entry = &entries[end];
            let read = self.reads_ahead(entry);
            if read {
                let len = entry.meta.as_ref().map_or(0, Metadata::len);
                if files > 0 && (bytes + len > WAVE_BYTES || files == WAVE_FILES) {
                    break;
                }
                bytes += len;
                files += 1;
            }
            wanted.push(read);
            end += 1;
        }
        let read_one = |(entry, read): (&Examined, bool)| {
            let meta = entry.meta.as_ref().ok()?;
            read.then(|| read_small(self.repository, &entry.path, meta))
                .and_then(Result::transpose)
        };
        let entries = &entries[start..end];
        let content = if files < PARALLEL_FROM {
            entries.iter().zip(wanted).map(read_one).collect()
        } else {
            entries.par_iter().zip(wanted).map(read_one).collect()
        };
        (end, content)
    }

    /// Whether `entry` is a small regular file that the walk will read.
    fn reads_ahead(&self, entry: &Examined) -> bool {
        let Ok(meta) = &entry.meta else {
            return false;
        };
        let max = u64::from(self.repository.chunker().params().max_bytes);
        let unchanged = || {
            let parent = self.parent_tree.and_then(|t| t.find(entry.name.as_bytes()));
            looks_unchanged(parent, meta)
        };
        meta.is_file()
            && !entry.excluded
            && meta.len() <= max
            // A file with several links is read once, by the walk.
            && meta.nlink() == 1
            && (self.force || !unchanged())
    }
}

/// Reads, cuts and hashes a small file. `None` if it has grown since it
/// was listed: the walk then streams it like any large file, and a wave
/// never holds more than the listed sizes.
fn read_small(
    repository: &Repository,
    path: &Path,
    meta: &Metadata,
) -> io::Result<Option<ReadAhead>> {
    let file = open_source(path)?;
    let listed = meta.len();
    let mut buffer = Vec::with_capacity(listed as usize + 1);
    (&file).take(listed + 1).read_to_end(&mut buffer)?;
    if buffer.len() as u64 > listed {
        return Ok(None);
    }
    let after = file.metadata()?;
    let chunks = repository.chunker().split(Bytes::from(buffer));
    let ids = chunks
        .iter()
        .map(|c| repository.blob_id(BlobType::Data, c))
        .collect();
    Ok(Some(ReadAhead { chunks, ids, after }))
}
