//! `copy`: snapshots of one repository, with every blob they need, into
//! another, which may have another password, other chunker parameters and
//! another backend (SPEC.md §15, "Copies").
//!
//! If both repositories name and cut blobs alike (same id key, chunker
//! parameters and seed: a repository made with `init --from-repo
//! --copy-chunker-params`), blobs are copied as they are: trees unchanged,
//! only the blobs the destination lacks read and stored. Otherwise files
//! are read and cut again by the destination's chunker, and trees written
//! anew, deepest first; what the copy of the snapshot's parent shows
//! unchanged (the same subtree, the same file content) is taken from that
//! copy without being read.
//!
//! A copy keeps the snapshot's fields and records the snapshot it copies
//! (its `original`, or its own id) as its `original`: a snapshot of whose
//! line the destination holds a copy that describes itself alike (time,
//! host, user, paths, tags) is skipped, so copying every night costs only
//! the new snapshots, and a snapshot tagged anew is copied again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::archiver::store_chunks;
use crate::browse::FileContent;
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::object::blob::BlobType;
use crate::object::snapshot::Snapshot;
use crate::object::tree::{NodeKind, Tree};
use crate::repository::{BlobWriter, Repository};

/// Data blobs read from the source at once: bounded so that memory stays
/// flat (at most this many blobs in flight).
const BLOBS_PER_BATCH: usize = 32;

/// What a copy did.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// Each snapshot copied, with the id of its copy.
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Snapshots the destination already held a copy of.
    pub skipped: Vec<SnapshotId>,
    /// Whether files were cut again (the repositories name or cut blobs
    /// differently).
    pub rechunked: bool,
    /// Sealed bytes stored in the destination.
    pub bytes_added: u64,
    /// Blobs stored in the destination.
    pub blobs_added: u64,
}

/// The line a snapshot belongs to: the snapshot it replaces or copies, or
/// itself.
fn lineage(id: SnapshotId, snapshot: &Snapshot) -> SnapshotId {
    snapshot.original.unwrap_or(id)
}

/// Copies `snapshots` of `source` into `destination`, oldest first,
/// skipping those the destination holds a copy of already. Each copy is
/// its own write session, committed once all it needs is stored: a copy
/// stopped midway leaves the snapshots copied so far, and the next run
/// reuses what the stopped one stored. Errors if a destination snapshot
/// does not read (it could be a copy, and copying again would double it).
pub fn copy(
    source: &Repository,
    destination: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    compression_level: i32,
    mut copied_one: impl FnMut(SnapshotId, SnapshotId),
) -> Result<CopyReport> {
    let rechunk = !source.names_blobs_like(destination);
    let mut report = CopyReport {
        rechunked: rechunk,
        ..CopyReport::default()
    };
    let listed = destination.snapshots()?;
    if let Some(damaged) = listed.damaged.into_iter().next() {
        return Err(damaged);
    }
    let mut held = Held::default();
    for (id, snapshot) in listed.snapshots {
        held.add(id, snapshot);
    }
    let mut sorted: Vec<&(SnapshotId, Snapshot)> = snapshots.iter().collect();
    sorted.sort_by_key(|(id, snapshot)| (snapshot.time_ns, *id));
    // Trees already copied in this run, by their source id.
    let mut trees = HashMap::new();
    for (id, snapshot) in sorted {
        if held.copy_of(*id, snapshot).is_some() {
            report.skipped.push(*id);
            continue;
        }
        // The copy of the snapshot's parent, if the destination has one.
        let parent = match snapshot.parent {
            Some(parent) => parent_copy(source, &held, parent)?,
            None => None,
        };
        let mut writer = destination.start_write(compression_level)?;
        let tree = if rechunk {
            let shared = Mutex::new(writer);
            let guide = parent.as_ref().map(|(_, copy, original)| Guide {
                source: original.tree,
                copy: copy.tree,
            });
            let walk = Rechunk {
                source,
                destination,
                writer: &shared,
            };
            let tree = walk.tree(snapshot.tree, guide, &mut trees)?;
            writer = shared.into_inner().unwrap_or_else(|p| p.into_inner());
            tree
        } else {
            copy_tree(source, &mut writer, snapshot.tree, &mut trees)?;
            snapshot.tree
        };
        let copy = Snapshot {
            tree,
            parent: parent.map(|(copy_id, _, _)| copy_id),
            original: Some(lineage(*id, snapshot)),
            ..snapshot.clone()
        };
        writer.flush()?;
        report.bytes_added += writer.bytes_added();
        report.blobs_added += writer.blobs_added();
        let copy_id = writer.commit(&copy)?;
        held.add(copy_id, copy);
        report.copied.push((*id, copy_id));
        copied_one(*id, copy_id);
    }
    Ok(report)
}

/// The destination's snapshots by line.
#[derive(Default)]
struct Held {
    lines: HashMap<SnapshotId, Vec<(SnapshotId, Snapshot)>>,
}

