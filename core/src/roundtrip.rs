//! Property tests for every stored structure (SPEC.md §3-§14): encoding then
//! decoding is the identity, and decoding arbitrary bytes returns an error,
//! never a panic. One file, because the strategies that build valid values
//! (safe names, plausible entries) are shared between the structures.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::chunker::ChunkerParams;
use crate::codec;
use crate::crypto::{Sealer, SecretKey};
use crate::id::{BlobId, Id, PackId, SessionId, SnapshotId};
use crate::object::blob::{self, BlobType, Compression};
use crate::object::config::Config;
use crate::object::key_file::{self, KdfParams, MasterKeys, MASTER_LEN};
use crate::object::lock::Lock;
use crate::object::pack::{self, PackEntry, PackWriter, FOOTER_LEN};
use crate::object::sealed::{self, SealedKind};
use crate::object::segment::{IndexSegment, IndexedPack};
use crate::object::session;
use crate::object::snapshot::{Snapshot, Summary};
use crate::object::tree::{Node, NodeKind, Timestamp, Tree, Xattr};

fn id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id)
}

fn blob_id() -> impl Strategy<Value = BlobId> {
    id().prop_map(BlobId)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0..1_000_000_000u32).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

/// Names a tree accepts: 1 to 255 bytes, no `/` or NUL, not `.` or `..`.
fn safe_name() -> impl Strategy<Value = Vec<u8>> {
    vec(
        any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
        1..24,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn node_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        (any::<u64>(), vec(blob_id(), 0..4), any::<bool>()).prop_map(|(size, content, sparse)| {
            NodeKind::File {
                size,
                content,
                sparse,
            }
        }),
        blob_id().prop_map(|subtree| NodeKind::Directory { subtree }),
        vec(any::<u8>(), 0..40).prop_map(|target| NodeKind::Symlink { target }),
        Just(NodeKind::Fifo),
        any::<u64>().prop_map(|rdev| NodeKind::CharDevice { rdev }),
        any::<u64>().prop_map(|rdev| NodeKind::BlockDevice { rdev }),
    ]
}

fn node(name: Vec<u8>) -> impl Strategy<Value = Node> {
    (
        node_kind(),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (
            proptest::option::of(vec(any::<u8>(), 0..12)),
            proptest::option::of(vec(any::<u8>(), 0..12)),
        ),
        (timestamp(), timestamp(), timestamp()),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        vec((vec(any::<u8>(), 1..12), vec(any::<u8>(), 0..12)), 0..3),
    )
        .prop_map(
            move |(kind, (mode, uid, gid), (user, group), (mtime, atime, ctime), ids, xattrs)| {
                Node {
                    name: name.clone(),
                    kind,
                    mode,
                    uid,
                    gid,
                    user,
                    group,
                    mtime,
                    atime,
                    ctime,
                    device: ids.0,
                    inode: ids.1,
                    links: ids.2,
                    xattrs: xattrs
                        .into_iter()
                        .map(|(name, value)| Xattr { name, value })
                        .collect(),
                }
            },
        )
}

/// A valid tree: entries sorted by name, names unique.
fn tree() -> impl Strategy<Value = Tree> {
    btree_map(safe_name(), Just(()), 0..6)
        .prop_flat_map(|names| names.into_keys().map(node).collect::<Vec<_>>())
        .prop_map(|nodes| Tree { nodes })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        (any::<i64>(), ".{0,12}", ".{0,12}"),
        (vec(vec(any::<u8>(), 0..16), 0..3), vec(".{0,8}", 0..3)),
        (proptest::option::of(id().prop_map(SnapshotId)), blob_id()),
        (".{0,12}", any::<[u64; 10]>()),
        (
            vec(vec(any::<u8>(), 0..16), 0..2),
            proptest::option::of(id().prop_map(SnapshotId)),
        ),
    )
        .prop_map(
            |(
                (time_ns, hostname, username),
                (paths, tags),
                (parent, tree),
                (version, n),
                (unreadable, original),
            )| {
                Snapshot {
                    time_ns,
                    hostname,
                    username,
                    paths,
                    tags,
                    parent,
                    tree,
                    program_version: version,
                    summary: Summary {
                        files_new: n[0],
                        files_changed: n[1],
                        files_unmodified: n[2],
                        dirs_new: n[3],
                        dirs_changed: n[4],
                        dirs_unmodified: n[5],
                        bytes_read: n[6],
                        bytes_added: n[7],
                        blobs_added: n[8],
                        duration_ns: n[9],
                    },
                    unreadable,
                    original,
                }
            },
        )
}

