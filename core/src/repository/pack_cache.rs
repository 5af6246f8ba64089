//! Whole packs held in memory while a restore reads from a remote store.
//!
//! A restore wants most blobs of the packs it touches, in roughly the
//! order they were written; on object storage each range read is a round
//! trip, and a store such as Garage reads (and decompresses) a whole block
//! of its own for each. So a restore fetches a pack whole on its first
//! blob and serves the pack's other blobs from memory. At most
//! [`KEPT_BYTES`] of packs are held; a pack larger than
//! [`MAX_PACK_BYTES`] is never fetched whole. Threads that want the same
//! pack at once wait for one fetch.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::backend::{Backend, ObjectKind};
use crate::id::PackId;

/// Packs held, in bytes at most (beyond the one just fetched).
const KEPT_BYTES: u64 = 128 << 20;
/// Packs larger than this are read blob by blob.
const MAX_PACK_BYTES: u64 = 64 << 20;

/// One pack: fetched once, by whichever thread asked first.
type Slot = Arc<OnceLock<Option<Arc<Vec<u8>>>>>;

/// The packs held, most recently used first.
#[derive(Default)]
pub(crate) struct PackCache {
    packs: Mutex<Packs>,
}

/// The packs held, and those pushed out that a thread still reads from.
#[derive(Default)]
struct Packs {
    held: VecDeque<(PackId, Slot)>,
    /// A pack pushed out while in use is taken back from here rather than
    /// fetched again: two copies of one pack would cost more memory than
    /// keeping it.
    released: Vec<(PackId, Weak<Vec<u8>>)>,
}

impl PackCache {
    /// The bytes of pack `pack`, fetched whole if not held; `None` if it is
    /// too large or does not read whole (the caller then reads the blob
    /// alone, and that read reports what is wrong).
    pub(crate) fn pack(&self, backend: &dyn Backend, pack: &PackId) -> Option<Arc<Vec<u8>>> {
        let slot = self.slot(pack);
        slot.get_or_init(|| fetch(backend, pack)).clone()
    }

    /// The slot of `pack`, made the most recently used; new slots push out
    /// the least recently used packs beyond [`KEPT_BYTES`].
    fn slot(&self, pack: &PackId) -> Slot {
        let mut packs = self.packs.lock().unwrap_or_else(|p| p.into_inner());
        let Packs { held, released } = &mut *packs;
        let slot = match held.iter().position(|(id, _)| id == pack) {
            Some(at) => held.remove(at).expect("the position was just found").1,
            None => {
                let in_use = released
                    .iter()
                    .find(|(id, _)| id == pack)
                    .and_then(|(_, bytes)| bytes.upgrade());
                Arc::new(in_use.map_or_else(OnceLock::new, |bytes| OnceLock::from(Some(bytes))))
            }
        };
        held.push_front((*pack, Arc::clone(&slot)));
        let mut bytes_held = 0u64;
        let mut keep = held.len();
        for (i, (_, kept)) in held.iter().enumerate().skip(1) {
            bytes_held += bytes_of(kept).map_or(0, |bytes| bytes.len() as u64);
            if bytes_held > KEPT_BYTES {
                keep = i;
                break;
            }
        }
        released.retain(|(id, bytes)| bytes.strong_count() > 0 && id != pack);
        for (id, pushed_out) in held.drain(keep..) {
            if let Some(bytes) = bytes_of(&pushed_out) {
                released.push((id, Arc::downgrade(bytes)));
            }
        }
        slot
    }
}

/// The bytes a slot holds, once fetched.
fn bytes_of(slot: &Slot) -> Option<&Arc<Vec<u8>>> {
    slot.get().and_then(|bytes| bytes.as_ref())
}

/// Reads pack `pack` whole, if it is small enough.
fn fetch(backend: &dyn Backend, pack: &PackId) -> Option<Arc<Vec<u8>>> {
    let name = pack.to_string();
    let size = backend.size(ObjectKind::Pack, &name).ok()?;
    if size > MAX_PACK_BYTES {
        return None;
    }
    // A range of known length: a remote store reads it into one buffer.
    let bytes = backend.get_range(ObjectKind::Pack, &name, 0, size).ok()?;
    (bytes.len() as u64 == size).then(|| Arc::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::id::Id;

    /// A store of four packs, more than the cache keeps at once.
    fn four_packs_of_50_mib() -> (MemoryBackend, Vec<PackId>) {
        let backend = MemoryBackend::default();
        let ids: Vec<PackId> = (0..4u8).map(|n| PackId(Id([n; 32]))).collect();
        for id in &ids {
            backend
                .put(ObjectKind::Pack, &id.to_string(), &vec![7; 50 << 20])
                .unwrap();
        }
        (backend, ids)
    }

    #[test]
    fn packs_are_fetched_once_and_the_least_recent_go_first() {
        let (backend, ids) = four_packs_of_50_mib();
        let cache = PackCache::default();
        assert_eq!(cache.pack(&backend, &ids[0]).unwrap().len(), 50 << 20);
        // Gone from storage, still held.
        backend
            .delete(ObjectKind::Pack, &ids[0].to_string())
            .unwrap();
        assert!(cache.pack(&backend, &ids[0]).is_some());
        // Three more packs of 50 MiB: the first is pushed out.
        for id in &ids[1..] {
            assert!(cache.pack(&backend, id).is_some());
        }
        assert!(cache.pack(&backend, &ids[0]).is_none());
        assert!(cache.pack(&backend, &ids[3]).is_some());
    }

    #[test]
    fn a_pack_pushed_out_while_in_use_is_not_fetched_again() {
        let (backend, ids) = four_packs_of_50_mib();
        let cache = PackCache::default();
        let in_use = cache.pack(&backend, &ids[0]).unwrap();
        for id in &ids[1..] {
            assert!(cache.pack(&backend, id).is_some());
        }
        backend
            .delete(ObjectKind::Pack, &ids[0].to_string())
            .unwrap();
        let again = cache.pack(&backend, &ids[0]).expect("the copy in use");
        assert!(Arc::ptr_eq(&in_use, &again));
        drop((in_use, again));
        for id in &ids[1..] {
            assert!(cache.pack(&backend, id).is_some());
        }
        assert!(cache.pack(&backend, &ids[0]).is_none());
    }
}
