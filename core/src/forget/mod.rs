//! forget: which snapshots a retention policy removes, and removing them
//! (SPEC.md §22).
//!
//! Snapshots are first filtered (host, tags, paths), then grouped (by
//! host, paths and tags, as chosen), and the [`policy`] is applied to each
//! group on its own. Only snapshot objects are removed; the data they
//! alone referenced stays until a prune. A policy is refused when it would
//! empty a group, when it is empty, or when some snapshot cannot be read
//! (its group and time are unknown, so the policy's outcome is too).

pub mod policy;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::TimeZone;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::object::snapshot::Snapshot;
use crate::repository::{Repository, SnapshotList};
use policy::{KeepPolicy, Verdict};

/// Which fields of a snapshot make its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// The host name.
    pub host: bool,
    /// The source paths.
    pub paths: bool,
    /// The tags (as a set).
    pub tags: bool,
}

impl Default for GroupBy {
    /// `host,paths`, as restic.
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

/// Which snapshots a policy considers at all.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Made on one of these hosts (any, if empty).
    pub hosts: Vec<String>,
    /// Carrying every tag of one of these lists (any, if empty).
    pub tags: Vec<Vec<String>>,
    /// Holding every one of these source paths (any, if empty).
    pub paths: Vec<Vec<u8>>,
}

impl SnapshotFilter {
    /// Whether `snapshot` passes the filter.
    pub fn admits(&self, snapshot: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&snapshot.hostname))
            && (self.tags.is_empty()
                || self
                    .tags
                    .iter()
                    .any(|list| list.iter().all(|t| snapshot.tags.contains(t))))
            && self.paths.iter().all(|p| snapshot.paths.contains(p))
    }
}

/// What a policy run is given.
#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    /// What to keep.
    pub policy: KeepPolicy,
    /// Remove every snapshot the filter admits (`--keep-none`).
    pub keep_none: bool,
    /// How snapshots are grouped.
    pub group_by: GroupBy,
    /// Which snapshots are considered.
    pub filter: SnapshotFilter,
}

/// A group's key: the fields it is grouped by (`None` for the others).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    /// Host name, if grouped by host.
    pub host: Option<String>,
    /// Source paths, if grouped by paths.
    pub paths: Option<Vec<Vec<u8>>>,
    /// Tags, sorted, if grouped by tags.
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(snapshot: &Snapshot, by: GroupBy) -> GroupKey {
        GroupKey {
            host: by.host.then(|| snapshot.hostname.clone()),
            paths: by.paths.then(|| snapshot.paths.clone()),
            tags: by.tags.then(|| {
                let mut tags = snapshot.tags.clone();
                tags.sort();
                tags.dedup();
                tags
            }),
        }
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host {host}"));
        }
        if let Some(paths) = &self.paths {
            let shown: Vec<String> = paths
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            parts.push(format!("paths [{}]", shown.join(", ")));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags [{}]", tags.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// A snapshot and its id.
pub type Listed = (SnapshotId, Snapshot);

/// One group's outcome: newest first.
#[derive(Debug)]
pub struct GroupPlan {
    /// The group.
    pub key: GroupKey,
    /// Kept snapshots, each with the rules that kept it.
    pub keep: Vec<(SnapshotId, Snapshot, Vec<String>)>,
    /// Snapshots the policy removes.
    pub remove: Vec<Listed>,
}

/// Applies `options` to the listed snapshots. Errors, removing nothing,
/// if a snapshot could not be read, if the policy is empty (and not
/// `keep_none`), or if it would remove every snapshot of a group.
/// `now_ns` and `zone` fix the clock and the calendar of periods.
pub fn plan<Tz: TimeZone>(
    list: SnapshotList,
    options: &ForgetOptions,
    now_ns: i64,
    zone: &Tz,
) -> Result<Vec<GroupPlan>> {
    if let Some(damaged) = list.damaged.into_iter().next() {
        return Err(Error::PolicyUnknown {
            error: Box::new(damaged),
        });
    }
    if options.keep_none && !options.policy.is_empty() {
        return Err(Error::PolicyConflict);
    }
    if !options.keep_none && options.policy.is_empty() {
        return Err(Error::EmptyPolicy);
    }
    group(list.snapshots, &options.filter, options.group_by)
        .into_iter()
        .map(|(key, mut members)| {
            // Newest first; of equal times, the later in the listing.
            members.sort_by_key(|(id, s)| std::cmp::Reverse((s.time_ns, *id)));
            let verdicts = if options.keep_none {
                vec![
                    Verdict {
                        keep: false,
                        reasons: Vec::new()
                    };
                    members.len()
                ]
            } else {
                let times: Vec<(i64, &[String])> = members
                    .iter()
                    .map(|(_, s)| (s.time_ns, s.tags.as_slice()))
                    .collect();
                policy::apply(&times, &options.policy, now_ns, zone)
            };
            let mut plan = GroupPlan {
                key,
                keep: Vec::new(),
                remove: Vec::new(),
            };
            for ((id, snapshot), verdict) in members.into_iter().zip(verdicts) {
                if verdict.keep {
                    plan.keep.push((id, snapshot, verdict.reasons));
                } else {
                    plan.remove.push((id, snapshot));
                }
            }
            if plan.keep.is_empty() && !options.keep_none {
                return Err(Error::PolicyRemovesAll {
                    group: plan.key.to_string(),
                    count: plan.remove.len(),
                });
            }
            Ok(plan)
        })
        .collect()
}

/// The snapshots `filter` admits, in groups by `by` (in the order of
/// their keys), each group in the order listed (oldest first).
pub fn group(
    snapshots: Vec<Listed>,
    filter: &SnapshotFilter,
    by: GroupBy,
) -> Vec<(GroupKey, Vec<Listed>)> {
    let mut groups: BTreeMap<GroupKey, Vec<Listed>> = BTreeMap::new();
    for (id, snapshot) in snapshots {
        if filter.admits(&snapshot) {
            let key = GroupKey::of(&snapshot, by);
            groups.entry(key).or_default().push((id, snapshot));
        }
    }
    groups.into_iter().collect()
}

/// Removes the snapshots `ids`, in order; stops at the first failure and
/// returns it with how many were removed before it.
pub fn remove(
    repository: &Repository,
    ids: &[SnapshotId],
) -> std::result::Result<(), (usize, Error)> {
    for (done, id) in ids.iter().enumerate() {
        repository
            .remove_snapshot(*id)
            .map_err(|error| (done, error))?;
    }
    Ok(())
}
