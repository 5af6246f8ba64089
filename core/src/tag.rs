//! tag: change snapshots' tags (SPEC.md §27). A snapshot cannot change in
//! place (its name is the hash of its bytes), so each changed one is
//! stored anew, naming the old one as its `original`, and then the old
//! one is deleted.

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::object::snapshot::Snapshot;
use crate::repository::lock::RepositoryLock;
use crate::repository::Repository;

/// How to change tags: `set` replaces them all; `add` and `remove` then
/// apply, in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChange {
    /// The tags to have, whatever they were.
    pub set: Option<Vec<String>>,
    /// Tags to add.
    pub add: Vec<String>,
    /// Tags to remove.
    pub remove: Vec<String>,
}

impl TagChange {
    /// Whether no change was asked for.
    pub fn is_empty(&self) -> bool {
        self.set.is_none() && self.add.is_empty() && self.remove.is_empty()
    }

    /// `tags` after the change: in their old order, new ones after, each
    /// once.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut result: Vec<String> = Vec::new();
        let start = self.set.as_deref().unwrap_or(tags);
        for tag in start.iter().chain(&self.add) {
            if !result.contains(tag) {
                result.push(tag.clone());
            }
        }
        result.retain(|tag| !self.remove.contains(tag));
        result
    }
}

/// What became of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retagged {
    /// The snapshot named.
    pub old: SnapshotId,
    /// The snapshot that replaced it; `None` if its tags did not change.
    pub new: Option<SnapshotId>,
    /// Its tags now.
    pub tags: Vec<String>,
}

/// Applies `change` to each of `snapshots` under `lock`, which must be
/// exclusive: each changed snapshot is stored anew (see the module's
/// doc), then the old one deleted. Stops at the first failure; the
/// snapshots done until then are done, and the one at hand is left as it
/// was or stored twice.
pub fn retag(
    repository: &Repository,
    lock: &RepositoryLock,
    snapshots: &[(SnapshotId, Snapshot)],
    change: &TagChange,
) -> Result<Vec<Retagged>> {
    let mut done = Vec::new();
    let mut writer = None;
    for (id, snapshot) in snapshots {
        let tags = change.apply(&snapshot.tags);
        if tags == snapshot.tags {
            done.push(Retagged {
                old: *id,
                new: None,
                tags,
            });
            continue;
        }
        let replacement = Snapshot {
            tags: tags.clone(),
            original: Some(snapshot.original.unwrap_or(*id)),
            program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            ..snapshot.clone()
        };
        lock.ensure_held()?;
        if writer.is_none() {
            let level = repository.config().compression_level;
            writer = Some(repository.start_copying(level)?);
        }
        let writer = writer.as_mut().expect("just started");
        let new = writer.store_snapshot(&replacement)?;
        lock.ensure_held()?;
        repository
            .remove_snapshot(*id)
            .map_err(|e| Error::TagIncomplete {
                old: id.0.short(),
                new: new.0.short(),
                error: Box::new(e),
            })?;
        done.push(Retagged {
            old: *id,
            new: Some(new),
            tags,
        });
    }
    Ok(done)
}