/// An entry every reader accepts (§11: known type and compression, bounded
/// lengths).
fn plausible_entry() -> impl Strategy<Value = PackEntry> {
    (
        blob_id(),
        0..2u8,
        0..2u8,
        any::<u32>(),
        28..=(blob::MAX_BLOB_LEN + 1024),
        0..=blob::MAX_BLOB_LEN,
    )
        .prop_map(
            |(id, blob_type, compression, offset, stored_len, raw_len)| PackEntry {
                id,
                blob_type,
                compression,
                offset,
                stored_len,
                raw_len,
            },
        )
}

fn segment() -> impl Strategy<Value = IndexSegment> {
    vec(
        (id(), id(), vec(plausible_entry(), 0..4)).prop_map(|(pack, session, entries)| {
            IndexedPack {
                pack: PackId(pack),
                session: SessionId(session),
                entries,
            }
        }),
        0..4,
    )
    .prop_map(|packs| IndexSegment { packs })
}

fn config() -> impl Strategy<Value = Config> {
    (
        id(),
        (6u32..=20, 0u32..=2, 0u32..=2),
        crate::object::config::COMPRESSION_LEVELS,
        crate::object::config::PACK_TARGET_RANGE,
    )
        .prop_map(|(id, (avg_log2, below, above), compression_level, pack)| {
            let avg = 1u32 << avg_log2.max(8);
            Config {
                version: crate::object::config::REPOSITORY_VERSION,
                id,
                chunker: ChunkerParams {
                    min_bytes: (avg >> below).max(64),
                    avg_bytes: avg,
                    max_bytes: (avg << above).clamp(1024, 16 << 20),
                },
                compression_level,
                pack_target_bytes: pack,
            }
        })
        .prop_filter("chunker bounds valid", |c| c.chunker.is_valid())
}

