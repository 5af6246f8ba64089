//! The memory backend: objects in a map, for tests and for programs that
//! want a scratch repository.
//!
//! A memory backend may also keep an image: a file holding every object,
//! rewritten whole (to a temporary name, synced, renamed) after each change
//! and read again whenever another process replaced it. Processes that
//! share an image share one repository, as they would share a directory;
//! a lock file orders their changes. The black-box tests run the `cairn`
//! binary on such an image (location `memory:PATH`) to prove that nothing
//! above the [`Backend`] trait depends on a local directory. Rewriting the
//! whole image on every change suits test repositories, not real ones.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, ObjectKind, ObjectWriter};

/// A backend in memory. Clones share the same objects, as processes share
/// a directory.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
    /// The image file kept in step with the objects, if any.
    image: Option<Arc<PathBuf>>,
}

/// The objects of a [`MemoryBackend`], by kind and name.
type MemoryObjects = BTreeMap<(ObjectKind, String), Vec<u8>>;

/// The objects, and which version of the image they were read from.
#[derive(Default)]
struct State {
    objects: MemoryObjects,
    loaded: Option<Stamp>,
}

/// Identifies one version of an image file: each save renames a new file
/// into place, so its inode changes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i64,
}

/// The first bytes of an image file.
const IMAGE_MAGIC: &[u8] = b"cairn memory image 1\n";

/// Kinds in the order of their byte in an image.
const IMAGE_KINDS: [ObjectKind; 8] = ObjectKind::ALL;

impl MemoryBackend {
    /// A backend whose objects live in the image file at `path` (created
    /// by [`Backend::create`]), shared with every process that opens it.
    pub fn with_image(path: impl Into<PathBuf>) -> MemoryBackend {
        MemoryBackend {
            state: Arc::default(),
            image: Some(Arc::new(path.into())),
        }
    }

    fn not_found(kind: ObjectKind, name: &str) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, super::object_name(kind, name))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `op` on the objects as they are now.
    fn read<T>(&self, op: impl FnOnce(&MemoryObjects) -> T) -> io::Result<T> {
        let mut state = self.lock();
        if let Some(image) = &self.image {
            let _lock = lock_image(image, libc::LOCK_SH)?;
            refresh(image, &mut state)?;
        }
        Ok(op(&state.objects))
    }

    /// Runs `op` on the objects and, if it succeeds, saves the image.
    fn change<T>(&self, op: impl FnOnce(&mut MemoryObjects) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.lock();
        let Some(image) = &self.image else {
            return op(&mut state.objects);
        };
        let _lock = lock_image(image, libc::LOCK_EX)?;
        refresh(image, &mut state)?;
        let result = op(&mut state.objects)?;
        state.loaded = Some(save(image, &state.objects)?);
        crash_point();
        Ok(result)
    }
}

/// With `CAIRN_MEMORY_CRASH_AFTER=N`, ends the process abruptly right after
/// its Nth change to an image is saved, as a crash would at that instant:
/// no destructor runs, nothing is cleaned up. The crash tests step N over
/// every change a command makes.
fn crash_point() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CHANGES: AtomicU64 = AtomicU64::new(0);
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let limit = LIMIT.get_or_init(|| {
        std::env::var("CAIRN_MEMORY_CRASH_AFTER")
            .ok()
            .and_then(|n| n.parse().ok())
    });
    if let Some(limit) = limit {
        if CHANGES.fetch_add(1, Ordering::SeqCst) + 1 >= *limit {
            std::process::exit(CRASH_EXIT_CODE);
        }
    }
}

/// The exit code of a process ended by `CAIRN_MEMORY_CRASH_AFTER`.
pub const CRASH_EXIT_CODE: i32 = 86;

