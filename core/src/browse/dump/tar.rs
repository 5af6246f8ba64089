//! The tar writer of `dump`: GNU headers (long names and link targets as
//! GNU extensions), and PAX records for what those cannot hold: times to
//! the nanosecond, owner names and ids too long for the header, extended
//! attributes (`SCHILY.xattr.NAME`, as GNU tar's `--xattrs` reads them),
//! and sparse files (the PAX 1.0 sparse format of GNU tar).

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::{Builder, EntryType, Header};

use super::{decimal_seconds, Archive, FileContent};
use crate::object::tree::{Node, NodeKind};

/// Largest value of an 8-byte octal header field (uid, gid).
const OCTAL_ID_MAX: u32 = 0o7_777_777;

pub(super) struct TarArchive<'w> {
    builder: Builder<&'w mut dyn Write>,
}

impl<'w> TarArchive<'w> {
    pub(super) fn new(out: &'w mut dyn Write) -> TarArchive<'w> {
        TarArchive {
            builder: Builder::new(out),
        }
    }

    fn pax(&mut self, records: &[(String, Vec<u8>)]) -> io::Result<()> {
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }
}

/// A header for `node` of `kind` and `size`, and the PAX records it needs
/// beside.
fn header(node: &Node, kind: EntryType, size: u64) -> (Header, Vec<(String, Vec<u8>)>) {
    let mut header = Header::new_gnu();
    let mut records = Vec::new();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(node.mode);
    header.set_uid(u64::from(node.uid.min(OCTAL_ID_MAX)));
    header.set_gid(u64::from(node.gid.min(OCTAL_ID_MAX)));
    if node.uid > OCTAL_ID_MAX {
        records.push(("uid".into(), node.uid.to_string().into_bytes()));
    }
    if node.gid > OCTAL_ID_MAX {
        records.push(("gid".into(), node.gid.to_string().into_bytes()));
    }
    for (key, name) in [("uname", &node.user), ("gname", &node.group)] {
        let Some(name) = name else { continue };
        let fits = std::str::from_utf8(name).is_ok_and(|text| {
            let set = if key == "uname" {
                header.set_username(text)
            } else {
                header.set_groupname(text)
            };
            set.is_ok()
        });
        if !fits {
            records.push((key.into(), name.clone()));
        }
    }
    header.set_mtime(u64::try_from(node.mtime.secs).unwrap_or(0));
    records.push(("mtime".into(), decimal_seconds(node.mtime).into_bytes()));
    records.push(("atime".into(), decimal_seconds(node.atime).into_bytes()));
    for xattr in &node.xattrs {
        // PAX keys are text; a name that is not UTF-8 cannot be one.
        if let Ok(name) = std::str::from_utf8(&xattr.name) {
            records.push((format!("SCHILY.xattr.{name}"), xattr.value.clone()));
        }
    }
    (header, records)
}

/// A POSIX header for a regular file's entry: what [`header`] sets that a
/// ustar header holds (the rest goes in PAX records).
fn ustar_header(node: &Node, size: u64) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(node.mode);
    header.set_uid(u64::from(node.uid.min(OCTAL_ID_MAX)));
    header.set_gid(u64::from(node.gid.min(OCTAL_ID_MAX)));
    header.set_mtime(u64::try_from(node.mtime.secs).unwrap_or(0));
    for (name, set) in [
        (
            &node.user,
            Header::set_username as fn(&mut Header, &str) -> io::Result<()>,
        ),
        (&node.group, Header::set_groupname),
    ] {
        if let Some(text) = name.as_deref().and_then(|n| std::str::from_utf8(n).ok()) {
            // Too long for the field: the PAX record holds it.
            let _ = set(&mut header, text);
        }
    }
    header
}

fn path(name: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(name))
}

/// The header name of a sparse file, as GNU tar's are named; what is
/// extracted is `GNU.sparse.name`. Short, so that it fits a ustar header.
const SPARSE_NAME: &str = "GNUSparseFile.0/sparse";

/// The sparse map that starts a sparse file's data: the count of regions,
/// then each one's offset and length, in decimal lines, padded with NULs
/// to a 512-byte block.
fn sparse_map(regions: &[(u64, u64)]) -> Vec<u8> {
    let mut map = format!("{}\n", regions.len());
    for (offset, length) in regions {
        map.push_str(&format!("{offset}\n{length}\n"));
    }
    let mut bytes = map.into_bytes();
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    bytes
}

