//! `cat SNAPSHOT:PATH`: a file's content, blob after blob, so memory holds
//! one blob whatever the file's size.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::object::blob::BlobType;
use crate::object::snapshot::Snapshot;
use crate::object::tree::NodeKind;
use crate::repository::Repository;
use crate::restorer::locate;

/// Writes the content of the file at `path` in `snapshot` to `out`;
/// returns its length. Errors if the path is missing, or is not a regular
/// file, or if a blob does not read back (after writing what came before
/// it).
pub fn cat(
    repository: &Repository,
    snapshot: &Snapshot,
    path: &Path,
    out: &mut dyn Write,
) -> Result<u64> {
    let (_, node, _) = locate(repository, snapshot, Some(path))?;
    let not_a_file = |kind: &str| Error::NotAFile {
        path: path.display().to_string(),
        kind: kind.to_string(),
    };
    let node = node.ok_or_else(|| not_a_file("a directory"))?;
    let NodeKind::File { content, .. } = &node.kind else {
        return Err(not_a_file(match node.kind {
            NodeKind::Symlink { .. } => "a symbolic link",
            _ => "a special file",
        }));
    };
    let mut written = 0u64;
    for blob in content {
        let bytes = repository.read_blob(blob, BlobType::Data)?;
        out.write_all(&bytes)
            .map_err(|error| Error::Output { error })?;
        written += bytes.len() as u64;
    }
    out.flush().map_err(|error| Error::Output { error })?;
    Ok(written)
}
