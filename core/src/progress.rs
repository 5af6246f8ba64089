//! What core reports while it works. `cli` implements it; core never prints.

use std::path::Path;

use crate::restorer::overwrite::Action;

/// Receives warnings and progress events from backup and restore. Calls
/// may come from several threads.
pub trait Progress: Sync {
    /// Something was skipped or could not be done, and the run goes on.
    fn warning(&self, path: &Path, message: &str);
    /// What a restore does (or with `--dry-run` would do) with an entry:
    /// writes it, leaves it as it is, or deletes it, and why.
    fn restored(&self, _path: &Path, _action: Action) {}
    /// Whether totals are wanted: only then does a backup scan its sources
    /// ahead of the walk, which costs a second pass over the metadata.
    fn wants_totals(&self) -> bool {
        false
    }
    /// The scan of the backup's sources finished: this many regular files
    /// and bytes are to be processed, excludes applied.
    fn scan_finished(&self, _files: u64, _bytes: u64) {}
    /// A backup started reading a file.
    fn file_started(&self, _path: &Path) {}
    /// A backup got through this many bytes: read, or reused unread from
    /// the parent snapshot.
    fn bytes_processed(&self, _bytes: u64) {}
    /// A backup finished with a file.
    fn file_finished(&self, _path: &Path) {}
}

/// Discards every report.
pub struct Silent;

impl Progress for Silent {
    fn warning(&self, _path: &Path, _message: &str) {}
}
