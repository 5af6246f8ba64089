//! The decoders of stored bytes, one function per fuzz target, shared by
//! the cargo-fuzz targets in `fuzz/` and by the test that replays their
//! corpora on stable (`replays_every_fuzz_corpus_file`): an input that
//! once crashed a target stays in its corpus and is checked on every run.
//!
//! Sealed objects are opened with the fixed keys of the test vectors
//! (`format-spec/vectors`), so the seeds, which are those vectors, get
//! past authentication and their mutations exercise what follows; a
//! mutation of the ciphertext fails authentication, as it must. Every
//! function must return, whatever the input: no panic, no allocation
//! beyond what the input's length justifies.

use crate::crypto::{Sealer, SecretKey};
use crate::id::{BlobId, Id};
use crate::object::blob::{self, BlobType, Compression};
use crate::object::config::Config;
use crate::object::key_file::{self, MasterKeys, MASTER_LEN};
use crate::object::lock::Lock;
use crate::object::pack;
use crate::object::segment::IndexSegment;
use crate::object::session;
use crate::object::snapshot::Snapshot;
use crate::object::tree::Tree;

/// A fuzz target: feeds one input to the decoders.
pub type Target = fn(&[u8]);

/// Every target: its name (the folder of its corpus) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("key_file", key_file),
    ("session", session),
    ("pack", pack_trailer),
    ("blob", blob),
    ("tree", tree),
    ("snapshot", snapshot),
    ("index_segment", index_segment),
    ("lock", lock),
];

/// The vectors' master keys: bytes 0, 1, ..., 103.
fn master() -> MasterKeys {
    let mut bytes = [0u8; MASTER_LEN];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    MasterKeys::from_fixed(bytes)
}

/// The vectors' session data key, 0x33 × 32.
fn data_sealer() -> Sealer {
    Sealer::new(&SecretKey([0x33; 32]))
}

/// The config (§9).
pub fn config(data: &[u8]) {
    let _ = Config::from_bytes(data);
}

/// A key file (§5): its header; and its sealed keys when the header asks
/// for a derivation cheap enough to run on every input (a costly one is a
/// property of the header, bounded before any derivation, not a bug).
pub fn key_file(data: &[u8]) {
    if let Ok(kdf) = key_file::read_header(data) {
        if kdf.memory_kib <= 64 && kdf.iterations == 1 {
            let _ = key_file::open_key_file(data, b"correct horse");
        }
    }
}

/// A session object (§6), unwrapped with the master's private key.
pub fn session(data: &[u8]) {
    let _ = session::open(data, &master().private);
}

/// A pack (§11): its footer, then its trailer where the footer puts it.
pub fn pack_trailer(data: &[u8]) {
    if data.len() < pack::FOOTER_LEN {
        return;
    }
    let footer = &data[data.len() - pack::FOOTER_LEN..];
    let Ok((offset, len)) = pack::trailer_bounds(footer, data.len() as u64) else {
        return;
    };
    let (Ok(start), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
        return;
    };
    let Some(trailer) = data.get(start..start.saturating_add(len)) else {
        return;
    };
    let _ = pack::trailer_session(trailer);
    let _ = pack::open_trailer(trailer, offset, &data_sealer());
}

/// A sealed blob (§8): the first byte picks type and compression, the
/// next four are the declared length (capped at 1 MiB), the next 32 the
/// blob id (part of the associated data), the rest the sealed bytes.
pub fn blob(data: &[u8]) {
    if data.len() < 37 {
        return;
    }
    let blob_type = if data[0] & 1 == 0 {
        BlobType::Data
    } else {
        BlobType::Tree
    };
    let compression = if data[0] & 2 == 0 {
        Compression::Zstd
    } else {
        Compression::None
    };
    let raw_len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) % (1 << 20);
    let keys = master();
    let id = BlobId(Id(data[5..37].try_into().expect("32 bytes")));
    let _ = blob::open(
        &id,
        blob_type,
        compression,
        raw_len,
        data[37..].to_vec(),
        &data_sealer(),
        &keys.id_key,
    );
}

/// A tree's plaintext (§13).
pub fn tree(data: &[u8]) {
    let _ = Tree::decode(data);
}

/// A snapshot (§14): as plaintext, and as a sealed object.
pub fn snapshot(data: &[u8]) {
    let _ = Snapshot::decode(data);
    let _ = Snapshot::open(data, &data_sealer());
}

/// An index segment (§12): as plaintext, and sealed under the index key.
pub fn index_segment(data: &[u8]) {
    let _ = IndexSegment::decode(data);
    let _ = IndexSegment::open(data, &Sealer::new(&master().index_key));
}

/// A lock (§15): as plaintext, and sealed under the index key.
pub fn lock(data: &[u8]) {
    let _ = Lock::decode(data);
    let _ = Lock::open(data, &Sealer::new(&master().index_key));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `fuzz/corpus/TARGET/` through its target: the seeds,
    /// and every input a fuzzing run found and kept.
    #[test]
    fn replays_every_fuzz_corpus_file() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let dir = corpus.join(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}: every target has a corpus", dir.display()));
            for entry in entries {
                let path = entry.unwrap().path();
                target(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
        assert!(replayed >= TARGETS.len(), "{replayed} corpus files");
    }

    /// The sealed seeds open with the targets' fixed keys: otherwise every
    /// mutation would stop at authentication, and what follows it would
    /// never be fuzzed.
    #[test]
    fn sealed_seeds_get_past_authentication() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let seed =
            |target: &str, name: &str| std::fs::read(corpus.join(target).join(name)).unwrap();
        let keys = master();
        let index = Sealer::new(&keys.index_key);
        assert!(key_file::open_key_file(&seed("key_file", "key_file"), b"correct horse").is_ok());
        assert!(session::open(&seed("session", "session"), &keys.private).is_ok());
        assert!(Snapshot::open(&seed("snapshot", "snapshot"), &data_sealer()).is_ok());
        assert!(IndexSegment::open(&seed("index_segment", "index_segment"), &index).is_ok());
        assert!(Lock::open(&seed("lock", "lock"), &index).is_ok());
        let pack_bytes = seed("pack", "pack");
        let footer = &pack_bytes[pack_bytes.len() - pack::FOOTER_LEN..];
        let (offset, len) = pack::trailer_bounds(footer, pack_bytes.len() as u64).unwrap();
        let trailer = &pack_bytes[offset as usize..(offset + u64::from(len)) as usize];
        assert!(pack::open_trailer(trailer, offset, &data_sealer()).is_ok());
        let b = seed("blob", "sealed_blob");
        let raw_len = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        let id = BlobId(Id(b[5..37].try_into().unwrap()));
        let opened = blob::open(
            &id,
            BlobType::Data,
            Compression::Zstd,
            raw_len,
            b[37..].to_vec(),
            &data_sealer(),
            &keys.id_key,
        );
        assert!(opened.is_ok(), "{opened:?}");
    }
}
