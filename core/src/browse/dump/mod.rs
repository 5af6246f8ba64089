//! `dump SNAPSHOT[:PATH] --archive tar|zip`: a directory or file of a
//! snapshot as an archive on a stream, in constant memory but for the
//! names of hard-linked files seen so far.
//!
//! The archive holds what `restore` would write into a target: for a
//! directory, its contents (named relative to it); for a file, that file
//! under its name; for a whole snapshot, every path without its leading
//! `/`. Entries come in walk order, each directory before what it holds.

mod tar;
mod zip;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::browse::{child_path, resolve, Trees};
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::object::blob::BlobType;
use crate::object::snapshot::Snapshot;
use crate::object::tree::{Node, NodeKind};
use crate::repository::Repository;

/// The archive formats `dump` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// POSIX tar with PAX and GNU extensions, as GNU tar reads it.
    Tar,
    /// Zip, streamed (with data descriptors and zip64 where needed).
    Zip,
}

/// What a dump wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DumpSummary {
    /// Entries written.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries the format cannot hold (devices and pipes in a zip), left
    /// out.
    pub skipped: u64,
}

/// Writes `path` of `snapshot` (all of it if none) to `out` as an archive
/// of `format` (see the module's doc).
pub fn dump(
    trees: &mut Trees<'_>,
    snapshot: &Snapshot,
    path: Option<&Path>,
    format: ArchiveFormat,
    out: &mut dyn Write,
) -> Result<DumpSummary> {
    let top = resolve(trees, snapshot, path)?;
    let archive: Box<dyn Archive + '_> = match format {
        ArchiveFormat::Tar => Box::new(tar::TarArchive::new(out)),
        ArchiveFormat::Zip => Box::new(zip::ZipArchive::new(out)),
    };
    let repository = trees.repository();
    let mut dumper = Dumper {
        repository,
        archive,
        first_names: HashMap::new(),
        summary: DumpSummary::default(),
    };
    let NodeKind::Directory { subtree } = &top.kind else {
        dumper.entry(&top.name.clone(), &top)?;
        return dumper.finish();
    };
    // Each level: its name in the archive (empty at the top) and its
    // entries still to write, last first.
    let mut stack = vec![(Vec::new(), reversed(&trees.get(subtree)?.nodes))];
    while let Some((dir, entries)) = stack.last_mut() {
        let Some(node) = entries.pop() else {
            stack.pop();
            continue;
        };
        let name = if dir.is_empty() {
            node.name.clone()
        } else {
            child_path(dir, &node.name)
        };
        dumper.entry(&name, &node)?;
        if let NodeKind::Directory { subtree } = &node.kind {
            let nodes = reversed(&trees.get(subtree)?.nodes);
            stack.push((name, nodes));
        }
    }
    dumper.finish()
}

fn reversed(nodes: &[Node]) -> Vec<Node> {
    nodes.iter().rev().cloned().collect()
}

/// One archive format's writer.
trait Archive {
    /// Writes a directory, link, device or pipe (no content).
    fn special(&mut self, name: &[u8], node: &Node) -> io::Result<bool>;
    /// Writes a hard link to `target`, a name written before; false if
    /// the format has no hard links (the file is then written again).
    fn hard_link(&mut self, name: &[u8], node: &Node, target: &[u8]) -> io::Result<bool>;
    /// Writes a regular file whose content `content` yields.
    fn file(&mut self, name: &[u8], node: &Node, content: &mut FileContent<'_>) -> io::Result<()>;
    /// Ends the archive.
    fn finish(&mut self) -> io::Result<()>;
}

struct Dumper<'a, 'r> {
    repository: &'r Repository,
    archive: Box<dyn Archive + 'a>,
    /// The first name of each hard-linked inode, by (device, inode).
    first_names: HashMap<(u64, u64), Vec<u8>>,
    summary: DumpSummary,
}

impl Dumper<'_, '_> {
    fn entry(&mut self, name: &[u8], node: &Node) -> Result<()> {
        let written = match &node.kind {
            NodeKind::File { size, content, .. } => {
                if node.is_hardlinked() {
                    let key = (node.device, node.inode);
                    match self.first_names.get(&key) {
                        Some(first) => {
                            if self
                                .archive
                                .hard_link(name, node, first)
                                .map_err(unwrap_io)?
                            {
                                self.count(true);
                                return Ok(());
                            }
                        }
                        None => {
                            self.first_names.insert(key, name.to_vec());
                        }
                    }
                }
                let mut reader = FileContent::new(self.repository, content, *size, name);
                self.archive
                    .file(name, node, &mut reader)
                    .map_err(unwrap_io)?;
                self.summary.bytes += size;
                true
            }
            _ => self.archive.special(name, node).map_err(unwrap_io)?,
        };
        self.count(written);
        Ok(())
    }

