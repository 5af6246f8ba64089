//! Saving one regular file: reuse the parent's content when the file is
//! unchanged (and every blob still readable), read each hard-linked inode
//! once, and notice a file written to while it was read.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::node::timestamp;
use super::read_ahead::ReadAhead;
use super::store::{lock, store_chunks};
use super::Archiver;
use crate::error::Result;
use crate::id::BlobId;
use crate::object::blob::BlobType;
use crate::object::tree::{Node, NodeKind};

impl Archiver<'_, '_> {
    /// Archives a regular file's content, reusing the parent's when the file
    /// is unchanged. `None` when it could not be read.
    ///
    /// `read_ahead` is the content if it was read ahead of the walk (see
    /// [`super::read_ahead`]).
    pub(super) fn archive_file(
        &mut self,
        path: &Path,
        meta: &Metadata,
        parent: Option<&Node>,
        read_ahead: Option<io::Result<ReadAhead>>,
    ) -> Result<Option<NodeKind>> {
        let sparse = meta.blocks().saturating_mul(512) < meta.len();
        if let Some(Node {
            kind: NodeKind::File { size, content, .. },
            ..
        }) = parent
        {
            // Reuse the parent's content only if it is all still indexed: a
            // snapshot must never name a blob the repository cannot find.
            if read_ahead.is_none()
                && !self.force
                && looks_unchanged(parent, meta)
                && lock(self.writer).contains_all(content)?
            {
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
        let read = match (known_link, read_ahead) {
            (Some((size, content)), _) => Ok((*size, content.clone())),
            (None, Some(Ok(read))) => Ok(self.store_read_ahead(path, meta, read)?),
            (None, Some(Err(e))) => Err(e),
            (None, None) => self.read_content(path, meta)?,
        };
        let (size, content) = match read {
            Ok(read) => read,
            Err(e) => {
                self.mark_unreadable(path, &e);
                return Ok(None);
            }
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
        let chunks = self.repository.chunker().stream(&file);
        let progress = self.progress;
        let bytes_read = &mut self.summary.bytes_read;
        let stored = store_chunks(self.writer, chunks, |bytes| {
            *bytes_read += bytes;
            progress.bytes_processed(bytes);
        });
        let (size, content) = match stored? {
            Ok(stored) => stored,
            Err(e) => return Ok(Err(e)),
        };
        let after = match file.metadata() {
            Ok(after) => after,
            Err(e) => return Ok(Err(e)),
        };
        self.warn_if_changed(path, meta, size, &after);
        Ok(Ok((size, content)))
    }

    /// Queues the blobs of a file read ahead of the walk; errors are the
    /// repository's.
    fn store_read_ahead(
        &mut self,
        path: &Path,
        meta: &Metadata,
        read: ReadAhead,
    ) -> Result<(u64, Vec<BlobId>)> {
        let size = read.size();
        lock(self.writer).add_identified(BlobType::Data, &read.ids, read.chunks)?;
        self.summary.bytes_read += size;
        self.progress.bytes_processed(size);
        self.warn_if_changed(path, meta, size, &read.after);
        Ok((size, read.ids))
    }

    /// Reports a file whose size or mtime after the read (`after`) differs
    /// from what the walk saw (`meta`): it was written to meanwhile, and
    /// what was read is stored.
    fn warn_if_changed(&self, path: &Path, meta: &Metadata, size: u64, after: &Metadata) {
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
    }
}

/// Whether a file's metadata equals its entry in the parent snapshot
/// (type, size, mtime, ctime, inode): its content is then taken to be the
/// parent's.
pub(super) fn looks_unchanged(parent: Option<&Node>, meta: &Metadata) -> bool {
    match parent {
        Some(Node {
            kind: NodeKind::File { size, .. },
            mtime,
            ctime,
            inode,
            ..
        }) => {
            *size == meta.len()
                && *mtime == timestamp(meta.mtime(), meta.mtime_nsec())
                && *ctime == timestamp(meta.ctime(), meta.ctime_nsec())
                && *inode == meta.ino()
        }
        _ => false,
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
