//! check: prove a repository intact, or say precisely what is not
//! (SPEC.md §23).
//!
//! In order: every key file matches its name; every snapshot opens; every pack's trailer opens under a
//! session that is present; every index segment opens and agrees with the
//! trailers of the packs it lists; with `read_data`, every (selected) pack
//! is read whole, its name checked against its hash and each blob
//! authenticated; last, every snapshot's trees are walked and every blob
//! they name is looked up, so that each problem can name the snapshots
//! and paths it affects. Leftover temporary files and packs no segment
//! lists are warnings: they waste space but lose nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, PackId, SegmentId, SnapshotId};
use crate::object::blob::BlobType;
use crate::object::pack::entries_digest;
use crate::object::snapshot::Snapshot;
use crate::object::tree::NodeKind;
use crate::repository::Repository;

/// Which packs `--read-data` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataSubset {
    /// Every pack.
    All,
    /// Subset `n` of `m` (1-based): the packs whose id, its first eight
    /// bytes read as a little-endian number, is `n - 1` modulo `m`.
    /// Running 1/m … m/m in turn reads everything.
    Slice {
        /// Which subset, 1..=m.
        n: u32,
        /// How many subsets.
        m: u32,
    },
    /// About this percentage of the packs: a window of the id space that
    /// moves with `day` (days since the epoch), so that successive days
    /// read successive windows and every pack is read within 100/P days.
    Percent {
        /// Percentage, 0 < p <= 100.
        percent: f64,
        /// The day the window is for.
        day: u64,
    },
}

impl DataSubset {
    /// Whether pack `id` is in the subset.
    pub fn contains(&self, id: &PackId) -> bool {
        let mut head = [0u8; 8];
        head.copy_from_slice(&id.0 .0[..8]);
        let number = u64::from_le_bytes(head);
        match *self {
            DataSubset::All => true,
            DataSubset::Slice { n, m } => {
                m > 0 && number % u64::from(m) == u64::from(n.saturating_sub(1)) % u64::from(m)
            }
            DataSubset::Percent { percent, day } => {
                let position = number as f64 / u64::MAX as f64 * 100.0;
                let start = (day as f64 * percent) % 100.0;
                (position - start).rem_euclid(100.0) < percent
            }
        }
    }
}

/// What to check beyond the structure.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Read and verify the data of these packs.
    pub read_data: Option<DataSubset>,
}

/// One problem found: the object concerned, what is wrong, and what it
/// affects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The object (`data/f7/f736…`, `snapshots/1a2b…`, `blob 9c3e…`).
    pub object: String,
    /// What is wrong with it.
    pub message: String,
    /// Short ids of the snapshots it affects.
    pub snapshots: Vec<String>,
    /// Paths in them that it affects (at most [`MAX_PATHS`]).
    pub paths: Vec<String>,
    /// Affected paths beyond those listed.
    pub more_paths: u64,
}

/// Paths listed per problem.
pub const MAX_PATHS: usize = 20;

/// The outcome of a check.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Damage: data that is or may be lost.
    pub errors: Vec<Problem>,
    /// Waste or leftovers: nothing lost.
    pub warnings: Vec<Problem>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs whose trailers were checked.
    pub packs: usize,
    /// Bytes of the blobs those packs hold, as stored (sealed).
    pub stored_bytes: u64,
    /// Packs read whole.
    pub packs_read: usize,
    /// Blobs authenticated by reading.
    pub blobs_read: u64,
    /// Trees walked (one with a problem once per snapshot holding it).
    pub trees: u64,
}

impl CheckReport {
    /// Whether nothing is damaged (warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Problems gathered by object, so that each is reported once with
/// everything it affects.
#[derive(Default)]
struct Problems {
    by_object: BTreeMap<String, Problem>,
}

impl Problems {
    fn add(&mut self, object: String, message: String) {
        self.by_object.entry(object.clone()).or_insert(Problem {
            object,
            message,
            snapshots: Vec::new(),
            paths: Vec::new(),
            more_paths: 0,
        });
    }

    fn affects(&mut self, object: &str, snapshot: &str, path: &str) {
        let Some(problem) = self.by_object.get_mut(object) else {
            return;
        };
        if !problem.snapshots.iter().any(|s| s == snapshot) {
            problem.snapshots.push(snapshot.to_string());
        }
        if problem.paths.iter().any(|p| p == path) {
            return;
        }
        if problem.paths.len() < MAX_PATHS {
            problem.paths.push(path.to_string());
        } else {
            problem.more_paths += 1;
        }
    }

