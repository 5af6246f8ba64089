//! How an entry of a snapshot is printed: by `ls` (a path, a long line,
//! or a JSON object) and by `diff` and `find`.

use cairn_core::{Node, NodeKind};
use chrono::{DateTime, Local};
use serde_json::json;

use crate::output::{lossy, printable};

/// The entry type as JSON names it, and as `ls -l` shows it.
pub fn type_of(kind: &NodeKind) -> (&'static str, char) {
    match kind {
        NodeKind::File { .. } => ("file", '-'),
        NodeKind::Directory { .. } => ("dir", 'd'),
        NodeKind::Symlink { .. } => ("symlink", 'l'),
        NodeKind::Fifo => ("fifo", 'p'),
        NodeKind::CharDevice { .. } => ("chardev", 'c'),
        NodeKind::BlockDevice { .. } => ("blockdev", 'b'),
    }
}

/// The size `ls -l` shows: a file's length, a link target's.
pub fn size(kind: &NodeKind) -> u64 {
    match kind {
        NodeKind::File { size, .. } => *size,
        NodeKind::Symlink { target } => target.len() as u64,
        _ => 0,
    }
}

/// `drwxr-xr-x`, with setuid, setgid and sticky as `ls` shows them.
pub fn mode_string(node: &Node) -> String {
    let kind = type_of(&node.kind).1;
    let mode = node.mode;
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    let special = |exec: u32, special: u32, set: char, unset: char| match (
        mode & exec != 0,
        mode & special != 0,
    ) {
        (true, true) => set,
        (false, true) => unset,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// The entry's mtime in local time.
pub fn mtime(node: &Node) -> DateTime<Local> {
    DateTime::from_timestamp(node.mtime.secs, node.mtime.nanos)
        .unwrap_or_default()
        .with_timezone(&Local)
}

/// An entry as `ls -l` shows it.
pub fn long_line(path: &[u8], node: &Node) -> String {
    let owner = |name: &Option<Vec<u8>>, id: u32| {
        name.as_deref()
            .map_or_else(|| id.to_string(), |n| printable(&lossy(n)))
    };
    let mut line = format!(
        "{} {:>8} {:>8} {:>12} {} {}",
        mode_string(node),
        owner(&node.user, node.uid),
        owner(&node.group, node.gid),
        size(&node.kind),
        mtime(node).format("%Y-%m-%d %H:%M:%S"),
        printable(&lossy(path))
    );
    if let NodeKind::Symlink { target } = &node.kind {
        line.push_str(" -> ");
        line.push_str(&printable(&lossy(target)));
    }
    line
}

/// A name as JSON: the string if it is UTF-8; otherwise the string with
/// each invalid byte replaced, and beside it the exact bytes in hex.
pub fn name_fields(
    key: &str,
    bytes: &[u8],
    object: &mut serde_json::Map<String, serde_json::Value>,
) {
    object.insert(key.into(), json!(lossy(bytes)));
    if std::str::from_utf8(bytes).is_err() {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        object.insert(format!("{key}_hex"), json!(hex));
    }
}

/// An entry as one line of JSON.
pub fn json_line(path: &[u8], node: &Node) -> String {
    serde_json::Value::Object(json_object(path, node)).to_string()
}

/// An entry as a JSON object: path, type, mode, owner, size, mtime, link
/// target.
pub fn json_object(path: &[u8], node: &Node) -> serde_json::Map<String, serde_json::Value> {
    let mut object = serde_json::Map::new();
    name_fields("path", path, &mut object);
    object.insert("type".into(), json!(type_of(&node.kind).0));
    object.insert("mode".into(), json!(node.mode));
    object.insert("uid".into(), json!(node.uid));
    object.insert("gid".into(), json!(node.gid));
    object.insert("user".into(), json!(node.user.as_deref().map(lossy)));
    object.insert("group".into(), json!(node.group.as_deref().map(lossy)));
    object.insert("size".into(), json!(size(&node.kind)));
    object.insert("mtime".into(), json!(mtime(node).to_rfc3339()));
    if let NodeKind::Symlink { target } = &node.kind {
        name_fields("link_target", target, &mut object);
    }
    object
}
