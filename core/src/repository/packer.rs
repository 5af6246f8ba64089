//! The background half of writing blobs (SPEC.md §11, §12, §16): tasks on
//! rayon's pool compress and encrypt, one packer thread fills packs, stores
//! them, and stores the index segments that list them, while the caller
//! goes on reading and chunking.
//!
//! Blobs travel in batches of about a megabyte, so that a tree of small
//! files costs one hand-over per batch rather than one per file. Batches in
//! flight are bounded, so memory stays flat however much is written: a
//! caller that produces faster than the pool seals waits. A storage failure
//! stops the pipeline; the next submission or [`Packer::finish`] returns
//! it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::segment_writer::{SegmentWriter, StoredSegment};
use super::tree_cache::TreeCache;
use crate::backend::{Backend, ObjectKind, ObjectWriter};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::{BlobId, SessionId};
use crate::object::blob::{BlobType, Encoder, SealedBlob};
use crate::object::pack::{PackWriter, MAX_PACK_ENTRIES};
use crate::object::segment::IndexedPack;

/// A blob to seal and pack.
pub struct Job {
    /// Its id, already computed by the caller.
    pub id: BlobId,
    /// Data or tree.
    pub blob_type: BlobType,
    /// The plaintext.
    pub plaintext: bytes::Bytes,
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
    /// Packs stored at once.
    pub connections: usize,
    /// Where tree blobs are kept on this host once their pack is stored,
    /// if anywhere.
    pub trees: Option<Arc<TreeCache>>,
}

/// What a finished pipeline leaves.
pub struct Finished {
    /// Segments stored and not yet taken.
    pub segments: Vec<StoredSegment>,
    /// Sealed bytes stored in all.
    pub bytes_added: u64,
    /// Blobs stored in all.
    pub blobs_added: u64,
}

/// A batch is handed to the pool once it holds this many plaintext
/// bytes...
const BATCH_BYTES: usize = 1 << 20;
/// ...or this many blobs.
const BATCH_BLOBS: usize = 512;

/// The running pipeline.
pub struct Packer {
    /// Where sealed batches go; `None` once finishing.
    sealed: Option<Sender<Vec<SealedBlob>>>,
    sealing: Arc<Sealing>,
    in_flight: Arc<InFlight>,
    /// Blobs waiting to fill a batch.
    batch: Vec<Job>,
    batch_bytes: usize,
    pack_thread: Option<JoinHandle<()>>,
    stored: Receiver<StoredSegment>,
    failure: Arc<Mutex<Option<Error>>>,
    bytes_added: Arc<AtomicU64>,
    blobs_added: Arc<AtomicU64>,
}

/// Batches sealed or being sealed at once, at most, per core: bounds the
/// memory they hold while keeping every core supplied.
const IN_FLIGHT_PER_CORE: usize = 2;

