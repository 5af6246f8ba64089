//! The local backend: a repository in a directory (SPEC.md §1).
//!
//! Each object is a file under its kind's folder (packs sharded by the
//! first two hex digits of their name), written to a temporary name,
//! synced, and renamed into place, so that a crash leaves either the whole
//! object or nothing. Files are private to their owner (0600, folders 0700).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::direct_write::DirectWriter;
use super::{Backend, ObjectKind, ObjectWriter, StrayEntries};

/// A repository in a local directory.
pub struct LocalBackend {
    root: PathBuf,
    /// The last packs opened for reading, kept open: a restore reads
    /// thousands of blobs from each pack, and opening it per blob costs a
    /// path lookup each time. A pack's bytes never change under its name;
    /// if a read through a kept handle fails (the pack was deleted and put
    /// again, say), the handle is dropped and the pack opened afresh.
    open_packs: Mutex<VecDeque<OpenPack>>,
}

/// A pack file kept open by [`LocalBackend`], with its length.
struct OpenPack {
    name: String,
    file: Arc<File>,
    len: u64,
}

/// Packs kept open at once.
const OPEN_PACKS: usize = 16;

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend {
            root: root.into(),
            open_packs: Mutex::new(VecDeque::new()),
        }
    }

    /// A kept handle on a pack and its length, if there is one.
    fn kept_pack(&self, name: &str) -> Option<(Arc<File>, u64)> {
        self.lock_open_packs()
            .iter()
            .find(|p| p.name == name)
            .map(|p| (Arc::clone(&p.file), p.len))
    }

    /// Opens a pack and keeps the handle, in place of any kept before.
    fn open_pack(&self, name: &str) -> io::Result<(Arc<File>, u64)> {
        let file = File::open(self.path(ObjectKind::Pack, name))?;
        let len = file.metadata()?.len();
        let file = Arc::new(file);
        let mut packs = self.lock_open_packs();
        packs.retain(|p| p.name != name);
        if packs.len() == OPEN_PACKS {
            packs.pop_front();
        }
        packs.push_back(OpenPack {
            name: name.to_string(),
            file: Arc::clone(&file),
            len,
        });
        Ok((file, len))
    }

    fn lock_open_packs(&self) -> std::sync::MutexGuard<'_, VecDeque<OpenPack>> {
        self.open_packs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the root holds anything but a repository's folders (as an
    /// init that stopped half-way leaves them) and a file system's
    /// `lost+found`: `init` must not turn, say, the source directory into
    /// a repository.
    fn holds_strays(&self) -> io::Result<bool> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            // `.tmp-*`: a config whose put an interrupted init left.
            let expected = name == "lost+found"
                || name.to_string_lossy().starts_with(".tmp-")
                || ObjectKind::FOLDERS
                    .iter()
                    .any(|kind| name == kind.dir_name());
            if !expected {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, kind: ObjectKind, name: &str) -> PathBuf {
        object_path(&self.root, kind, name)
    }
}

/// Reads `len` bytes at `offset` of a file `size` bytes long.
fn read_range(file: &File, size: u64, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("range {offset}+{len} beyond object length {size}"),
        ));
    }
    let mut out = vec![0; len as usize];
    file.read_exact_at(&mut out, offset)?;
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where an object lives below a local repository's `root`.
fn object_path(root: &Path, kind: ObjectKind, name: &str) -> PathBuf {
    match kind {
        ObjectKind::Config => root.join("config"),
        ObjectKind::Pack => {
            let shard = name.get(..2).unwrap_or("__");
            root.join("data").join(shard).join(name)
        }
        _ => root.join(kind.dir_name()).join(name),
    }
}

