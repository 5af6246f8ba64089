//! Unit tests of the archiver's internals: batching, streams, errors.

use super::store::{store_chunks, CHUNKS_PER_BATCH};
use super::stream::store_stream;
use super::*;
use crate::object::blob::BlobType;
use crate::testing::memory_repository;
use std::io;

#[test]
fn chunks_are_stored_in_batches_and_ids_come_back_in_order() {
    let (_cache, repo) = memory_repository();
    let writer = Mutex::new(repo.start_write(3).unwrap());
    let chunks: Vec<Vec<u8>> = (0..2 * CHUNKS_PER_BATCH + 3)
        .map(|i| vec![i as u8; 100 + i])
        .collect();
    let mut batches = Vec::new();
    let (size, content) = store_chunks(&writer, chunks.clone().into_iter().map(Ok), |bytes| {
        batches.push(bytes)
    })
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
        .map(|i| Ok(vec![i as u8; 10]))
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
