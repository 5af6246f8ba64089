//! Tests of the whole restore pipeline.

use super::*;
use crate::id::BlobId;
use crate::object::blob::BlobType;
use crate::object::snapshot::Summary;
use crate::testing::memory_repository;

/// Records what a restore reports.
#[derive(Default)]
struct Recorder {
    restored: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
}

impl Progress for Recorder {
    fn warning(&self, path: &Path, message: &str) {
        let line = format!("{}: {message}", path.display());
        self.warnings.lock().unwrap().push(line);
    }

    fn restored(&self, path: &Path, _action: overwrite::Action) {
        self.restored
            .lock()
            .unwrap()
            .push(path.display().to_string());
    }
}

fn directory(name: &[u8], subtree: BlobId) -> Node {
    Node {
        mode: 0o755,
        ..Node::new(name.to_vec(), NodeKind::Directory { subtree })
    }
}

/// A snapshot whose root holds a chain of `depth` directories `d`, an
/// empty directory at the bottom, and an empty directory `z` after it.
fn chain_snapshot(repository: &Repository, depth: usize) -> Snapshot {
    let mut writer = repository.start_write(3).unwrap();
    let empty = writer
        .add_blob(BlobType::Tree, Tree::default().encode())
        .unwrap();
    let mut nodes = vec![];
    for _ in 0..depth {
        let subtree = writer
            .add_blob(BlobType::Tree, Tree { nodes }.encode())
            .unwrap();
        nodes = vec![directory(b"d", subtree)];
    }
    nodes.push(directory(b"z", empty));
    let tree = writer
        .add_blob(BlobType::Tree, Tree { nodes }.encode())
        .unwrap();
    writer.flush().unwrap();
    Snapshot {
        time_ns: 0,
        hostname: "h".into(),
        username: "u".into(),
        paths: vec![b"/x".to_vec()],
        tags: vec![],
        parent: None,
        tree,
        program_version: "test".into(),
        summary: Summary::default(),
        unreadable: vec![],
        original: None,
    }
}

#[test]
fn a_tree_deeper_than_the_bound_is_one_error_and_the_walk_goes_on() {
    let (_cache, repository) = memory_repository();
    let snapshot = chain_snapshot(&repository, 5);
    let options = RestoreOptions {
        target: PathBuf::from("/nonexistent"),
        dry_run: true,
        ..RestoreOptions::default()
    };
    let recorder = Recorder::default();
    let summary = restore_to_depth(&repository, &snapshot, &options, &recorder, 3).unwrap();
    // The root's tree is level 1, `/d`'s level 2, `/d/d`'s level 3.
    assert_eq!(
        *recorder.restored.lock().unwrap(),
        ["/d", "/d/d", "/z"],
        "the chain up to the bound, then the next entry"
    );
    let warnings = recorder.warnings.lock().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("/d/d/d: tree ") && warnings[0].ends_with("deeper than 3 levels"),
        "{warnings:?}"
    );
    assert_eq!(summary.errors, 1);
    assert_eq!(summary.dirs, 3);
}

#[test]
fn a_pending_directory_is_created_only_for_what_is_selected_below() {
    let (_cache, repository) = memory_repository();
    let snapshot = chain_snapshot(&repository, 3);
    let recorder = Recorder::default();
    let options = RestoreOptions {
        target: PathBuf::from("/nonexistent"),
        includes: vec!["/d/d/d".into(), "nomatch".into()],
        dry_run: true,
        ..RestoreOptions::default()
    };
    let summary = restore(&repository, &snapshot, &options, &recorder).unwrap();
    assert_eq!(*recorder.restored.lock().unwrap(), ["/d", "/d/d", "/d/d/d"]);
    assert_eq!(summary.dirs, 3);
    assert!(summary.is_complete());
}
