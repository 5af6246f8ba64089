//! Checks the test vectors in `format-spec/vectors/vectors.json`: fixed
//! keys, nonces and inputs must produce exactly the bytes recorded there.
//! Run with `CAIRN_WRITE_VECTORS=1` to rewrite the file after a deliberate
//! format change (which also changes SPEC.md).

use std::collections::BTreeMap;

use x25519_dalek::{PublicKey, StaticSecret};

use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::{Sealer, SecretKey};
use crate::id::{BlobId, Id, PackId, SessionId, SnapshotId};
use crate::object::blob::{self, BlobType};
use crate::object::config::Config;
use crate::object::epoch::{self, EpochRecord, Rewrapped};
use crate::object::key_file::{
    self, KdfParams, KeyFileSpec, KeyLabels, KeyRole, MasterKeys, MASTER_LEN,
};
use crate::object::lock::{Lock, NO_SESSION};
use crate::object::pack::PackWriter;
use crate::object::sealed::{self, SealedKind};
use crate::object::segment::{IndexSegment, IndexedPack};
use crate::object::session;
use crate::object::snapshot::{Snapshot, Summary};
use crate::object::tree::{Node, NodeKind, Timestamp, Tree, Xattr};
use crate::testing::pseudo_random;

const VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../format-spec/vectors/vectors.json"
);

/// Master key bytes 0x00, 0x01, ..., 0x67.
fn master() -> MasterKeys {
    let mut bytes = [0u8; MASTER_LEN];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    MasterKeys::from_fixed(bytes)
}

fn nonce(fill: u8) -> [u8; 12] {
    [fill; 12]
}

fn sample_tree() -> Tree {
    let base = Node {
        name: b"a.txt".to_vec(),
        kind: NodeKind::File {
            size: 5,
            content: vec![BlobId(Id([0xaa; 32]))],
            sparse: false,
        },
        mode: 0o4755,
        uid: 1000,
        gid: 100,
        user: Some(b"alice".to_vec()),
        group: None,
        mtime: Timestamp {
            secs: -1,
            nanos: 999_999_999,
        },
        atime: Timestamp {
            secs: 4_102_444_800,
            nanos: 1,
        },
        ctime: Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        },
        device: 2049,
        inode: 42,
        links: 1,
        xattrs: vec![Xattr {
            name: b"user.k".to_vec(),
            value: vec![0, 1, 2],
        }],
    };
    let link = Node {
        name: b"l".to_vec(),
        kind: NodeKind::Symlink {
            target: vec![0xff, b'/', b'x'],
        },
        xattrs: vec![],
        ..base.clone()
    };
    Tree {
        nodes: vec![base, link],
    }
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        time_ns: 1_700_000_000_123_456_789,
        hostname: "host".into(),
        username: "root".into(),
        paths: vec![b"/etc".to_vec()],
        tags: vec!["nightly".into()],
        parent: Some(SnapshotId(Id([0x11; 32]))),
        tree: BlobId(Id([0x22; 32])),
        program_version: "cairn 0.1.0".into(),
        summary: Summary {
            files_new: 1,
            files_changed: 2,
            files_unmodified: 3,
            dirs_new: 4,
            dirs_changed: 5,
            dirs_unmodified: 6,
            bytes_read: 7,
            bytes_added: 8,
            blobs_added: 9,
            duration_ns: 10,
        },
        unreadable: vec![],
        original: Some(SnapshotId(Id([0x12; 32]))),
    }
}