    fn count(&mut self, written: bool) {
        if written {
            self.summary.entries += 1;
        } else {
            self.summary.skipped += 1;
        }
    }

    fn finish(mut self) -> Result<DumpSummary> {
        self.archive.finish().map_err(unwrap_io)?;
        Ok(self.summary)
    }
}

/// Tar's block: the regions of a sparse file start and end on it.
const BLOCK: u64 = 512;

/// A run of a file's content as the archive holds it.
enum Piece {
    /// Bytes `start..end` of a blob (`None`: to its end).
    Blob {
        id: BlobId,
        start: usize,
        end: Option<usize>,
    },
    /// This many zeros.
    Zeros(u64),
}

/// A file's content, read blob after blob: a [`Read`] for the archive
/// writers. A blob that fails to read, or content whose length is not
/// the file's size, is an error: an archive entry must hold exactly its
/// size.
pub(crate) struct FileContent<'r> {
    repository: &'r Repository,
    blobs: Vec<BlobId>,
    pieces: Vec<Piece>,
    next: usize,
    buffer: Vec<u8>,
    position: usize,
    /// Bytes the reader yields.
    size: u64,
    produced: u64,
    /// The file's name in the archive, for errors.
    name: String,
}

impl<'r> FileContent<'r> {
    /// A reader of the file of `size` bytes whose content is `blobs`;
    /// `name` is for errors.
    pub(crate) fn new(
        repository: &'r Repository,
        blobs: &[BlobId],
        size: u64,
        name: &[u8],
    ) -> FileContent<'r> {
        let pieces = blobs
            .iter()
            .map(|id| Piece::Blob {
                id: *id,
                start: 0,
                end: None,
            })
            .collect();
        FileContent {
            repository,
            blobs: blobs.to_vec(),
            pieces,
            next: 0,
            buffer: Vec::new(),
            position: 0,
            size,
            produced: 0,
            name: String::from_utf8_lossy(name).into_owned(),
        }
    }

    /// The bytes the reader yields: the file's size, or after
    /// [`FileContent::keep_data_regions`] its data regions' total.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn length_error(&self, actual: u64) -> Error {
        Error::ContentLength {
            path: self.name.clone(),
            expected: self.size,
            actual,
        }
    }

    /// The data regions of the file as (offset, length), holes between
    /// them. A blob that is all zeros is a hole (as restore leaves it),
    /// known from the index and blob ids alone, without reading. Regions
    /// start and end on 512-byte blocks (the last may end with the file):
    /// GNU tar reads each region in whole blocks, other readers read them
    /// back to back, and on whole blocks the two agree. Afterwards the
    /// reader yields only the regions' bytes.
    pub(crate) fn keep_data_regions(&mut self) -> Result<Vec<(u64, u64)>> {
        let mut zero_ids: HashMap<u32, BlobId> = HashMap::new();
        // Each blob: its offset, length, and whether it is zeros.
        let mut layout = Vec::with_capacity(self.blobs.len());
        let mut offset = 0u64;
        for id in &self.blobs {
            let location = self
                .repository
                .locate(id)?
                .ok_or_else(|| Error::BlobNotIndexed { id: id.to_string() })?;
            let len = location.entry.raw_len;
            let zero = *zero_ids.entry(len).or_insert_with(|| {
                self.repository
                    .blob_id(BlobType::Data, &vec![0u8; len as usize])
            });
            layout.push((*id, offset, u64::from(len), *id == zero));
            offset += u64::from(len);
        }
        if offset != self.size {
            return Err(self.length_error(offset));
        }
        let mut regions: Vec<(u64, u64)> = Vec::new();
        for &(_, offset, len, zero) in &layout {
            if zero {
                continue;
            }
            let start = offset / BLOCK * BLOCK;
            let end = ((offset + len).div_ceil(BLOCK) * BLOCK).min(self.size);
            match regions.last_mut() {
                Some((s, l)) if *s + *l >= start => *l = (*l).max(end - *s),
                _ => regions.push((start, end - start)),
            }
        }
        self.pieces = pieces_of(&layout, &regions);
        self.size = regions.iter().map(|(_, len)| len).sum();
        Ok(regions)
    }
}

