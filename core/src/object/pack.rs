//! Packfiles: many sealed blobs, an encrypted trailer listing them, and a
//! fixed footer (SPEC.md §11).
//!
//! `blob_0 || ... || blob_n || sealed trailer || trailer length (u32) || "CRNP"`.
//! The trailer sits at the end so blobs can stream out first. A pack's name
//! is the unkeyed BLAKE3 of its bytes, so damage is detectable without the
//! password.

use std::io::{self, Write};

use crate::codec;
use crate::crypto::{Sealer, SEAL_OVERHEAD};
use crate::id::{BlobId, Id, PackId, SessionId};
use crate::object::blob::{BlobType, Compression, SealedBlob, MAX_BLOB_LEN};
use crate::object::sealed::{self, SealedKind};

/// Trailing magic of every pack.
pub const PACK_MAGIC: &[u8; 4] = b"CRNP";
/// Length of the fixed footer: trailer length and magic.
pub const FOOTER_LEN: usize = 8;
/// Largest trailer accepted from storage.
pub const MAX_TRAILER_LEN: u32 = 32 << 20;
/// Most blobs a writer puts in one pack, so that its trailer (46 bytes an
/// entry) stays far below [`MAX_TRAILER_LEN`] whatever the pack size.
pub const MAX_PACK_ENTRIES: usize = 100_000;

/// One blob's place in a pack, as listed in the trailer and the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct PackEntry {
    /// The blob's id.
    pub id: BlobId,
    /// [`BlobType`] wire value.
    pub blob_type: u8,
    /// [`Compression`] wire value.
    pub compression: u8,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub stored_len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
}

impl PackEntry {
    /// The blob type, if the wire value is known.
    pub fn blob_type(&self) -> Option<BlobType> {
        BlobType::from_byte(self.blob_type)
    }

    /// The compression, if the wire value is known.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_byte(self.compression)
    }

    /// Whether the fields are within what this build writes. Entries come
    /// from storage: check before using them to size a read.
    pub fn is_plausible(&self) -> bool {
        self.blob_type().is_some()
            && self.compression().is_some()
            && self.raw_len <= MAX_BLOB_LEN
            && (SEAL_OVERHEAD as u32..=MAX_BLOB_LEN + 1024).contains(&self.stored_len)
    }
}

/// A hash of pack entries, in order: two lists of a pack's entries (a
/// trailer, an index listing) agree exactly when their hashes do. Lets a
/// reader compare listings without keeping them.
pub fn entries_digest(entries: &[PackEntry]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    for entry in entries {
        hasher.update(&entry.id.0 .0);
        hasher.update(&[entry.blob_type, entry.compression]);
        hasher.update(&entry.offset.to_le_bytes());
        hasher.update(&entry.stored_len.to_le_bytes());
        hasher.update(&entry.raw_len.to_le_bytes());
    }
    hasher.finalize()
}

/// Writes sealed blobs into one pack as they come, hashing as it goes, so
/// a pack never has to sit whole in memory.
pub struct PackWriter<W> {
    sink: W,
    hasher: blake3::Hasher,
    len: u64,
    entries: Vec<PackEntry>,
}

/// A finished pack: its name, where its bytes went, and what it holds.
pub struct FinishedPack<W> {
    /// Its name.
    pub id: PackId,
    /// The sink it was written to, holding the whole pack; the caller
    /// makes it durable (for a backend, [`crate::backend::ObjectWriter::finish`]).
    pub sink: W,
    /// What it holds.
    pub entries: Vec<PackEntry>,
}

