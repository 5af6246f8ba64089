//! Restore never writes outside its target, whatever the snapshot or the
//! target already holds.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use cairn_core::backend::LocalBackend;
use cairn_core::blob::BlobType;
use cairn_core::snapshot::{Snapshot, Summary};
use cairn_core::tree::{Node, NodeKind, Timestamp, Tree};
use cairn_core::Repository;

use crate::util::{restored, stderr, Env};

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        mtime: Timestamp::default(),
        atime: Timestamp::default(),
        ctime: Timestamp::default(),
        device: 0,
        inode: 0,
        links: 1,
        xattrs: vec![],
    }
}

/// Writes a snapshot whose root tree is `nodes`, exactly as given: what a
/// hostile or buggy writer could store.
fn store_crafted_snapshot(
    env: &Env,
    build: impl FnOnce(&mut cairn_core::repository::BlobWriter<'_>) -> Vec<Node>,
) {
    let repo = Repository::open(
        Box::new(LocalBackend::new(&env.repo)),
        b"correct horse",
        &env.cache,
    )
    .unwrap();
    let mut writer = repo.start_write(3).unwrap();
    let nodes = build(&mut writer);
    let root = writer
        .add_blob(BlobType::Tree, Tree { nodes }.encode())
        .unwrap();
    let snapshot = Snapshot {
        time_ns: 0,
        hostname: "evil".into(),
        username: "evil".into(),
        paths: vec![b"/x".to_vec()],
        tags: vec![],
        parent: None,
        tree: root,
        program_version: "crafted".into(),
        summary: Summary::default(),
        unreadable: vec![],
    };
    writer.commit(&snapshot).unwrap();
}

fn file_node(
    writer: &mut cairn_core::repository::BlobWriter<'_>,
    name: &[u8],
    content: &[u8],
) -> Node {
    let id = writer.add_blob(BlobType::Data, content.to_vec()).unwrap();
    node(
        name,
        NodeKind::File {
            size: content.len() as u64,
            content: vec![id],
            sparse: false,
        },
    )
}

fn assert_nothing_escaped(env: &Env) {
    for name in ["escape", "outside-file"] {
        assert!(
            !env.path(name).exists(),
            "{name} was written outside the target"
        );
    }
    assert!(
        fs::read_dir(env.path("outside")).unwrap().next().is_none(),
        "outside/ was written to"
    );
}

#[test]
fn names_with_dot_dot_or_slash_are_refused() {
    for bad in [&b".."[..], b"../escape", b"a/../../escape", b"/escape"] {
        let env = Env::new();
        env.init();
        fs::create_dir(env.path("outside")).unwrap();
        store_crafted_snapshot(&env, |w| vec![file_node(w, bad, b"pwned")]);
        let target = env.path("t/inner");
        let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "name {bad:?}");
        assert!(
            stderr(&out).contains("unsafe entry name"),
            "{}",
            stderr(&out)
        );
        assert_nothing_escaped(&env);
        assert!(!env.path("t/escape").exists());
    }
}

#[test]
fn a_symlink_and_a_directory_of_the_same_name_are_refused() {
    let env = Env::new();
    env.init();
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    store_crafted_snapshot(&env, |w| {
        let file = file_node(w, b"f", b"pwned");
        let subtree = w
            .add_blob(BlobType::Tree, Tree { nodes: vec![file] }.encode())
            .unwrap();
        vec![
            node(
                b"a",
                NodeKind::Symlink {
                    target: outside.as_os_str().as_encoded_bytes().to_vec(),
                },
            ),
            node(b"a", NodeKind::Directory { subtree }),
        ]
    });
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        env.path("t").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_nothing_escaped(&env);
}

#[test]
fn symlinks_already_in_the_target_are_not_followed() {
    let env = Env::new();
    env.init();
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let source = env.path("source");
    fs::create_dir_all(source.join("dir")).unwrap();
    fs::write(source.join("dir/file"), b"from the snapshot").unwrap();
    fs::write(source.join("top"), b"top file").unwrap();
    env.backup(&[&source], &[]);

    // The target already holds symlinks, pointing out, where the snapshot
    // has a directory and a file.
    let target = env.path("t");
    let base = restored(&target, &source);
    fs::create_dir_all(&base).unwrap();
    symlink(&outside, base.join("dir")).unwrap();
    symlink(outside.join("outside-file"), base.join("top")).unwrap();
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);

    assert_nothing_escaped(&env);
    assert!(fs::symlink_metadata(base.join("dir")).unwrap().is_dir());
    assert_eq!(
        fs::read(base.join("dir/file")).unwrap(),
        b"from the snapshot"
    );
    assert_eq!(fs::read(base.join("top")).unwrap(), b"top file");
}

#[test]
fn restored_symlinks_are_not_followed_by_later_entries() {
    // A snapshot's own symlink to the outside, restored before a file of a
    // later backup lands at the same path, must be replaced, not followed.
    let env = Env::new();
    env.init();
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let source = env.path("source");
    fs::create_dir(&source).unwrap();
    symlink(&outside, source.join("x")).unwrap();
    env.backup(&[&source], &[]);
    fs::remove_file(source.join("x")).unwrap();
    fs::create_dir(source.join("x")).unwrap();
    fs::write(source.join("x/f"), b"inside").unwrap();
    env.backup(&[&source], &[]);

    let target = env.path("t");
    let snapshots = env.snapshots();
    for snapshot in &snapshots {
        let id = snapshot["short_id"].as_str().unwrap();
        env.ok(&["restore", id, "--target", target.to_str().unwrap()]);
    }
    assert_nothing_escaped(&env);
    assert_eq!(
        fs::read(restored(&target, &source).join("x/f")).unwrap(),
        b"inside"
    );
    assert!(Path::new(&restored(&target, &source).join("x")).is_dir());
}
