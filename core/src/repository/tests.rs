//! Unit tests of the repository: reads, writes, index rebuilds, dedup.

use super::index_sync::MAX_INDEX_REBUILDS;
use super::*;
use crate::backend::MemoryBackend;
use crate::backend::{Backend, ObjectKind};
use crate::id::BlobId;
use crate::object::blob::BlobType;
use crate::object::segment::IndexSegment;
use crate::object::snapshot::Snapshot;
use crate::object::tree::Tree;
use crate::testing::{fast_options, memory_repository, memory_repository_on};

fn sample_snapshot(tree: BlobId) -> Snapshot {
    Snapshot {
        time_ns: 1,
        hostname: "h".into(),
        username: "u".into(),
        paths: vec![b"/p".to_vec()],
        tags: vec![],
        parent: None,
        tree,
        program_version: "test".into(),
        summary: Default::default(),
        unreadable: vec![],
        original: None,
    }
}

/// Writes one blob and a snapshot naming it; returns the blob's id.
fn write_one(repo: &Repository, content: &[u8]) -> BlobId {
    let mut writer = repo.start_write(3).unwrap();
    let id = writer.add_blob(BlobType::Data, content.to_vec()).unwrap();
    let tree = writer
        .add_blob(BlobType::Tree, Tree::default().encode())
        .unwrap();
    writer.commit(&sample_snapshot(tree)).unwrap();
    id
}

#[test]
fn blobs_written_by_one_handle_are_found_by_another() {
    let backend = MemoryBackend::default();
    let cache_a = tempfile::tempdir().unwrap();
    let cache_b = tempfile::tempdir().unwrap();
    let a = Repository::init(
        Box::new(backend.clone()),
        b"pw",
        &fast_options(),
        cache_a.path(),
    )
    .unwrap();
    let b = Repository::open(Box::new(backend.clone()), b"pw", cache_b.path()).unwrap();
    let id = write_one(&a, b"written by a");
    assert!(b.locate(&id).unwrap().is_none(), "b has not synced yet");
    let b = Repository::open(Box::new(backend.clone()), b"pw", cache_b.path()).unwrap();
    assert_eq!(b.read_blob(&id, BlobType::Data).unwrap(), b"written by a");
    assert!(b.read_blob(&id, BlobType::Tree).is_err(), "type is checked");
    assert!(matches!(
        Repository::open(Box::new(backend), b"wrong", cache_b.path()),
        Err(Error::WrongPassword)
    ));
}

#[test]
fn duplicate_content_is_stored_once() {
    let (_cache, repo) = memory_repository();
    let mut writer = repo.start_write(3).unwrap();
    let ids = writer
        .add_blobs(
            BlobType::Data,
            vec![b"same".to_vec(), b"same".to_vec(), b"other".to_vec()],
        )
        .unwrap();
    assert_eq!(ids[0], ids[1]);
    let again = writer.add_blob(BlobType::Data, b"same".to_vec()).unwrap();
    assert_eq!(again, ids[0]);
    writer.flush().unwrap();
    assert_eq!(writer.blobs_added(), 2);
    assert!(
        writer.add_blob(BlobType::Data, b"late".to_vec()).is_err(),
        "flushed writers take no blobs"
    );
}