impl<W: Write> PackWriter<W> {
    /// A pack written to `sink`.
    pub fn new(sink: W) -> PackWriter<W> {
        PackWriter {
            sink,
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sink.write_all(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Appends a blob.
    pub fn add(&mut self, blob: &SealedBlob) -> io::Result<()> {
        let offset = self.len as u32;
        self.write(&blob.bytes)?;
        self.entries.push(PackEntry {
            id: blob.id,
            blob_type: blob.blob_type.to_byte(),
            compression: blob.compression.to_byte(),
            offset,
            stored_len: blob.bytes.len() as u32,
            raw_len: blob.raw_len,
        });
        Ok(())
    }

    /// Bytes of blobs added so far.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Number of blobs added so far.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Appends the trailer sealed under `session` and the footer.
    pub fn finish(self, session: SessionId, sealer: &Sealer) -> io::Result<FinishedPack<W>> {
        self.finish_with_nonce(session, sealer, crate::crypto::random_bytes())
    }

    /// [`PackWriter::finish`] with a given trailer nonce, for test vectors.
    pub(crate) fn finish_with_nonce(
        mut self,
        session: SessionId,
        sealer: &Sealer,
        nonce: [u8; crate::crypto::NONCE_LEN],
    ) -> io::Result<FinishedPack<W>> {
        let trailer = sealed::seal_with_nonce(
            SealedKind::PackTrailer,
            session,
            sealer,
            &codec::encode(&self.entries),
            nonce,
        );
        self.write(&trailer)?;
        self.write(&(trailer.len() as u32).to_le_bytes())?;
        self.write(PACK_MAGIC)?;
        Ok(FinishedPack {
            id: PackId(Id(*self.hasher.finalize().as_bytes())),
            sink: self.sink,
            entries: self.entries,
        })
    }
}

/// Why a pack's trailer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Footer, trailer or entries are inconsistent with the pack's length.
    #[error("{0}")]
    Malformed(String),
    /// The trailer did not authenticate.
    #[error("trailer authentication failed")]
    Authentication,
}

/// Reads the trailer length from a pack's footer, checking it against the
/// pack's total length. Returns the trailer's offset and length.
pub fn trailer_bounds(footer: &[u8], pack_len: u64) -> Result<(u64, u32), PackError> {
    if footer.len() != FOOTER_LEN || &footer[4..] != PACK_MAGIC {
        return Err(PackError::Malformed("bad footer magic".into()));
    }
    let len = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
    if len > MAX_TRAILER_LEN || u64::from(len) + FOOTER_LEN as u64 > pack_len {
        return Err(PackError::Malformed(format!(
            "trailer length {len} does not fit pack length {pack_len}"
        )));
    }
    Ok((pack_len - FOOTER_LEN as u64 - u64::from(len), len))
}

/// The session that sealed a trailer.
pub fn trailer_session(trailer: &[u8]) -> Result<SessionId, PackError> {
    sealed::session_of(SealedKind::PackTrailer, trailer)
        .map_err(|e| PackError::Malformed(e.to_string()))
}

/// Opens a trailer and checks that its entries tile the blob region exactly.
pub fn open_trailer(
    trailer: &[u8],
    trailer_offset: u64,
    sealer: &Sealer,
) -> Result<Vec<PackEntry>, PackError> {
    let plain = sealed::open(SealedKind::PackTrailer, sealer, trailer)
        .map_err(|_| PackError::Authentication)?;
    let entries: Vec<PackEntry> =
        codec::decode(&plain).map_err(|e| PackError::Malformed(e.to_string()))?;
    let mut expected_offset = 0u64;
    for entry in &entries {
        if !entry.is_plausible() || u64::from(entry.offset) != expected_offset {
            return Err(PackError::Malformed(format!(
                "implausible entry for blob {}",
                entry.id
            )));
        }
        expected_offset += u64::from(entry.stored_len);
    }
    if expected_offset != trailer_offset {
        return Err(PackError::Malformed(
            "entries do not cover the blob region".into(),
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{IdKey, SecretKey};
    use crate::object::blob;

    #[test]
    fn write_then_read_trailer() {
        let sealer = Sealer::new(&SecretKey::random());
        let key = IdKey([1; 32]);
        let session = SessionId(Id([9; 32]));
        let mut writer = PackWriter::new(Vec::new());
        for text in [&b"first"[..], b"second blob", b""] {
            let blob =
                blob::Encoder::new(3).seal(key.blob_id(0, text), BlobType::Data, text, &sealer);
            writer.add(&blob).unwrap();
        }
        let pack = writer.finish(session, &sealer).unwrap();
        let bytes = &pack.sink;
        assert_eq!(pack.id, PackId(Id::of_bytes(bytes)));
        let len = bytes.len() as u64;
        let (offset, trailer_len) =
            trailer_bounds(&bytes[bytes.len() - FOOTER_LEN..], len).unwrap();
        let trailer = &bytes[offset as usize..offset as usize + trailer_len as usize];
        assert_eq!(trailer_session(trailer).unwrap(), session);
        let entries = open_trailer(trailer, offset, &sealer).unwrap();
        assert_eq!(entries, pack.entries);
        let second = &entries[1];
        let stored =
            bytes[second.offset as usize..(second.offset + second.stored_len) as usize].to_vec();
        let plain = blob::open(
            &second.id,
            BlobType::Data,
            second.compression().unwrap(),
            second.raw_len,
            stored,
            &sealer,
            &key,
        )
        .unwrap();
        assert_eq!(plain, b"second blob");
    }

    #[test]
    fn footer_claims_are_bounded() {
        let mut footer = u32::MAX.to_le_bytes().to_vec();
        footer.extend_from_slice(PACK_MAGIC);
        assert!(trailer_bounds(&footer, 100).is_err());
        let mut footer = 50u32.to_le_bytes().to_vec();
        footer.extend_from_slice(PACK_MAGIC);
        assert!(trailer_bounds(&footer, 40).is_err());
        assert!(trailer_bounds(b"xxxxxxxx", 100).is_err());
    }
}
