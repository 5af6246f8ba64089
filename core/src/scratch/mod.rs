//! Scratch space on disk for commands that walk whole repositories (prune,
//! stats): sets and sorted runs of blob ids whose size grows with the
//! repository, kept in unnamed temporary files under the cache directory
//! so that memory does not.

pub(crate) mod blob_set;
pub(crate) mod spill;

pub(crate) use blob_set::BlobSet;
pub(crate) use spill::{from_sort_key, sort_key, Sorted, Spill};