    fn into_list(self) -> Vec<Problem> {
        self.by_object.into_values().collect()
    }
}

/// Blobs known unreadable before the walk, with the object whose problem
/// it is (their missing pack, or the blob itself).
type BadBlobs = HashMap<BlobId, String>;

/// Checks `repository`. Errors only if checking cannot go on (the store
/// cannot be listed); damage is reported in the [`CheckReport`].
pub fn check(repository: &Repository, options: &CheckOptions) -> Result<CheckReport> {
    let _from_storage = repository.read_trees_from_storage();
    let mut report = CheckReport::default();
    let mut errors = Problems::default();
    let mut warnings = Problems::default();

    let snapshots = repository.snapshots()?;
    for damaged in &snapshots.damaged {
        errors.add(damaged_object(damaged), damaged.to_string());
    }
    report.snapshots = snapshots.snapshots.len() + snapshots.damaged.len();

    check_key_files(repository, &mut errors)?;
    let trailers = check_packs(repository, &mut report, &mut errors)?;
    let mut bad_blobs = check_segments(repository, &trailers, &mut errors, &mut warnings)?;
    let leftovers = repository
        .backend()
        .leftovers()
        .map_err(|e| Error::storage(ObjectKind::Pack, "", e))?;
    for (name, age) in leftovers {
        warnings.add(
            name,
            format!("a temporary file left by a writer that stopped, {age} s old"),
        );
    }
    for (object, message) in crate::keys::rotation_leftovers(repository)? {
        warnings.add(object, message);
    }
    if let Some(subset) = options.read_data {
        read_data(
            repository,
            &trailers,
            subset,
            &mut report,
            &mut errors,
            &mut bad_blobs,
        );
    }
    walk_snapshots(
        repository,
        &snapshots.snapshots,
        &bad_blobs,
        &mut report,
        &mut errors,
    );
    report.errors = errors.into_list();
    report.warnings = warnings.into_list();
    Ok(report)
}

fn listed(repository: &Repository, kind: ObjectKind) -> Result<Vec<(String, Id)>> {
    Ok(repository
        .backend()
        .list(kind)
        .map_err(|e| Error::storage(kind, "", e))?
        .into_iter()
        .filter_map(|name| {
            let id = Id::from_hex(&name).filter(|id| id.to_hex() == name)?;
            Some((name, id))
        })
        .collect())
}

/// Checks that every key file has a key file's length and matches its
/// name: one that does not is damaged, and the password it held no longer
/// opens the repository. (The key file that opened this run is intact.)
fn check_key_files(repository: &Repository, errors: &mut Problems) -> Result<()> {
    for key in crate::keys::list(repository)? {
        if let Some(why) = key.damaged {
            errors.add(
                object_name(ObjectKind::Key, &key.id),
                format!("damaged: {why}; the password it held no longer opens the repository"),
            );
        }
    }
    Ok(())
}

/// The packs whose trailers opened, each with a hash of its entries: a
/// few dozen bytes a pack, however many blobs it holds.
type Trailers = HashMap<PackId, blake3::Hash>;

/// Opens every pack's trailer (which also opens its session).
fn check_packs(
    repository: &Repository,
    report: &mut CheckReport,
    errors: &mut Problems,
) -> Result<Trailers> {
    let mut trailers = HashMap::new();
    for (name, id) in listed(repository, ObjectKind::Pack)? {
        report.packs += 1;
        match repository.read_pack_trailer(&name) {
            Ok((_, entries)) => {
                report.stored_bytes += entries.iter().map(|e| u64::from(e.stored_len)).sum::<u64>();
                trailers.insert(PackId(id), entries_digest(&entries));
            }
            Err(e) => errors.add(object_name(ObjectKind::Pack, &name), e.to_string()),
        }
    }
    Ok(trailers)
}

/// Opens every index segment and compares each pack it lists with that
/// pack's trailer. Returns the blobs of listed packs that are missing or
/// unreadable; packs no segment lists are warnings.
fn check_segments(
    repository: &Repository,
    trailers: &Trailers,
    errors: &mut Problems,
    warnings: &mut Problems,
) -> Result<BadBlobs> {
    let mut bad_blobs = BadBlobs::new();
    let mut indexed: HashSet<PackId> = HashSet::new();
    for (name, id) in listed(repository, ObjectKind::Index)? {
        let segment_object = object_name(ObjectKind::Index, &name);
        let segment = match repository.read_segment(SegmentId(id)) {
            Ok(segment) => segment,
            Err(e) => {
                errors.add(segment_object, e.to_string());
                continue;
            }
        };
        for pack in &segment.packs {
            indexed.insert(pack.pack);
            let pack_object = object_name(ObjectKind::Pack, &pack.pack.to_string());
            match trailers.get(&pack.pack) {
                Some(digest) if *digest == entries_digest(&pack.entries) => continue,
                Some(_) => {
                    errors.add(
                        segment_object.clone(),
                        format!("disagrees with the trailer of {pack_object}"),
                    );
                    continue;
                }
                // Reported when its trailer failed to open.
                None if errors.by_object.contains_key(&pack_object) => {}
                None => errors.add(
                    pack_object.clone(),
                    format!("missing from the repository, though {segment_object} lists it"),
                ),
            }
            for entry in &pack.entries {
                bad_blobs.insert(entry.id, pack_object.clone());
            }
        }
    }
    // A pack no segment lists whose trailer does not open holds nothing
    // the index points at: if a snapshot needed it, its blobs are reported
    // missing from the index. Repair keeps such a pack when nothing in it
    // could be verified, for a person to look at; it is not damage to the
    // repository.
    let unlisted_damaged: Vec<String> = errors
        .by_object
        .keys()
        .filter(|object| {
            object
                .strip_prefix("data/")
                .and_then(|rest| rest.rsplit('/').next())
                .and_then(Id::from_hex)
                .is_some_and(|id| !indexed.contains(&PackId(id)))
        })
        .cloned()
        .collect();
    for object in unlisted_damaged {
        if let Some(problem) = errors.by_object.remove(&object) {
            warnings.add(
                object,
                format!(
                    "{}; no index segment lists it, so nothing the repository uses is in it                      (delete it once you no longer want to inspect it)",
                    problem.message
                ),
            );
        }
    }
    for pack in trailers.keys().filter(|p| !indexed.contains(p)) {
        warnings.add(
            object_name(ObjectKind::Pack, &pack.to_string()),
            "no index segment lists this pack: a writer stopped before indexing it, or its \
             segment was lost (if blobs are reported missing from the index, run `cairn repair \
             index`; otherwise `cairn prune` deletes it)"
                .into(),
        );
    }
    Ok(bad_blobs)
}

/// What reading one pack found: problems (object, message) and the blobs
/// that failed, by the object naming them.
#[derive(Default)]
struct PackReading {
    problems: Vec<(String, String)>,
    bad_blobs: Vec<(BlobId, String)>,
    blobs_read: u64,
}

/// Reads the selected packs whole, several at once: the name must be the
/// hash of the bytes, and every blob must authenticate and match its id.
fn read_data(
    repository: &Repository,
    trailers: &Trailers,
    subset: DataSubset,
    report: &mut CheckReport,
    errors: &mut Problems,
    bad_blobs: &mut BadBlobs,
) {
    use rayon::prelude::*;
    let mut packs: Vec<&PackId> = trailers.keys().filter(|p| subset.contains(p)).collect();
    packs.sort();
    report.packs_read += packs.len();
    let readings: Vec<PackReading> = packs
        .par_iter()
        .map(|pack| read_pack(repository, pack))
        .collect();
    for reading in readings {
        report.blobs_read += reading.blobs_read;
        for (object, message) in reading.problems {
            errors.add(object, message);
        }
        bad_blobs.extend(reading.bad_blobs);
    }
}

/// Reads one pack whole and verifies it.
fn read_pack(repository: &Repository, pack: &PackId) -> PackReading {
    let name = pack.to_string();
    let object = object_name(ObjectKind::Pack, &name);
    let mut reading = PackReading::default();
    let bytes = match repository.backend().get(ObjectKind::Pack, &name) {
        Ok(bytes) => bytes,
        Err(e) => {
            let error = Error::storage(ObjectKind::Pack, &name, e);
            reading.problems.push((object, error.to_string()));
            return reading;
        }
    };
    if Id::of_bytes(&bytes) != pack.0 {
        reading
            .problems
            .push((object.clone(), "content does not match its name".into()));
    }
    // The trailer opened before, so its session does.
    let Ok((session, entries)) = repository.read_pack_trailer(&name) else {
        return reading;
    };
    let Ok(sealer) = repository.session_sealer(session) else {
        return reading;
    };
    for entry in &entries {
        let blob_type = entry.blob_type().unwrap_or(BlobType::Data);
        let start = entry.offset as usize;
        let stored = bytes
            .get(start..start + entry.stored_len as usize)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        reading.blobs_read += 1;
        if let Err(e) = repository.open_blob(entry, blob_type, stored, &sealer) {
            let blob = format!("blob {} in {object}", entry.id);
            reading.problems.push((blob.clone(), e.to_string()));
            reading.bad_blobs.push((entry.id, blob));
        }
    }
    reading
}

/// A step of the tree walk.
enum Step {
    /// Check this tree, found at this path, `depth` trees below the root.
    Enter(BlobId, String, usize),
}

/// Walks every snapshot's trees and looks up every blob they name. A
/// subtree found wholly clean is not walked again; one with a problem is,
/// for each snapshot that holds it, so that every affected path is named.
fn walk_snapshots(
    repository: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    bad_blobs: &BadBlobs,
    report: &mut CheckReport,
    errors: &mut Problems,
) {
    let mut clean_trees: HashSet<BlobId> = HashSet::new();
    for (id, snapshot) in snapshots {
        let short = id.0.short();
        // The trees being walked, root first, each with whether something
        // below it had a problem; closed once the walk leaves them.
        let mut open: Vec<(BlobId, bool)> = Vec::new();
        let close = |open: &mut Vec<(BlobId, bool)>, depth: usize, clean: &mut HashSet<BlobId>| {
            while open.len() > depth {
                let (tree, dirty) = open.pop().expect("longer than depth");
                if !dirty {
                    clean.insert(tree);
                }
            }
        };
        let mut steps = vec![Step::Enter(snapshot.tree, String::new(), 0)];
        while let Some(Step::Enter(tree_id, path, depth)) = steps.pop() {
            close(&mut open, depth, &mut clean_trees);
            if clean_trees.contains(&tree_id) {
                continue;
            }
            let shown = if path.is_empty() { "/" } else { path.as_str() };
            let problem = |errors: &mut Problems, object: String, message: String, at: &str| {
                errors.add(object.clone(), message);
                errors.affects(&object, &short, at);
            };
            let tree = match repository.read_tree(&tree_id) {
                Ok(tree) => tree,
                Err(e) => {
                    let object = bad_blobs
                        .get(&tree_id)
                        .cloned()
                        .unwrap_or_else(|| format!("tree {tree_id}"));
                    problem(errors, object, e.to_string(), shown);
                    open.iter_mut().for_each(|t| t.1 = true);
                    continue;
                }
            };
            report.trees += 1;
            open.push((tree_id, false));
            for node in &tree.nodes {
                let child = format!("{path}/{}", String::from_utf8_lossy(&node.name));
                match &node.kind {
                    NodeKind::Directory { subtree } => {
                        steps.push(Step::Enter(*subtree, child, depth + 1));
                    }
                    NodeKind::File { content, .. } => {
                        for blob in content {
                            let found = match bad_blobs.get(blob) {
                                Some(object) => Some((object.clone(), String::new())),
                                None => match repository.locate(blob) {
                                    Ok(Some(_)) => None,
                                    Ok(None) => Some((
                                        format!("blob {blob}"),
                                        "missing from the index: no pack holds it".into(),
                                    )),
                                    Err(e) => Some((format!("blob {blob}"), e.to_string())),
                                },
                            };
                            if let Some((object, message)) = found {
                                problem(errors, object, message, &child);
                                open.iter_mut().for_each(|t| t.1 = true);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        close(&mut open, 0, &mut clean_trees);
    }
}

/// The object a snapshot-listing error names.
fn damaged_object(error: &Error) -> String {
    match error {
        Error::Corrupted { object, .. }
        | Error::MissingObject { object }
        | Error::Unauthenticated { object } => object.clone(),
        other => other.to_string(),
    }
}