/// What yields the bytes of `regions` of a file laid out as `layout`
/// (id, offset, length, zeros) blob after blob.
fn pieces_of(layout: &[(BlobId, u64, u64, bool)], regions: &[(u64, u64)]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut blob = 0;
    for &(start, len) in regions {
        let end = start + len;
        while blob < layout.len() && layout[blob].1 + layout[blob].2 <= start {
            blob += 1;
        }
        let mut i = blob;
        while i < layout.len() && layout[i].1 < end {
            let (id, offset, length, zero) = layout[i];
            let from = start.max(offset) - offset;
            let to = end.min(offset + length) - offset;
            pieces.push(if zero {
                Piece::Zeros(to - from)
            } else {
                Piece::Blob {
                    id,
                    start: from as usize,
                    end: Some(to as usize),
                }
            });
            i += 1;
        }
    }
    pieces
}

impl Read for FileContent<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.position == self.buffer.len() {
            let Some(piece) = self.pieces.get(self.next) else {
                if self.produced != self.size {
                    return Err(io::Error::other(self.length_error(self.produced)));
                }
                return Ok(0);
            };
            self.buffer = match piece {
                Piece::Blob { id, start, end } => {
                    let bytes = self
                        .repository
                        .read_blob(id, BlobType::Data)
                        .map_err(io::Error::other)?;
                    let end = end.unwrap_or(bytes.len());
                    if *start > end || end > bytes.len() {
                        return Err(io::Error::other(self.length_error(bytes.len() as u64)));
                    }
                    bytes[*start..end].to_vec()
                }
                Piece::Zeros(n) => vec![0; *n as usize],
            };
            self.position = 0;
            self.next += 1;
        }
        let n = out.len().min(self.buffer.len() - self.position);
        out[..n].copy_from_slice(&self.buffer[self.position..self.position + n]);
        self.position += n;
        self.produced += n as u64;
        if self.produced > self.size {
            return Err(io::Error::other(self.length_error(self.produced)));
        }
        Ok(n)
    }
}

/// An archive writer's error: a repository error passed through the
/// [`Read`] of [`FileContent`], or the output failing.
fn unwrap_io(error: io::Error) -> Error {
    if error.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        let inner = error.into_inner().expect("checked");
        return *inner.downcast::<Error>().expect("checked");
    }
    Error::Output { error }
}

/// A time as seconds with a fraction, as PAX records write it (`-1.5` is
/// 1.5 s before the epoch).
fn decimal_seconds(time: crate::object::tree::Timestamp) -> String {
    if time.nanos == 0 {
        return time.secs.to_string();
    }
    if time.secs >= 0 {
        return format!("{}.{:09}", time.secs, time.nanos);
    }
    // secs + nanos/1e9 with secs negative: -(|secs| - 1).(1e9 - nanos)
    let whole = -(time.secs + 1);
    let fraction = 1_000_000_000 - time.nanos;
    if whole == 0 {
        format!("-0.{fraction:09}")
    } else {
        format!("-{whole}.{fraction:09}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::tree::Timestamp;

    #[test]
    fn times_before_the_epoch_keep_their_fraction() {
        let t = |secs, nanos| decimal_seconds(Timestamp { secs, nanos });
        assert_eq!(t(5, 0), "5");
        assert_eq!(t(5, 250_000_000), "5.250000000");
        assert_eq!(t(-1, 500_000_000), "-0.500000000");
        assert_eq!(t(-2, 999_999_999), "-1.000000001");
        assert_eq!(t(-3, 0), "-3");
    }
}
