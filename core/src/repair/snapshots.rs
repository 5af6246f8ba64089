//! `repair snapshots`: snapshots whose data is lost are written anew so
//! that everything that survives restores, and the damage is recorded.
//!
//! A file's lost chunk is replaced by zeros of the same length when the
//! index still knows its length (the pack or its session is gone, or with
//! `read_data`, the blob does not read back), so every surviving byte stays
//! at its offset; a chunk the index does not know at all is dropped. A
//! directory whose tree is lost becomes empty. The new snapshot keeps the
//! original's time, host, paths and parent, gains the tag `repaired`, and
//! lists the damaged paths among its `unreadable` ones. The original is
//! removed only on request, after its replacement is stored.

use std::collections::{HashMap, HashSet};

use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SessionId, SnapshotId};
use crate::object::blob::BlobType;
use crate::object::snapshot::Snapshot;
use crate::object::tree::{NodeKind, Tree};
use crate::repository::{BlobWriter, Repository};

/// The tag every repaired snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";

/// How to repair.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotRepairOptions {
    /// Read every blob back, so that damaged ones (not only missing ones)
    /// count as lost.
    pub read_data: bool,
    /// Only say what would be done.
    pub dry_run: bool,
    /// Remove each original once its repaired snapshot is stored.
    pub forget: bool,
}

/// What a damaged path lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Some of a file's chunks are lost.
    File {
        /// Chunks the file had.
        chunks: usize,
        /// Chunks lost.
        chunks_lost: usize,
        /// Bytes of lost chunks replaced by zeros (their length was known).
        bytes_zeroed: u64,
        /// Lost chunks dropped, their length unknown: what follows them
        /// moved up.
        chunks_dropped: usize,
    },
    /// A directory's tree is lost: it is now empty.
    Directory {
        /// Why its tree could not be read.
        reason: String,
    },
}

/// A path and what it lost. In a report, the path is absolute, as
/// restore recreates it; while trees are walked, relative to the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedPath {
    /// The path inside the snapshot, as raw bytes.
    pub path: Vec<u8>,
    /// What it lost.
    pub damage: Damage,
}

/// One snapshot that had lost data.
#[derive(Debug, Clone)]
pub struct RepairedSnapshot {
    /// The damaged snapshot.
    pub original: SnapshotId,
    /// Its replacement (none in a dry run).
    pub repaired: Option<SnapshotId>,
    /// Whether the original was removed.
    pub original_removed: bool,
    /// What was lost, by path.
    pub damaged: Vec<DamagedPath>,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Default)]
pub struct SnapshotsRepair {
    /// Snapshots walked.
    pub checked: usize,
    /// Those that had lost data.
    pub repaired: Vec<RepairedSnapshot>,
}

/// Repairs `snapshots`, which the caller selected (and locked: an
/// exclusive lock if `options.forget`).
pub fn repair_snapshots(
    repository: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    options: SnapshotRepairOptions,
) -> Result<SnapshotsRepair> {
    // Blobs a damaged segment lists would look lost.
    if let Some(damaged) = repository.damaged_segments().first() {
        return Err(Error::RepairRefused {
            reason: format!("{damaged}; run `cairn repair index` first"),
        });
    }
    let _from_storage = repository.read_trees_from_storage();
    let mut repairer = Repairer::new(repository, options)?;
    if !options.dry_run {
        // Starting to write indexes the packs a stopped writer left, whose
        // blobs would otherwise look lost.
        repairer.writer()?;
    }
    let mut report = SnapshotsRepair::default();
    for (id, snapshot) in snapshots {
        report.checked += 1;
        let mut root = repairer.tree(&snapshot.tree)?;
        if root.damaged.is_empty() {
            continue;
        }
        for damaged in &mut root.damaged {
            damaged.path.insert(0, b'/');
        }
        let mut replacement = snapshot.clone();
        replacement.tree = root.id;
        replacement.original = Some(snapshot.original.unwrap_or(*id));
        if !replacement.tags.iter().any(|t| t == REPAIRED_TAG) {
            replacement.tags.push(REPAIRED_TAG.to_string());
        }
        let mut listed: HashSet<Vec<u8>> = replacement.unreadable.iter().cloned().collect();
        for damaged in &root.damaged {
            if listed.insert(damaged.path.clone()) {
                replacement.unreadable.push(damaged.path.clone());
            }
        }
        replacement.program_version = format!("cairn {}", env!("CARGO_PKG_VERSION"));
        let repaired = match options.dry_run {
            true => None,
            false => {
                repairer.writer()?;
                let writer = repairer.writer.take().expect("just started");
                Some(writer.commit(&replacement)?)
            }
        };
        let original_removed = options.forget && !options.dry_run;
        if original_removed {
            repository.remove_snapshot(*id)?;
        }
        report.repaired.push(RepairedSnapshot {
            original: *id,
            repaired,
            original_removed,
            damaged: root.damaged,
        });
    }
    Ok(report)
}

