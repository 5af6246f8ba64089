//! Streams: standard input or a command's output, read to the end and
//! stored as one file at the snapshot's root.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::sources::StreamSource;
use super::store::store_chunks;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repository::{BlobWriter, Repository};

/// Reads a stream to its end and stores it. Returns the file's name, size
/// and content; errors if a command cannot be run or exits unsuccessfully.
pub(super) fn archive_stream(
    repository: &Repository,
    writer: &Mutex<BlobWriter<'_>>,
    stream: StreamSource,
) -> Result<(String, u64, Vec<BlobId>)> {
    match stream {
        StreamSource::Reader { name, reader } => {
            let (size, content) =
                store_stream(repository, writer, reader)?.map_err(|e| Error::Source {
                    path: PathBuf::from(format!("/{name}")),
                    error: e,
                })?;
            Ok((name, size, content))
        }
        StreamSource::Command {
            name,
            argv,
            env_remove,
        } => {
            let shown = argv
                .iter()
                .map(|a| quote(&a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ");
            let failed = |status: String| Error::CommandFailed {
                name: name.clone(),
                command: shown.clone(),
                status,
            };
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| failed("empty command".into()))?;
            let mut command = Command::new(program);
            for key in env_remove {
                command.env_remove(key);
            }
            let mut child = command
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| failed(format!("could not start: {e}")))?;
            let stdout = child.stdout.take().expect("stdout is piped");
            let stored = store_stream(repository, writer, stdout);
            if !matches!(stored, Ok(Ok(_))) {
                let _ = child.kill();
            }
            let status = child.wait().map_err(|e| failed(e.to_string()))?;
            let (size, content) =
                stored?.map_err(|e| failed(format!("reading its output: {e}")))?;
            if !status.success() {
                return Err(failed(status.to_string()));
            }
            Ok((name, size, content))
        }
    }
}

/// Chunks and stores everything `reader` yields. The outer error is the
/// repository's; the inner one the reader's.
pub(super) fn store_stream(
    repository: &Repository,
    writer: &Mutex<BlobWriter<'_>>,
    reader: impl Read,
) -> Result<io::Result<(u64, Vec<BlobId>)>> {
    store_chunks(writer, repository.chunker().stream(reader), |_| {})
}

/// An argument as a shell would need it written, for messages.
pub(super) fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}
