//! Listing snapshots and resolving a reference (`latest`, an id or an
//! unique prefix of one) to a snapshot (SPEC.md §14).

use std::collections::HashSet;

use super::{open_error, parse_name, Repository};
use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{Id, SnapshotId};
use crate::object::snapshot::{Snapshot, MAX_SNAPSHOT_LEN};

/// Snapshots as listed: those that could be read, and why others could not.
#[derive(Debug, Default)]
pub struct SnapshotList {
    /// Readable snapshots, oldest first.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    /// One error, naming the object, per snapshot that could not be read.
    pub damaged: Vec<Error>,
}

impl Repository {
    /// All snapshots, oldest first. A damaged snapshot does not hide the
    /// others: it is reported in [`SnapshotList::damaged`].
    ///
    /// A write-only key cannot open snapshots: it gets those it wrote
    /// itself that are still stored, from its record on this host.
    pub fn snapshots(&self) -> Result<SnapshotList> {
        let names = self
            .backend
            .list(ObjectKind::Snapshot)
            .map_err(|e| Error::storage(ObjectKind::Snapshot, "", e))?;
        let mut list = SnapshotList::default();
        if self.keys.private.is_none() {
            let stored: HashSet<SnapshotId> = names
                .iter()
                .filter_map(|name| parse_name(name))
                .map(SnapshotId)
                .collect();
            if let Some(written) = &self.written {
                written.retain(&stored)?;
                list.snapshots = written.snapshots()?;
            }
            list.snapshots.sort_by_key(|(id, s)| (s.time_ns, *id));
            return Ok(list);
        }
        for name in names {
            let Some(id) = parse_name(&name) else {
                continue;
            };
            match self.read_snapshot(&name) {
                Ok(snapshot) => list.snapshots.push((SnapshotId(id), snapshot)),
                // Removed since the listing (by a concurrent forget): it is
                // simply not there, which is not damage.
                Err(Error::MissingObject { object })
                    if object == object_name(ObjectKind::Snapshot, &name) => {}
                Err(
                    e @ (Error::Corrupted { .. }
                    | Error::MissingObject { .. }
                    | Error::Unauthenticated { .. }),
                ) => list.damaged.push(e),
                Err(e) => return Err(e),
            }
        }
        list.snapshots.sort_by_key(|(id, s)| (s.time_ns, *id));
        Ok(list)
    }

    fn read_snapshot(&self, name: &str) -> Result<Snapshot> {
        let object = object_name(ObjectKind::Snapshot, name);
        if self.keys.private.is_none() {
            // A write-only key reads only what it recorded writing.
            let own = match &self.written {
                Some(written) => written.snapshots()?,
                None => Vec::new(),
            };
            return own
                .into_iter()
                .find(|(id, _)| id.to_string() == name)
                .map(|(_, snapshot)| snapshot)
                .ok_or(Error::WriteOnly {
                    action: "read snapshots it did not write from this host",
                });
        }
        let bytes = self.get_verified(ObjectKind::Snapshot, name, MAX_SNAPSHOT_LEN)?;
        let session = Snapshot::session_of(&bytes).map_err(|e| Error::corrupted(&object, e))?;
        // Named as the snapshot's failure, so that a listing says which
        // snapshot is lost, not only which session.
        let sealer = self.session_sealer(session).map_err(|e| match e {
            Error::Unauthenticated { object: session } => Error::Unauthenticated {
                object: format!("{object} (through its session {session})"),
            },
            Error::MissingObject { object: session } => {
                Error::corrupted(&object, format!("its session {session} is missing"))
            }
            Error::Corrupted {
                object: session,
                reason,
            } => Error::corrupted(
                &object,
                format!("its session {session} is damaged: {reason}"),
            ),
            other => other,
        })?;
        Snapshot::open(&bytes, &sealer).map_err(|e| open_error(object, e))
    }

    /// Finds a snapshot by full id, unique id prefix, or `latest`, over
    /// every snapshot object. Errors if the one selected cannot be read;
    /// for `latest`, if any snapshot cannot be read, since its time (sealed
    /// inside it) is unknown and it might be the newest: a restore of
    /// "latest" must never quietly restore an older one.
    pub fn resolve_snapshot(&self, reference: &str) -> Result<(SnapshotId, Snapshot)> {
        if reference == "latest" {
            let mut list = self.snapshots()?;
            if !list.damaged.is_empty() {
                return Err(Error::LatestUnknown {
                    error: Box::new(list.damaged.remove(0)),
                });
            }
            return list.snapshots.pop().ok_or_else(|| Error::SnapshotNotFound {
                reference: reference.into(),
            });
        }
        let id = self.resolve_snapshot_id(reference)?;
        Ok((id, self.read_snapshot(&id.to_string())?))
    }

    /// The snapshot that a full id or a unique prefix names, without
    /// reading it: so that a damaged snapshot can still be named, and
    /// forgotten.
    pub fn resolve_snapshot_id(&self, reference: &str) -> Result<SnapshotId> {
        let wanted = reference.to_ascii_lowercase();
        if wanted.is_empty() || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound {
                reference: reference.into(),
            });
        }
        let names = self
            .backend
            .list(ObjectKind::Snapshot)
            .map_err(|e| Error::storage(ObjectKind::Snapshot, "", e))?;
        let matches: Vec<&String> = names
            .iter()
            .filter(|n| parse_name(n).is_some() && n.starts_with(&wanted))
            .collect();
        match matches.as_slice() {
            [] => Err(Error::SnapshotNotFound {
                reference: reference.into(),
            }),
            [name] => Id::from_hex(name)
                .map(SnapshotId)
                .ok_or_else(|| Error::SnapshotNotFound {
                    reference: reference.into(),
                }),
            many => Err(Error::AmbiguousSnapshot {
                reference: reference.into(),
                count: many.len(),
            }),
        }
    }

    /// Removes one snapshot object. What it alone referenced stays stored
    /// until a prune; a snapshot already gone is an error naming it.
    pub fn remove_snapshot(&self, id: SnapshotId) -> Result<()> {
        let name = id.to_string();
        self.backend
            .delete(ObjectKind::Snapshot, &name)
            .map_err(|e| Error::storage(ObjectKind::Snapshot, &name, e))
    }
}
