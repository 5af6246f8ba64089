//! The sources of a backup: the paths given, made absolute and checked,
//! arranged as the tree of directories that lead to them, and the streams
//! stored beside them at the snapshot's root.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::BackupOptions;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// A file whose content is a stream rather than a file on disk.
pub enum StreamSource {
    /// Everything a reader yields, such as standard input.
    Reader {
        /// The file's name at the snapshot's root.
        name: String,
        /// Where the content comes from.
        reader: Box<dyn Read + Send>,
    },
    /// The standard output of a command, run without a shell. If it exits
    /// unsuccessfully, no snapshot is saved.
    Command {
        /// The file's name at the snapshot's root.
        name: String,
        /// Program and arguments.
        argv: Vec<OsString>,
        /// Variables taken out of the environment the command inherits:
        /// the caller's own settings, such as a repository password, which
        /// must not reach the command or its children.
        env_remove: Vec<OsString>,
    },
}

impl StreamSource {
    pub(super) fn name(&self) -> &str {
        match self {
            StreamSource::Reader { name, .. } | StreamSource::Command { name, .. } => name,
        }
    }
}

/// Makes `path` absolute and removes `.` and `..` lexically, without
/// following symlinks, so that a symlink given as a source is kept as one.
pub fn normalize_path(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut out = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// The source paths of a run, checked.
pub(super) struct CheckedSources {
    /// Those that exist.
    pub(super) present: Vec<PathBuf>,
    /// All of them, as raw bytes, for `Snapshot.paths`.
    pub(super) all: Vec<Vec<u8>>,
    /// Those that do not exist, as raw bytes, for `Snapshot.unreadable`.
    pub(super) missing: Vec<Vec<u8>>,
}

/// Normalises the source paths and checks they exist, and checks the
/// stream names.
pub(super) fn check_sources(
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<CheckedSources> {
    let mut paths = Vec::new();
    for path in &options.paths {
        let normalized = normalize_path(path).map_err(|e| Error::Source {
            path: path.clone(),
            error: e,
        })?;
        paths.push(normalized);
    }
    paths.sort();
    paths.dedup();
    if paths.is_empty() && options.streams.is_empty() {
        return Err(Error::NothingToBackUp);
    }
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for path in &paths {
        match fs::symlink_metadata(path) {
            Ok(_) => present.push(path.clone()),
            Err(e) if paths.len() == 1 && options.streams.is_empty() => {
                return Err(Error::Source {
                    path: path.clone(),
                    error: e,
                })
            }
            Err(e) => {
                progress.warning(path, &e.to_string());
                missing.push(path.as_os_str().as_bytes().to_vec());
            }
        }
    }
    if present.is_empty() && options.streams.is_empty() {
        return Err(Error::NoSourceExists);
    }
    check_stream_names(options, &paths)?;
    let all = paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    Ok(CheckedSources {
        present,
        all,
        missing,
    })
}

/// Checks stream names before any stream is read: a pipe cannot be read
/// twice, so a name refused after reading would lose its data.
pub(super) fn check_stream_names(options: &BackupOptions, paths: &[PathBuf]) -> Result<()> {
    let mut taken: HashSet<Vec<u8>> = paths
        .iter()
        .filter_map(|p| {
            p.components().find_map(|c| match c {
                Component::Normal(name) => Some(name.as_bytes().to_vec()),
                _ => None,
            })
        })
        .collect();
    for stream in &options.streams {
        let name = stream.name().as_bytes();
        if !crate::object::tree::is_safe_name(name) {
            return Err(Error::StreamName {
                name: stream.name().to_string(),
                reason: "must be one path component",
            });
        }
        if paths.iter().any(|p| p == Path::new("/")) {
            return Err(Error::StreamsBesideRoot);
        }
        if !taken.insert(name.to_vec()) {
            return Err(Error::StreamName {
                name: stream.name().to_string(),
                reason: "is already taken by another stream or a source path at the root",
            });
        }
    }
    Ok(())
}

/// The source paths arranged as a tree of path components, so that the
/// directories above them can be recorded with only the chosen children.
#[derive(Default)]
pub(super) struct SourceLayout {
    /// True when this component is itself a source path: archive it whole.
    pub(super) is_source: bool,
    pub(super) children: BTreeMap<Vec<u8>, SourceLayout>,
}

impl SourceLayout {
    pub(super) fn new(paths: &[PathBuf]) -> SourceLayout {
        let mut root = SourceLayout::default();
        for path in paths {
            let mut node = &mut root;
            for component in path.components() {
                if let Component::Normal(name) = component {
                    node = node.children.entry(name.as_bytes().to_vec()).or_default();
                }
            }
            node.is_source = true;
        }
        root
    }
}
