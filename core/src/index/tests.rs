//! Tests of the index cache.

use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

use super::tables::PACKS;
use super::*;
use crate::id::{BlobId, Id, SegmentId};
use crate::object::segment::{IndexSegment, IndexedPack};

fn entry(n: u8) -> PackEntry {
    PackEntry {
        id: BlobId(Id([n; 32])),
        blob_type: 0,
        compression: 1,
        offset: u32::from(n) * 100,
        stored_len: 100,
        raw_len: 200,
    }
}

#[test]
fn absorb_lookup_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/index.redb");
    let cache = IndexCache::open(&path).unwrap().cache;
    let segment = IndexSegment {
        packs: vec![IndexedPack {
            pack: PackId(Id([1; 32])),
            session: SessionId(Id([2; 32])),
            entries: vec![entry(3), entry(4)],
        }],
    };
    let decoded = IndexSegment::decode(&segment.encode()).unwrap();
    assert_eq!(decoded, segment);
    cache.absorb(SegmentId(Id([5; 32])), &segment).unwrap();
    let found = cache.lookup(&BlobId(Id([4; 32]))).unwrap().unwrap();
    assert_eq!(found.pack, PackId(Id([1; 32])));
    assert_eq!(found.session, SessionId(Id([2; 32])));
    assert_eq!(found.entry, entry(4));
    assert!(cache.lookup(&BlobId(Id([9; 32]))).unwrap().is_none());
    assert!(cache.pack_number(&BlobId(Id([4; 32]))).unwrap().is_some());
    assert!(cache.pack_number(&BlobId(Id([9; 32]))).unwrap().is_none());
    assert_eq!(cache.blob_count().unwrap(), 2);
    assert_eq!(cache.known_segments().unwrap().len(), 1);
    drop(cache);
    // Reopening keeps the data; a damaged file is replaced.
    assert_eq!(
        IndexCache::open(&path).unwrap().cache.blob_count().unwrap(),
        2
    );
    std::fs::write(&path, b"not a database at all").unwrap();
    let cache = IndexCache::open(&path).unwrap().cache;
    assert_eq!(cache.blob_count().unwrap(), 0);
    cache.absorb(SegmentId(Id([5; 32])), &segment).unwrap();
    cache.clear().unwrap();
    assert_eq!(cache.blob_count().unwrap(), 0);
}

#[test]
fn packs_are_numbered_once_and_lookups_name_the_right_pack() {
    let dir = tempfile::tempdir().unwrap();
    let cache = IndexCache::open(&dir.path().join("index.redb"))
        .unwrap()
        .cache;
    let pack = |n: u8, entries| IndexedPack {
        pack: PackId(Id([n; 32])),
        session: SessionId(Id([n + 100; 32])),
        entries,
    };
    let first = IndexSegment {
        packs: vec![
            pack(1, vec![entry(10), entry(11)]),
            pack(2, vec![entry(20)]),
        ],
    };
    cache.absorb(SegmentId(Id([1; 32])), &first).unwrap();
    // The same packs again (as after a rebuild), and a new one.
    let second = IndexSegment {
        packs: vec![pack(2, vec![entry(20)]), pack(3, vec![entry(30)])],
    };
    cache.absorb(SegmentId(Id([2; 32])), &second).unwrap();
    for (blob, pack_byte) in [(10, 1), (11, 1), (20, 2), (30, 3)] {
        let found = cache.lookup(&BlobId(Id([blob; 32]))).unwrap().unwrap();
        assert_eq!(found.pack, PackId(Id([pack_byte; 32])), "blob {blob}");
        assert_eq!(found.session, SessionId(Id([pack_byte + 100; 32])));
        assert_eq!(found.entry, entry(blob));
    }
    let txn = cache.db.begin_read().unwrap();
    assert_eq!(txn.open_table(PACKS).unwrap().len().unwrap(), 3);
    drop(txn);

    // One blob in two packs of a segment: the later entry wins; and
    // across segments, the segment absorbed last.
    let twice = IndexSegment {
        packs: vec![pack(4, vec![entry(40)]), pack(5, vec![entry(40)])],
    };
    cache.absorb(SegmentId(Id([3; 32])), &twice).unwrap();
    let found = cache.lookup(&BlobId(Id([40; 32]))).unwrap().unwrap();
    assert_eq!(found.pack, PackId(Id([5; 32])));
    let moved = IndexSegment {
        packs: vec![pack(6, vec![entry(10)])],
    };
    cache.absorb(SegmentId(Id([4; 32])), &moved).unwrap();
    let found = cache.lookup(&BlobId(Id([10; 32]))).unwrap().unwrap();
    assert_eq!(found.pack, PackId(Id([6; 32])));
    assert_eq!(found.session, SessionId(Id([106; 32])));

    // After a clear, numbering starts again and lookups still agree.
    cache.clear().unwrap();
    assert!(cache.lookup(&BlobId(Id([10; 32]))).unwrap().is_none());
    cache.absorb(SegmentId(Id([2; 32])), &second).unwrap();
    let found = cache.lookup(&BlobId(Id([30; 32]))).unwrap().unwrap();
    assert_eq!(found.pack, PackId(Id([3; 32])));
    assert_eq!(found.session, SessionId(Id([103; 32])));
    assert!(cache.pack_number(&BlobId(Id([10; 32]))).unwrap().is_none());
}

