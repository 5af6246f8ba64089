//! The browser's state and what each key does to it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use cairn_core::browse::{FindOptions, Trees, Version, TREE_CACHE_BYTES};
use cairn_core::{Node, NodeKind, Repository, RestoreOptions, Snapshot, SnapshotId};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Bytes of a file the viewer shows at most.
const VIEW_LIMIT: usize = 1 << 20;

/// What is on the screen.
pub enum Screen {
    /// The snapshots, newest first.
    Snapshots,
    /// A directory of the open snapshot.
    Directory,
    /// The selected entry's metadata and its versions.
    Details(Vec<Version>),
    /// A file's text, scrolled by this many lines.
    View { lines: Vec<String>, scroll: usize },
    /// Asking where to restore the selected entry.
    RestoreTarget(String),
}

/// One directory entry as listed.
pub struct Entry {
    pub node: Node,
}

/// The browser.
pub struct App<'r> {
    repository: &'r Repository,
    trees: Trees<'r>,
    /// Newest first.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    pub selected_snapshot: usize,
    /// The open snapshot.
    pub open: Option<(SnapshotId, Snapshot)>,
    /// The directory shown, as an absolute path in the snapshot.
    pub dir: PathBuf,
    pub entries: Vec<Entry>,
    pub selected_entry: usize,
    /// Where the selection was in each directory above, to return to it.
    positions: Vec<usize>,
    pub screen: Screen,
    /// The bottom line: the keys, or what the last action did.
    pub status: String,
    pub quit: bool,
}

impl<'r> App<'r> {
    pub fn new(repository: &'r Repository, mut snapshots: Vec<(SnapshotId, Snapshot)>) -> App<'r> {
        snapshots.reverse();
        App {
            repository,
            trees: Trees::new(repository, TREE_CACHE_BYTES),
            snapshots,
            selected_snapshot: 0,
            open: None,
            dir: PathBuf::from("/"),
            entries: Vec::new(),
            selected_entry: 0,
            positions: Vec::new(),
            screen: Screen::Snapshots,
            status: "↑↓ move  Enter open  q quit  ? help".into(),
            quit: false,
        }
    }

    /// Opens snapshot `id` at `path` (a directory, or the directory holding
    /// the entry named, which is then selected).
    pub fn open_snapshot(&mut self, id: SnapshotId, path: &str) -> Result<()> {
        if let Some(i) = self.snapshots.iter().position(|(s, _)| *s == id) {
            self.selected_snapshot = i;
        }
        let snapshot = match self.snapshots.iter().find(|(s, _)| *s == id) {
            Some((_, s)) => s.clone(),
            None => self.repository.resolve_snapshot(&id.to_string())?.1,
        };
        let node = cairn_core::browse::resolve(&mut self.trees, &snapshot, Some(Path::new(path)))?;
        self.open = Some((id, snapshot));
        self.positions.clear();
        let path = Path::new(path);
        let (dir, select) = match node.kind {
            NodeKind::Directory { .. } => (path.to_path_buf(), None),
            _ => (
                path.parent().unwrap_or(Path::new("/")).to_path_buf(),
                Some(node.name.clone()),
            ),
        };
        self.load_dir(&dir)?;
        if let Some(name) = select {
            self.selected_entry = self
                .entries
                .iter()
                .position(|e| e.node.name == name)
                .unwrap_or(0);
        }
        self.screen = Screen::Directory;
        self.status = "Enter open  ← up  i details  v view  r restore  s snapshots  q quit".into();
        Ok(())
    }

    fn load_dir(&mut self, dir: &Path) -> Result<()> {
        let (_, snapshot) = self.open.as_ref().expect("a snapshot is open");
        let node = cairn_core::browse::resolve(&mut self.trees, snapshot, Some(dir))?;
        let NodeKind::Directory { subtree } = node.kind else {
            anyhow::bail!("{} is not a directory", dir.display());
        };
        let tree = self.trees.get(&subtree)?;
        self.entries = tree
            .nodes
            .iter()
            .map(|node| Entry { node: node.clone() })
            .collect();
        self.dir = dir.to_path_buf();
        self.selected_entry = 0;
        Ok(())
    }

    /// The selected entry's absolute path in the snapshot.
    pub fn selected_path(&self) -> Option<PathBuf> {
        let entry = self.entries.get(self.selected_entry)?;
        let name = std::os::unix::ffi::OsStrExt::from_bytes(&entry.node.name);
        Some(self.dir.join(name as &std::ffi::OsStr))
    }

    /// Handles one key press.
    pub fn key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        let outcome = match &self.screen {
            Screen::Snapshots => self.snapshots_key(key.code),
            Screen::Directory => self.directory_key(key.code),
            Screen::Details(_) => self.details_key(key.code),
            Screen::View { .. } => self.view_key(key.code),
            Screen::RestoreTarget(_) => self.prompt_key(key.code),
        };
        if let Err(error) = outcome {
            self.status = format!("error: {error:#}");
        }
    }

