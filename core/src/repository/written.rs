//! What a write-only key wrote, kept on the host that wrote it (SPEC.md
//! §18, "What a write-only host keeps"). A write-only key opens no session,
//! so it can read back none of its snapshots or trees from storage. This
//! file keeps, per repository, the plaintext of the snapshots it stored and
//! the trees of the latest one for each host and set of source paths: what
//! `snapshots` shows such a key, and the parent its next backup compares
//! files against. Older trees are deleted, so the file holds names and
//! metadata of the latest backups only, never contents. It is always safe
//! to delete: the next backup then reads every file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::id::{BlobId, Id, SnapshotId};
use crate::index::{catch_redb, open_cache_file, open_database, OpenFailure};
use crate::object::snapshot::Snapshot;
use crate::object::tree::{NodeKind, Tree};

/// Snapshot id → the snapshot's encoded plaintext.
const SNAPSHOTS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("snapshots.v1");
/// Tree blob id → the tree's encoded plaintext.
const TREES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("trees.v1");
/// Hash of a host and its source paths → its latest snapshot's id.
const LATEST: TableDefinition<[u8; 32], [u8; 32]> = TableDefinition::new("latest.v1");

/// Trees gathered before they are written to the file, at most.
const STAGE_BYTES: usize = 8 << 20;

/// The local record of a write-only key's writes.
pub(crate) struct Written {
    db: Database,
    path: PathBuf,
    /// Trees of the backup in progress not yet in the file.
    staged: Mutex<Vec<(BlobId, Vec<u8>)>>,
    /// Set when staging failed: the run's backup is then not recorded
    /// (its parent would lack trees), and goes on without the record.
    failed: std::sync::atomic::AtomicBool,
}

impl Written {
    /// Opens (or creates) the record at `path`.
    pub(crate) fn open(path: &Path) -> Result<Written> {
        let failed = |reason: String| Error::LocalCache {
            path: path.to_path_buf(),
            reason,
        };
        let db = open_cache_file(path)
            .and_then(open_database)
            .map_err(|failure| {
                failed(match failure {
                    OpenFailure::Busy => "in use by another cairn process".into(),
                    OpenFailure::Damaged(why) | OpenFailure::Unusable(why) => why,
                })
            })?;
        let written = Written {
            db,
            path: path.to_path_buf(),
            staged: Mutex::new(Vec::new()),
            failed: std::sync::atomic::AtomicBool::new(false),
        };
        written.guarded(|db| {
            let txn = db.begin_write()?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(TREES)?;
            txn.open_table(LATEST)?;
            txn.commit()?;
            Ok(())
        })?;
        Ok(written)
    }

    /// Runs `op` on the database; any failure or panic of redb becomes an
    /// error naming the file.
    fn guarded<T>(
        &self,
        op: impl FnOnce(&Database) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        let failed = |reason: String| Error::LocalCache {
            path: self.path.clone(),
            reason,
        };
        catch_redb(|| op(&self.db))
            .map_err(failed)?
            .map_err(|e| failed(e.to_string()))
    }