proptest! {
    #[test]
    fn trees_round_trip(tree in tree()) {
        prop_assert_eq!(Tree::decode(&tree.encode()).unwrap(), tree);
    }

    #[test]
    fn snapshots_round_trip(snapshot in snapshot()) {
        prop_assert_eq!(Snapshot::decode(&snapshot.encode()).unwrap(), snapshot);
    }

    #[test]
    fn locks_round_trip(
        time_ns in any::<i64>(), exclusive in any::<bool>(), hostname in ".{0,12}",
        host_id in ".{0,12}", username in ".{0,12}", pid in any::<u32>(), command in ".{0,12}",
        key in any::<[u8; 32]>(),
    ) {
        let lock = Lock { time_ns, exclusive, hostname, host_id, username, pid, command };
        prop_assert_eq!(Lock::decode(&lock.encode()).unwrap(), lock.clone());
        let sealer = Sealer::new(&SecretKey(key));
        prop_assert_eq!(Lock::open(&lock.seal(&sealer), &sealer).unwrap(), lock);
    }

    #[test]
    fn index_segments_round_trip(segment in segment()) {
        prop_assert_eq!(IndexSegment::decode(&segment.encode()).unwrap(), segment);
    }

    #[test]
    fn configs_round_trip(config in config()) {
        prop_assert_eq!(Config::from_bytes(&config.to_bytes()).unwrap(), config);
    }

    #[test]
    fn sealed_objects_round_trip(
        plaintext in vec(any::<u8>(), 0..200),
        session in id(),
        key in any::<[u8; 32]>(),
        kind in prop_oneof![
            Just(SealedKind::PackTrailer),
            Just(SealedKind::IndexSegment),
            Just(SealedKind::Snapshot),
            Just(SealedKind::Lock),
        ],
    ) {
        let sealer = Sealer::new(&SecretKey(key));
        let bytes = sealed::seal(kind, SessionId(session), &sealer, &plaintext);
        prop_assert_eq!(sealed::session_of(kind, &bytes).unwrap(), SessionId(session));
        prop_assert_eq!(sealed::open(kind, &sealer, &bytes).unwrap(), plaintext);
    }

    #[test]
    fn blobs_round_trip(
        plaintext in prop_oneof![
            vec(any::<u8>(), 0..300),
            (any::<u8>(), 0..3000usize).prop_map(|(b, n)| vec![b; n]),
        ],
        level in 0..6i32,
        tree_type in any::<bool>(),
        key in any::<[u8; 32]>(),
        id_key in any::<[u8; 32]>(),
    ) {
        let sealer = Sealer::new(&SecretKey(key));
        let id_key = crate::crypto::IdKey(id_key);
        let blob_type = if tree_type { BlobType::Tree } else { BlobType::Data };
        let id = id_key.blob_id(blob_type.to_byte(), &plaintext);
        let sealed = blob::Encoder::new(level).seal(id, blob_type, &plaintext, &sealer);
        if level == 0 {
            prop_assert_eq!(sealed.compression, Compression::None);
        }
        let opened = blob::open(
            &id, blob_type, sealed.compression, plaintext.len() as u32,
            sealed.bytes, &sealer, &id_key,
        ).unwrap();
        prop_assert_eq!(opened, plaintext);
    }

    #[test]
    fn packs_round_trip(
        blobs in vec(vec(any::<u8>(), 0..200), 0..5),
        session in id(),
        key in any::<[u8; 32]>(),
    ) {
        let sealer = Sealer::new(&SecretKey(key));
        let id_key = crate::crypto::IdKey([9; 32]);
        let mut writer = PackWriter::new(Vec::new());
        for plaintext in &blobs {
            let id = id_key.blob_id(BlobType::Data.to_byte(), plaintext);
            writer.add(&blob::Encoder::new(3).seal(id, BlobType::Data, plaintext, &sealer)).unwrap();
        }
        let finished = writer.finish(SessionId(session), &sealer).unwrap();
        let bytes = finished.sink;
        let len = bytes.len() as u64;
        let (offset, trailer_len) =
            pack::trailer_bounds(&bytes[bytes.len() - FOOTER_LEN..], len).unwrap();
        let trailer = &bytes[offset as usize..offset as usize + trailer_len as usize];
        prop_assert_eq!(pack::trailer_session(trailer).unwrap(), SessionId(session));
        let entries = pack::open_trailer(trailer, offset, &sealer).unwrap();
        prop_assert_eq!(&entries, &finished.entries);
        prop_assert_eq!(entries.len(), blobs.len());
    }

    #[test]
    fn sessions_round_trip(private in any::<[u8; 32]>(), ephemeral in any::<[u8; 32]>(),
                           data_key in any::<[u8; 32]>(), nonce in any::<[u8; 12]>()) {
        let private = StaticSecret::from(private);
        let (made, bytes) = session::create_fixed(
            &PublicKey::from(&private),
            &StaticSecret::from(ephemeral),
            SecretKey(data_key),
            nonce,
        );
        let opened = session::open(&bytes, &private).unwrap();
        prop_assert_eq!(opened.id, made.id);
        let sealed = made.sealer.seal(b"probe", b"");
        prop_assert_eq!(opened.sealer.open(&sealed, b"").unwrap(), b"probe".to_vec());
    }

    #[test]
    fn decoders_refuse_arbitrary_bytes_without_panicking(bytes in vec(any::<u8>(), 0..400)) {
        let _ = Tree::decode(&bytes);
        let _ = Snapshot::decode(&bytes);
        let _ = IndexSegment::decode(&bytes);
        let _ = Lock::decode(&bytes);
        let _ = Config::from_bytes(&bytes);
        let _ = codec::decode::<Vec<PackEntry>>(&bytes);
        let _ = pack::trailer_bounds(&bytes[..bytes.len().min(FOOTER_LEN)], bytes.len() as u64);
        let _ = pack::trailer_session(&bytes);
        let sealer = Sealer::new(&SecretKey([1; 32]));
        let _ = pack::open_trailer(&bytes, 0, &sealer);
        let _ = sealed::open(SealedKind::Snapshot, &sealer, &bytes);
        let _ = Lock::open(&bytes, &sealer);
        let _ = session::open(&bytes, &StaticSecret::from([2; 32]));
        let _ = key_file::open_key_file(&bytes, b"pw");
    }

    #[test]
    fn encoded_structures_with_a_flipped_byte_never_panic(
        tree in tree(), at in any::<prop::sample::Index>(), bit in 0..8u8,
    ) {
        let mut bytes = tree.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let _ = Tree::decode(&bytes);
    }
}

proptest! {
    // Each case runs Argon2 (at its smallest cost): fewer of them.
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn key_files_round_trip(master in any::<[u8; 32]>(), password in vec(any::<u8>(), 0..20)) {
        let mut bytes = [0u8; MASTER_LEN];
        bytes[..32].copy_from_slice(&master);
        bytes[40..72].copy_from_slice(&master);
        let keys = MasterKeys::from_fixed(bytes);
        let params = KdfParams { memory_kib: 8, iterations: 1, parallelism: 1 };
        let spec = key_file::KeyFileSpec {
            role: key_file::KeyRole::Full,
            epoch: 0,
            labels: key_file::KeyLabels::default(),
        };
        let file = key_file::seal_key_file(&keys, &password, params, &spec).unwrap();
        let (opened, _) = key_file::open_key_file(&file, &password).unwrap();
        prop_assert_eq!(opened.public().to_bytes(), keys.public().to_bytes());
        if password != b"not the password" {
            prop_assert!(key_file::open_key_file(&file, b"not the password").is_err());
        }
    }
}
