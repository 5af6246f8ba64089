//! Content-defined chunking with FastCDC 2020 (SPEC.md §7).
//!
//! The gear table is XORed with a secret per-repository seed so that chunk
//! boundaries, and so chunk sizes, do not reveal known content. This module
//! only finds cut points; hashing happens in `blob`.

use std::io::{self, Read};

use bytes::Bytes;

use fastcdc::v2020::{self, Normalization};

/// Chunk size bounds, stored in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ChunkerParams {
    /// Smallest chunk, except a file's last.
    pub min_bytes: u32,
    /// Target average chunk size; a power of two.
    pub avg_bytes: u32,
    /// Largest chunk.
    pub max_bytes: u32,
}

impl ChunkerParams {
    /// The defaults for new repositories; see SPEC.md §7 for the measurement.
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min_bytes: 64 * 1024,
        avg_bytes: 256 * 1024,
        max_bytes: 1024 * 1024,
    };

    /// Whether FastCDC accepts these bounds. Values come from storage, so
    /// check them before use: the crate asserts on bad ones.
    pub fn is_valid(&self) -> bool {
        (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&self.min_bytes)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&self.avg_bytes)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&self.max_bytes)
            && self.avg_bytes.is_power_of_two()
            && self.min_bytes <= self.avg_bytes
            && self.avg_bytes <= self.max_bytes
    }
}

/// Finds FastCDC cut points with a seeded gear table.
pub struct Chunker {
    params: ChunkerParams,
    masks: [u64; 4],
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Chunker {
    /// A chunker for `params` (which must satisfy [`ChunkerParams::is_valid`])
    /// and `seed`.
    pub fn new(params: ChunkerParams, seed: u64) -> Chunker {
        assert!(params.is_valid(), "chunker parameters must be validated");
        let bits = params.avg_bytes.trailing_zeros();
        let level = Normalization::Level1.bits();
        let mask_s = v2020::MASKS[(bits + level) as usize];
        let mask_l = v2020::MASKS[(bits - level) as usize];
        let (gear, gear_ls) = v2020::get_gear_with_seed(seed);
        Chunker {
            params,
            masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
            gear,
            gear_ls,
        }
    }

    /// The parameters this chunker cuts with.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`. Only final when `data` holds at
    /// least `max_bytes` or is the rest of the stream.
    pub fn cut(&self, data: &[u8]) -> usize {
        let [mask_s, mask_l, mask_s_ls, mask_l_ls] = self.masks;
        let (_, len) = v2020::cut_gear(
            data,
            self.params.min_bytes as usize,
            self.params.avg_bytes as usize,
            self.params.max_bytes as usize,
            mask_s,
            mask_l,
            mask_s_ls,
            mask_l_ls,
            &self.gear,
            &self.gear_ls,
        );
        len
    }

    /// Splits a whole in-memory buffer into chunk lengths.
    pub fn cut_all(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let len = self.cut(data);
            out.push(len);
            data = &data[len..];
        }
        out
    }

    /// Splits a whole in-memory buffer into chunks that share it.
    pub fn split(&self, data: Bytes) -> Vec<Bytes> {
        let mut offset = 0;
        self.cut_all(&data)
            .into_iter()
            .map(|len| {
                offset += len;
                data.slice(offset - len..offset)
            })
            .collect()
    }

    /// Chunks a stream, holding at most [`WINDOW_CHUNKS`] maximum-size
    /// chunks in memory.
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        ChunkStream {
            chunker: self,
            reader,
            window: Bytes::new(),
            eof: false,
        }
    }
}

/// A stream is read in windows of this many maximum-size chunks. The chunks
/// cut from a window share its buffer; only the uncut tail is copied into
/// the next window, so most bytes are never copied after the read.
pub const WINDOW_CHUNKS: usize = 3;

/// Iterator over the chunks of a stream; see [`Chunker::stream`].
pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    reader: R,
    /// Read but not yet cut.
    window: Bytes,
    eof: bool,
}

impl<R: Read> ChunkStream<'_, R> {
    /// Makes sure the window holds a maximum-size chunk, or the rest of the
    /// stream: a cut is only final then.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.chunker.params.max_bytes as usize;
        if self.eof || self.window.len() >= max {
            return Ok(());
        }
        let capacity = WINDOW_CHUNKS * max;
        let mut buffer = Vec::with_capacity(capacity);
        buffer.extend_from_slice(&self.window);
        // `take` + `read_to_end` fill the spare capacity without zeroing it
        // first, and retry on EINTR.
        let wanted = (capacity - buffer.len()) as u64;
        let read = self.reader.by_ref().take(wanted).read_to_end(&mut buffer)?;
        if (read as u64) < wanted {
            self.eof = true;
            // Every chunk cut from the window keeps its whole allocation
            // alive until sealed: a short last window (or a small stream)
            // gives the unused room back, so it does not pin 3 maxima.
            buffer.shrink_to_fit();
        }
        self.window = Bytes::from(buffer);
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkStream<'_, R> {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.window.is_empty() {
            return None;
        }
        let len = self.chunker.cut(&self.window);
        Some(Ok(self.window.split_to(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pseudo_random;

    const SMALL: ChunkerParams = ChunkerParams {
        min_bytes: 1024,
        avg_bytes: 4096,
        max_bytes: 16384,
    };

    #[test]
    fn stream_matches_whole_buffer_and_respects_bounds() {
        let data = pseudo_random(300_000, 7);
        let chunker = Chunker::new(SMALL, 42);
        let whole = chunker.cut_all(&data);
        // A reader that returns a few bytes at a time must not change cuts.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(777).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let streamed: Vec<usize> = chunker
            .stream(Dribble(&data))
            .map(|c| c.unwrap().len())
            .collect();
        assert_eq!(whole, streamed);
        let split: Vec<usize> = chunker
            .split(Bytes::from(data.clone()))
            .iter()
            .map(Bytes::len)
            .collect();
        assert_eq!(whole, split);
        assert_eq!(whole.iter().sum::<usize>(), data.len());
        for len in &whole[..whole.len() - 1] {
            assert!((1024..=16384).contains(len));
        }
    }

    #[test]
    fn seed_changes_cut_points_and_edits_stay_local() {
        let data = pseudo_random(300_000, 9);
        let a = Chunker::new(SMALL, 1).cut_all(&data);
        let b = Chunker::new(SMALL, 2).cut_all(&data);
        assert_ne!(a, b);
        let mut edited = data.clone();
        edited.splice(150_000..150_000, [1u8, 2, 3]);
        let c = Chunker::new(SMALL, 1).cut_all(&edited);
        let common_tail = a
            .iter()
            .rev()
            .zip(c.iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        assert!(common_tail > a.len() / 3, "insertion resynchronises");
    }

    #[test]
    fn invalid_params_are_detected() {
        assert!(ChunkerParams::DEFAULT.is_valid());
        let mut p = SMALL;
        p.avg_bytes = 5000;
        assert!(!p.is_valid());
        p = SMALL;
        p.max_bytes = u32::MAX;
        assert!(!p.is_valid());
    }
}
