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

use crate::backend::{Backend, MemoryBackend, ObjectKind};
use crate::crypto::{Sealer, SecretKey};
use crate::id::{BlobId, Id};
use crate::object::blob::{self, BlobType, Compression};
use crate::object::config::Config;
use crate::object::epoch;
use crate::object::key_file::{self, KdfParams, MasterKeys, MASTER_LEN};
use crate::object::lock::Lock;
use crate::object::pack;
use crate::object::segment::IndexSegment;
use crate::object::session;
use crate::object::snapshot::Snapshot;
use crate::object::tree::{Node, NodeKind, Tree};
use crate::{InitOptions, Repository};

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
    ("epoch", epoch_record),
    ("repository", repository),
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
    if let Ok(header) = key_file::read_header(data) {
        let _ = key_file::read_labels(data, &master());
        if header.kdf.memory_kib <= 64 && header.kdf.iterations == 1 {
            let _ = key_file::open_key_file(data, b"correct horse");
        }
    }
}

/// The private key of the vectors' epoch 1, 0x67 × 32.
fn epoch_private() -> x25519_dalek::StaticSecret {
    x25519_dalek::StaticSecret::from([0x67; 32])
}

/// A session object (§6), unwrapped with the master's private key, or a
/// re-wrapped one (§18) with the vectors' epoch 1 key.
pub fn session(data: &[u8]) {
    let _ = session::open(data, master().private.as_ref().expect("a full key"));
    let _ = session::rewrapped_header(data);
    let _ = session::open_rewrapped(data, &epoch_private());
}

/// An epoch record (§18): its header, then its sealed mapping.
pub fn epoch_record(data: &[u8]) {
    if epoch::read_header(data).is_ok() {
        let _ = epoch::open(data, &epoch_private());
    }
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

/// The password of the structure-aware target's repository.
const REPOSITORY_PASSWORD: &[u8] = b"correct horse";

/// A small honest repository, built once per process with the vectors'
/// master keys (so that its blob ids, and the subtree ids a seed names,
/// are the same in every run): every stored object, by kind and name.
fn base_repository() -> &'static [(ObjectKind, String, Vec<u8>)] {
    static BASE: std::sync::OnceLock<Vec<(ObjectKind, String, Vec<u8>)>> =
        std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let backend = MemoryBackend::default();
        let cache = tempfile::tempdir().expect("a scratch directory");
        let options = InitOptions {
            kdf: KdfParams {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
            ..InitOptions::default()
        };
        let repository = Repository::init_with_keys(
            Box::new(backend.clone()),
            REPOSITORY_PASSWORD,
            &options,
            cache.path(),
            master(),
        )
        .expect("a repository in memory");
        let mut writer = repository.start_write(3).expect("a write session");
        let (root, _) = honest_trees(&mut writer);
        writer.flush().expect("stored");
        writer
            .commit(&snapshot_of(root))
            .expect("a snapshot stored");
        let mut objects = Vec::new();
        for kind in ObjectKind::ALL {
            for name in backend.list(kind).unwrap_or_default() {
                let bytes = backend.get(kind, &name).expect("listed");
                objects.push((kind, name, bytes));
            }
        }
        objects
    })
}

/// The honest repository's trees: `sub/` holding file `a` and symlink `l`
/// to it, file `b` and an empty directory `e` beside it. Returns the root
/// tree's id and its encoding.
fn honest_trees(writer: &mut crate::BlobWriter<'_>) -> (BlobId, Vec<u8>) {
    let content = writer
        .add_blob(BlobType::Data, b"hello".to_vec())
        .expect("stored");
    let file = |name: &[u8]| Node {
        mode: 0o644,
        ..Node::new(
            name.to_vec(),
            NodeKind::File {
                size: 5,
                content: vec![content],
                sparse: false,
            },
        )
    };
    let sub = Tree {
        nodes: vec![
            file(b"a"),
            Node::new(
                b"l".to_vec(),
                NodeKind::Symlink {
                    target: b"a".to_vec(),
                },
            ),
        ],
    };
    let add_tree = |writer: &mut crate::BlobWriter<'_>, tree: &Tree| {
        writer
            .add_blob(BlobType::Tree, tree.encode())
            .expect("stored")
    };
    let empty = add_tree(writer, &Tree::default());
    let sub = add_tree(writer, &sub);
    let directory = |name: &[u8], subtree| Node {
        mode: 0o755,
        ..Node::new(name.to_vec(), NodeKind::Directory { subtree })
    };
    let root = Tree {
        nodes: vec![file(b"b"), directory(b"e", empty), directory(b"sub", sub)],
    };
    (add_tree(writer, &root), root.encode())
}

