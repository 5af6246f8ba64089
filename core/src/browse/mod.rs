//! Looking into snapshots without restoring them: `cat` streams one file,
//! `ls` lists a directory.

mod cat;
mod ls;

pub use cat::cat;
pub use ls::list;
