//! The background half of writing blobs (SPEC.md §11, §12, §16): sealing
//! workers compress and encrypt, one packer thread fills packs, stores
//! them, and stores the index segments that list them, while the caller
//! goes on reading and chunking.
//!
//! Blobs travel in batches of about a megabyte, so that a tree of small
//! files costs one hand-over per batch rather than one per file. Queues
//! are bounded, so memory stays flat however much is written: a caller
//! that produces faster than the workers seal waits. A storage failure
//! stops the pipeline; the next submission or [`Packer::finish`] returns
//! it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::backend::{Backend, ObjectKind, ObjectWriter};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, SegmentId, SessionId};
use crate::object::blob::{BlobType, Encoder, SealedBlob};
use crate::object::pack::{PackWriter, MAX_PACK_ENTRIES};
use crate::object::segment::{IndexSegment, IndexedPack};

/// A blob to seal and pack.
pub struct Job {
    /// Its id, already computed by the caller.
    pub id: BlobId,
    /// Data or tree.
    pub blob_type: BlobType,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

/// Settings of one pipeline.
pub struct PackerConfig {
    /// Where packs go.
    pub backend: Arc<dyn Backend>,
    /// The session whose key seals everything.
    pub session: SessionId,
    /// That session's data key.
    pub sealer: Sealer,
    /// The repository's index key, which seals segments.
    pub index_sealer: Sealer,
    /// zstd level (0 stores raw).
    pub compression_level: i32,
    /// Packs are closed at this many bytes.
    pub pack_target_bytes: u64,
}

/// An index segment the packer stored, for the caller's cache.
pub type StoredSegment = (SegmentId, IndexSegment);

/// Index segments are stored once they list this many blobs, so that no
/// segment grows past what a reader accepts.
const SEGMENT_ENTRY_LIMIT: usize = 100_000;

/// What a finished pipeline leaves.
pub struct Finished {
    /// Segments stored and not yet taken.
    pub segments: Vec<StoredSegment>,
    /// Sealed bytes stored in all.
    pub bytes_added: u64,
    /// Blobs stored in all.
    pub blobs_added: u64,
}

/// A batch is handed to the workers once it holds this many plaintext
/// bytes...
const BATCH_BYTES: usize = 1 << 20;
/// ...or this many blobs.
const BATCH_BLOBS: usize = 512;

/// The running pipeline.
pub struct Packer {
    jobs: Option<SyncSender<Vec<Job>>>,
    /// Blobs waiting to fill a batch.
    batch: Vec<Job>,
    batch_bytes: usize,
    threads: Vec<JoinHandle<()>>,
    stored: Receiver<StoredSegment>,
    failure: Arc<Mutex<Option<Error>>>,
    bytes_added: Arc<AtomicU64>,
    blobs_added: Arc<AtomicU64>,
}

impl Packer {
    /// Starts one sealing worker per core and the packer thread.
    pub fn start(config: PackerConfig) -> Packer {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (jobs, job_queue) = mpsc::sync_channel::<Vec<Job>>(workers);
        let job_queue = Arc::new(Mutex::new(job_queue));
        let (sealed, sealed_queue) = mpsc::sync_channel::<Vec<SealedBlob>>(workers);
        let (stored_tx, stored) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let bytes_added = Arc::new(AtomicU64::new(0));
        let blobs_added = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::with_capacity(workers + 1);
        for _ in 0..workers {
            let job_queue = Arc::clone(&job_queue);
            let sealed = sealed.clone();
            let sealer = config.sealer.clone();
            let level = config.compression_level;
            threads.push(std::thread::spawn(move || {
                let mut encoder = Encoder::new(level);
                loop {
                    let batch = job_queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(batch) = batch else { return };
                    let blobs = batch
                        .iter()
                        .map(|job| encoder.seal(job.id, job.blob_type, &job.plaintext, &sealer))
                        .collect();
                    drop(batch);
                    if sealed.send(blobs).is_err() {
                        return;
                    }
                }
            }));
        }
        drop(sealed);
        let pack_thread = PackThread {
            backend: config.backend,
            session: config.session,
            sealer: config.sealer,
            target: config.pack_target_bytes,
            segment: SegmentWriter {
                index_sealer: config.index_sealer,
                unindexed: Vec::new(),
                unindexed_entries: 0,
                stored: stored_tx,
            },
            failure: Arc::clone(&failure),
            bytes_added: Arc::clone(&bytes_added),
            blobs_added: Arc::clone(&blobs_added),
        };
        threads.push(std::thread::spawn(move || pack_thread.run(sealed_queue)));
        Packer {
            jobs: Some(jobs),
            batch: Vec::new(),
            batch_bytes: 0,
            threads,
            stored,
            failure,
            bytes_added,
            blobs_added,
        }
    }

    fn take_failure(&self) -> Error {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| {
                Error::io(
                    "packer",
                    std::io::Error::other("the packer stopped after an earlier error"),
                )
            })
    }

