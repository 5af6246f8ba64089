//! Storage of opaque bytes by (kind, name) (SPEC.md §1).
//!
//! A backend never sees a key: it stores what it is given. Writes are atomic:
//! an object is either wholly present under its name or absent. Objects are
//! never modified in place; names other than `config` are content hashes, so
//! a second put of an existing name has nothing to do.

use std::io::{self, Write};

mod direct_write;
mod local;
mod memory;
mod s3;

pub use local::{remove_temporary_files, LocalBackend};
pub use memory::MemoryBackend;
pub use s3::{S3Backend, S3Location, S3Settings};

/// The folders of a repository and what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    /// The single `config` object.
    Config,
    /// Password-wrapped key files, `keys/`.
    Key,
    /// Session objects holding wrapped data keys, `sessions/`.
    Session,
    /// Packfiles, `data/`, sharded by the first two hex digits of the name.
    Pack,
    /// Index segments, `index/`.
    Index,
    /// Snapshots, `snapshots/`.
    Snapshot,
    /// Lock objects, `locks/`.
    Lock,
    /// Epoch records of key rotations, `epochs/` (absent from repositories
    /// never rotated by a build that creates it).
    Epoch,
}

impl ObjectKind {
    /// Every kind: `Config`, then the folders in creation order.
    pub const ALL: [ObjectKind; 8] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Session,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
        ObjectKind::Epoch,
    ];

    /// Every kind that lives in a folder, in creation order: all but
    /// `Config`.
    pub const FOLDERS: [ObjectKind; 7] = {
        let mut folders = [ObjectKind::Key; 7];
        let mut i = 0;
        while i < folders.len() {
            folders[i] = ObjectKind::ALL[i + 1];
            i += 1;
        }
        folders
    };

    /// The folder (or for `Config`, the file) name.
    pub fn dir_name(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "keys",
            ObjectKind::Session => "sessions",
            ObjectKind::Pack => "data",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Lock => "locks",
            ObjectKind::Epoch => "epochs",
        }
    }
}

/// An object's name as messages give it: its path relative to the
/// repository's root in the layout of SPEC.md §1 (`config`, `keys/<id>`,
/// `data/<xx>/<id>`), or with an empty `name`, its folder (`keys/`).
pub fn object_name(kind: ObjectKind, name: &str) -> String {
    match kind {
        ObjectKind::Config => "config".into(),
        _ if name.is_empty() => format!("{}/", kind.dir_name()),
        ObjectKind::Pack => format!("data/{}/{name}", name.get(..2).unwrap_or("")),
        _ => format!("{}/{name}", kind.dir_name()),
    }
}

// Here rather than in error.rs, so that errors need not know the layout
// of object names: the backend is what names objects.
impl crate::Error {
    /// The error for a failed storage operation on an object (or, with an
    /// empty `name`, on its kind's folder): [`crate::Error::MissingObject`]
    /// when it is not there, else [`crate::Error::Storage`].
    pub fn storage(kind: ObjectKind, name: &str, error: io::Error) -> Self {
        let object = object_name(kind, name);
        if error.kind() == io::ErrorKind::NotFound {
            crate::Error::MissingObject { object }
        } else {
            crate::Error::Storage { object, error }
        }
    }
}

/// Schemes of remote stores that cairn users may expect (restic's names),
/// that cairn cannot reach yet.
const REMOTE_SCHEMES: [&str; 6] = ["sftp", "rest", "b2", "azure", "gs", "rclone"];

