//! Unit tests of the archiver's internals: batching, streams, errors.

use std::io;

use bytes::Bytes;

use super::store::{store_chunks, CHUNKS_PER_BATCH};
use super::stream::store_stream;
use super::*;
use crate::object::blob::BlobType;
use crate::testing::memory_repository;

#[test]
fn chunks_are_stored_in_batches_and_ids_come_back_in_order() {
    let (_cache, repo) = memory_repository();
    let writer = Mutex::new(repo.start_write(3).unwrap());
    let chunks: Vec<Vec<u8>> = (0..2 * CHUNKS_PER_BATCH + 3)
        .map(|i| vec![i as u8; 100 + i])
        .collect();
    let mut batches = Vec::new();
    let (size, content) = store_chunks(
        &writer,
        chunks.iter().cloned().map(Bytes::from).map(Ok),
        |bytes| batches.push(bytes),
    )
    .unwrap()
    .unwrap();
    let lens: Vec<u64> = chunks.iter().map(|c| c.len() as u64).collect();
    assert_eq!(size, lens.iter().sum::<u64>());
    assert_eq!(
        batches,
        [
            lens[..CHUNKS_PER_BATCH].iter().sum::<u64>(),
            lens[CHUNKS_PER_BATCH..2 * CHUNKS_PER_BATCH].iter().sum(),
            lens[2 * CHUNKS_PER_BATCH..].iter().sum(),
        ]
    );
    let expected: Vec<BlobId> = chunks
        .iter()
        .map(|c| repo.blob_id(BlobType::Data, c))
        .collect();
    assert_eq!(content, expected);
    let mut writer = writer.into_inner().unwrap();
    writer.flush().unwrap();
    assert_eq!(writer.blobs_added(), chunks.len() as u64);
    assert_eq!(
        repo.read_blob(&content[5], BlobType::Data).unwrap(),
        chunks[5]
    );
}

#[test]
fn a_read_error_is_the_sources_and_what_was_read_is_counted() {
    let (_cache, repo) = memory_repository();
    let writer = Mutex::new(repo.start_write(3).unwrap());
    let chunks = (0..CHUNKS_PER_BATCH + 2)
        .map(|i| Ok(Bytes::from(vec![i as u8; 10])))
        .chain(std::iter::once(Err(io::Error::other("disk fell off"))));
    let mut read = 0;
    let outcome = store_chunks(&writer, chunks, |bytes| read += bytes).unwrap();
    assert_eq!(outcome.unwrap_err().to_string(), "disk fell off");
    assert_eq!(read, 10 * (CHUNKS_PER_BATCH as u64 + 2));
}

#[test]
fn a_stream_is_chunked_and_stored() {
    let (_cache, repo) = memory_repository();
    let writer = Mutex::new(repo.start_write(3).unwrap());
    let data = crate::testing::pseudo_random(3 << 20, 7);
    let (size, content) = store_stream(&repo, &writer, &data[..]).unwrap().unwrap();
    assert_eq!(size, data.len() as u64);
    writer.into_inner().unwrap().flush().unwrap();
    let restored: Vec<u8> = content
        .iter()
        .flat_map(|id| repo.read_blob(id, BlobType::Data).unwrap())
        .collect();
    assert_eq!(restored, data);
}