impl Packer {
    /// Starts the packer thread. Batches are sealed as tasks on rayon's
    /// pool, the same threads that read ahead and hash: one pool for all
    /// the content work, so that no core idles while another has work.
    pub fn start(config: PackerConfig) -> Packer {
        // The threads that seal, which `RAYON_NUM_THREADS` may set apart
        // from the machine's cores.
        let cores = rayon::current_num_threads();
        let (sealed, sealed_queue) = mpsc::channel::<Vec<SealedBlob>>();
        let (stored_tx, stored) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let bytes_added = Arc::new(AtomicU64::new(0));
        let blobs_added = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(InFlight::new(cores * IN_FLIGHT_PER_CORE));
        let sealing = Arc::new(Sealing {
            sealer: config.sealer.clone(),
            level: config.compression_level,
            encoders: Mutex::new(Vec::new()),
        });
        let pack_thread = PackThread {
            backend: config.backend,
            session: config.session,
            sealer: config.sealer,
            target: config.pack_target_bytes,
            segment: SegmentWriter::new(config.session, config.index_sealer),
            stored: stored_tx,
            failure: Arc::clone(&failure),
            bytes_added: Arc::clone(&bytes_added),
            blobs_added: Arc::clone(&blobs_added),
            in_flight: Arc::clone(&in_flight),
            trees: config.trees,
            uploads: Uploads::start(config.connections),
        };
        let pack_thread = std::thread::spawn(move || pack_thread.run(sealed_queue));
        Packer {
            sealed: Some(sealed),
            sealing,
            in_flight,
            batch: Vec::new(),
            batch_bytes: 0,
            pack_thread: Some(pack_thread),
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
            .unwrap_or(Error::PackerStopped)
    }

    /// Adds a blob to the batch being gathered. A full batch is handed to
    /// the pool, waiting while too many are in flight; that hand-over
    /// errors if the pipeline stopped on a storage failure (so a failure
    /// shows at the next full batch, or at [`Packer::finish`]).
    ///
    /// Not to be called on one of rayon's threads: the wait could then
    /// hold up the very tasks it waits for.
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
        debug_assert!(
            rayon::current_thread_index().is_none(),
            "blobs are submitted from outside rayon's pool"
        );
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if !self.in_flight.enter() {
            return Err(self.take_failure());
        }
        let sealed = self.sealed.clone().expect("open until finish");
        let sealing = Arc::clone(&self.sealing);
        // A send fails only once the packer thread stopped on a failure,
        // which the next hand-over reports.
        rayon::spawn(move || {
            let _ = sealed.send(sealing.seal(&batch));
        });
        Ok(())
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
    /// stops the packer thread, and returns the segments stored since the
    /// last [`Packer::take_stored`] with the final counters.
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

    /// Closes the queue and waits for the packer thread, which ends once
    /// every task in flight has handed over its batch.
    fn stop(&mut self) {
        self.sealed = None;
        if let Some(thread) = self.pack_thread.take() {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// What the sealing tasks share.
struct Sealing {
    /// The session's data key.
    sealer: Sealer,
    /// zstd level.
    level: i32,
    /// Encoders not in use: a task takes one and gives it back, so that
    /// zstd's contexts are made once per core rather than once per batch.
    encoders: Mutex<Vec<Encoder>>,
}

impl Sealing {
    fn seal(&self, batch: &[Job]) -> Vec<SealedBlob> {
        let spare = self
            .encoders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut encoder = spare.unwrap_or_else(|| Encoder::new(self.level));
        let sealed = batch
            .iter()
            .map(|job| encoder.seal(job.id, job.blob_type, &job.plaintext, &self.sealer))
            .collect();
        self.encoders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(encoder);
        sealed
    }
}

/// Batches handed to the pool and not yet packed.
struct InFlight {
    /// How many, and whether the packer thread has stopped.
    state: Mutex<(usize, bool)>,
    changed: Condvar,
    limit: usize,
}

impl InFlight {
    fn new(limit: usize) -> InFlight {
        InFlight {
            state: Mutex::new((0, false)),
            changed: Condvar::new(),
            limit,
        }
    }

    /// Counts one more batch, waiting while `limit` are in flight; false
    /// if the packer thread has stopped.
    fn enter(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self
            .changed
            .wait_while(state, |(count, stopped)| *count >= self.limit && !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        if state.1 {
            return false;
        }
        state.0 += 1;
        true
    }

    /// A batch was packed.
    fn leave(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = state.0.saturating_sub(1);
        self.changed.notify_one();
    }

    /// The packer thread stopped: nothing more will be packed.
    fn stop(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.changed.notify_all();
    }
}

impl Drop for Packer {
    /// An abandoned pipeline still finishes what it was given: the packs it
    /// stores are harmless, unreferenced, and a later backup reuses none
    /// of them without an index segment.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = self.send_batch();
            self.sealed = None;
            if let Some(thread) = self.pack_thread.take() {
                let _ = thread.join();
            }
        }
    }
}

struct PackThread {
    /// Packs being stored, and what came back from those that were. First,
    /// so that it is dropped first: its threads end before the store goes.
    uploads: Uploads,
    backend: Arc<dyn Backend>,
    session: SessionId,
    sealer: Sealer,
    target: u64,
    segment: SegmentWriter,
    /// Where each stored segment goes, for the caller's cache.
    stored: mpsc::Sender<StoredSegment>,
    failure: Arc<Mutex<Option<Error>>>,
    bytes_added: Arc<AtomicU64>,
    blobs_added: Arc<AtomicU64>,
    /// Counts the batches packed, for the caller to wait on.
    in_flight: Arc<InFlight>,
    /// Where the stored bytes of tree blobs are kept on this host, if
    /// anywhere.
    trees: Option<Arc<TreeCache>>,
}

/// A pack being streamed to storage, and the trees it holds, for the
/// tree cache.
struct OpenPack {
    writer: PackWriter<Box<dyn ObjectWriter>>,
    trees: Vec<(BlobId, Vec<u8>)>,
}

/// A pack written whole, waiting to be stored under its name.
struct Upload {
    sink: Box<dyn ObjectWriter>,
    indexed: IndexedPack,
    trees: Vec<(BlobId, Vec<u8>)>,
}

/// What came back from storing one pack.
type Uploaded = Result<(IndexedPack, Vec<(BlobId, Vec<u8>)>)>;

/// Threads that store finished packs, as many at once as the store takes
/// connections. A pack is handed over only when a thread is free, so at
/// most that many wait on disk at a time.
struct Uploads {
    queue: Option<SyncSender<Upload>>,
    done: Receiver<Uploaded>,
    in_flight: usize,
    threads: Vec<JoinHandle<()>>,
}

impl Uploads {
    fn start(connections: usize) -> Uploads {
        let (queue, pending) = mpsc::sync_channel::<Upload>(0);
        let pending = Arc::new(Mutex::new(pending));
        let (done_tx, done) = mpsc::channel();
        let threads = (0..connections.max(1))
            .map(|_| {
                let pending = Arc::clone(&pending);
                let done = done_tx.clone();
                std::thread::spawn(move || loop {
                    let next = pending.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(upload) = next else { return };
                    let name = upload.indexed.pack.to_string();
                    // A panic in the store's code is a failed pack, reported
                    // like any other: never a pack silently left out.
                    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        upload.sink.finish(&name)
                    }))
                    .unwrap_or_else(|_| Err(std::io::Error::other("the upload thread panicked")));
                    let stored = finished
                        .map(|()| (upload.indexed, upload.trees))
                        .map_err(|e| Error::storage(ObjectKind::Pack, &name, e));
                    if done.send(stored).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Uploads {
            queue: Some(queue),
            done,
            in_flight: 0,
            threads,
        }
    }

    /// Hands a pack to the first free thread, waiting for one.
    fn send(&mut self, upload: Upload) -> Result<()> {
        let queue = self
            .queue
            .as_ref()
            .expect("open until the pack thread ends");
        queue.send(upload).map_err(|_| Error::PackerStopped)?;
        self.in_flight += 1;
        Ok(())
    }

    /// The packs stored since the last call; with `wait`, after waiting
    /// for every pack handed over.
    fn take_done(&mut self, wait: bool) -> Vec<Uploaded> {
        let mut done: Vec<Uploaded> = self.done.try_iter().collect();
        while wait && self.in_flight > done.len() {
            match self.done.recv() {
                Ok(uploaded) => done.push(uploaded),
                // Every thread ended with packs unaccounted for: they
                // count as failed.
                Err(_) => {
                    let lost = self.in_flight - done.len();
                    done.extend((0..lost).map(|_| Err(Error::PackerStopped)));
                }
            }
        }
        self.in_flight -= done.len();
        done
    }
}

impl Drop for Uploads {
    /// Lets the threads store what they were given, then end.
    fn drop(&mut self) {
        self.queue = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl PackThread {
    fn run(mut self, sealed: Receiver<Vec<SealedBlob>>) {
        // The failure is recorded before the caller is told: a caller
        // that finds the pipeline stopped then finds why.
        if let Err(error) = self.pack_all(&sealed) {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        }
        self.in_flight.stop();
        drop(sealed);
    }

    /// Packs every sealed blob, stores the packs, and lists them in index
    /// segments once storage confirmed them.
    fn pack_all(&mut self, sealed: &Receiver<Vec<SealedBlob>>) -> Result<()> {
        let mut pack = None;
        for batch in sealed {
            for blob in batch {
                self.bytes_added
                    .fetch_add(blob.bytes.len() as u64, Ordering::Relaxed);
                self.blobs_added.fetch_add(1, Ordering::Relaxed);
                self.add(&mut pack, blob)?;
            }
            self.in_flight.leave();
        }
        if let Some(pack) = pack {
            self.store(pack)?;
        }
        let uploaded = self.uploads.take_done(true);
        self.index(uploaded)?;
        let last = self.segment.finish(self.backend.as_ref())?;
        self.hand_over(last);
        Ok(())
    }

    /// Appends a blob to the open pack, opening one if needed, and stores
    /// the pack once it is full.
    fn add(&mut self, pack: &mut Option<OpenPack>, blob: SealedBlob) -> Result<()> {
        let open = match pack {
            Some(open) => open,
            None => pack.insert(OpenPack {
                writer: PackWriter::new(
                    self.backend
                        .create_writer(ObjectKind::Pack)
                        .map_err(|e| self.new_pack_error(e))?,
                ),
                trees: Vec::new(),
            }),
        };
        open.writer.add(&blob).map_err(|e| self.new_pack_error(e))?;
        if blob.blob_type == BlobType::Tree && self.trees.is_some() {
            open.trees.push((blob.id, blob.bytes));
        }
        let writer = &open.writer;
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

    /// Finishes a pack and hands it to a thread that stores it; lists the
    /// packs stored meanwhile.
    fn store(&mut self, pack: OpenPack) -> Result<()> {
        let finished = pack
            .writer
            .finish(self.session, &self.sealer)
            .map_err(|e| self.new_pack_error(e))?;
        let upload = Upload {
            sink: finished.sink,
            indexed: IndexedPack {
                pack: finished.id,
                session: self.session,
                entries: finished.entries,
            },
            trees: pack.trees,
        };
        // A failed send means the threads ended: what they reported says why.
        let sent = self.uploads.send(upload);
        let uploaded = self.uploads.take_done(sent.is_err());
        self.index(uploaded)?;
        sent
    }

    /// Lists stored packs in the index segment being gathered (storing it
    /// when full) and caches their trees; the first failed pack fails the
    /// pipeline.
    fn index(&mut self, uploaded: Vec<Uploaded>) -> Result<()> {
        for stored in uploaded {
            let (indexed, trees) = stored?;
            if let Some(cache) = &self.trees {
                let trees: Vec<(BlobId, &[u8])> =
                    trees.iter().map(|(id, bytes)| (*id, &bytes[..])).collect();
                cache.insert(&trees);
            }
            let segment = self.segment.add(self.backend.as_ref(), indexed)?;
            self.hand_over(segment);
        }
        Ok(())
    }

    /// Gives a stored segment to the caller. The receiver lives as long as
    /// the writer; if it is gone, nobody needs the cache to know this
    /// segment before the next open.
    fn hand_over(&self, stored: Option<StoredSegment>) {
        if let Some(stored) = stored {
            let _ = self.stored.send(stored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::crypto::SecretKey;
    use crate::id::Id;
    use crate::object::pack::{open_trailer, trailer_bounds, FOOTER_LEN};
    use crate::object::segment::IndexSegment;
    use crate::testing::pseudo_random;

    fn config(backend: Arc<dyn Backend>, pack_target_bytes: u64) -> PackerConfig {
        PackerConfig {
            backend,
            session: SessionId(Id([3; 32])),
            sealer: Sealer::new(&SecretKey::random()),
            index_sealer: Sealer::new(&SecretKey::random()),
            compression_level: 1,
            pack_target_bytes,
            connections: 2,
            trees: None,
        }
    }

    fn job(n: u64) -> Job {
        Job {
            id: BlobId(Id::of_bytes(&n.to_le_bytes())),
            blob_type: BlobType::Data,
            plaintext: pseudo_random(10_000, n + 1).into(),
        }
    }

    #[test]
    fn packs_close_at_the_target_and_one_segment_lists_every_blob_once() {
        let backend = MemoryBackend::default();
        let config = config(Arc::new(backend.clone()), 64 << 10);
        let sealer = config.sealer.clone();
        let index_sealer = config.index_sealer.clone();
        let mut packer = Packer::start(config);
        for n in 0..40 {
            packer.submit(job(n)).unwrap();
        }
        let finished = packer.finish().unwrap();
        assert_eq!(finished.blobs_added, 40);

        // One segment, stored, listing every blob exactly once.
        assert_eq!(finished.segments.len(), 1);
        let (id, segment) = &finished.segments[0];
        let stored = backend.get(ObjectKind::Index, &id.to_string()).unwrap();
        assert_eq!(
            &IndexSegment::open(&stored, &index_sealer).unwrap(),
            segment
        );
        let mut listed: Vec<BlobId> = segment
            .packs
            .iter()
            .flat_map(|p| p.entries.iter().map(|e| e.id))
            .collect();
        listed.sort();
        let mut expected: Vec<BlobId> = (0..40).map(|n| job(n).id).collect();
        expected.sort();
        assert_eq!(listed, expected);

        // Several packs, each closed once past the target, each holding
        // the entries its trailer names.
        let packs = backend.list(ObjectKind::Pack).unwrap();
        assert!(packs.len() >= 5, "{} packs", packs.len());
        assert_eq!(packs.len(), segment.packs.len());
        for indexed in &segment.packs {
            let bytes = backend
                .get(ObjectKind::Pack, &indexed.pack.to_string())
                .unwrap();
            assert!(bytes.len() < (64 << 10) + 20_000, "{} bytes", bytes.len());
            let (offset, len) =
                trailer_bounds(&bytes[bytes.len() - FOOTER_LEN..], bytes.len() as u64).unwrap();
            let trailer = &bytes[offset as usize..offset as usize + len as usize];
            assert_eq!(
                open_trailer(trailer, offset, &sealer).unwrap(),
                indexed.entries
            );
        }
    }

    #[test]
    fn nothing_submitted_stores_nothing() {
        let backend = MemoryBackend::default();
        let finished = Packer::start(config(Arc::new(backend.clone()), 1 << 20))
            .finish()
            .unwrap();
        assert!(finished.segments.is_empty());
        assert!(backend.list(ObjectKind::Pack).unwrap().is_empty());
        assert!(backend.list(ObjectKind::Index).unwrap().is_empty());
    }

    /// A store whose packs cannot be written.
    struct NoPacks(MemoryBackend);

    impl Backend for NoPacks {
        fn location(&self) -> String {
            self.0.location()
        }
        fn get(&self, kind: ObjectKind, name: &str) -> std::io::Result<Vec<u8>> {
            self.0.get(kind, name)
        }
        fn get_range(
            &self,
            kind: ObjectKind,
            name: &str,
            offset: u64,
            len: u64,
        ) -> std::io::Result<Vec<u8>> {
            self.0.get_range(kind, name, offset, len)
        }
        fn size(&self, kind: ObjectKind, name: &str) -> std::io::Result<u64> {
            self.0.size(kind, name)
        }
        fn put(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> std::io::Result<()> {
            self.0.put(kind, name, bytes)
        }
        fn create_writer(&self, _: ObjectKind) -> std::io::Result<Box<dyn ObjectWriter>> {
            Err(std::io::Error::other("disk full"))
        }
        fn list(&self, kind: ObjectKind) -> std::io::Result<Vec<String>> {
            self.0.list(kind)
        }
        fn delete(&self, kind: ObjectKind, name: &str) -> std::io::Result<()> {
            self.0.delete(kind, name)
        }
        fn create(&self) -> std::io::Result<()> {
            self.0.create()
        }
    }

    #[test]
    fn a_storage_failure_stops_the_pipeline_and_no_segment_is_stored() {
        let backend = MemoryBackend::default();
        let mut packer = Packer::start(config(Arc::new(NoPacks(backend.clone())), 1 << 20));
        // The failure shows at a later hand-over or at the latest at finish.
        let submitted = (0..2000).try_for_each(|n| packer.submit(job(n)));
        let finished = packer.finish();
        let error = submitted
            .err()
            .or(finished.err())
            .expect("the failure is reported");
        assert!(
            matches!(&error, Error::Storage { object, .. } if object.starts_with("data/")),
            "{error}"
        );
        assert!(backend.list(ObjectKind::Index).unwrap().is_empty());
    }
}