fn snapshot_of(tree: BlobId) -> Snapshot {
    Snapshot {
        time_ns: 1_700_000_000_000_000_000,
        hostname: "fuzz".into(),
        username: "fuzz".into(),
        paths: vec![b"/src".to_vec()],
        tags: vec![],
        parent: None,
        tree,
        program_version: "fuzz".into(),
        summary: crate::Summary::default(),
        unreadable: vec![],
        original: None,
    }
}

/// Changes one stored object as `data` says: `[object][offset u32 LE]
/// [how][bytes...]`, where `how` is 0 xor the bytes in at the offset, 1
/// truncate at the offset, 2 insert the bytes at the offset, 3 replace the
/// object by the bytes; with 4 added, the changed object is stored under
/// the hash of its new bytes (the old one removed), as a forger would.
fn mutate(backend: &MemoryBackend, objects: &[(ObjectKind, String, Vec<u8>)], data: &[u8]) {
    let [which, a, b, c, d, how, payload @ ..] = data else {
        return;
    };
    let (kind, name, bytes) = &objects[*which as usize % objects.len()];
    let mut bytes = bytes.clone();
    let at = (u32::from_le_bytes([*a, *b, *c, *d]) as usize).min(bytes.len());
    match how % 4 {
        0 => {
            for (byte, x) in bytes[at..].iter_mut().zip(payload) {
                *byte ^= x;
            }
        }
        1 => bytes.truncate(at),
        2 => {
            bytes.splice(at..at, payload.iter().copied());
        }
        _ => bytes = payload.to_vec(),
    }
    let renamed = how % 8 >= 4 && *kind != ObjectKind::Config;
    let _ = backend.delete(*kind, name);
    let name = if renamed {
        Id::of_bytes(&bytes).to_hex()
    } else {
        name.clone()
    };
    let _ = backend.put(*kind, &name, &bytes);
}

/// A whole repository (§1–§17), structure-aware: the honest repository of
/// [`base_repository`], then as the first byte says, either (even) the rest
/// of the input stored as a tree blob with a valid id and a snapshot naming
/// it, as anyone holding the id key and the public key (a write-only key)
/// can write; or (odd) one stored object changed by [`mutate`]. Then open,
/// list every snapshot recursively, restore each into a scratch directory
/// and check with every pack read. None may panic, and nothing may be
/// written outside the restore's target.
pub fn repository(data: &[u8]) {
    let _ = restore_repository(data);
}

