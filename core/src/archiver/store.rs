//! Handing chunks to the blob writer, in batches that keep every sealing
//! worker busy while bounding memory. Files and streams share it.

use std::io;
use std::sync::Mutex;

use bytes::Bytes;

use crate::error::Result;
use crate::id::BlobId;
use crate::object::blob::BlobType;
use crate::repository::BlobWriter;

/// Chunks of one file handed to the writer at once: enough to keep every
/// core compressing, few enough to bound memory.
pub(super) const CHUNKS_PER_BATCH: usize = 8;

/// Stores the chunks of one file or stream, handing them to the writer in
/// batches of [`CHUNKS_PER_BATCH`] so that the pool gets sealing work in
/// bulk, and calls `read` with the bytes of each batch read (the last one
/// too, if reading fails). Returns the size and the blob ids. The outer
/// error is the repository's (fatal); the inner one the source's.
pub(crate) fn store_chunks(
    writer: &Mutex<BlobWriter<'_>>,
    chunks: impl Iterator<Item = io::Result<Bytes>>,
    mut read: impl FnMut(u64),
) -> Result<io::Result<(u64, Vec<BlobId>)>> {
    let mut size = 0u64;
    let mut content = Vec::new();
    let mut batch = Vec::with_capacity(CHUNKS_PER_BATCH);
    let mut batch_bytes = 0u64;
    for chunk in chunks {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                read(batch_bytes);
                return Ok(Err(e));
            }
        };
        size += chunk.len() as u64;
        batch_bytes += chunk.len() as u64;
        batch.push(chunk);
        if batch.len() == CHUNKS_PER_BATCH {
            content.extend(lock(writer).add_blobs(BlobType::Data, std::mem::take(&mut batch))?);
            read(std::mem::take(&mut batch_bytes));
        }
    }
    content.extend(lock(writer).add_blobs(BlobType::Data, batch)?);
    read(batch_bytes);
    Ok(Ok((size, content)))
}

pub(super) fn lock<'a, 'r>(
    writer: &'a Mutex<BlobWriter<'r>>,
) -> std::sync::MutexGuard<'a, BlobWriter<'r>> {
    writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
