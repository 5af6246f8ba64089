//! Saving one regular file: reuse the parent's content when the file is
//! unchanged (and every blob still readable), read each hard-linked inode
//! once, and notice a file written to while it was read.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::node::timestamp;
use super::store::{lock, store_chunks};
use super::Archiver;
use crate::error::Result;
use crate::id::BlobId;
use crate::object::tree::{Node, NodeKind};

impl Archiver<'_, '_> {
    /// Archives a regular file's content, reusing the parent's when the file
    /// is unchanged. `None` when it could not be read.
    pub(super) fn archive_file(
        &mut self,
        path: &Path,
        meta: &Metadata,
        parent: Option<&Node>,
    ) -> Result<Option<NodeKind>> {
        let sparse = meta.blocks().saturating_mul(512) < meta.len();
        if let Some(Node {
            kind: NodeKind::File { size, content, .. },
            mtime,
            ctime,
            inode,
            ..
        }) = parent
        {
            let unchanged = *size == meta.len()
                && *mtime == timestamp(meta.mtime(), meta.mtime_nsec())
                && *ctime == timestamp(meta.ctime(), meta.ctime_nsec())
                && *inode == meta.ino();
            // Reuse the parent's content only if it is all still indexed: a
            // snapshot must never name a blob the repository cannot find.
            if unchanged && !self.force && lock(self.writer).contains_all(content)? {
                self.summary.files_unmodified += 1;
                self.progress.bytes_processed(*size);
                self.progress.file_finished(path);
                return Ok(Some(NodeKind::File {
                    size: *size,
                    content: content.clone(),
                    sparse,
                }));
            }
        }
        self.progress.file_started(path);
        let link_key = (meta.dev(), meta.ino());
        let known_link = (meta.nlink() > 1)
            .then(|| self.hardlinks.get(&link_key))
            .flatten();
        let (size, content) = match known_link {
            Some((size, content)) => (*size, content.clone()),
            None => match self.read_content(path, meta)? {
                Ok(read) => read,
                Err(e) => {
                    self.mark_unreadable(path, &e);
                    return Ok(None);
                }
            },
        };
        if meta.nlink() > 1 {
            self.hardlinks.insert(link_key, (size, content.clone()));
        }
        if matches!(parent.map(|p| &p.kind), Some(NodeKind::File { .. })) {
            self.summary.files_changed += 1;
        } else {
            self.summary.files_new += 1;
        }
        self.progress.file_finished(path);
        Ok(Some(NodeKind::File {
            size,
            content,
            sparse,
        }))
    }

    /// Reads, chunks and stores a file. The outer error is the repository's
    /// (fatal); the inner one is the source file's (the file is skipped).
    /// A file whose size or mtime differs after the read from what the walk
    /// saw (`meta`) was written to meanwhile: that is reported, and what
    /// was read is stored.
    pub(super) fn read_content(
        &mut self,
        path: &Path,
        meta: &Metadata,
    ) -> Result<io::Result<(u64, Vec<BlobId>)>> {
        let file = match open_source(path) {
            Ok(file) => file,
            Err(e) => return Ok(Err(e)),
        };
        let repository = self.repository;
        let buffer = std::mem::take(&mut self.chunk_buffer);
        let mut chunks = repository.chunker().stream_with_buffer(&file, buffer);
        let progress = self.progress;
        let bytes_read = &mut self.summary.bytes_read;
        let stored = store_chunks(self.writer, chunks.by_ref(), |bytes| {
            *bytes_read += bytes;
            progress.bytes_processed(bytes);
        });
        // The buffer comes back even when storing failed, for the next file.
        self.chunk_buffer = chunks.into_buffer();
        let (size, content) = match stored? {
            Ok(stored) => stored,
            Err(e) => return Ok(Err(e)),
        };
        let after = match file.metadata() {
            Ok(after) => after,
            Err(e) => return Ok(Err(e)),
        };
        let unchanged = size == meta.len()
            && after.len() == meta.len()
            && (after.mtime(), after.mtime_nsec()) == (meta.mtime(), meta.mtime_nsec());
        if !unchanged {
            self.progress.warning(
                path,
                &format!(
                    "changed while being read ({} bytes when listed, {} read, {} now); \
                     the snapshot holds what was read",
                    meta.len(),
                    size,
                    after.len()
                ),
            );
        }
        Ok(Ok((size, content)))
    }
}

/// Opens a source file without following a symlink swapped in since the
/// walk saw it, and without touching its access time where allowed.
pub(super) fn open_source(path: &Path) -> io::Result<File> {
    let open = |flags: i32| {
        fs::OpenOptions::new()
            .read(true)
            // O_NONBLOCK: if a FIFO was swapped in since the walk saw a
            // file, the open must not wait for a writer. Reads of regular
            // files ignore it.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | flags)
            .open(path)
    };
    let file = match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0)?,
        other => other?,
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(
            "changed from a regular file during backup",
        ));
    }
    Ok(file)
}