    /// Adds a blob to the batch being gathered. A full batch is handed to
    /// the workers, waiting while their queue is full; that hand-over errors
    /// if the pipeline stopped on a storage failure (so a failure shows at
    /// the next full batch, or at [`Packer::finish`]).
    pub fn submit(&mut self, job: Job) -> Result<()> {
        self.batch_bytes += job.plaintext.len();
        self.batch.push(job);
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_BLOBS {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let jobs = self.jobs.as_ref().expect("jobs are open until finish");
        jobs.send(batch).map_err(|_| self.take_failure())
    }

    /// Index segments stored since the last call.
    pub fn take_stored(&self) -> Vec<StoredSegment> {
        self.stored.try_iter().collect()
    }

    /// Sealed bytes stored or queued for storage so far.
    pub fn bytes_added(&self) -> u64 {
        self.bytes_added.load(Ordering::Relaxed)
    }

    /// Blobs stored or queued for storage so far.
    pub fn blobs_added(&self) -> u64 {
        self.blobs_added.load(Ordering::Relaxed)
    }

    /// Seals what is queued, stores the last pack and the last segment,
    /// stops the threads, and returns the segments stored since the last
    /// [`Packer::take_stored`] with the final counters.
    pub fn finish(mut self) -> Result<Finished> {
        let sent = self.send_batch();
        self.stop();
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(error) = failure {
            return Err(error);
        }
        sent?;
        Ok(Finished {
            segments: self.take_stored(),
            bytes_added: self.bytes_added(),
            blobs_added: self.blobs_added(),
        })
    }

    fn stop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for Packer {
    /// An abandoned pipeline still finishes what it was given: the packs it
    /// stores are harmless, unreferenced, and a later backup reuses none
    /// of them without an index segment.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = self.send_batch();
            self.jobs = None;
            for thread in self.threads.drain(..) {
                let _ = thread.join();
            }
        }
    }
}

struct PackThread {
    backend: Arc<dyn Backend>,
    session: SessionId,
    sealer: Sealer,
    target: u64,
    segment: SegmentWriter,
    failure: Arc<Mutex<Option<Error>>>,
    bytes_added: Arc<AtomicU64>,
    blobs_added: Arc<AtomicU64>,
}

/// A pack being streamed to storage.
type OpenPack = PackWriter<Box<dyn ObjectWriter>>;

/// Gathers the packs stored and stores a segment listing them once it
/// holds [`SEGMENT_ENTRY_LIMIT`] entries, and when the pipeline ends.
struct SegmentWriter {
    index_sealer: Sealer,
    unindexed: Vec<IndexedPack>,
    unindexed_entries: usize,
    /// Where each stored segment goes, for the caller's cache.
    stored: mpsc::Sender<StoredSegment>,
}

impl SegmentWriter {
    fn add(&mut self, backend: &dyn Backend, session: SessionId, pack: IndexedPack) -> Result<()> {
        self.unindexed_entries += pack.entries.len();
        self.unindexed.push(pack);
        if self.unindexed_entries >= SEGMENT_ENTRY_LIMIT {
            self.store(backend, session)?;
        }
        Ok(())
    }

    /// Stores a segment for the packs gathered since the last one.
    fn store(&mut self, backend: &dyn Backend, session: SessionId) -> Result<()> {
        if self.unindexed.is_empty() {
            return Ok(());
        }
        let segment = IndexSegment {
            packs: std::mem::take(&mut self.unindexed),
        };
        self.unindexed_entries = 0;
        let bytes = segment.seal(session, &self.index_sealer);
        let id = SegmentId(Id::of_bytes(&bytes));
        let name = id.to_string();
        backend
            .put(ObjectKind::Index, &name, &bytes)
            .map_err(|e| Error::storage(ObjectKind::Index, &name, e))?;
        // The receiver lives as long as the writer; if it is gone, nobody
        // needs the cache to know this segment before the next open.
        let _ = self.stored.send((id, segment));
        Ok(())
    }
}

impl PackThread {
    fn run(mut self, sealed: Receiver<Vec<SealedBlob>>) {
        let mut pack = None;
        for blob in sealed.iter().flatten() {
            self.bytes_added
                .fetch_add(blob.bytes.len() as u64, Ordering::Relaxed);
            self.blobs_added.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = self.add(&mut pack, &blob) {
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                return;
            }
        }
        let last = match pack {
            Some(pack) => self.store(pack),
            None => Ok(()),
        };
        let indexed = last.and_then(|()| self.segment.store(self.backend.as_ref(), self.session));
        if let Err(error) = indexed {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        }
    }

    /// Appends a blob to the open pack, opening one if needed, and stores
    /// the pack once it is full.
    fn add(&mut self, pack: &mut Option<OpenPack>, blob: &SealedBlob) -> Result<()> {
        let writer = match pack {
            Some(writer) => writer,
            None => pack.insert(PackWriter::new(
                self.backend
                    .create_writer(ObjectKind::Pack)
                    .map_err(|e| self.new_pack_error(e))?,
            )),
        };
        writer.add(blob).map_err(|e| self.new_pack_error(e))?;
        if writer.len_bytes() >= self.target || writer.entry_count() >= MAX_PACK_ENTRIES {
            let full = pack.take().expect("a pack was just written to");
            self.store(full)?;
        }
        Ok(())
    }

    /// A failure to write a pack that has no name yet.
    fn new_pack_error(&self, e: std::io::Error) -> Error {
        Error::Storage {
            object: format!("{}/ (a new pack)", ObjectKind::Pack.dir_name()),
            error: e,
        }
    }

    fn store(&mut self, pack: OpenPack) -> Result<()> {
        let pack = pack
            .finish(self.session, &self.sealer)
            .map_err(|e| self.new_pack_error(e))?;
        let name = pack.id.to_string();
        pack.sink
            .finish(&name)
            .map_err(|e| Error::storage(ObjectKind::Pack, &name, e))?;
        let indexed = IndexedPack {
            pack: pack.id,
            session: self.session,
            entries: pack.entries,
        };
        self.segment
            .add(self.backend.as_ref(), self.session, indexed)
    }
}