/// Opens the backend that `location` names: `local:PATH`, or a plain path,
/// is a directory; `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]` a bucket. Any
/// other remote scheme is refused with
/// [`crate::Error::UnsupportedLocation`].
pub fn open(location: &str) -> crate::Result<Box<dyn Backend>> {
    if let Some(path) = location.strip_prefix("local:") {
        return Ok(Box::new(LocalBackend::new(path)));
    }
    if let Some(rest) = location.strip_prefix("s3:") {
        let parsed = S3Location::parse(rest).ok_or_else(|| crate::Error::BadLocation {
            location: location.to_string(),
            expected:
                "s3:https://HOST[:PORT]/BUCKET[/PREFIX] (or s3:http://… for a store without TLS)",
        })?;
        return S3Backend::new(location, &parsed, &S3Settings::from_env())
            .map(|backend| Box::new(backend) as Box<dyn Backend>)
            .map_err(|error| crate::Error::Storage {
                object: location.to_string(),
                error,
            });
    }
    if let Some(image) = location.strip_prefix("memory:") {
        return open_memory_image(location, image);
    }
    if let Some((scheme, _)) = location.split_once(':') {
        if REMOTE_SCHEMES.contains(&scheme) {
            return Err(crate::Error::UnsupportedLocation {
                location: location.to_string(),
                scheme: scheme.to_string(),
            });
        }
    }
    Ok(Box::new(LocalBackend::new(location)))
}

/// A memory backend kept in the image file `image`: only in builds with
/// the `memory-image` feature, which the black-box tests use. Elsewhere
/// the location is refused rather than taken for a directory path.
fn open_memory_image(location: &str, image: &str) -> crate::Result<Box<dyn Backend>> {
    if cfg!(feature = "memory-image") {
        Ok(Box::new(MemoryBackend::with_image(image)))
    } else {
        Err(crate::Error::UnsupportedLocation {
            location: location.to_string(),
            scheme: "memory".into(),
        })
    }
}

/// Narrow storage interface: everything the repository needs of a store.
pub trait Backend: Send + Sync {
    /// Where the repository lives, for messages.
    fn location(&self) -> String;
    /// Reads a whole object.
    fn get(&self, kind: ObjectKind, name: &str) -> io::Result<Vec<u8>>;
    /// Reads `len` bytes at `offset` of an object. Errors if the object is shorter.
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64)
        -> io::Result<Vec<u8>>;
    /// Length of an object in bytes.
    fn size(&self, kind: ObjectKind, name: &str) -> io::Result<u64>;
    /// Stores an object atomically and durably. A name that exists is kept as
    /// it is (names are content hashes), except that `Config` is never
    /// replaced: putting it twice is an error.
    fn put(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Starts an object written piece by piece, whose name is known only
    /// at the end (a pack is named by the hash of its bytes). Nothing is
    /// visible until [`ObjectWriter::finish`]; a writer dropped before
    /// that leaves nothing behind. Not for `Config`.
    fn create_writer(&self, kind: ObjectKind) -> io::Result<Box<dyn ObjectWriter>>;
    /// Names of all objects of a kind.
    fn list(&self, kind: ObjectKind) -> io::Result<Vec<String>>;
    /// Removes an object.
    fn delete(&self, kind: ObjectKind, name: &str) -> io::Result<()>;
    /// Leftovers of writers that stopped midway (temporary files), by a
    /// name for messages, with their age in seconds. A store that has none
    /// returns none.
    fn leftovers(&self) -> io::Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }
    /// Removes a leftover that [`Backend::leftovers`] named. Errors with
    /// `InvalidInput` for a name it would not give.
    fn remove_leftover(&self, name: &str) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: not a leftover of this store"),
        ))
    }
    /// Whether every read is a round trip over a network: then tree blobs
    /// are worth keeping on local disk (in the cache folder).
    fn is_remote(&self) -> bool {
        false
    }
    /// How many packs a writer stores at once unless told otherwise.
    fn default_connections(&self) -> usize {
        if self.is_remote() {
            5
        } else {
            2
        }
    }
    /// Creates the empty layout. Errors with `AlreadyExists` if a config
    /// already exists, and with [`StrayEntries`] inside if the location
    /// holds anything a repository's layout does not.
    fn create(&self) -> io::Result<()>;
}

/// An object being written; see [`Backend::create_writer`].
pub trait ObjectWriter: Write + Send {
    /// Stores what was written under `name`, atomically and durably, with
    /// the semantics of [`Backend::put`].
    fn finish(self: Box<Self>, name: &str) -> io::Result<()>;
}