impl Held {
    fn add(&mut self, id: SnapshotId, snapshot: Snapshot) {
        self.lines
            .entry(lineage(id, &snapshot))
            .or_default()
            .push((id, snapshot));
    }

    /// The destination's copy of source snapshot `id`: one of its line
    /// that says the same of itself. A snapshot tagged anew in the source
    /// (same line, other tags) is copied again.
    fn copy_of(&self, id: SnapshotId, snapshot: &Snapshot) -> Option<&(SnapshotId, Snapshot)> {
        self.lines
            .get(&lineage(id, snapshot))?
            .iter()
            .rev()
            .find(|(_, held)| describes_alike(held, snapshot))
    }
}

/// Whether two snapshots say the same of themselves: when, where, whose,
/// of what, with which tags, and what could not be read.
fn describes_alike(a: &Snapshot, b: &Snapshot) -> bool {
    let sorted = |tags: &[String]| {
        let mut tags = tags.to_vec();
        tags.sort();
        tags
    };
    a.time_ns == b.time_ns
        && a.hostname == b.hostname
        && a.username == b.username
        && a.paths == b.paths
        && a.unreadable == b.unreadable
        && sorted(&a.tags) == sorted(&b.tags)
}

/// The destination's copy of the source snapshot `parent` (id, copy, and
/// the source snapshot), if the source still has it and it was copied.
fn parent_copy(
    source: &Repository,
    held: &Held,
    parent: SnapshotId,
) -> Result<Option<(SnapshotId, Snapshot, Snapshot)>> {
    let original = match source.resolve_snapshot(&parent.to_string()) {
        Ok((_, original)) => original,
        Err(Error::SnapshotNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(held
        .copy_of(parent, &original)
        .map(|(id, copy)| (*id, copy.clone(), original)))
}

/// Copies the tree `root` and everything below it that `writer`'s
/// repository lacks, blobs as they are. `done` holds the trees copied so
/// far (each maps to itself).
fn copy_tree(
    source: &Repository,
    writer: &mut BlobWriter<'_>,
    root: BlobId,
    done: &mut HashMap<BlobId, BlobId>,
) -> Result<()> {
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if done.contains_key(&id) {
            continue;
        }
        let bytes = source.read_blob(&id, BlobType::Tree)?;
        let tree = Tree::decode(&bytes).map_err(|e| Error::corrupted(format!("tree {id}"), e))?;
        let mut missing = Vec::new();
        let mut queued = HashSet::new();
        for node in &tree.nodes {
            match &node.kind {
                NodeKind::File { content, .. } => {
                    for blob in content {
                        if !queued.contains(blob) && !writer.contains_all(&[*blob])? {
                            queued.insert(*blob);
                            missing.push(*blob);
                        }
                    }
                }
                NodeKind::Directory { subtree } => stack.push(*subtree),
                _ => {}
            }
        }
        copy_blobs(source, writer, &missing)?;
        store_as(writer, BlobType::Tree, id, bytes)?;
        done.insert(id, id);
    }
    Ok(())
}

/// Reads the data blobs `ids` from `source` (several at once) and stores
/// them through `writer`.
fn copy_blobs(source: &Repository, writer: &mut BlobWriter<'_>, ids: &[BlobId]) -> Result<()> {
    for batch in ids.chunks(BLOBS_PER_BATCH) {
        let blobs: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|id| source.read_blob(id, BlobType::Data))
            .collect::<Result<_>>()?;
        for (id, plaintext) in batch.iter().zip(blobs) {
            store_as(writer, BlobType::Data, *id, plaintext)?;
        }
    }
    Ok(())
}

/// Stores a blob that must keep its id `id` in the destination.
fn store_as(
    writer: &mut BlobWriter<'_>,
    blob_type: BlobType,
    id: BlobId,
    plaintext: Vec<u8>,
) -> Result<()> {
    let stored = writer.add_blob(blob_type, plaintext)?;
    if stored != id {
        return Err(Error::corrupted(
            format!("blob {id}"),
            format!("stored as {stored} in the destination, which names blobs alike"),
        ));
    }
    Ok(())
}

/// A source tree that an earlier copy wrote anew, and that copy: where a
/// walk finds what it need not read and cut again.
#[derive(Clone, Copy)]
struct Guide {
    source: BlobId,
    copy: BlobId,
}

/// What a guide says of one directory: the source tree's nodes, and the
/// copy's, by name.
struct GuideNodes {
    source: HashMap<Vec<u8>, NodeKind>,
    copy: HashMap<Vec<u8>, NodeKind>,
}

/// A tree being written anew: its nodes, how many are done, and what the
/// copy of the same directory in the parent snapshot says.
struct Frame {
    source: BlobId,
    tree: Tree,
    next: usize,
    guide: Option<GuideNodes>,
}