/// The image's lock file, locked with `operation` until dropped.
fn lock_image(image: &Path, operation: libc::c_int) -> io::Result<File> {
    let mut name = image.as_os_str().to_owned();
    name.push(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(name)?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

fn stamp(image: &Path) -> io::Result<Option<Stamp>> {
    match fs::metadata(image) {
        Ok(meta) => Ok(Some(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the image again if another process replaced it since.
fn refresh(image: &Path, state: &mut State) -> io::Result<()> {
    let now = stamp(image)?;
    if now != state.loaded {
        state.objects = match now {
            Some(_) => decode_image(&fs::read(image)?)?,
            None => MemoryObjects::new(),
        };
        state.loaded = now;
    }
    Ok(())
}

/// Writes the image to a temporary name, syncs it and renames it into place.
fn save(image: &Path, objects: &MemoryObjects) -> io::Result<Stamp> {
    let mut bytes = IMAGE_MAGIC.to_vec();
    for ((kind, name), data) in objects {
        let kind_byte = IMAGE_KINDS.iter().position(|k| k == kind).unwrap_or(0);
        bytes.push(u8::try_from(kind_byte).unwrap_or(0));
        bytes.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
        bytes.extend_from_slice(data);
    }
    let mut temporary = image.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, image)?;
    if let Some(dir) = image.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    stamp(image)?.ok_or_else(|| io::Error::other("the image vanished as it was saved"))
}

/// Reads an image's objects; a damaged image is an error, never a panic.
fn decode_image(bytes: &[u8]) -> io::Result<MemoryObjects> {
    fn damaged() -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, "damaged memory image")
    }
    fn take<'a>(rest: &mut &'a [u8], len: u64) -> io::Result<&'a [u8]> {
        let len = usize::try_from(len).map_err(|_| damaged())?;
        if rest.len() < len {
            return Err(damaged());
        }
        let (head, tail) = rest.split_at(len);
        *rest = tail;
        Ok(head)
    }
    let mut rest = bytes.strip_prefix(IMAGE_MAGIC).ok_or_else(damaged)?;
    let mut objects = MemoryObjects::new();
    while !rest.is_empty() {
        let kind = *IMAGE_KINDS
            .get(usize::from(take(&mut rest, 1)?[0]))
            .ok_or_else(damaged)?;
        let name_len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().map_err(|_| damaged())?);
        let name = std::str::from_utf8(take(&mut rest, u64::from(name_len))?)
            .map_err(|_| damaged())?
            .to_string();
        let data_len = u64::from_le_bytes(take(&mut rest, 8)?.try_into().map_err(|_| damaged())?);
        let data = take(&mut rest, data_len)?.to_vec();
        objects.insert((kind, name), data);
    }
    Ok(objects)
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        match &self.image {
            Some(image) => format!("memory:{}", image.display()),
            None => "memory".into(),
        }
    }

    /// It stands in for object storage: so the suites that run on it
    /// cover what cairn does only for remote stores (the tree cache).
    fn is_remote(&self) -> bool {
        true
    }

    fn get(&self, kind: ObjectKind, name: &str) -> io::Result<Vec<u8>> {
        self.read(|objects| objects.get(&(kind, name.to_string())).cloned())?
            .ok_or_else(|| Self::not_found(kind, name))
    }

    fn get_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        self.read(|objects| {
            let all = objects
                .get(&(kind, name.to_string()))
                .ok_or_else(|| Self::not_found(kind, name))?;
            all.get(start..end)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "range beyond object"))
        })?
    }

    fn size(&self, kind: ObjectKind, name: &str) -> io::Result<u64> {
        self.read(|objects| objects.get(&(kind, name.to_string())).map(Vec::len))?
            .map(|len| len as u64)
            .ok_or_else(|| Self::not_found(kind, name))
    }

    fn put(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> io::Result<()> {
        let key = (kind, name.to_string());
        if kind != ObjectKind::Config && self.read(|objects| objects.contains_key(&key))? {
            return Ok(());
        }
        self.change(|objects| {
            if objects.contains_key(&key) {
                if kind == ObjectKind::Config {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "config exists",
                    ));
                }
                return Ok(());
            }
            objects.insert(key, bytes.to_vec());
            Ok(())
        })
    }

    fn create_writer(&self, kind: ObjectKind) -> io::Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(MemoryObjectWriter {
            backend: self.clone(),
            kind,
            bytes: Vec::new(),
        }))
    }

    fn list(&self, kind: ObjectKind) -> io::Result<Vec<String>> {
        self.read(|objects| {
            objects
                .keys()
                .filter(|(k, _)| *k == kind)
                .map(|(_, name)| name.clone())
                .collect()
        })
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> io::Result<()> {
        self.change(|objects| {
            objects
                .remove(&(kind, name.to_string()))
                .map(|_| ())
                .ok_or_else(|| Self::not_found(kind, name))
        })
    }

    fn create(&self) -> io::Result<()> {
        self.change(|objects| {
            if objects.contains_key(&(ObjectKind::Config, String::new())) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "config exists",
                ));
            }
            Ok(())
        })
    }
}

/// An object being written into a [`MemoryBackend`].
struct MemoryObjectWriter {
    backend: MemoryBackend,
    kind: ObjectKind,
    bytes: Vec<u8>,
}

impl Write for MemoryObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemoryObjectWriter {
    fn finish(self: Box<Self>, name: &str) -> io::Result<()> {
        self.backend.put(self.kind, name, &self.bytes)
    }
}