impl Archive for TarArchive<'_> {
    fn special(&mut self, name: &[u8], node: &Node) -> io::Result<bool> {
        let kind = match node.kind {
            NodeKind::Directory { .. } => EntryType::Directory,
            NodeKind::Symlink { .. } => EntryType::Symlink,
            NodeKind::Fifo => EntryType::Fifo,
            NodeKind::CharDevice { .. } => EntryType::Char,
            NodeKind::BlockDevice { .. } => EntryType::Block,
            NodeKind::File { .. } => unreachable!("files have content"),
        };
        let (mut header, records) = header(node, kind, 0);
        self.pax(&records)?;
        match &node.kind {
            NodeKind::Symlink { target } => {
                self.builder
                    .append_link(&mut header, path(name), path(target))?;
            }
            NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
                header.set_device_major(libc::major(*rdev))?;
                header.set_device_minor(libc::minor(*rdev))?;
                self.builder
                    .append_data(&mut header, path(name), io::empty())?;
            }
            NodeKind::Directory { .. } => {
                let dir = [name, b"/"].concat();
                self.builder
                    .append_data(&mut header, path(&dir), io::empty())?;
            }
            _ => {
                self.builder
                    .append_data(&mut header, path(name), io::empty())?;
            }
        }
        Ok(true)
    }

    fn hard_link(&mut self, name: &[u8], node: &Node, target: &[u8]) -> io::Result<bool> {
        let (mut header, records) = header(node, EntryType::Link, 0);
        self.pax(&records)?;
        self.builder
            .append_link(&mut header, path(name), path(target))?;
        Ok(true)
    }

    fn file(&mut self, name: &[u8], node: &Node, content: &mut FileContent<'_>) -> io::Result<()> {
        let sparse = matches!(node.kind, NodeKind::File { sparse: true, .. });
        if sparse {
            let size = content.size();
            let regions = content.keep_data_regions().map_err(io::Error::other)?;
            if regions.len() != 1 || regions[0] != (0, size) {
                return self.sparse_file(name, node, content, size, regions);
            }
        }
        let (mut header, records) = header(node, EntryType::Regular, content.size());
        self.pax(&records)?;
        self.builder.append_data(&mut header, path(name), content)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.builder.finish()
    }
}

impl TarArchive<'_> {
    /// A file with holes, in the PAX 1.0 sparse format: the map, then only
    /// the data regions.
    fn sparse_file(
        &mut self,
        name: &[u8],
        node: &Node,
        content: &mut FileContent<'_>,
        real_size: u64,
        mut regions: Vec<(u64, u64)>,
    ) -> io::Result<()> {
        // The map covers the whole file: a trailing hole ends in an
        // empty region at the end.
        if regions
            .last()
            .is_none_or(|(offset, len)| offset + len < real_size)
        {
            regions.push((real_size, 0));
        }
        let map = sparse_map(&regions);
        let stored = map.len() as u64 + content.size();
        let (_, mut records) = header(node, EntryType::Regular, stored);
        // GNU tar reads the sparse map of a PAX entry only under a POSIX
        // header, not an old GNU one.
        let mut header = ustar_header(node, stored);
        records.extend([
            ("GNU.sparse.major".into(), b"1".to_vec()),
            ("GNU.sparse.minor".into(), b"0".to_vec()),
            ("GNU.sparse.name".into(), name.to_vec()),
            (
                "GNU.sparse.realsize".into(),
                real_size.to_string().into_bytes(),
            ),
        ]);
        self.pax(&records)?;
        let data = map.as_slice().chain(content);
        self.builder.append_data(&mut header, SPARSE_NAME, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_map_is_decimal_lines_in_whole_blocks() {
        let map = sparse_map(&[(0, 4096), (1 << 20, 10), (2 << 20, 0)]);
        assert_eq!(map.len(), 512);
        let text = std::str::from_utf8(&map).unwrap().trim_end_matches('\0');
        assert_eq!(text, "3\n0\n4096\n1048576\n10\n2097152\n0\n");
    }
}