/// [`repository`]'s work; returns how many files the restores wrote, or
/// `None` where the input stopped it early (a repository that does not
/// open, say).
fn restore_repository(data: &[u8]) -> Option<u64> {
    let (&mode, rest) = data.split_first()?;
    let objects = base_repository();
    let backend = MemoryBackend::default();
    backend.create().ok()?;
    for (kind, name, bytes) in objects {
        let _ = backend.put(*kind, name, bytes);
    }
    if mode % 2 == 1 {
        mutate(&backend, objects, rest);
    }
    let scratch = tempfile::tempdir().ok()?;
    let cache = scratch.path().join("cache");
    let repository = Repository::open(Box::new(backend), REPOSITORY_PASSWORD, &cache).ok()?;
    if mode % 2 == 0 {
        let mut writer = repository.start_write(3).ok()?;
        let tree = writer.add_blob(BlobType::Tree, rest.to_vec()).ok()?;
        writer.commit(&snapshot_of(tree)).ok()?;
    }
    let list = repository.snapshots().ok()?;
    let outside = scratch.path().join("outside");
    let _ = std::fs::create_dir(&outside);
    let mut files = 0;
    for (n, (_, snapshot)) in list.snapshots.iter().enumerate() {
        let _ = crate::browse::list(&repository, snapshot, None, true, &mut |_, _| Ok(()));
        let options = crate::RestoreOptions {
            target: scratch.path().join(format!("target{n}")),
            ..crate::RestoreOptions::default()
        };
        if let Ok(summary) =
            crate::restore(&repository, snapshot, &options, &crate::progress::Silent)
        {
            files += summary.files;
        }
    }
    let _ = crate::check::check(
        &repository,
        &crate::check::CheckOptions {
            read_data: Some(crate::check::DataSubset::All),
        },
    );
    let escaped = std::fs::read_dir(&outside).map_or(0, |entries| entries.count());
    assert_eq!(escaped, 0, "a restore wrote outside its target");
    Some(files)
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
        assert!(session::open(&seed("session", "session"), keys.private.as_ref().unwrap()).is_ok());
        assert!(Snapshot::open(&seed("snapshot", "snapshot"), &data_sealer()).is_ok());
        assert!(IndexSegment::open(&seed("index_segment", "index_segment"), &index).is_ok());
        assert!(Lock::open(&seed("lock", "lock"), &index).is_ok());
        assert!(epoch::open(&seed("epoch", "epoch_record"), &epoch_private()).is_ok());
        assert!(
            session::open_rewrapped(&seed("session", "session_rewrapped"), &epoch_private())
                .is_ok()
        );
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

    /// Writes the structure-aware target's seeds (with
    /// `CAIRN_WRITE_SEEDS=1`): the honest root tree, trees a hostile writer
    /// would store (escaping names, a symlink then a directory through it,
    /// a repeated name, a huge sparse file), and a few changes to stored
    /// objects. Otherwise checks that they are there.
    #[test]
    fn repository_seeds_are_written() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/repository");
        let objects = base_repository();
        let backend = MemoryBackend::default();
        let cache = tempfile::tempdir().unwrap();
        let repository = Repository::init_with_keys(
            Box::new(backend),
            REPOSITORY_PASSWORD,
            &crate::testing::fast_options(),
            cache.path(),
            master(),
        )
        .unwrap();
        let mut writer = repository.start_write(3).unwrap();
        let (_, honest) = honest_trees(&mut writer);
        let honest_tree = Tree::decode(&honest).unwrap();
        let sub = honest_tree.nodes[2].clone();
        let named = |name: &[u8], node: &Node| Node {
            name: name.to_vec(),
            ..node.clone()
        };
        let link = |name: &[u8], target: &[u8]| {
            Node::new(
                name.to_vec(),
                NodeKind::Symlink {
                    target: target.to_vec(),
                },
            )
        };
        let hostile = [
            ("honest_root", honest.clone()),
            (
                "escaping_names",
                Tree {
                    nodes: vec![named(b"..", &sub), named(b"a/b", &honest_tree.nodes[0])],
                }
                .encode(),
            ),
            (
                "symlink_then_directory",
                Tree {
                    nodes: vec![link(b"s", b"../outside"), named(b"s", &sub)],
                }
                .encode(),
            ),
            (
                "repeated_name",
                Tree {
                    nodes: vec![honest_tree.nodes[0].clone(), honest_tree.nodes[0].clone()],
                }
                .encode(),
            ),
            (
                "huge_sparse_file",
                Tree {
                    nodes: vec![Node::new(
                        b"big".to_vec(),
                        NodeKind::File {
                            size: u64::MAX,
                            content: vec![],
                            sparse: true,
                        },
                    )],
                }
                .encode(),
            ),
        ];
        let mut seeds: Vec<(String, Vec<u8>)> = hostile
            .into_iter()
            .map(|(name, tree)| (format!("tree_{name}"), [&[0u8][..], &tree].concat()))
            .collect();
        for (n, (kind, _, _)) in objects.iter().enumerate() {
            seeds.push((
                format!("flip_{n}_{}", kind.dir_name()),
                vec![1, n as u8, 40, 0, 0, 0, 0, 0x80],
            ));
        }
        if std::env::var_os("CAIRN_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in &seeds {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        for (name, bytes) in &seeds {
            assert_eq!(
                &std::fs::read(dir.join(name)).unwrap_or_default(),
                bytes,
                "seed {name} (rewrite with CAIRN_WRITE_SEEDS=1)"
            );
        }
        // The honest seed gets through to restores: the base snapshot's
        // two files and the new snapshot's two.
        assert_eq!(restore_repository(&seeds[0].1), Some(4));
    }
}