    fn snapshots_key(&mut self, code: KeyCode) -> Result<()> {
        match code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected_snapshot =
                    (self.selected_snapshot + 1).min(self.snapshots.len().saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected_snapshot = self.selected_snapshot.saturating_sub(1);
            }
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
                if let Some((id, _)) = self.snapshots.get(self.selected_snapshot) {
                    let id = *id;
                    self.open_snapshot(id, "/")?;
                }
            }
            KeyCode::Char('?') => self.help(),
            _ => {}
        }
        Ok(())
    }

    fn directory_key(&mut self, code: KeyCode) -> Result<()> {
        match code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('s') | KeyCode::Esc => {
                self.screen = Screen::Snapshots;
                self.status = "↑↓ move  Enter open  q quit  ? help".into();
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected_entry =
                    (self.selected_entry + 1).min(self.entries.len().saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected_entry = self.selected_entry.saturating_sub(1);
            }
            KeyCode::Home | KeyCode::Char('g') => self.selected_entry = 0,
            KeyCode::End | KeyCode::Char('G') => {
                self.selected_entry = self.entries.len().saturating_sub(1);
            }
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => self.enter()?,
            KeyCode::Left | KeyCode::Backspace | KeyCode::Char('h') => self.up()?,
            KeyCode::Char('i') => self.details()?,
            KeyCode::Char('v') => self.view()?,
            KeyCode::Char('r') if self.selected_path().is_some() => self.prompt_restore(),
            KeyCode::Char('?') => self.help(),
            _ => {}
        }
        Ok(())
    }

    fn details_key(&mut self, code: KeyCode) -> Result<()> {
        match code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('v') => self.view()?,
            KeyCode::Char('r') => self.prompt_restore(),
            _ => self.back_to_directory(),
        }
        Ok(())
    }

    fn view_key(&mut self, code: KeyCode) -> Result<()> {
        let Screen::View { lines, scroll } = &mut self.screen else {
            return Ok(());
        };
        let last = lines.len().saturating_sub(1);
        match code {
            KeyCode::Down | KeyCode::Char('j') => *scroll = (*scroll + 1).min(last),
            KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
            KeyCode::PageDown | KeyCode::Char(' ') => *scroll = (*scroll + 20).min(last),
            KeyCode::PageUp => *scroll = scroll.saturating_sub(20),
            KeyCode::Char('q') | KeyCode::Esc | KeyCode::Left | KeyCode::Char('h') => {
                self.back_to_directory()
            }
            _ => {}
        }
        Ok(())
    }

    fn prompt_key(&mut self, code: KeyCode) -> Result<()> {
        let Screen::RestoreTarget(text) = &mut self.screen else {
            return Ok(());
        };
        match code {
            KeyCode::Char(c) => text.push(c),
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Esc => self.back_to_directory(),
            KeyCode::Enter if !text.is_empty() => {
                let target = PathBuf::from(text.as_str());
                self.back_to_directory();
                self.restore_selected(&target)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn prompt_restore(&mut self) {
        self.screen = Screen::RestoreTarget(String::new());
        self.status = "type the directory to restore into, Enter to restore, Esc to cancel".into();
    }

    fn back_to_directory(&mut self) {
        self.screen = Screen::Directory;
        self.status = "Enter open  ← up  i details  v view  r restore  s snapshots  q quit".into();
    }

    fn help(&mut self) {
        self.status = "↑↓/jk move  Enter/→ open  ←/Backspace up  i details+versions  v view  r restore  s snapshots  q quit".into();
    }

    fn enter(&mut self) -> Result<()> {
        let Some(entry) = self.entries.get(self.selected_entry) else {
            return Ok(());
        };
        if !matches!(entry.node.kind, NodeKind::Directory { .. }) {
            return self.details();
        }
        let path = self.selected_path().expect("an entry is selected");
        self.positions.push(self.selected_entry);
        self.load_dir(&path)
    }

    fn up(&mut self) -> Result<()> {
        let Some(parent) = self.dir.parent().map(Path::to_path_buf) else {
            return Ok(());
        };
        let name = self.dir.file_name().map(|n| n.as_encoded_bytes().to_vec());
        self.load_dir(&parent)?;
        let back = self.positions.pop();
        self.selected_entry = back
            .or_else(|| {
                self.entries
                    .iter()
                    .position(|e| Some(&e.node.name) == name.as_ref())
            })
            .unwrap_or(0);
        Ok(())
    }

    /// Details of the selected entry, with its versions in every snapshot.
    fn details(&mut self) -> Result<()> {
        let Some(path) = self.selected_path() else {
            return Ok(());
        };
        let options = FindOptions {
            patterns: vec![literal_pattern(&path)],
            ..FindOptions::default()
        };
        let mut oldest_first = self.snapshots.clone();
        oldest_first.reverse();
        let mut found = cairn_core::browse::find(&mut self.trees, &oldest_first, &options)?;
        let versions = found
            .remove(path.as_os_str().as_encoded_bytes())
            .unwrap_or_default();
        self.screen = Screen::Details(versions);
        self.status = "v view  r restore  any other key back".into();
        Ok(())
    }

    /// Shows the selected file's text (its first MiB).
    fn view(&mut self) -> Result<()> {
        let Some(path) = self.selected_path() else {
            return Ok(());
        };
        let Some(entry) = self.entries.get(self.selected_entry) else {
            return Ok(());
        };
        if !matches!(entry.node.kind, NodeKind::File { .. }) {
            self.status = "only regular files can be viewed".into();
            return Ok(());
        }
        let (_, snapshot) = self.open.as_ref().expect("a snapshot is open");
        let mut text = Bounded(Vec::new());
        let read = cairn_core::browse::cat(self.repository, snapshot, &path, &mut text);
        let truncated = match read {
            Ok(_) => false,
            Err(cairn_core::Error::Output { .. }) => true,
            Err(e) => return Err(e.into()),
        };
        let bytes = text.0;
        let lines: Vec<String> = if bytes.contains(&0) {
            vec!["(a binary file: not shown)".to_string()]
        } else {
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|l| l.replace('\t', "    "))
                .collect()
        };
        self.status = if truncated {
            "the first MiB  ↑↓ scroll  q back".into()
        } else {
            "↑↓ scroll  Space page  q back".into()
        };
        self.screen = Screen::View { lines, scroll: 0 };
        Ok(())
    }

    fn restore_selected(&mut self, target: &Path) -> Result<()> {
        let Some(path) = self.selected_path() else {
            return Ok(());
        };
        let (_, snapshot) = self.open.as_ref().expect("a snapshot is open");
        let options = RestoreOptions {
            target: target.to_path_buf(),
            subpath: Some(path.clone()),
            ..RestoreOptions::default()
        };
        let summary = cairn_core::restore(
            self.repository,
            snapshot,
            &options,
            &cairn_core::progress::Silent,
        )?;
        self.status = format!(
            "restored {} to {}: {} files, {} directories{}",
            path.display(),
            target.display(),
            summary.files,
            summary.dirs,
            if summary.is_complete() {
                String::new()
            } else {
                format!(", {} entries failed", summary.errors)
            }
        );
        Ok(())
    }
}

/// A pattern that matches exactly `path`: glob characters escaped.
fn literal_pattern(path: &Path) -> String {
    let mut pattern = String::new();
    for c in path.to_string_lossy().chars() {
        if "*?[]{}\\!".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// Takes at most [`VIEW_LIMIT`] bytes, then fails, which ends `cat`.
struct Bounded(Vec<u8>);

impl Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = VIEW_LIMIT - self.0.len();
        if room == 0 {
            return Err(std::io::Error::other("the viewer shows the first MiB"));
        }
        let n = room.min(bytes.len());
        self.0.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_patterns_escape_globs() {
        assert_eq!(literal_pattern(Path::new("/a/b*c?")), "/a/b\\*c\\?");
        assert_eq!(literal_pattern(Path::new("/x/[1]")), "/x/\\[1\\]");
    }
}
