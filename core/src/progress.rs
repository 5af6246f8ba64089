//! What core reports while it works. `cli` implements it; core never prints.

use std::path::Path;

/// Receives warnings and per-entry events from backup and restore.
pub trait Progress: Sync {
    /// Something was skipped or could not be done, and the run goes on.
    fn warning(&self, path: &Path, message: &str);
    /// An entry was restored, or with `--dry-run` would be.
    fn restored(&self, _path: &Path) {}
}

/// Discards every report.
pub struct Silent;

impl Progress for Silent {
    fn warning(&self, _path: &Path, _message: &str) {}
}
