//! The zip writer of `dump`, streamed: no seeking back, so sizes and
//! checksums follow each entry in data descriptors, and zip64 records
//! are used for files of 4 GiB or more. Zip has no owners, hard links,
//! devices or pipes: a hard link is stored as a copy of its file, and
//! devices and pipes are left out (and counted). Modes and mtimes are
//! kept (the mtime also to the second, in the extended timestamp field
//! `unzip` restores).

use std::io::{self, Write};

use zip::write::{FullFileOptions, SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

use super::{Archive, FileContent};
use crate::object::tree::{Node, NodeKind};

pub(super) struct ZipArchive<'w> {
    writer: Option<ZipWriter<StreamWriter<&'w mut dyn Write>>>,
}

impl<'w> ZipArchive<'w> {
    pub(super) fn new(out: &'w mut dyn Write) -> ZipArchive<'w> {
        ZipArchive {
            writer: Some(ZipWriter::new_stream(out)),
        }
    }

    fn writer(&mut self) -> &mut ZipWriter<StreamWriter<&'w mut dyn Write>> {
        self.writer.as_mut().expect("not finished")
    }
}

/// The options every entry of `node` gets: mode and times.
fn options(node: &Node) -> io::Result<FullFileOptions<'static, 'static>> {
    let mut options = SimpleFileOptions::default().unix_permissions(node.mode);
    // The DOS time is local time, to two seconds, from 1980 to 2107.
    if let Some(time) = chrono::DateTime::from_timestamp(node.mtime.secs, node.mtime.nanos) {
        use chrono::{Datelike, Timelike};
        let local = time.with_timezone(&chrono::Local);
        let dos = zip::DateTime::from_date_and_time(
            u16::try_from(local.year()).unwrap_or(0),
            local.month() as u8,
            local.day() as u8,
            local.hour() as u8,
            local.minute() as u8,
            local.second() as u8,
        );
        if let Ok(dos) = dos {
            options = options.last_modified_time(dos);
        }
    }
    let seconds = |secs: i64| u32::try_from(secs).ok();
    options
        .with_extended_timestamp(seconds(node.mtime.secs), seconds(node.atime.secs), None)
        .map_err(io::Error::other)
}

fn text(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl Archive for ZipArchive<'_> {
    fn special(&mut self, name: &[u8], node: &Node) -> io::Result<bool> {
        let options = options(node)?;
        match &node.kind {
            NodeKind::Directory { .. } => self
                .writer()
                .add_directory(format!("{}/", text(name)), options)
                .map_err(io::Error::other)?,
            NodeKind::Symlink { target } => self
                .writer()
                .add_symlink(text(name), text(target), options)
                .map_err(io::Error::other)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn hard_link(&mut self, _name: &[u8], _node: &Node, _target: &[u8]) -> io::Result<bool> {
        Ok(false)
    }

    fn file(&mut self, name: &[u8], node: &Node, content: &mut FileContent<'_>) -> io::Result<()> {
        let options = options(node)?
            .compression_method(CompressionMethod::Deflated)
            .large_file(content.size() >= u64::from(u32::MAX))
            .name(name);
        let writer = self.writer();
        writer
            .start_file_with_options(options)
            .map_err(io::Error::other)?;
        io::copy(content, writer)?;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(writer) = self.writer.take() {
            writer.finish().map_err(io::Error::other)?;
        }
        Ok(())
    }
}
