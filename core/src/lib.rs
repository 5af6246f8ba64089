//! cairn-core: a content-addressed, deduplicating, encrypted snapshot store.
//!
//! Files are cut into chunks by content ([`chunker`]), named by keyed BLAKE3,
//! compressed and sealed ([`blob`]), and collected into packfiles ([`pack`])
//! whose index ([`index`]) is cached in redb. Each directory becomes a
//! [`tree`] blob, and a [`snapshot`] names the root tree. Everything stored
//! is described byte by byte in `format-spec/SPEC.md`.
//!
//! ```no_run
//! use cairn_core::{archiver, backend::LocalBackend, progress::Silent, Repository, InitOptions};
//! # fn main() -> cairn_core::Result<()> {
//! let cache = std::path::Path::new("/tmp/cairn-cache");
//! let repo = Repository::init(Box::new(LocalBackend::new("/tmp/repo")), b"pw", &InitOptions::default(), cache)?;
//! let options = archiver::BackupOptions::new(vec!["/etc".into()]);
//! let outcome = archiver::backup(&repo, options, &Silent)?;
//! println!("snapshot {}", outcome.snapshot_id);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod archiver;
pub mod backend;
pub mod blob;
pub mod chunker;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod error;
pub mod exclude;
pub mod id;
pub mod index;
pub mod keys;
pub mod object;
pub mod pack;
pub mod packer;
mod pattern;
pub mod progress;
pub mod repository;
pub mod restorer;
#[cfg(test)]
mod roundtrip;
pub mod session;
pub mod snapshot;
#[cfg(test)]
mod testing;
pub mod tree;
#[cfg(test)]
mod vectors;

pub use error::{Error, Result};
pub use repository::{InitOptions, Repository};