/// Every vector: name → (what it is, hex bytes).
fn compute() -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    let mut put = |name: &str, what: &str, bytes: &[u8]| {
        out.insert(name.to_string(), (what.to_string(), hex::encode(bytes)));
    };
    let master = master();
    let data_key = SecretKey([0x33; 32]);
    let sealer = Sealer::new(&data_key);
    let session_id = SessionId(Id([0x44; 32]));

    let text = b"cairn test vector: hello, hello, hello, hello!".to_vec();
    let blob_id = master.id_key.blob_id(BlobType::Data.to_byte(), &text);
    put(
        "blob_id",
        "keyed BLAKE3 (id key = master bytes 32..64) of 0x00 (type data) || blob_plaintext",
        &blob_id.0 .0,
    );
    put("blob_plaintext", "input of blob_id and sealed_blob", &text);
    let sealed =
        blob::Encoder::new(3).seal_with_nonce(blob_id, BlobType::Data, &text, &sealer, nonce(0x55));
    put(
        "sealed_blob",
        "blob_plaintext as a data blob, configured level 3 (so zstd level 4: it is under 64 KiB; one zstd frame from libzstd 1.5.7 with the content size and no checksum), data key 0x33*32, nonce 0x55*12",
        &sealed.bytes,
    );
    let raw = pseudo_random(64, 1);
    let raw_id = master.id_key.blob_id(BlobType::Tree.to_byte(), &raw);
    let sealed_raw =
        blob::Encoder::new(3).seal_with_nonce(raw_id, BlobType::Tree, &raw, &sealer, nonce(0x56));
    put(
        "sealed_blob_raw",
        "64 xorshift bytes (seed 1) as a tree blob: incompressible, so stored raw; nonce 0x56*12",
        &sealed_raw.bytes,
    );

    let mut pack = PackWriter::new(Vec::new());
    pack.add(&sealed).unwrap();
    pack.add(&sealed_raw).unwrap();
    let pack = pack
        .finish_with_nonce(session_id, &sealer, nonce(0x57))
        .unwrap();
    put(
        "pack",
        "sealed_blob || sealed_blob_raw || trailer (session 0x44*32, nonce 0x57*12) || footer",
        &pack.sink,
    );
    put(
        "pack_id",
        "unkeyed BLAKE3 of pack: its file name",
        &pack.id.0 .0,
    );

    let segment = IndexSegment {
        packs: vec![IndexedPack {
            pack: PackId(pack.id.0),
            session: session_id,
            entries: pack.entries.clone(),
        }],
    };
    put(
        "index_segment_plaintext",
        "the index segment describing pack",
        &segment.encode(),
    );
    let index_sealer = Sealer::new(&master.index_key);
    put(
        "index_segment",
        "index_segment_plaintext sealed with the index key (master bytes 64..96), nonce 0x58*12",
        &sealed::seal_with_nonce(
            SealedKind::IndexSegment,
            session_id,
            &index_sealer,
            &segment.encode(),
            nonce(0x58),
        ),
    );

    put(
        "tree_plaintext",
        "a tree with a setuid file and a non-UTF-8 symlink",
        &sample_tree().encode(),
    );
    let snapshot = sample_snapshot();
    put(
        "snapshot_plaintext",
        "a snapshot's plaintext",
        &snapshot.encode(),
    );
    let mut version_1 = Snapshot {
        original: None,
        ..snapshot.clone()
    }
    .encode();
    version_1[0] = 1;
    version_1.pop();
    put(
        "snapshot_plaintext_v1",
        "a snapshot's plaintext as version 1 wrote it: no `original` (it decodes with original None)",
        &version_1,
    );
    put(
        "snapshot",
        "snapshot_plaintext sealed by session 0x44*32 with data key 0x33*32, nonce 0x59*12",
        &sealed::seal_with_nonce(
            SealedKind::Snapshot,
            session_id,
            &sealer,
            &snapshot.encode(),
            nonce(0x59),
        ),
    );

    let lock = Lock {
        time_ns: 1_764_547_200_000_000_000,
        exclusive: true,
        hostname: "web-1".into(),
        host_id: "5f1c0e9a2b7d4c3e8f6a1b2c3d4e5f60 pid:[4026531836]".into(),
        username: "root".into(),
        pid: 4242,
        command: "forget".into(),
    };
    put(
        "lock_plaintext",
        "an exclusive lock's plaintext",
        &lock.encode(),
    );
    put(
        "lock",
        "lock_plaintext sealed with the index key, session field all zeros, nonce 0x5c*12",
        &sealed::seal_with_nonce(
            SealedKind::Lock,
            NO_SESSION,
            &index_sealer,
            &lock.encode(),
            nonce(0x5c),
        ),
    );

    let (_, session_bytes) = session::create_fixed(
        &master.public(),
        &StaticSecret::from([0x66; 32]),
        SecretKey([0x33; 32]),
        nonce(0x5a),
    );
    put(
        "session",
        "data key 0x33*32 wrapped to the master's public key with ephemeral secret 0x66*32, nonce 0x5a*12",
        &session_bytes,
    );
    let epoch_private = StaticSecret::from([0x67; 32]);
    let rewrapped = session::rewrap_with(
        SessionId(Id::of_bytes(&session_bytes)),
        1,
        &SecretKey([0x33; 32]),
        &PublicKey::from(&epoch_private),
        &StaticSecret::from([0x68; 32]),
        nonce(0x5e),
    );
    put(
        "session_rewrapped",
        "the data key of vector session, re-wrapped for epoch 1 to the public key of private key 0x67*32, with ephemeral secret 0x68*32, nonce 0x5e*12",
        &rewrapped,
    );
    put(
        "epoch_record",
        "record of epoch 1 sealed under private key 0x67*32, nonce 0x5f*12: no previous record; vector session mapped to vector session_rewrapped",
        &epoch::seal_with_nonce(
            1,
            &epoch_private,
            &EpochRecord {
                previous: None,
                sessions: vec![Rewrapped {
                    original: SessionId(Id::of_bytes(&session_bytes)),
                    object: Id::of_bytes(&rewrapped),
                }],
            },
            nonce(0x5f),
        ),
    );
    put(
        "repository_public_key",
        "X25519 public key of master bytes 0..32",
        master.public().as_bytes(),
    );

    let fast = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    put(
        "key_file",
        "version 1: master sealed under password \"correct horse\" with Argon2id m=64 KiB t=1 p=1, salt 0x77*32, nonce 0x5b*12",
        &key_file::seal_key_file_v1_with(&master, b"correct horse", fast, [0x77; 32], nonce(0x5b)),
    );
    let labels = KeyLabels {
        host: "db1".into(),
        user: "backup".into(),
        created_s: 1_800_000_000,
    };
    for (name, role, epoch) in [
        ("key_file_v2", KeyRole::Full, 0),
        ("key_file_write_only", KeyRole::WriteOnly, 1),
    ] {
        let spec = KeyFileSpec {
            role,
            epoch,
            labels: labels.clone(),
        };
        put(
            name,
            &format!("version 2, role {role:?}, epoch {epoch}: the same password, KDF, salt and keys nonce as key_file, labels host \"db1\" user \"backup\" created 1800000000 sealed with nonce 0x5d*12"),
            &key_file::seal_key_file_with(&master, b"correct horse", fast, &spec, [0x77; 32], [nonce(0x5b), nonce(0x5d)]).unwrap(),
        );
    }

    let lanes = KdfParams {
        parallelism: 4,
        ..fast
    };
    put(
        "key_file_lanes",
        "version 2, role Full, epoch 0: as key_file_v2, with Argon2id m=64 KiB t=1 p=4 (four lanes, as every new key file has)",
        &key_file::seal_key_file_with(&master, b"correct horse", lanes, &KeyFileSpec { role: KeyRole::Full, epoch: 0, labels: labels.clone() }, [0x77; 32], [nonce(0x5b), nonce(0x5d)]).unwrap(),
    );

    let config = Config {
        version: 1,
        id: Id([0x88; 32]),
        chunker: ChunkerParams::DEFAULT,
        compression_level: 3,
        pack_target_bytes: 16 << 20,
    };
    put(
        "config",
        "repository config with the default chunker, compression level 3 (not the default 4), pack target 16 MiB and id 0x88*32",
        &config.to_bytes(),
    );

    let chunk_input = pseudo_random(1 << 20, 2);
    let params = ChunkerParams {
        min_bytes: 2048,
        avg_bytes: 8192,
        max_bytes: 32768,
    };
    let cuts: Vec<u8> = Chunker::new(params, master.chunker_seed)
        .cut_all(&chunk_input)
        .iter()
        .flat_map(|len| (*len as u32).to_le_bytes())
        .collect();
    put(
        "chunk_lengths",
        "u32 LE chunk lengths of 1 MiB of xorshift bytes (seed 2), min 2 KiB avg 8 KiB max 32 KiB, seed = master bytes 96..104",
        &cuts,
    );
    out
}