/// A tree as repaired: its (new) id and the damage below it, with paths
/// relative to it.
#[derive(Clone)]
struct Repaired {
    id: BlobId,
    damaged: Vec<DamagedPath>,
}

/// Whether a failed read shows the blob is lost, as opposed to a store or
/// cache that failed to answer.
fn is_loss(error: &Error) -> bool {
    matches!(
        error,
        Error::Corrupted { .. }
            | Error::Unauthenticated { .. }
            | Error::MissingObject { .. }
            | Error::BlobNotIndexed { .. }
    )
}

/// A tree being walked.
struct Frame {
    id: BlobId,
    tree: Tree,
    /// The entry to walk next.
    next: usize,
    /// Damage below it so far, relative to it.
    damaged: Vec<DamagedPath>,
}

impl Frame {
    fn new(id: BlobId, tree: Tree) -> Frame {
        Frame {
            id,
            tree,
            next: 0,
            damaged: Vec::new(),
        }
    }

    /// Takes in what became of the directory entry walked last.
    fn absorb(&mut self, child: Repaired) {
        let node = &mut self.tree.nodes[self.next - 1];
        if let NodeKind::Directory { subtree } = &mut node.kind {
            *subtree = child.id;
        }
        for damaged in child.damaged {
            let mut path = node.name.clone();
            if !damaged.path.is_empty() {
                path.push(b'/');
                path.extend_from_slice(&damaged.path);
            }
            self.damaged.push(DamagedPath {
                path,
                damage: damaged.damage,
            });
        }
    }
}

/// What [`Repairer::open`] found.
enum Opened {
    Tree(Tree),
    Done(Repaired),
}

/// Whether a blob can be read back, and its length if the index knows it.
enum BlobStatus {
    Usable(u32),
    Lost(Option<u32>),
}

struct Repairer<'r> {
    repository: &'r Repository,
    options: SnapshotRepairOptions,
    packs: HashSet<PackId>,
    sessions: HashSet<SessionId>,
    /// Trees seen, by their old id: most are shared between snapshots.
    trees: HashMap<BlobId, Repaired>,
    /// Blobs of zeros stored, by length.
    zeros: HashMap<u32, BlobId>,
    /// The write session of the snapshot being repaired, started at its
    /// first new blob.
    writer: Option<BlobWriter<'r>>,
}

impl<'r> Repairer<'r> {
    fn new(repository: &'r Repository, options: SnapshotRepairOptions) -> Result<Repairer<'r>> {
        let packs = repository.list_ids(ObjectKind::Pack)?;
        let sessions = repository.stored_sessions()?;
        Ok(Repairer {
            repository,
            options,
            packs: packs.into_iter().map(PackId).collect(),
            sessions,
            trees: HashMap::new(),
            zeros: HashMap::new(),
            writer: None,
        })
    }

    fn writer(&mut self) -> Result<&mut BlobWriter<'r>> {
        if self.writer.is_none() {
            let level = self.repository.config().compression_level;
            self.writer = Some(self.repository.start_write(level)?);
        }
        Ok(self.writer.as_mut().expect("just started"))
    }

    /// Stores a blob (in a dry run, only computes its id).
    fn store(&mut self, blob_type: BlobType, plaintext: Vec<u8>) -> Result<BlobId> {
        if self.options.dry_run {
            return Ok(self.repository.blob_id(blob_type, &plaintext));
        }
        self.writer()?.add_blob(blob_type, plaintext)
    }

    fn status(&self, id: &BlobId, blob_type: BlobType) -> Result<BlobStatus> {
        let locations = self.repository.locations(id)?;
        let raw_len = locations.first().map(|l| l.entry.raw_len);
        let present = locations
            .iter()
            .any(|l| self.packs.contains(&l.pack) && self.sessions.contains(&l.session));
        if !present {
            return Ok(BlobStatus::Lost(raw_len));
        }
        if self.options.read_data {
            match self.repository.read_blob(id, blob_type) {
                Ok(plaintext) => return Ok(BlobStatus::Usable(plaintext.len() as u32)),
                Err(e) if is_loss(&e) => return Ok(BlobStatus::Lost(raw_len)),
                // A store (or the cache) that failed to answer proves
                // nothing.
                Err(e) => return Err(e),
            }
        }
        Ok(BlobStatus::Usable(raw_len.unwrap_or(0)))
    }

