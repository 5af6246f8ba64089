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
use bytes::Bytes;

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
            vec![
                Bytes::from_static(b"same"),
                Bytes::from_static(b"same"),
                Bytes::from_static(b"other"),
            ],
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

/// A memory store that counts the range reads of packs made through it.
struct CountingReads {
    inner: MemoryBackend,
    pack_reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingReads {
    /// A store of `backend`'s objects whose pack reads add to `pack_reads`.
    fn on(
        backend: &MemoryBackend,
        pack_reads: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> Box<CountingReads> {
        Box::new(CountingReads {
            inner: backend.clone(),
            pack_reads: Arc::clone(pack_reads),
        })
    }
}

impl Backend for CountingReads {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn get(&self, kind: ObjectKind, name: &str) -> io::Result<Vec<u8>> {
        self.inner.get(kind, name)
    }
    fn get_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> io::Result<Vec<u8>> {
        if kind == ObjectKind::Pack {
            self.pack_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.get_range(kind, name, offset, len)
    }
    fn size(&self, kind: ObjectKind, name: &str) -> io::Result<u64> {
        self.inner.size(kind, name)
    }
    fn put(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.inner.put(kind, name, bytes)
    }
    fn create_writer(&self, kind: ObjectKind) -> io::Result<Box<dyn crate::backend::ObjectWriter>> {
        self.inner.create_writer(kind)
    }
    fn list(&self, kind: ObjectKind) -> io::Result<Vec<String>> {
        self.inner.list(kind)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> io::Result<()> {
        self.inner.delete(kind, name)
    }
    fn create(&self) -> io::Result<()> {
        self.inner.create()
    }
    fn is_remote(&self) -> bool {
        true
    }
}

#[test]
fn trees_are_read_from_the_tree_cache_and_fetched_a_pack_at_a_time() {
    let backend = MemoryBackend::default();
    let pack_reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = || CountingReads::on(&backend, &pack_reads);
    let reads = || pack_reads.load(std::sync::atomic::Ordering::SeqCst);
    let writer_cache = tempfile::tempdir().unwrap();
    let writer = Repository::init(counting(), b"pw", &fast_options(), writer_cache.path()).unwrap();
    let trees: Vec<(BlobId, Vec<u8>)> = {
        let mut blobs = writer.start_write(3).unwrap();
        let mut trees = Vec::new();
        for n in 0..200u32 {
            blobs
                .add_blob(
                    BlobType::Data,
                    crate::testing::pseudo_random(5000, u64::from(n) + 1),
                )
                .unwrap();
            let tree = Tree::default().encode();
            let mut tree = tree;
            tree.extend_from_slice(&n.to_le_bytes());
            let id = blobs.add_blob(BlobType::Tree, tree.clone()).unwrap();
            trees.push((id, tree));
        }
        blobs.commit(&sample_snapshot(trees[0].0)).unwrap();
        trees
    };
    // The writer kept the trees it stored: reading them costs no request.
    let before = reads();
    for (id, bytes) in &trees {
        assert_eq!(&writer.read_blob(id, BlobType::Tree).unwrap(), bytes);
    }
    assert_eq!(reads(), before, "trees the writer stored are read locally");
    drop(writer);

    // Another host fetches each pack's trees once, in few reads.
    let reader_cache = tempfile::tempdir().unwrap();
    let reader = Repository::open(counting(), b"pw", reader_cache.path()).unwrap();
    let packs = backend.list(ObjectKind::Pack).unwrap().len();
    let before = reads();
    for (id, bytes) in &trees {
        assert_eq!(&reader.read_blob(id, BlobType::Tree).unwrap(), bytes);
    }
    let fetched = reads() - before;
    assert!(fetched <= 3 * packs, "{fetched} reads for {packs} packs");
    drop(reader);
    let again = Repository::open(counting(), b"pw", reader_cache.path()).unwrap();
    let before = reads();
    for (id, bytes) in &trees {
        assert_eq!(&again.read_blob(id, BlobType::Tree).unwrap(), bytes);
    }
    assert_eq!(reads(), before, "the cache outlives the process");
    drop(again);

    // A cache entry that does not open is dropped and the tree read from
    // storage; a deleted cache is simply filled again.
    let cache_file = std::fs::read_dir(reader_cache.path())
        .unwrap()
        .map(|e| e.unwrap().path().join("trees.redb"))
        .find(|p| p.exists())
        .unwrap();
    {
        let cache = tree_cache::TreeCache::open(&cache_file).unwrap();
        let stored = cache.get(&trees[7].0).unwrap();
        let mut flipped = stored.clone();
        flipped[20] ^= 1;
        cache.insert(&[(trees[7].0, &flipped)]);
    }
    let damaged = Repository::open(counting(), b"pw", reader_cache.path()).unwrap();
    assert_eq!(
        damaged.read_blob(&trees[7].0, BlobType::Tree).unwrap(),
        trees[7].1
    );
    drop(damaged);
    std::fs::remove_file(&cache_file).unwrap();
    let fresh = Repository::open(counting(), b"pw", reader_cache.path()).unwrap();
    assert_eq!(
        fresh.read_blob(&trees[9].0, BlobType::Tree).unwrap(),
        trees[9].1
    );
}

#[test]
fn check_reads_trees_from_storage_not_from_the_tree_cache() {
    let backend = MemoryBackend::default();
    let (_cache, repo) = memory_repository_on(&backend);
    let tree = Tree::default().encode();
    let root = {
        let mut blobs = repo.start_write(3).unwrap();
        let root = blobs.add_blob(BlobType::Tree, tree.clone()).unwrap();
        blobs.commit(&sample_snapshot(root)).unwrap();
        root
    };
    let location = repo.locate(&root).unwrap().unwrap();
    let pack = location.pack.to_string();
    let mut bytes = backend.get(ObjectKind::Pack, &pack).unwrap();
    bytes[location.entry.offset as usize + 20] ^= 1;
    backend.delete(ObjectKind::Pack, &pack).unwrap();
    backend.put(ObjectKind::Pack, &pack, &bytes).unwrap();

    // Reads are served by the cache the backup filled...
    assert_eq!(repo.read_blob(&root, BlobType::Tree).unwrap(), tree);
    // ...but a check judges what storage holds.
    let report =
        crate::check::check(&repo, &crate::check::CheckOptions { read_data: None }).unwrap();
    assert!(!report.is_clean(), "the damaged tree went unnoticed");
    assert_eq!(repo.read_blob(&root, BlobType::Tree).unwrap(), tree);
}

#[test]
fn adjacent_data_blobs_are_read_together_and_a_damaged_one_alone_fails() {
    let backend = MemoryBackend::default();
    let pack_reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = || CountingReads::on(&backend, &pack_reads);
    let cache = tempfile::tempdir().unwrap();
    let repo = Repository::init(counting(), b"pw", &fast_options(), cache.path()).unwrap();
    let contents: Vec<Vec<u8>> = (0..20)
        .map(|n| crate::testing::pseudo_random(5000, n + 1))
        .collect();
    let ids = {
        let mut writer = repo.start_write(3).unwrap();
        let blobs = contents.iter().cloned().map(Bytes::from).collect();
        let ids = writer.add_blobs(BlobType::Data, blobs).unwrap();
        let tree = writer
            .add_blob(BlobType::Tree, Tree::default().encode())
            .unwrap();
        writer.commit(&sample_snapshot(tree)).unwrap();
        ids
    };
    let reads = || pack_reads.load(std::sync::atomic::Ordering::SeqCst);
    let before = reads();
    let read: Vec<Vec<u8>> = repo
        .read_data_blobs(&ids, None)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(read, contents);
    assert_eq!(reads() - before, 1, "twenty adjacent blobs, one range read");

    // One blob damaged: it alone fails, the others still read.
    let location = repo.locate(&ids[7]).unwrap().unwrap();
    let pack = location.pack.to_string();
    let mut bytes = backend.get(ObjectKind::Pack, &pack).unwrap();
    bytes[location.entry.offset as usize + 30] ^= 1;
    backend.delete(ObjectKind::Pack, &pack).unwrap();
    backend.put(ObjectKind::Pack, &pack, &bytes).unwrap();
    let results = repo.read_data_blobs(&ids, None);
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(plaintext) => assert_eq!(plaintext, &contents[i], "blob {i}"),
            Err(e) => assert_eq!(i, 7, "blob {i}: {e}"),
        }
    }
    assert!(results[7].is_err());
}