    /// Every snapshot recorded, in no particular order. A row that does not
    /// decode is left out: the record is a convenience, not the repository.
    pub(crate) fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(SNAPSHOTS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (id, bytes) = row?;
                if let Ok(snapshot) = Snapshot::decode(bytes.value()) {
                    out.push((SnapshotId(Id(id.value())), snapshot));
                }
            }
            Ok(out)
        })
    }

    /// A tree's plaintext, if it is recorded.
    pub(crate) fn tree(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        self.flush_staged()?;
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(TREES)?;
            Ok(table.get(id.0 .0)?.map(|bytes| bytes.value().to_vec()))
        })
    }

    /// Records a tree the backup in progress stored (or found stored).
    /// A failure is reported once, and the record then ignored for the
    /// rest of the run.
    pub(crate) fn stage_tree(&self, id: BlobId, plaintext: &[u8]) -> Result<()> {
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let staged = self.stage(id, plaintext);
        if staged.is_err() {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.staged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        staged
    }

    fn stage(&self, id: BlobId, plaintext: &[u8]) -> Result<()> {
        let full = {
            let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
            staged.push((id, plaintext.to_vec()));
            staged.iter().map(|(_, t)| t.len()).sum::<usize>() >= STAGE_BYTES
        };
        if full {
            self.flush_staged()?;
        }
        Ok(())
    }

    /// Writes the staged trees to the file, without waiting for the disk:
    /// until the snapshot that needs them is recorded, losing them loses
    /// nothing.
    fn flush_staged(&self) -> Result<()> {
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|p| p.into_inner()));
        if staged.is_empty() {
            return Ok(());
        }
        self.guarded(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(redb::Durability::None)?;
            {
                let mut table = txn.open_table(TREES)?;
                for (id, tree) in &staged {
                    table.insert(id.0 .0, tree.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Records `snapshot`, just stored, as the latest of its host and
    /// paths, then deletes the trees no latest snapshot reaches.
    /// A snapshot older (by its time) than the latest recorded for its
    /// host and paths is recorded, and the latest kept: a backup takes the
    /// newest as its parent, whose trees must be there.
    pub(crate) fn commit(&self, id: SnapshotId, snapshot: &Snapshot) -> Result<()> {
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::LocalCache {
                path: self.path.clone(),
                reason: "its trees could not be recorded during the backup".into(),
            });
        }
        self.flush_staged()?;
        let source_set = source_set(snapshot);
        let encoded = snapshot.encode();
        self.guarded(|db| {
            let txn = db.begin_write()?;
            {
                let mut snapshots = txn.open_table(SNAPSHOTS)?;
                let mut latest = txn.open_table(LATEST)?;
                let current = match latest.get(source_set)? {
                    Some(current) => snapshots
                        .get(current.value())?
                        .and_then(|bytes| Snapshot::decode(bytes.value()).ok()),
                    None => None,
                };
                snapshots.insert(id.0 .0, encoded.as_slice())?;
                if current.is_none_or(|current| current.time_ns <= snapshot.time_ns) {
                    latest.insert(source_set, id.0 .0)?;
                }
            }
            txn.commit()?;
            Ok(())
        })?;
        self.collect_garbage()
    }

    /// Forgets the snapshots not in `present` (deleted from storage by a
    /// full key's `forget`).
    pub(crate) fn retain(&self, present: &HashSet<SnapshotId>) -> Result<()> {
        self.guarded(|db| {
            let txn = db.begin_write()?;
            txn.open_table(SNAPSHOTS)?
                .retain(|id, _| present.contains(&SnapshotId(Id(id))))?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Deletes every tree that no latest snapshot reaches.
    fn collect_garbage(&self) -> Result<()> {
        self.guarded(|db| {
            let txn = db.begin_write()?;
            {
                let snapshots = txn.open_table(SNAPSHOTS)?;
                let latest = txn.open_table(LATEST)?;
                let mut trees = txn.open_table(TREES)?;
                let mut pending = Vec::new();
                for row in latest.iter()? {
                    let (_, snapshot) = row?;
                    if let Some(bytes) = snapshots.get(snapshot.value())? {
                        if let Ok(snapshot) = Snapshot::decode(bytes.value()) {
                            pending.push(snapshot.tree);
                        }
                    }
                }
                let mut reached = HashSet::new();
                while let Some(id) = pending.pop() {
                    if !reached.insert(id) {
                        continue;
                    }
                    let Some(bytes) = trees.get(id.0 .0)? else {
                        continue;
                    };
                    if let Ok(tree) = Tree::decode(bytes.value()) {
                        pending.extend(tree.nodes.iter().filter_map(|node| match node.kind {
                            NodeKind::Directory { subtree, .. } => Some(subtree),
                            _ => None,
                        }));
                    }
                }
                trees.retain(|id, _| reached.contains(&BlobId(Id(id))))?;
            }
            txn.commit()?;
            Ok(())
        })
    }
}

/// The key of a snapshot's host and source paths.
fn source_set(snapshot: &Snapshot) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(snapshot.hostname.len() as u64).to_le_bytes());
    hasher.update(snapshot.hostname.as_bytes());
    for path in &snapshot.paths {
        hasher.update(&(path.len() as u64).to_le_bytes());
        hasher.update(path);
    }
    *hasher.finalize().as_bytes()
}
