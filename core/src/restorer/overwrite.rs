//! Restoring into a target that already holds entries: what
//! `--overwrite` does with each one in the way, and what `--delete`
//! removes (SPEC.md §17, "Restoring over existing files").

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::str::FromStr;

use crate::object::tree::{Node, NodeKind, Timestamp};

/// What to do with an entry already where a restored one goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    Always,
    /// Replace it unless it already is the snapshot's entry: same kind,
    /// size and mtime, and for a file the same content (read back and
    /// compared chunk by chunk with the snapshot's blob ids).
    #[default]
    IfChanged,
    /// Replace it if the snapshot's mtime is later than its.
    IfNewer,
    /// Leave it as it is.
    Never,
}

impl FromStr for Overwrite {
    type Err = String;

    fn from_str(text: &str) -> Result<Overwrite, String> {
        match text {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "if-newer" => Ok(Overwrite::IfNewer),
            "never" => Ok(Overwrite::Never),
            _ => Err(format!(
                "{text:?}: expected always, if-changed, if-newer or never"
            )),
        }
    }
}

/// Why an entry is written, skipped or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Nothing was there.
    New,
    /// Something else was there (`if-changed`).
    Changed,
    /// Something was there and `--overwrite always` replaces it.
    Replaced,
    /// What was there is older than the snapshot's (`if-newer`).
    Newer,
    /// A directory already there, restored into.
    Exists,
    /// What is there already is the snapshot's entry (`if-changed`).
    Unchanged,
    /// Something is there and `--overwrite never` keeps it.
    Kept,
    /// What is there is as new as the snapshot's or newer (`if-newer`).
    NotNewer,
    /// It is in the target but not in the snapshot (`--delete`).
    NotInSnapshot,
}

impl Reason {
    /// How the listing and JSON name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Changed => "changed",
            Reason::Replaced => "replaced",
            Reason::Newer => "newer",
            Reason::Exists => "exists",
            Reason::Unchanged => "unchanged",
            Reason::Kept => "kept",
            Reason::NotNewer => "not newer",
            Reason::NotInSnapshot => "not in snapshot",
        }
    }
}

/// What a restore does with one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Writes it (creates or replaces it, or restores into a directory).
    Write(Reason),
    /// Leaves it as it is.
    Skip(Reason),
    /// Removes it.
    Delete,
}

impl Action {
    /// `write`, `skip` or `delete`.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Write(_) => "write",
            Action::Skip(_) => "skip",
            Action::Delete => "delete",
        }
    }

    /// Why.
    pub fn reason(self) -> Reason {
        match self {
            Action::Write(reason) | Action::Skip(reason) => reason,
            Action::Delete => Reason::NotInSnapshot,
        }
    }
}

/// What to do about a non-directory entry, before any content is read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Decided.
    Act(Action),
    /// A regular file of the same size and mtime is there: the same if
    /// its content is.
    CompareContent,
}

/// Decides what `policy` does with `node` restored to `path`, where
/// `existing` is what `lstat` found there (`None`: nothing).
pub(super) fn plan(
    policy: Overwrite,
    node: &Node,
    path: &Path,
    existing: Option<&fs::Metadata>,
) -> Plan {
    let Some(existing) = existing else {
        return Plan::Act(Action::Write(Reason::New));
    };
    match policy {
        Overwrite::Always => Plan::Act(Action::Write(Reason::Replaced)),
        Overwrite::Never => Plan::Act(Action::Skip(Reason::Kept)),
        Overwrite::IfNewer if node.mtime > mtime_of(existing) => {
            Plan::Act(Action::Write(Reason::Newer))
        }
        Overwrite::IfNewer => Plan::Act(Action::Skip(Reason::NotNewer)),
        Overwrite::IfChanged => {
            if mtime_of(existing) != node.mtime || !same_entry(node, path, existing) {
                Plan::Act(Action::Write(Reason::Changed))
            } else if matches!(node.kind, NodeKind::File { .. }) {
                Plan::CompareContent
            } else {
                Plan::Act(Action::Skip(Reason::Unchanged))
            }
        }
    }
}

/// Whether `existing` is of `node`'s kind and holds what it does, short
/// of a file's content: a file's size, a link's target, a device's
/// number.
fn same_entry(node: &Node, path: &Path, existing: &fs::Metadata) -> bool {
    let kind = existing.file_type();
    match &node.kind {
        NodeKind::File { size, .. } => kind.is_file() && existing.len() == *size,
        NodeKind::Symlink { target } => {
            kind.is_symlink()
                && fs::read_link(path).is_ok_and(|t| t.as_os_str().as_encoded_bytes() == target)
        }
        NodeKind::Fifo => kind.is_fifo(),
        NodeKind::CharDevice { rdev } => kind.is_char_device() && existing.rdev() == *rdev,
        NodeKind::BlockDevice { rdev } => kind.is_block_device() && existing.rdev() == *rdev,
        NodeKind::Directory { .. } => kind.is_dir(),
    }
}

fn mtime_of(meta: &fs::Metadata) -> Timestamp {
    Timestamp {
        secs: meta.mtime(),
        nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_decides_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"12345").unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        let mut node = Node::new(
            b"f".to_vec(),
            NodeKind::File {
                size: 5,
                content: Vec::new(),
                sparse: false,
            },
        );
        node.mtime = mtime_of(&meta);
        let decide = |policy, node: &Node, existing| plan(policy, node, &path, existing);
        let act = |a| Plan::Act(a);
        assert_eq!(
            decide(Overwrite::IfChanged, &node, None),
            act(Action::Write(Reason::New))
        );
        assert_eq!(
            decide(Overwrite::IfChanged, &node, Some(&meta)),
            Plan::CompareContent
        );
        assert_eq!(
            decide(Overwrite::Never, &node, Some(&meta)),
            act(Action::Skip(Reason::Kept))
        );
        assert_eq!(
            decide(Overwrite::Always, &node, Some(&meta)),
            act(Action::Write(Reason::Replaced))
        );
        assert_eq!(
            decide(Overwrite::IfNewer, &node, Some(&meta)),
            act(Action::Skip(Reason::NotNewer))
        );
        let mut newer = node.clone();
        newer.mtime.secs += 1;
        assert_eq!(
            decide(Overwrite::IfNewer, &newer, Some(&meta)),
            act(Action::Write(Reason::Newer))
        );
        assert_eq!(
            decide(Overwrite::IfChanged, &newer, Some(&meta)),
            act(Action::Write(Reason::Changed))
        );
        let mut longer = node.clone();
        longer.kind = NodeKind::File {
            size: 6,
            content: Vec::new(),
            sparse: false,
        };
        assert_eq!(
            decide(Overwrite::IfChanged, &longer, Some(&meta)),
            act(Action::Write(Reason::Changed))
        );
    }
}
