//! The stored objects, one module each (SPEC.md §5–§14): how each is laid
//! out in bytes, and how it is sealed and opened.
//!
//! [`config`] and [`key_file`] are read before any key is known; [`session`]
//! wraps each writer's data key; [`sealed`] is the envelope of every
//! encrypted structure; [`blob`]s are collected into [`pack`]s; a [`tree`]
//! lists one directory; a [`snapshot`] names a root tree; a [`segment`] of
//! the index says which pack holds which blob; a [`lock`] says who is
//! using the repository; an [`epoch`] record says where sessions' data
//! keys are after a key rotation.

pub(crate) mod blob;
pub(crate) mod config;
pub(crate) mod epoch;
pub(crate) mod key_file;
pub(crate) mod lock;
pub(crate) mod pack;
pub(crate) mod sealed;
pub(crate) mod segment;
pub(crate) mod session;
pub(crate) mod snapshot;
pub(crate) mod tree;
