//! One blob: hash, compress, seal; and the reverse with verification
//! (SPEC.md §8).
//!
//! A blob's stored form is `nonce || AES-256-GCM-SIV(payload) || tag`, where
//! payload is a zstd frame or, when compression does not shrink the data,
//! the raw bytes. The authenticated data binds the blob's id, type and
//! compression, so a blob cannot be passed off as another.

use std::cell::RefCell;

use crate::crypto::{IdKey, Sealer, NONCE_LEN};
use crate::id::BlobId;
use zstd::zstd_safe::CParameter;

/// Largest plaintext blob this build writes or reads, in bytes.
pub const MAX_BLOB_LEN: u32 = 128 << 20;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobType {
    /// A chunk of file content.
    Data,
    /// An encoded directory tree.
    Tree,
}

impl BlobType {
    /// Wire value.
    pub fn to_byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    /// Parses a wire value.
    pub fn from_byte(byte: u8) -> Option<BlobType> {
        match byte {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// How a blob's payload is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// One zstd frame.
    Zstd,
}

impl Compression {
    /// Wire value.
    pub fn to_byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }

    /// Parses a wire value.
    pub fn from_byte(byte: u8) -> Option<Compression> {
        match byte {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// A blob ready to be appended to a pack.
pub struct SealedBlob {
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Data or tree.
    pub blob_type: BlobType,
    /// How the payload was compressed.
    pub compression: Compression,
    /// Plaintext length.
    pub raw_len: u32,
    /// `nonce || ciphertext || tag`.
    pub bytes: Vec<u8>,
}

/// Why a stored blob could not be turned back into its plaintext.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Authentication failed: wrong key or altered bytes.
    #[error("authentication failed")]
    Authentication,
    /// The payload does not decompress to the recorded length.
    #[error("decompression failed: {0}")]
    Decompression(String),
    /// The plaintext does not hash to the blob's id.
    #[error("content does not match its id")]
    IdMismatch,
}

/// The authenticated data of a blob.
pub fn associated_data(id: &BlobId, blob_type: BlobType, compression: Compression) -> [u8; 34] {
    let mut aad = [0u8; 34];
    aad[..32].copy_from_slice(&id.0 .0);
    aad[32] = blob_type.to_byte();
    aad[33] = compression.to_byte();
    aad
}

/// Blobs shorter than this (whole small files, most trees) are compressed
/// `SMALL_BLOB_EXTRA_LEVELS` levels higher than the rest.
pub const SMALL_BLOB_LEN: usize = 64 << 10;
/// How many zstd levels higher small blobs are compressed (capped at 22).
/// At the default level 4, on the Rust toolchain (52,000 files, 1.3 GB),
/// this stores 0.4% less than level 4 for all, for 8% more time: see
/// SPEC.md §8.
pub const SMALL_BLOB_EXTRA_LEVELS: i32 = 1;

/// Compresses and seals blobs one after another at one zstd level (and
/// small blobs at `SMALL_BLOB_EXTRA_LEVELS` more).
///
/// It keeps its zstd contexts between blobs: creating one per blob costs
/// more than compressing a small file.
pub struct Encoder {
    /// `None` stores every blob raw (level 0).
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// The same for blobs shorter than [`SMALL_BLOB_LEN`].
    small_zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Encoder {
    /// An encoder for zstd `level` (0 = store raw). An unusable level
    /// stores raw, as level 0 does; levels are checked before a write
    /// starts.
    pub fn new(level: i32) -> Encoder {
        let compressor = |level: i32, table_log: Option<u32>| {
            if level == 0 {
                return None;
            }
            let mut zstd = zstd::bulk::Compressor::new(level).ok()?;
            if let Some(log) = table_log {
                zstd.set_parameter(CParameter::HashLog(log)).ok()?;
                zstd.set_parameter(CParameter::ChainLog(log)).ok()?;
            }
            Some(zstd)
        };
        Encoder {
            zstd: compressor(level, chunk_table_log(level)),
            small_zstd: compressor(small_blob_level(level), None),
        }
    }

    /// Compresses `plaintext` at this encoder's level (stored raw if that does
    /// not shrink it) and seals it under `id`, which the caller computed to
    /// look it up in the index. `plaintext` must not exceed [`MAX_BLOB_LEN`].
    pub fn seal(
        &mut self,
        id: BlobId,
        blob_type: BlobType,
        plaintext: &[u8],
        sealer: &Sealer,
    ) -> SealedBlob {
        self.seal_with_nonce(
            id,
            blob_type,
            plaintext,
            sealer,
            crate::crypto::random_bytes(),
        )
    }

    /// [`Encoder::seal`] with a given nonce: for test vectors, which need
    /// fixed output.
    pub(crate) fn seal_with_nonce(
        &mut self,
        id: BlobId,
        blob_type: BlobType,
        plaintext: &[u8],
        sealer: &Sealer,
        nonce: [u8; crate::crypto::NONCE_LEN],
    ) -> SealedBlob {
        let zstd = if plaintext.len() < SMALL_BLOB_LEN {
            self.small_zstd.as_mut()
        } else {
            self.zstd.as_mut()
        };
        let compressed = zstd
            .and_then(|zstd| zstd.compress(plaintext).ok())
            .filter(|c| c.len() < plaintext.len());
        let (compression, payload) = match &compressed {
            Some(c) => (Compression::Zstd, c.as_slice()),
            None => (Compression::None, plaintext),
        };
        let bytes = sealer.seal_with_nonce(
            nonce,
            payload,
            &associated_data(&id, blob_type, compression),
        );
        SealedBlob {
            id,
            blob_type,
            compression,
            raw_len: plaintext.len() as u32,
            bytes,
        }
    }
}

/// The size (log2 of the entries) that cairn gives zstd's hash and chain
/// tables for blobs of at least [`SMALL_BLOB_LEN`] at `level`, where it
/// departs from zstd's own choice (SPEC.md §8). At level 4 zstd sizes both
/// tables at 2^18 entries for inputs over 256 KiB: 2 MiB, a whole core's L2
/// cache on the machines measured, so the match finder misses the cache
/// while other threads work. At 2^17 they take half that, for 0.1% more
/// stored.
pub fn chunk_table_log(level: i32) -> Option<u32> {
    (level == 4).then_some(17)
}

/// The zstd level for blobs shorter than [`SMALL_BLOB_LEN`] when the
/// configured level is `level`. Level 0 (store raw) stays 0.
pub fn small_blob_level(level: i32) -> i32 {
    if level == 0 {
        0
    } else {
        (level + SMALL_BLOB_EXTRA_LEVELS).min(22)
    }
}

/// Opens a stored blob and checks that its plaintext hashes to `id`.
/// `raw_len` (from the index, already bounded) caps decompression. The
/// blob is decrypted where it lies in `stored`.
pub fn open(
    id: &BlobId,
    blob_type: BlobType,
    compression: Compression,
    raw_len: u32,
    mut stored: Vec<u8>,
    sealer: &Sealer,
    id_key: &IdKey,
) -> Result<Vec<u8>, BlobError> {
    let payload = sealer
        .open_in_place(&mut stored, &associated_data(id, blob_type, compression))
        .map_err(|_| BlobError::Authentication)?;
    let plaintext = match compression {
        Compression::None => {
            let len = payload.len();
            stored.truncate(NONCE_LEN + len);
            stored.drain(..NONCE_LEN);
            stored
        }
        Compression::Zstd => {
            decompress(payload, raw_len as usize).map_err(BlobError::Decompression)?
        }
    };
    if plaintext.len() != raw_len as usize || id_key.blob_id(blob_type.to_byte(), &plaintext) != *id
    {
        return Err(BlobError::IdMismatch);
    }
    Ok(plaintext)
}

/// The magic number that starts every zstd frame that is not a skippable
/// frame (RFC 8878 §3.1.1), little-endian.
const ZSTD_FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Checks that `payload` is exactly one zstd frame (SPEC.md §8): zstd's
/// own decoder would also take skippable frames, several frames one after
/// another, or (within the capacity) an unterminated stream, and a reader
/// written from the spec must not have to guess which cairn accepts.
fn check_single_frame(payload: &[u8]) -> Result<(), String> {
    if payload.get(..4) != Some(&ZSTD_FRAME_MAGIC[..]) {
        return Err("the payload is not a zstd frame".into());
    }
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(payload)
        .map_err(|code| zstd::zstd_safe::get_error_name(code).to_string())?;
    if frame_len != payload.len() {
        return Err(format!(
            "{} bytes follow the zstd frame",
            payload.len() - frame_len
        ));
    }
    Ok(())
}

/// Decompresses one zstd frame of at most `capacity` bytes, with a context
/// kept per thread: a restore opens thousands of small blobs, and creating
/// a context for each costs more than decompressing it.
fn decompress(payload: &[u8], capacity: usize) -> Result<Vec<u8>, String> {
    check_single_frame(payload)?;
    thread_local! {
        static CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        let context = match &mut *slot {
            Some(context) => context,
            None => slot.insert(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?),
        };
        context
            .decompress(payload, capacity)
            .map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SEAL_OVERHEAD;

    /// A zstd frame as cairn writes it, for `plaintext`.
    fn frame(plaintext: &[u8]) -> Vec<u8> {
        zstd::bulk::Compressor::new(4)
            .unwrap()
            .compress(plaintext)
            .unwrap()
    }

    #[test]
    fn frames_carry_the_content_size_and_no_checksum_or_dictionary() {
        let plaintext = b"cairn cairn cairn cairn cairn cairn cairn".repeat(50);
        let payload = frame(&plaintext);
        assert_eq!(payload[..4], ZSTD_FRAME_MAGIC);
        // Frame header descriptor (RFC 8878 §3.1.1.1.1).
        let descriptor = payload[4];
        assert_eq!(descriptor & 0b100, 0, "no content checksum");
        assert_eq!(descriptor & 0b11, 0, "no dictionary id");
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&payload).ok(),
            Some(Some(plaintext.len() as u64)),
            "the content size is recorded"
        );
        assert_eq!(decompress(&payload, plaintext.len()).unwrap(), plaintext);
    }

    #[test]
    fn anything_but_exactly_one_frame_is_refused() {
        let payload = frame(b"one frame, once and only once, once");
        let mut trailing = payload.clone();
        trailing.push(0);
        let mut two = payload.clone();
        two.extend_from_slice(&payload);
        // A skippable frame of 4 bytes, then the real one.
        let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        skippable.extend_from_slice(&payload);
        let truncated = &payload[..payload.len() - 1];
        for (what, bad) in [
            ("trailing byte", &trailing[..]),
            ("second frame", &two[..]),
            ("skippable frame", &skippable[..]),
            ("truncated frame", truncated),
            ("empty payload", &[][..]),
        ] {
            assert!(decompress(bad, 1 << 20).is_err(), "{what} was accepted");
        }
        assert!(decompress(&payload, 1 << 20).is_ok());
    }
    use crate::crypto::SecretKey;

    #[test]
    fn round_trip_compressible_and_incompressible() {
        let sealer = Sealer::new(&SecretKey::random());
        let key = IdKey([3; 32]);
        let text = b"abcabcabc".repeat(1000);
        let noise = crate::testing::pseudo_random(4096, 88172645463325252);
        for (data, expect) in [(&text, Compression::Zstd), (&noise, Compression::None)] {
            let id = key.blob_id(0, data);
            let sealed = Encoder::new(3).seal(id, BlobType::Data, data, &sealer);
            assert_eq!(sealed.compression, expect);
            let back = open(
                &id,
                BlobType::Data,
                sealed.compression,
                sealed.raw_len,
                sealed.bytes.clone(),
                &sealer,
                &key,
            )
            .unwrap();
            assert_eq!(&back, data);
            // The same bytes presented as a tree, or under another id, fail.
            assert!(open(
                &id,
                BlobType::Tree,
                sealed.compression,
                sealed.raw_len,
                sealed.bytes.clone(),
                &sealer,
                &key
            )
            .is_err());
            let other = key.blob_id(0, b"other");
            assert!(open(
                &other,
                BlobType::Data,
                sealed.compression,
                sealed.raw_len,
                sealed.bytes.clone(),
                &sealer,
                &key
            )
            .is_err());
        }
    }

    #[test]
    fn a_blob_larger_than_its_declared_length_is_stopped_there() {
        // 16 MiB of zeros compress to a few hundred bytes: an index entry
        // that declares 4 KiB must not let them out, nor the memory for them.
        let sealer = Sealer::new(&SecretKey::random());
        let key = IdKey([3; 32]);
        let bomb = vec![0u8; 16 << 20];
        let id = key.blob_id(0, &bomb);
        let sealed = Encoder::new(3).seal(id, BlobType::Data, &bomb, &sealer);
        assert!(sealed.bytes.len() < 4096, "{} bytes", sealed.bytes.len());
        let opened = open(
            &id,
            BlobType::Data,
            sealed.compression,
            4096,
            sealed.bytes.clone(),
            &sealer,
            &key,
        );
        assert!(
            matches!(opened, Err(BlobError::Decompression(_))),
            "{opened:?}"
        );
        assert!(decompress(&frame(&bomb), 4096).is_err());
    }

    #[test]
    fn small_blobs_compress_one_level_higher() {
        assert_eq!(small_blob_level(0), 0);
        assert_eq!(small_blob_level(4), 5);
        assert_eq!(small_blob_level(22), 22);
        let sealer = Sealer::new(&SecretKey::random());
        let key = IdKey([3; 32]);
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {} of {}\n", i % 977, i % 13).into_bytes())
            .collect();
        let mut encoder = Encoder::new(1);
        for (len, level) in [(SMALL_BLOB_LEN - 1, 2), (SMALL_BLOB_LEN, 1)] {
            let data = &text[..len];
            let sealed = encoder.seal(key.blob_id(0, data), BlobType::Data, data, &sealer);
            let at = |level| zstd::bulk::compress(data, level).unwrap().len() + SEAL_OVERHEAD;
            assert_ne!(at(1), at(2), "the levels must be told apart by size");
            let expected = at(level);
            assert_eq!(sealed.bytes.len(), expected, "{len} bytes at level {level}");
        }
    }

    #[test]
    fn large_blobs_at_level_4_use_the_smaller_match_tables() {
        assert_eq!(chunk_table_log(4), Some(17));
        assert_eq!(chunk_table_log(3), None);
        assert_eq!(chunk_table_log(5), None);
        let sealer = Sealer::new(&SecretKey::random());
        let key = IdKey([3; 32]);
        let mut words = crate::xorshift::Xorshift64::new(7);
        let data: Vec<u8> = (0..200_000)
            .flat_map(|_| format!("w{} ", words.next_u64() % 50_000).into_bytes())
            .take(1 << 20)
            .collect();
        let sealed = Encoder::new(4).seal(key.blob_id(0, &data), BlobType::Data, &data, &sealer);
        let mut tuned = zstd::bulk::Compressor::new(4).unwrap();
        tuned.set_parameter(CParameter::HashLog(17)).unwrap();
        tuned.set_parameter(CParameter::ChainLog(17)).unwrap();
        let tuned_len = tuned.compress(&data).unwrap().len() + SEAL_OVERHEAD;
        let plain_len = zstd::bulk::compress(&data, 4).unwrap().len() + SEAL_OVERHEAD;
        assert_ne!(
            tuned_len, plain_len,
            "the tables must be told apart by size"
        );
        assert_eq!(sealed.bytes.len(), tuned_len);
        let opened = open(
            &sealed.id,
            BlobType::Data,
            sealed.compression,
            sealed.raw_len,
            sealed.bytes,
            &sealer,
            &key,
        );
        assert_eq!(opened.unwrap(), data);
    }

    #[test]
    fn plaintext_is_not_visible() {
        let sealer = Sealer::new(&SecretKey::random());
        let key = IdKey([3; 32]);
        let data = b"a very recognisable secret sentence".to_vec();
        let sealed = Encoder::new(0).seal(key.blob_id(0, &data), BlobType::Data, &data, &sealer);
        assert!(!sealed
            .bytes
            .windows(8)
            .any(|w| data.windows(8).any(|d| d == w)));
    }
}