    /// Repairs the tree `root` and everything below it. The walk keeps its
    /// own stack, so a tree thousands of levels deep cannot exhaust the
    /// thread's.
    fn tree(&mut self, root: &BlobId) -> Result<Repaired> {
        let mut stack = match self.open(root)? {
            Opened::Done(repaired) => return Ok(repaired),
            Opened::Tree(tree) => vec![Frame::new(*root, tree)],
        };
        loop {
            let frame = stack
                .last_mut()
                .expect("the stack holds the root until the end");
            let Some(node) = frame.tree.nodes.get_mut(frame.next) else {
                let done = stack.pop().expect("just looked");
                let repaired = self.close(done)?;
                match stack.last_mut() {
                    None => return Ok(repaired),
                    Some(parent) => parent.absorb(repaired),
                }
                continue;
            };
            frame.next += 1;
            match &mut node.kind {
                NodeKind::Directory { subtree } => match self.open(&subtree.clone())? {
                    Opened::Done(repaired) => frame.absorb(repaired),
                    Opened::Tree(tree) => {
                        let id = *subtree;
                        stack.push(Frame::new(id, tree));
                    }
                },
                NodeKind::File { size, content, .. } => {
                    if let Some(damage) = self.repair_file(size, content)? {
                        let path = node.name.clone();
                        frame.damaged.push(DamagedPath { path, damage });
                    }
                }
                _ => {}
            }
        }
    }

    /// A tree to walk, or what it became if that is known already (walked
    /// before, or lost: then an empty directory).
    fn open(&mut self, id: &BlobId) -> Result<Opened> {
        if let Some(done) = self.trees.get(id) {
            return Ok(Opened::Done(done.clone()));
        }
        let reason = match self.status(id, BlobType::Tree)? {
            BlobStatus::Lost(_) => format!("tree {id} is not stored"),
            BlobStatus::Usable(_) => match self.repository.read_tree(id) {
                Ok(tree) => return Ok(Opened::Tree(tree)),
                Err(e) if is_loss(&e) => e.to_string(),
                Err(e) => return Err(e),
            },
        };
        let repaired = Repaired {
            id: self.store(BlobType::Tree, Tree::default().encode())?,
            damaged: vec![DamagedPath {
                path: Vec::new(),
                damage: Damage::Directory { reason },
            }],
        };
        self.trees.insert(*id, repaired.clone());
        Ok(Opened::Done(repaired))
    }

    /// A tree whose every entry was walked: stored anew if anything below
    /// it changed.
    fn close(&mut self, frame: Frame) -> Result<Repaired> {
        let id = if frame.damaged.is_empty() {
            frame.id
        } else {
            self.store(BlobType::Tree, frame.tree.encode())?
        };
        let repaired = Repaired {
            id,
            damaged: frame.damaged,
        };
        self.trees.insert(frame.id, repaired.clone());
        Ok(repaired)
    }

    /// Replaces a file's lost chunks by zeros (or drops them, their length
    /// unknown) and corrects its size; returns the damage, if any.
    fn repair_file(&mut self, size: &mut u64, content: &mut Vec<BlobId>) -> Result<Option<Damage>> {
        let chunks = content.len();
        let mut repaired = Vec::with_capacity(chunks);
        let mut surviving_bytes = 0u64;
        let mut lost = 0;
        let mut bytes_zeroed = 0;
        let mut dropped = 0;
        for blob in content.iter() {
            match self.status(blob, BlobType::Data)? {
                BlobStatus::Usable(len) => {
                    surviving_bytes += u64::from(len);
                    repaired.push(*blob);
                }
                BlobStatus::Lost(Some(len)) => {
                    lost += 1;
                    bytes_zeroed += u64::from(len);
                    surviving_bytes += u64::from(len);
                    repaired.push(self.zeros(len)?);
                }
                BlobStatus::Lost(None) => {
                    lost += 1;
                    dropped += 1;
                }
            }
        }
        if lost == 0 {
            return Ok(None);
        }
        if dropped > 0 {
            // The file is now what its remaining chunks hold.
            *size = surviving_bytes;
        }
        *content = repaired;
        Ok(Some(Damage::File {
            chunks,
            chunks_lost: lost,
            bytes_zeroed,
            chunks_dropped: dropped,
        }))
    }

    /// A blob of `len` zeros.
    fn zeros(&mut self, len: u32) -> Result<BlobId> {
        if let Some(id) = self.zeros.get(&len) {
            return Ok(*id);
        }
        let id = self.store(BlobType::Data, vec![0; len as usize])?;
        self.zeros.insert(len, id);
        Ok(id)
    }
}
