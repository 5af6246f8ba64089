//! Looking into snapshots without restoring them: `cat` streams one file.

mod cat;

pub use cat::cat;