/// The marker inside the error [`Backend::create`] returns for a location
/// that holds something other than a repository.
#[derive(Debug, thiserror::Error)]
#[error("the location is not empty and holds no repository")]
pub struct StrayEntries;

/// Whether `error` is [`Backend::create`]'s refusal of a non-empty location.
pub fn is_location_not_empty(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<StrayEntries>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn exercise(backend: &dyn Backend) {
        backend.create().unwrap();
        backend.put(ObjectKind::Config, "", b"cfg").unwrap();
        assert!(backend.put(ObjectKind::Config, "", b"other").is_err());
        assert!(backend.create().is_err());
        backend
            .put(ObjectKind::Pack, "abcdef", b"0123456789")
            .unwrap();
        backend
            .put(ObjectKind::Pack, "abcdef", b"different")
            .unwrap();
        assert_eq!(
            backend.get(ObjectKind::Pack, "abcdef").unwrap(),
            b"0123456789"
        );
        assert_eq!(
            backend.get_range(ObjectKind::Pack, "abcdef", 2, 3).unwrap(),
            b"234"
        );
        assert!(backend.get_range(ObjectKind::Pack, "abcdef", 8, 3).is_err());
        assert_eq!(backend.size(ObjectKind::Pack, "abcdef").unwrap(), 10);
        assert_eq!(backend.list(ObjectKind::Pack).unwrap(), vec!["abcdef"]);
        assert!(backend.list(ObjectKind::Index).unwrap().is_empty());
        backend.delete(ObjectKind::Pack, "abcdef").unwrap();
        assert!(backend.get(ObjectKind::Pack, "abcdef").is_err());

        let mut streamed = backend.create_writer(ObjectKind::Pack).unwrap();
        streamed.write_all(b"01234").unwrap();
        streamed.write_all(b"56789").unwrap();
        assert!(backend.list(ObjectKind::Pack).unwrap().is_empty());
        streamed.finish("abcdef").unwrap();
        assert_eq!(
            backend.get(ObjectKind::Pack, "abcdef").unwrap(),
            b"0123456789"
        );
        let mut abandoned = backend.create_writer(ObjectKind::Pack).unwrap();
        abandoned.write_all(b"never stored").unwrap();
        drop(abandoned);
        assert_eq!(backend.list(ObjectKind::Pack).unwrap(), vec!["abcdef"]);
    }

    #[test]
    fn local_backend_contract() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        exercise(&backend);
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("repo/data/ab"))
            .unwrap()
            .chain(fs::read_dir(dir.path().join("repo/data")).unwrap())
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.as_encoded_bytes().starts_with(b".tmp"))
            .collect();
        assert_eq!(leftovers, Vec::<std::ffi::OsString>::new());
    }

    #[test]
    fn memory_backend_contract() {
        exercise(&MemoryBackend::default());
    }

    #[test]
    fn a_memory_image_is_shared_between_openers_and_survives_them() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("repo.img");
        exercise(&MemoryBackend::with_image(&image));
        let first = MemoryBackend::with_image(&image);
        let second = MemoryBackend::with_image(&image);
        first.put(ObjectKind::Snapshot, "s1", b"one").unwrap();
        second.put(ObjectKind::Snapshot, "s2", b"two").unwrap();
        assert_eq!(first.list(ObjectKind::Snapshot).unwrap(), vec!["s1", "s2"]);
        first.delete(ObjectKind::Snapshot, "s2").unwrap();
        let reopened = MemoryBackend::with_image(&image);
        assert_eq!(reopened.list(ObjectKind::Snapshot).unwrap(), vec!["s1"]);
        assert_eq!(
            reopened.get(ObjectKind::Pack, "abcdef").unwrap(),
            b"0123456789"
        );
        fs::write(&image, b"cairn memory image 1\n\x03\xff").unwrap();
        assert!(MemoryBackend::with_image(&image)
            .list(ObjectKind::Pack)
            .is_err());
    }
}
