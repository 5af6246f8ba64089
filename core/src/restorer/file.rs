//! Regular files: queued by the walk, written by writer threads.
//!
//! The walk hands each regular file to a bounded queue, so files in
//! different directories are written at once; only the first name of a
//! hard-linked file is written by the walk itself. A writer fetches and
//! opens a file's blobs a batch at a time, writes them in order (seeking
//! past zeros in a sparse file), re-reads the file to verify it if asked,
//! and sends back what it did.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::create::create_or_replace;
use super::open_dir::DirKey;
use super::overwrite::{plan, Action, Overwrite, Plan, Reason};
use super::walk::Restorer;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::object::blob::BlobType;
use crate::object::tree::{Node, NodeKind};
use crate::progress::Progress;
use crate::repository::{PackCache, Repository};

/// What became of a regular file.
pub(super) struct RestoredFile {
    /// Bytes written (in a dry run, that would be).
    pub(super) bytes: u64,
    pub(super) verified: bool,
    /// Whether it was written, rather than left as it was.
    pub(super) written: bool,
    /// Whether the path now holds the snapshot's content: written, or
    /// left because it already did. Only such a file may be linked to as
    /// the first name of a hard-linked inode.
    pub(super) holds_content: bool,
}

/// Blobs of one file fetched and opened at once, in parallel.
const BLOBS_PER_BATCH: usize = 8;

/// Regular files waiting for a writer thread: enough to keep every writer
/// busy, few enough that a tree of millions of files does not queue up.
pub(super) const FILE_QUEUE: usize = 64;

/// A regular file for a writer thread.
pub(super) struct FileJob {
    pub(super) node: Node,
    pub(super) on_disk: PathBuf,
    pub(super) in_restore: PathBuf,
    /// The directory it is in, if its metadata waits for it.
    pub(super) dir: Option<DirKey>,
}

/// What a writer thread did with a [`FileJob`].
pub(super) struct FileOutcome {
    pub(super) dir: Option<DirKey>,
    pub(super) in_restore: PathBuf,
    pub(super) result: Result<RestoredFile>,
}

/// Writes regular files, with their metadata. Shared by the writer threads.
pub(super) struct FileRestorer<'r> {
    pub(super) repository: &'r Repository,
    pub(super) verify: bool,
    pub(super) progress: &'r dyn Progress,
    pub(super) is_root: bool,
    pub(super) overwrite: Overwrite,
    /// Decide and report, write nothing.
    pub(super) dry_run: bool,
    /// Packs fetched whole, for a remote store.
    pub(super) packs: Option<PackCache>,
}

impl FileRestorer<'_> {
    /// Restores a regular file as `--overwrite` says (see
    /// [`FileRestorer::file_action`]): writes it, verifies it if asked and
    /// applies its metadata through the open file; or leaves what is there
    /// (applying the snapshot's metadata to a file found unchanged).
    pub(super) fn restore_file(
        &self,
        node: &Node,
        path: &Path,
        in_restore: &Path,
    ) -> Result<RestoredFile> {
        let NodeKind::File {
            size,
            content,
            sparse,
        } = &node.kind
        else {
            unreachable!("only regular files are restored here");
        };
        let action = self.file_action(node, path)?;
        self.progress.restored(in_restore, action);
        let skipped = RestoredFile {
            bytes: 0,
            verified: false,
            written: false,
            holds_content: action == Action::Skip(Reason::Unchanged),
        };
        match action {
            Action::Skip(reason) => {
                if reason == Reason::Unchanged && !self.dry_run {
                    self.apply_metadata(node, path)?;
                }
                return Ok(skipped);
            }
            _ if self.dry_run => {
                return Ok(RestoredFile {
                    bytes: *size,
                    written: true,
                    holds_content: true,
                    ..skipped
                })
            }
            _ => {}
        }
        let file = self.write_file(path, *size, content, *sparse)?;
        if self.verify {
            self.verify_file(path, *size, content)?;
        }
        self.apply_file_metadata(node, &file, path)?;
        Ok(RestoredFile {
            bytes: *size,
            verified: self.verify,
            written: true,
            holds_content: true,
        })
    }

    /// What `--overwrite` does with the regular file `node` at `path`: a
    /// file there of the same size and mtime is read back and compared
    /// with the snapshot's blobs.
    pub(super) fn file_action(&self, node: &Node, path: &Path) -> Result<Action> {
        let existing = existing(path)?;
        Ok(match plan(self.overwrite, node, path, existing.as_ref()) {
            Plan::Act(action) => action,
            Plan::CompareContent => {
                let NodeKind::File { size, content, .. } = &node.kind else {
                    unreachable!("only files are compared");
                };
                if self.content_matches(path, *size, content)? {
                    Action::Skip(Reason::Unchanged)
                } else {
                    Action::Write(Reason::Changed)
                }
            }
        })
    }

    fn write_file(&self, path: &Path, size: u64, content: &[BlobId], sparse: bool) -> Result<File> {
        let open = || {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(path)
        };
        let mut file = create_or_replace(path, open).map_err(|e| Error::io(path, e))?;
        let mut written = 0u64;
        let mut ends_in_hole = false;
        // Blobs are fetched (adjacent ones together) and opened a batch at
        // a time in parallel, and written in order.
        for batch in content.chunks(BLOBS_PER_BATCH) {
            let blobs = self.repository.read_data_blobs(batch, self.packs.as_ref());
            for data in blobs {
                let data = data?;
                ends_in_hole = self.write_blob(&mut file, path, &data, size, written, sparse)?;
                written += data.len() as u64;
            }
        }
        if written != size {
            return Err(Error::corrupted(
                path.display(),
                format!("snapshot records {size} bytes but its blobs hold {written}"),
            ));
        }
        if ends_in_hole {
            // A trailing hole was skipped, not written: set the length.
            file.set_len(size).map_err(|e| Error::io(path, e))?;
        }
        Ok(file)
    }

    /// Writes one blob at the file's position (`written` bytes in), or
    /// seeks past it to leave a hole. Returns whether it left a hole.
    fn write_blob(
        &self,
        file: &mut File,
        path: &Path,
        data: &[u8],
        size: u64,
        written: u64,
        sparse: bool,
    ) -> Result<bool> {
        // Checked per blob, so a hostile content list cannot fill the disk
        // before the total is compared.
        if written.saturating_add(data.len() as u64) > size {
            return Err(Error::corrupted(
                path.display(),
                format!("snapshot records {size} bytes but its blobs hold more"),
            ));
        }
        if sparse && data.iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(data.len() as i64))
                .map_err(|e| Error::io(path, e))?;
            return Ok(true);
        }
        file.write_all(data).map_err(|e| Error::io(path, e))?;
        Ok(false)
    }

    fn verify_file(&self, path: &Path, size: u64, content: &[BlobId]) -> Result<()> {
        if self.content_matches(path, size, content)? {
            Ok(())
        } else {
            Err(Error::VerifyMismatch { path: path.into() })
        }
    }

    /// Whether the file at `path` holds exactly `content`, `size` bytes:
    /// read a chunk at a time, each chunk's id computed and compared, so
    /// the first difference stops the reading.
    fn content_matches(&self, path: &Path, size: u64, content: &[BlobId]) -> Result<bool> {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut total = 0u64;
        for id in content {
            let location = self
                .repository
                .locate(id)?
                .ok_or_else(|| Error::BlobNotIndexed { id: id.to_string() })?;
            let mut data = vec![0u8; location.entry.raw_len as usize];
            if file.read_exact(&mut data).is_err()
                || self.repository.blob_id(BlobType::Data, &data) != *id
            {
                return Ok(false);
            }
            total += data.len() as u64;
        }
        let mut rest = [0u8; 1];
        Ok(total == size && file.read(&mut rest).map_err(|e| Error::io(path, e))? == 0)
    }
}