fn to_json(vectors: &BTreeMap<String, (String, String)>) -> String {
    let object: serde_json::Map<String, serde_json::Value> = vectors
        .iter()
        .map(|(name, (what, hex))| {
            (
                name.clone(),
                serde_json::json!({ "description": what, "hex": hex }),
            )
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::Value::Object(object)).expect("JSON of strings")
        + "\n"
}

#[test]
fn format_matches_recorded_vectors() {
    let computed = compute();
    if std::env::var_os("CAIRN_WRITE_VECTORS").is_some() {
        std::fs::write(VECTORS_PATH, to_json(&computed)).expect("write vectors");
    }
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(VECTORS_PATH).expect("vectors file exists"))
            .expect("vectors file is JSON");
    let recorded = recorded.as_object().expect("vectors file is an object");
    assert_eq!(recorded.len(), computed.len(), "vector names differ");
    for (name, (_, hex)) in &computed {
        let expected = recorded[name]["hex"].as_str().expect("hex string");
        assert_eq!(hex, expected, "vector {name} changed: the format changed");
    }
}

#[test]
fn recorded_vectors_open() {
    let master = master();
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(VECTORS_PATH).unwrap()).unwrap();
    let bytes = |name: &str| hex::decode(recorded[name]["hex"].as_str().unwrap()).unwrap();
    let (opened, _) = key_file::open_key_file(&bytes("key_file"), b"correct horse").unwrap();
    assert_eq!(opened.public().as_bytes(), master.public().as_bytes());
    let (opened, header) =
        key_file::open_key_file(&bytes("key_file_lanes"), b"correct horse").unwrap();
    assert_eq!(header.kdf.parallelism, 4);
    assert_eq!(opened.public().as_bytes(), master.public().as_bytes());
    let (opened, header) =
        key_file::open_key_file(&bytes("key_file_write_only"), b"correct horse").unwrap();
    assert_eq!((header.role, header.epoch), (KeyRole::WriteOnly, 1));
    assert_eq!(opened.public().as_bytes(), master.public().as_bytes());
    assert_eq!(
        key_file::read_labels(&bytes("key_file_v2"), &master)
            .unwrap()
            .host,
        "db1"
    );
    let session = session::open(&bytes("session"), master.private.as_ref().unwrap()).unwrap();
    let epoch_private = StaticSecret::from([0x67; 32]);
    let rewrapped = session::open_rewrapped(&bytes("session_rewrapped"), &epoch_private).unwrap();
    assert_eq!(rewrapped.id, session.id);
    assert_eq!(rewrapped.data_key.as_bytes(), &[0x33; 32]);
    let record = epoch::open(&bytes("epoch_record"), &epoch_private).unwrap();
    assert_eq!(record.sessions[0].original, session.id);
    assert_eq!(
        record.sessions[0].object,
        Id::of_bytes(&bytes("session_rewrapped"))
    );
    let snapshot = sealed::open(SealedKind::Snapshot, &session.sealer, &bytes("snapshot")).unwrap();
    assert_eq!(Snapshot::decode(&snapshot).unwrap(), sample_snapshot());
    assert_eq!(
        Snapshot::decode(&bytes("snapshot_plaintext_v1")).unwrap(),
        Snapshot {
            original: None,
            ..sample_snapshot()
        }
    );
    assert_eq!(
        Tree::decode(&bytes("tree_plaintext")).unwrap(),
        sample_tree()
    );
}
