//! Fixed-size records sorted on disk: gathered in memory up to a bound,
//! each full buffer sorted and written to a temporary file as a run, and
//! the runs merged when read. Prune sorts blob ids this way, so that it
//! can join the live blobs with the index entries in one ordered pass:
//! memory stays at the buffer's size however many blobs there are, and
//! the disk is written and read sequentially, a few times over.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Bytes of records held in memory before a run is written.
const BUFFER_BYTES: usize = 16 << 20;

fn error(e: impl std::fmt::Display) -> Error {
    Error::Scratch {
        reason: e.to_string(),
    }
}

/// `n` as bytes that sort in its order: big-endian. Only ever in scratch
/// records, never stored (stored numbers are little-endian, SPEC.md §3).
#[allow(clippy::big_endian_bytes)]
pub(crate) fn sort_key(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

/// The number [`sort_key`] made `bytes` of.
#[allow(clippy::big_endian_bytes)]
pub(crate) fn from_sort_key(bytes: [u8; 4]) -> u32 {
    u32::from_be_bytes(bytes)
}

/// Records of `N` bytes, to be read back in byte order.
pub(crate) struct Spill<const N: usize> {
    dir: PathBuf,
    buffer: Vec<[u8; N]>,
    runs: Vec<File>,
}

impl<const N: usize> Spill<N> {
    /// An empty spill whose runs go to unnamed files under `dir`.
    pub(crate) fn new(dir: &Path) -> Result<Spill<N>> {
        std::fs::create_dir_all(dir).map_err(error)?;
        Ok(Spill {
            dir: dir.to_path_buf(),
            buffer: Vec::new(),
            runs: Vec::new(),
        })
    }

    /// Adds a record.
    pub(crate) fn push(&mut self, record: [u8; N]) -> Result<()> {
        self.buffer.push(record);
        if self.buffer.len() * N >= BUFFER_BYTES {
            self.write_run()?;
        }
        Ok(())
    }

    fn write_run(&mut self) -> Result<()> {
        self.buffer.sort_unstable();
        let mut file = tempfile::tempfile_in(&self.dir).map_err(error)?;
        {
            let mut out = BufWriter::new(&mut file);
            for record in self.buffer.drain(..) {
                out.write_all(&record).map_err(error)?;
            }
            out.flush().map_err(error)?;
        }
        file.seek(SeekFrom::Start(0)).map_err(error)?;
        self.runs.push(file);
        Ok(())
    }

    /// Every record, in byte order (duplicates kept).
    pub(crate) fn into_sorted(mut self) -> Result<Sorted<N>> {
        self.buffer.sort_unstable();
        let mut sorted = Sorted {
            runs: self
                .runs
                .into_iter()
                .map(|f| BufReader::with_capacity(64 << 10, f))
                .collect(),
            memory: self.buffer.into_iter(),
            heads: BinaryHeap::new(),
            memory_source: usize::MAX,
        };
        sorted.memory_source = sorted.runs.len();
        for source in 0..=sorted.runs.len() {
            sorted.refill(source)?;
        }
        Ok(sorted)
    }
}

/// The records of a [`Spill`], merged in order.
pub(crate) struct Sorted<const N: usize> {
    runs: Vec<BufReader<File>>,
    /// The last buffer, never written.
    memory: std::vec::IntoIter<[u8; N]>,
    /// The next record of each source, smallest first.
    heads: BinaryHeap<Reverse<([u8; N], usize)>>,
    /// The source number of `memory`.
    memory_source: usize,
}

impl<const N: usize> Sorted<N> {
    /// Puts the next record of `source` among the heads, if it has one.
    fn refill(&mut self, source: usize) -> Result<()> {
        let next = if source == self.memory_source {
            self.memory.next()
        } else {
            let mut record = [0u8; N];
            match self.runs[source].read_exact(&mut record) {
                Ok(()) => Some(record),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
                Err(e) => return Err(error(e)),
            }
        };
        if let Some(record) = next {
            self.heads.push(Reverse((record, source)));
        }
        Ok(())
    }

    /// The next record, without taking it.
    pub(crate) fn peek(&self) -> Option<&[u8; N]> {
        self.heads.peek().map(|Reverse((record, _))| record)
    }

    /// Takes the next record.
    pub(crate) fn next_record(&mut self) -> Result<Option<[u8; N]>> {
        let Some(Reverse((record, source))) = self.heads.pop() else {
            return Ok(None);
        };
        self.refill(source)?;
        Ok(Some(record))
    }

    /// Takes the next record and every repeat of it.
    pub(crate) fn next_distinct(&mut self) -> Result<Option<[u8; N]>> {
        let Some(record) = self.next_record()? else {
            return Ok(None);
        };
        while self.peek() == Some(&record) {
            self.next_record()?;
        }
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internals::Xorshift64;

    #[test]
    fn merges_runs_and_the_last_buffer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::<4>::new(dir.path()).unwrap();
        let mut rng = Xorshift64::new(7);
        let count = BUFFER_BYTES / 4 * 2 + 1000;
        let mut expected = Vec::with_capacity(count);
        for _ in 0..count {
            let record = sort_key((rng.next_u64() % 100_000) as u32);
            expected.push(record);
            spill.push(record).unwrap();
        }
        expected.sort_unstable();
        let mut sorted = spill.into_sorted().unwrap();
        let mut got = Vec::with_capacity(count);
        while let Some(record) = sorted.next_record().unwrap() {
            got.push(record);
        }
        assert_eq!(got, expected);
        assert!(sorted.peek().is_none());
    }

    #[test]
    fn an_empty_spill_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sorted = Spill::<4>::new(dir.path()).unwrap().into_sorted().unwrap();
        assert_eq!(sorted.next_record().unwrap(), None);
    }
}