/// What `lstat` finds at `path`; `None` if nothing is, or can be, there
/// (a dry run looks at paths whose directories do not exist, or that are
/// too long to create: creating them reports that).
pub(super) fn existing(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ENAMETOOLONG)) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

impl Restorer<'_, '_> {
    /// Counts a regular file restored or left as it was.
    pub(super) fn count_file(&mut self, file: &RestoredFile) {
        if file.written {
            self.summary.files += 1;
            self.summary.bytes = self.summary.bytes.saturating_add(file.bytes);
            self.summary.verified_files += u64::from(file.verified);
        } else {
            self.summary.skipped += 1;
        }
    }

    /// Counts what the writer threads finished; with `all`, waits for
    /// every one of them (the queue must be closed).
    pub(super) fn collect_outcomes(&mut self, all: bool) {
        let outcomes: Vec<FileOutcome> = if all {
            self.outcomes.iter().collect()
        } else {
            self.outcomes.try_iter().collect()
        };
        for outcome in outcomes {
            match outcome.result {
                Ok(file) => self.count_file(&file),
                Err(error) => self.report(&outcome.in_restore, &error),
            }
            if let Some(dir) = outcome.dir {
                self.settle(dir);
            }
        }
    }

    /// Hands a regular file to the writer threads, waiting while the queue
    /// is full.
    pub(super) fn queue_file(
        &mut self,
        node: Node,
        on_disk: PathBuf,
        in_restore: PathBuf,
        dir: Option<DirKey>,
    ) -> Result<()> {
        self.collect_outcomes(false);
        let job = FileJob {
            node,
            on_disk,
            in_restore,
            dir,
        };
        let jobs = self
            .jobs
            .as_ref()
            .expect("the queue is open during the walk");
        jobs.send(job).map_err(|_| {
            Error::io(
                &self.options.target,
                io::Error::other("the file writers stopped"),
            )
        })?;
        if let Some(dir) = dir.and_then(|d| self.open_dirs.get_mut(&d)) {
            dir.pending += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::memory_repository;

    #[test]
    fn verify_catches_a_file_that_differs_from_its_blobs() {
        let (_cache, repository) = memory_repository();
        let content = b"what the snapshot holds, chunk one".to_vec();
        let more = b" and chunk two".to_vec();
        let mut writer = repository.start_write(3).unwrap();
        let ids = writer
            .add_blobs(
                BlobType::Data,
                vec![content.clone().into(), more.clone().into()],
            )
            .unwrap();
        writer.flush().unwrap();
        let files = FileRestorer {
            repository: &repository,
            verify: true,
            progress: &crate::progress::Silent,
            is_root: false,
            overwrite: Overwrite::default(),
            dry_run: false,
            packs: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let whole = [content.clone(), more.clone()].concat();
        let size = whole.len() as u64;
        fs::write(&path, &whole).unwrap();
        files.verify_file(&path, size, &ids).unwrap();

        let mut flipped = whole.clone();
        flipped[3] ^= 0x20;
        let short = whole[..whole.len() - 1].to_vec();
        let long = [whole.clone(), b"!".to_vec()].concat();
        let swapped = [more, content].concat();
        for bad in [flipped, short, long, swapped] {
            fs::write(&path, &bad).unwrap();
            let result = files.verify_file(&path, size, &ids);
            assert!(
                matches!(result, Err(Error::VerifyMismatch { .. })),
                "{:?}: {result:?}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