#[test]
fn a_cache_of_an_older_layout_is_emptied_and_refilled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    {
        let old_blobs: TableDefinition<[u8; 32], [u8; 18]> = TableDefinition::new("blobs.v2");
        let old_segments: TableDefinition<[u8; 32], u64> = TableDefinition::new("segments.v2");
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(old_blobs)
            .unwrap()
            .insert([3; 32], [0; 18])
            .unwrap();
        txn.open_table(old_segments)
            .unwrap()
            .insert([5; 32], 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let cache = IndexCache::open(&path).unwrap().cache;
    assert!(
        cache.known_segments().unwrap().is_empty(),
        "so sync absorbs every segment"
    );
    let txn = cache.db.begin_read().unwrap();
    let mut names: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .chain(
            txn.list_multimap_tables()
                .unwrap()
                .map(|t| t.name().to_string()),
        )
        .collect();
    names.sort();
    let mut expected = TABLE_NAMES.map(String::from).to_vec();
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn a_table_of_the_wrong_type_is_damage_and_the_cache_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    {
        let wrong: TableDefinition<u64, u64> = TableDefinition::new("blobs.v3");
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(wrong).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let cache = IndexCache::open(&path).unwrap().cache;
    assert_eq!(cache.blob_count().unwrap(), 0);
    assert!(cache.known_segments().unwrap().is_empty());
}

#[test]
fn a_blob_stored_again_keeps_every_location() {
    let dir = tempfile::tempdir().unwrap();
    let cache = IndexCache::open(&dir.path().join("index.redb"))
        .unwrap()
        .cache;
    let pack = |n: u8| IndexedPack {
        pack: PackId(Id([n; 32])),
        session: SessionId(Id([n + 100; 32])),
        entries: vec![entry(7)],
    };
    let blob = BlobId(Id([7; 32]));
    for (segment, n) in [(1, 1), (2, 2), (3, 2), (4, 3)] {
        cache
            .absorb(
                SegmentId(Id([segment; 32])),
                &IndexSegment {
                    packs: vec![pack(n)],
                },
            )
            .unwrap();
    }
    let found: Vec<PackId> = cache
        .locations(&blob, true)
        .unwrap()
        .into_iter()
        .map(|(_, location)| location.pack)
        .collect();
    assert_eq!(
        found[0],
        PackId(Id([3; 32])),
        "the last absorbed comes first"
    );
    let mut others = found[1..].to_vec();
    others.sort_by_key(|p| p.0 .0);
    assert_eq!(others, [PackId(Id([1; 32])), PackId(Id([2; 32]))]);
    assert_eq!(cache.locations(&blob, false).unwrap().len(), 1);
    assert_eq!(
        cache
            .pack(cache.pack_number(&blob).unwrap().unwrap())
            .unwrap(),
        Some((PackId(Id([3; 32])), SessionId(Id([103; 32]))))
    );
}

#[test]
fn an_unusable_cache_folder_falls_back_to_a_temporary_index() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"").unwrap();
    let opened = IndexCache::open(&blocked.join("index.redb")).unwrap();
    assert!(!opened.cache.is_persistent());
    assert!(opened.notice.unwrap().contains("temporary"));
    opened
        .cache
        .absorb(SegmentId(Id([1; 32])), &IndexSegment::default())
        .unwrap();
    assert_eq!(opened.cache.known_segments().unwrap().len(), 1);
}

#[test]
fn a_second_opener_gets_a_private_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let first = IndexCache::open(&path).unwrap().cache;
    let second = IndexCache::open(&path).unwrap().cache;
    assert_eq!(second.blob_count().unwrap(), 0);
    drop(first);
}