/// Mode of every folder a local repository creates: the repository is
/// its owner's alone, whatever the umask.
const DIR_MODE: u32 = 0o700;
/// Mode of every file a local repository creates: key files above all must
/// not be readable by other users, who could attack the password offline.
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with [`DIR_MODE`].
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Creates a new file at `path` with [`FILE_MODE`], failing if one exists.
fn create_private_file(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates a pack's shard folder if it is missing.
fn ensure_shard(kind: ObjectKind, path: &Path) -> io::Result<()> {
    // Repositories made before `epochs/` existed lack it until a rotation.
    if kind == ObjectKind::Epoch {
        let dir = path.parent().expect("objects have a folder");
        if !dir.is_dir() {
            create_private_dir(dir)?;
            sync_dir(dir.parent().expect("folders have a parent"))?;
        }
    }
    if kind == ObjectKind::Pack {
        let shard = path.parent().expect("pack paths have a shard");
        if !shard.is_dir() {
            create_private_dir(shard)?;
            sync_dir(shard.parent().expect("shards have a parent"))?;
        }
    }
    Ok(())
}

/// A fresh temporary name in `dir`. Names starting with a dot are never
/// listed as objects.
fn temporary_path(dir: &Path) -> PathBuf {
    let suffix: [u8; 8] = crate::crypto::random_bytes();
    dir.join(format!(".tmp-{}", hex::encode(suffix)))
}

/// The temporary files this process is writing into repositories, so that
/// a run stopped by a signal can remove them on its way out.
struct TemporaryFiles {
    paths: Vec<PathBuf>,
    /// Set once they were removed: the process is ending, and a file
    /// created after that would be left behind, so none may be.
    stopping: bool,
}

static TEMPORARY_FILES: Mutex<TemporaryFiles> = Mutex::new(TemporaryFiles {
    paths: Vec::new(),
    stopping: false,
});

fn temporary_files() -> std::sync::MutexGuard<'static, TemporaryFiles> {
    TEMPORARY_FILES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Notes a temporary file just created. Once the process is stopping, the
/// file is removed instead and this errors.
fn track_temporary(path: &Path) -> io::Result<()> {
    let mut files = temporary_files();
    if files.stopping {
        let _ = fs::remove_file(path);
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the process is stopping",
        ));
    }
    files.paths.push(path.to_path_buf());
    Ok(())
}

/// Forgets a temporary file that was moved into place or removed.
fn untrack_temporary(path: &Path) {
    temporary_files().paths.retain(|p| p != path);
}

/// Removes every temporary file this process is writing into a local
/// repository (a pack being streamed, an object being put), and refuses
/// new ones. For a signal handler that is about to end the process:
/// whatever was being written is incomplete, and nothing refers to it.
pub fn remove_temporary_files() {
    let mut files = temporary_files();
    files.stopping = true;
    for path in files.paths.drain(..) {
        let _ = fs::remove_file(path);
    }
}

/// An object streamed into a temporary file in its kind's folder (around
/// the page cache where the file system allows), then synced and moved to
/// its name.
struct LocalObjectWriter {
    file: DirectWriter,
    tmp: PathBuf,
    root: PathBuf,
    kind: ObjectKind,
    finished: bool,
}

impl Write for LocalObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl ObjectWriter for LocalObjectWriter {
    fn finish(mut self: Box<Self>, name: &str) -> io::Result<()> {
        let path = object_path(&self.root, self.kind, name);
        if path.symlink_metadata().is_ok() {
            // Same name, same bytes: the stored copy stands, and dropping
            // the writer removes the temporary file.
            return Ok(());
        }
        self.file.write_rest()?.sync_all()?;
        ensure_shard(self.kind, &path)?;
        fs::rename(&self.tmp, &path)?;
        self.finished = true;
        untrack_temporary(&self.tmp);
        // The new name, and the temporary name gone from the kind's folder.
        let folder = path.parent().expect("object paths have a parent");
        sync_dir(folder)?;
        let tmp_folder = self.tmp.parent().expect("temporary paths have a parent");
        if tmp_folder != folder {
            sync_dir(tmp_folder)?;
        }
        Ok(())
    }
}

impl Drop for LocalObjectWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.tmp);
            untrack_temporary(&self.tmp);
        }
    }
}