/// Writing trees anew in a destination that cuts or names blobs otherwise.
struct Rechunk<'a, 'w> {
    source: &'a Repository,
    destination: &'a Repository,
    writer: &'a Mutex<BlobWriter<'w>>,
}

impl<'w> Rechunk<'_, 'w> {
    /// Writes the tree `root` anew, every file cut by the destination's
    /// chunker, deepest trees first; returns the new root's id. A file or
    /// directory that `guide` (the parent snapshot and its copy) shows
    /// unchanged takes its copy's content or tree without being read. Walks
    /// with a stack of its own, so a tree of any depth is copied; `done`
    /// maps source trees to their copies, so a subtree shared by several
    /// paths or snapshots is written once.
    fn tree(
        &self,
        root: BlobId,
        guide: Option<Guide>,
        done: &mut HashMap<BlobId, BlobId>,
    ) -> Result<BlobId> {
        if let Some(copied) = done.get(&root) {
            return Ok(*copied);
        }
        let mut stack = vec![self.frame(root, guide)?];
        loop {
            let frame = stack.last_mut().expect("the root is popped last");
            let Some(node) = frame.tree.nodes.get_mut(frame.next) else {
                let finished = stack.pop().expect("a frame was just looked at");
                let copied = self
                    .lock()
                    .add_blob(BlobType::Tree, finished.tree.encode())?;
                done.insert(finished.source, copied);
                let Some(parent) = stack.last_mut() else {
                    return Ok(copied);
                };
                if let NodeKind::Directory { subtree } = &mut parent.tree.nodes[parent.next].kind {
                    *subtree = copied;
                }
                parent.next += 1;
                continue;
            };
            let guided = frame.guide.as_ref().and_then(|guide| {
                Some((guide.source.get(&node.name)?, guide.copy.get(&node.name)?))
            });
            match &mut node.kind {
                NodeKind::Directory { subtree } => {
                    let copied = done.get(subtree).copied().or_else(|| match guided {
                        Some((
                            NodeKind::Directory { subtree: was },
                            NodeKind::Directory { subtree: copy },
                        )) if was == subtree => Some(*copy),
                        _ => None,
                    });
                    match copied {
                        Some(copied) => {
                            done.insert(*subtree, copied);
                            *subtree = copied;
                            frame.next += 1;
                        }
                        None => {
                            let guide = match guided {
                                Some((
                                    NodeKind::Directory { subtree: source },
                                    NodeKind::Directory { subtree: copy },
                                )) => Some(Guide {
                                    source: *source,
                                    copy: *copy,
                                }),
                                _ => None,
                            };
                            let child = self.frame(*subtree, guide)?;
                            stack.push(child);
                        }
                    }
                }
                NodeKind::File { size, content, .. } => {
                    let unchanged = match guided {
                        Some((
                            NodeKind::File {
                                content: was,
                                size: was_size,
                                ..
                            },
                            NodeKind::File {
                                content: copy,
                                size: copy_size,
                                ..
                            },
                        )) if was == content && was_size == size && copy_size == size => {
                            Some(copy.clone())
                        }
                        _ => None,
                    };
                    *content = match unchanged {
                        Some(copy) => copy,
                        None => {
                            let reader = FileContent::new(self.source, content, *size, &node.name);
                            let chunks = self.destination.chunker().stream(reader);
                            store_chunks(self.writer, chunks, |_| {})?
                                .map_err(|e| read_error(e, &node.name, frame.source))?
                                .1
                        }
                    };
                    frame.next += 1;
                }
                _ => frame.next += 1,
            }
        }
    }

    /// Reads source tree `id` to be written anew, with what `guide` says
    /// of it.
    fn frame(&self, id: BlobId, guide: Option<Guide>) -> Result<Frame> {
        let by_name = |tree: Tree| -> HashMap<Vec<u8>, NodeKind> {
            tree.nodes.into_iter().map(|n| (n.name, n.kind)).collect()
        };
        let guide = match guide {
            Some(guide) => Some(GuideNodes {
                source: by_name(self.source.read_tree(&guide.source)?),
                copy: by_name(self.destination.read_tree(&guide.copy)?),
            }),
            None => None,
        };
        Ok(Frame {
            source: id,
            tree: self.source.read_tree(&id)?,
            next: 0,
            guide,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BlobWriter<'w>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The error a file's content reader failed with: the repository's own,
/// or else one naming the file and its tree.
fn read_error(error: std::io::Error, name: &[u8], tree: BlobId) -> Error {
    let what = format!("file {} in tree {tree}", String::from_utf8_lossy(name));
    if error.get_ref().is_none() {
        return Error::corrupted(what, error);
    }
    match error.into_inner() {
        Some(inner) => inner
            .downcast::<Error>()
            .map_or_else(|other| Error::corrupted(what, other), |inner| *inner),
        None => Error::corrupted(what, "unreadable"),
    }
}