#[test]
fn vanished_segment_or_damaged_cache_rebuilds_the_index() {
    let backend = MemoryBackend::default();
    let (cache, repo) = memory_repository_on(&backend);
    let first = write_one(&repo, b"first");
    let second = write_one(&repo, b"second");
    drop(repo);

    // Remove the segment that lists `first`: it must leave the index.
    let segments = backend.list(ObjectKind::Index).unwrap();
    assert_eq!(segments.len(), 2);
    let repo = Repository::open(Box::new(backend.clone()), b"pw", cache.path()).unwrap();
    let holder = segments
        .iter()
        .find(|name| {
            let bytes = backend.get(ObjectKind::Index, name).unwrap();
            IndexSegment::open(&bytes, &repo.index_sealer)
                .unwrap()
                .packs
                .iter()
                .any(|p| p.entries.iter().any(|e| e.id == first))
        })
        .unwrap()
        .clone();
    drop(repo);
    backend.delete(ObjectKind::Index, &holder).unwrap();
    let repo = Repository::open(Box::new(backend.clone()), b"pw", cache.path()).unwrap();
    assert!(repo.locate(&first).unwrap().is_none());
    assert!(repo.locate(&second).unwrap().is_some());
    drop(repo);

    // A damaged cache file is replaced and refilled.
    let db = std::fs::read_dir(cache.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("index.redb");
    std::fs::write(&db, b"garbage").unwrap();
    let repo = Repository::open(Box::new(backend), b"pw", cache.path()).unwrap();
    assert_eq!(repo.read_blob(&second, BlobType::Data).unwrap(), b"second");
}

#[test]
fn a_cache_that_breaks_during_a_run_is_rebuilt_and_the_read_retried() {
    let (_cache, repo) = memory_repository();
    let id = write_one(&repo, b"kept");
    let path = repo.index().path().to_path_buf();
    *repo.index.write().unwrap() = IndexCache::without_tables(&path);
    assert_eq!(repo.read_blob(&id, BlobType::Data).unwrap(), b"kept");
    let notices = repo.take_notices();
    assert!(
        notices.iter().any(|n| n.contains("temporary")),
        "{notices:?}"
    );
    // Rebuilds are bounded: breaks beyond them are errors, not a loop.
    for _ in 1..MAX_INDEX_REBUILDS {
        *repo.index.write().unwrap() = IndexCache::without_tables(&path);
        assert!(repo.read_blob(&id, BlobType::Data).is_ok());
    }
    *repo.index.write().unwrap() = IndexCache::without_tables(&path);
    assert!(matches!(
        repo.read_blob(&id, BlobType::Data),
        Err(Error::IndexCache { .. })
    ));
}

#[test]
fn a_backup_does_not_deduplicate_against_a_missing_pack() {
    let backend = MemoryBackend::default();
    let (cache, repo) = memory_repository_on(&backend);
    let id = write_one(&repo, b"lost then stored again");
    for pack in backend.list(ObjectKind::Pack).unwrap() {
        backend.delete(ObjectKind::Pack, &pack).unwrap();
    }
    let mut writer = repo.start_write(3).unwrap();
    let warnings = writer.take_warnings();
    assert!(warnings.iter().any(|w| w.contains("data/")), "{warnings:?}");
    assert!(!writer.contains_all(&[id]).unwrap());
    writer
        .add_blob(BlobType::Data, b"lost then stored again".to_vec())
        .unwrap();
    writer.flush().unwrap();
    assert_eq!(writer.blobs_added(), 1, "stored again");
    assert_eq!(
        repo.read_blob(&id, BlobType::Data).unwrap(),
        b"lost then stored again"
    );
    // A rebuild absorbs the segments in any order: the readable copy
    // still serves the read.
    drop(writer);
    drop(repo);
    std::fs::remove_dir_all(cache.path()).unwrap();
    let repo = Repository::open(Box::new(backend), b"pw", cache.path()).unwrap();
    assert_eq!(
        repo.read_blob(&id, BlobType::Data).unwrap(),
        b"lost then stored again"
    );
    let mut writer = repo.start_write(3).unwrap();
    assert!(writer.contains_all(&[id]).unwrap());
}

#[test]
fn snapshot_references_resolve() {
    let (cache, repo) = memory_repository();
    assert!(matches!(
        repo.resolve_snapshot("latest"),
        Err(Error::SnapshotNotFound { .. })
    ));
    write_one(&repo, b"a");
    let (id, _) = repo.resolve_snapshot("latest").unwrap();
    assert_eq!(repo.resolve_snapshot(&id.0.short()).unwrap().0, id);
    assert_eq!(
        repo.resolve_snapshot(&id.to_string().to_uppercase())
            .unwrap()
            .0,
        id
    );
    assert!(matches!(
        repo.resolve_snapshot("not-hex"),
        Err(Error::SnapshotNotFound { .. })
    ));
    assert!(matches!(
        Repository::init(
            Box::new(MemoryBackend::default()),
            b"pw",
            &InitOptions {
                compression_level: 99,
                ..fast_options()
            },
            cache.path()
        ),
        Err(Error::OutOfRange { .. })
    ));
}