/// Writes `bytes` to a temporary file in `path`'s folder, syncs it and
/// moves it into place, so a crash never leaves a partial object. With
/// `exclusive`, the move fails if `path` exists (a hard link, which unlike
/// rename never replaces), so two writers cannot both create it.
fn write_atomically(path: &Path, bytes: &[u8], exclusive: bool) -> io::Result<()> {
    let dir = path.parent().expect("object paths have a parent");
    let tmp = temporary_path(dir);
    let result = (|| {
        let mut file = create_private_file(&tmp)?;
        track_temporary(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        if exclusive {
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        } else {
            fs::rename(&tmp, path)?;
        }
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    untrack_temporary(&tmp);
    result
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn get(&self, kind: ObjectKind, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(kind, name))
    }

    fn get_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> io::Result<Vec<u8>> {
        if kind == ObjectKind::Pack {
            if let Some((file, size)) = self.kept_pack(name) {
                if let Ok(bytes) = read_range(&file, size, offset, len) {
                    return Ok(bytes);
                }
            }
            let (file, size) = self.open_pack(name)?;
            return read_range(&file, size, offset, len);
        }
        let file = File::open(self.path(kind, name))?;
        let size = file.metadata()?.len();
        read_range(&file, size, offset, len)
    }

    fn size(&self, kind: ObjectKind, name: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(kind, name))?.len())
    }

    fn put(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(kind, name);
        if path.symlink_metadata().is_ok() {
            if kind == ObjectKind::Config {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "config exists",
                ));
            }
            return Ok(());
        }
        ensure_shard(kind, &path)?;
        write_atomically(&path, bytes, kind == ObjectKind::Config)
    }

    fn create_writer(&self, kind: ObjectKind) -> io::Result<Box<dyn ObjectWriter>> {
        if kind == ObjectKind::Config {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "config is only ever put whole",
            ));
        }
        let tmp = temporary_path(&self.root.join(kind.dir_name()));
        let file = create_private_file(&tmp)?;
        track_temporary(&tmp)?;
        Ok(Box::new(LocalObjectWriter {
            file: DirectWriter::new(file),
            tmp,
            root: self.root.clone(),
            kind,
            finished: false,
        }))
    }

    fn list(&self, kind: ObjectKind) -> io::Result<Vec<String>> {
        let dir = self.root.join(kind.dir_name());
        let mut names = Vec::new();
        if kind == ObjectKind::Epoch && !dir.exists() {
            return Ok(names);
        }
        let mut push_files = |dir: &Path| -> io::Result<()> {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && entry.file_type()?.is_file() {
                    names.push(name);
                }
            }
            Ok(())
        };
        if kind == ObjectKind::Pack {
            for shard in fs::read_dir(&dir)? {
                let shard = shard?;
                if shard.file_type()?.is_dir() {
                    push_files(&shard.path())?;
                }
            }
        } else {
            push_files(&dir)?;
        }
        names.sort();
        Ok(names)
    }

    fn leftovers(&self) -> io::Result<Vec<(String, u64)>> {
        let mut found = Vec::new();
        let mut dirs = vec![self.root.clone()];
        for kind in ObjectKind::FOLDERS {
            dirs.push(self.root.join(kind.dir_name()));
        }
        if let Ok(shards) = fs::read_dir(self.root.join(ObjectKind::Pack.dir_name())) {
            for shard in shards.flatten() {
                if shard.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(shard.path());
                }
            }
        }
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_name().as_encoded_bytes().starts_with(b".tmp-") {
                    continue;
                }
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .map_or(0, |d| d.as_secs());
                let path = entry.path();
                let shown = path.strip_prefix(&self.root).unwrap_or(&path);
                found.push((shown.display().to_string(), age));
            }
        }
        found.sort();
        Ok(found)
    }

    fn remove_leftover(&self, name: &str) -> io::Result<()> {
        let relative = Path::new(name);
        let is_leftover = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
            && relative
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b".tmp-"));
        if !is_leftover {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: not a leftover of this store"),
            ));
        }
        fs::remove_file(self.root.join(relative))
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> io::Result<()> {
        self.lock_open_packs().retain(|p| p.name != name);
        fs::remove_file(self.path(kind, name))
    }

    fn create(&self) -> io::Result<()> {
        if self.path(ObjectKind::Config, "").exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "config exists",
            ));
        }
        if self.holds_strays()? {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, StrayEntries));
        }
        create_private_dir(&self.root)?;
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        for kind in ObjectKind::FOLDERS {
            let dir = self.root.join(kind.dir_name());
            if !dir.is_dir() {
                fs::DirBuilder::new().mode(DIR_MODE).create(&dir)?;
            }
        }
        sync_dir(&self.root)
    }
}