#[test]
fn an_unchanged_file_reuses_the_parents_content_and_a_touched_one_is_read() {
    let (_cache, repo) = memory_repository();
    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same");
    let touched = dir.path().join("touched");
    std::fs::write(&same, crate::testing::pseudo_random(50_000, 7)).unwrap();
    std::fs::write(&touched, crate::testing::pseudo_random(50_000, 8)).unwrap();
    let run = || {
        let options = BackupOptions::new(vec![dir.path().to_path_buf()]);
        backup(&repo, options, &crate::progress::Silent).unwrap()
    };
    let first = run();
    assert_eq!(first.snapshot.summary.files_new, 2);

    let second = run();
    assert_eq!(second.snapshot.parent, Some(first.snapshot_id));
    assert_eq!(second.snapshot.summary.files_unmodified, 2);
    assert_eq!(second.snapshot.summary.bytes_read, 0);
    assert_eq!(second.snapshot.tree, first.snapshot.tree);

    // Same size and content, another mtime: read again, stored as before.
    let later = filetime::FileTime::from_unix_time(1_700_000_000, 0);
    filetime::set_file_mtime(&touched, later).unwrap();
    let third = run();
    assert_eq!(third.snapshot.summary.files_unmodified, 1);
    assert_eq!(third.snapshot.summary.files_changed, 1);
    assert_eq!(third.snapshot.summary.bytes_read, 50_000);
    // The content was deduplicated: the same blobs as in the first.
    let content = |snapshot: &Snapshot| {
        let mut tree = repo.read_tree(&snapshot.tree).unwrap();
        for name in dir.path().iter().skip(1) {
            let node = tree.find(name.as_bytes()).unwrap().clone();
            let NodeKind::Directory { subtree } = node.kind else {
                panic!("not a directory")
            };
            tree = repo.read_tree(&subtree).unwrap();
        }
        match &tree.find(b"touched").unwrap().kind {
            NodeKind::File { content, .. } => content.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(content(&third.snapshot), content(&first.snapshot));
}

/// The entries of `dir`, examined as a backup into `repo` would.
fn examine_dir(
    repo: &Repository,
    excluder: &Excluder,
    dir: &Path,
) -> Vec<super::read_ahead::Examined> {
    let examiner = super::read_ahead::Examiner {
        repository: repo,
        excluder,
        parent_tree: None,
        force: false,
    };
    let names = walk::list_dir(dir).unwrap();
    examiner.examine(dir, &excluder.state_of(dir), names)
}

#[test]
fn small_files_are_read_ahead_in_waves_that_stop_at_directories() {
    use super::read_ahead::{Examiner, WAVE_FILES};
    let (_cache, repo) = memory_repository();
    let max = repo.chunker().params().max_bytes as usize;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, len: usize| {
        std::fs::write(dir.path().join(name), crate::testing::pseudo_random(len, 3)).unwrap()
    };
    write("a", 10);
    write("b", max);
    std::fs::create_dir(dir.path().join("c")).unwrap();
    write("d", max + 1);
    write("e.skip", 10);
    write("f", 0);
    for n in 0..WAVE_FILES + 5 {
        write(&format!("g{n:04}"), 100);
    }
    let excluder = Excluder::new(&ExcludeOptions {
        patterns: vec!["*.skip".into()],
        ..ExcludeOptions::default()
    })
    .unwrap();
    // The walk examines up to the first directory, so that nothing examined
    // waits for the walk of a subtree.
    let listed = walk::list_dir(dir.path()).unwrap();
    assert_eq!(super::read_ahead::group_end(&listed), 3);
    assert_eq!(super::read_ahead::group_end(&listed[3..]), listed.len() - 3);
    let entries = examine_dir(&repo, &excluder, dir.path());
    let examiner = Examiner {
        repository: &repo,
        excluder: &excluder,
        parent_tree: None,
        force: false,
    };
    let read = |start| {
        let (end, content) = examiner.read_wave(&entries, start);
        let sizes: Vec<Option<u64>> = content
            .into_iter()
            .map(|c| c.map(|c| c.unwrap().size()))
            .collect();
        (end, sizes)
    };
    assert_eq!(read(0), (2, vec![Some(10), Some(max as u64)]));
    // A directory is a wave of its own: nothing is held while it is walked.
    assert_eq!(read(2), (3, vec![None]));
    // Too large, excluded, then small ones up to the wave's file limit.
    let (end, sizes) = read(3);
    assert_eq!(end, 3 + 3 + WAVE_FILES - 1);
    assert_eq!(&sizes[..3], &[None, None, Some(0)]);
    assert!(sizes[3..].iter().all(|s| *s == Some(100)));
    assert!(entries[4].excluded && entries[4].xattrs.is_none());
    assert_eq!(read(end).0, entries.len());

    // What was read ahead is stored as the walk would store it.
    let mut options = BackupOptions::new(vec![dir.path().to_path_buf()]);
    options.excludes.patterns = vec!["*.skip".into()];
    let outcome = backup(&repo, options, &crate::progress::Silent).unwrap();
    assert_eq!(
        outcome.snapshot.summary.files_new,
        4 + WAVE_FILES as u64 + 5
    );
    let restored = tempfile::tempdir().unwrap();
    let options = crate::restorer::RestoreOptions {
        target: restored.path().to_path_buf(),
        ..Default::default()
    };
    crate::restorer::restore(&repo, &outcome.snapshot, &options, &crate::progress::Silent).unwrap();
    let back = restored.path().join(dir.path().strip_prefix("/").unwrap());
    for name in ["a", "b", "d", "f", "g0000", "g0260"] {
        assert_eq!(
            std::fs::read(back.join(name)).unwrap(),
            std::fs::read(dir.path().join(name)).unwrap(),
            "{name}"
        );
    }
    assert!(!back.join("e.skip").exists());
}

#[test]
fn a_small_file_that_grew_after_it_was_listed_is_left_to_the_walk() {
    use super::read_ahead::Examiner;
    let (_cache, repo) = memory_repository();
    let max = repo.chunker().params().max_bytes as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("growing");
    std::fs::write(&path, b"small when listed").unwrap();
    let excluder = Excluder::new(&ExcludeOptions::default()).unwrap();
    let entries = examine_dir(&repo, &excluder, dir.path());
    // Larger than listed, though still small: a wave holds no more than
    // the sizes it was planned with.
    std::fs::write(&path, crate::testing::pseudo_random(max / 2, 4)).unwrap();
    let examiner = Examiner {
        repository: &repo,
        excluder: &excluder,
        parent_tree: None,
        force: false,
    };
    let (end, content) = examiner.read_wave(&entries, 0);
    assert_eq!(end, 1);
    assert!(content[0].is_none());
}
