//! Restore never writes outside its target, whatever the snapshot or the
//! target already holds.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use cairn_core::{BlobType, BlobWriter, Node, NodeKind, Repository, Snapshot, Summary, Tree};

use crate::util::{restored, stderr, Env};

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        mode: 0o755,
        ..Node::new(name.to_vec(), kind)
    }
}

/// Writes a snapshot whose root tree is `nodes`, exactly as given: what a
/// hostile or buggy writer could store.
fn store_crafted_snapshot(env: &Env, build: impl FnOnce(&mut BlobWriter<'_>) -> Vec<Node>) {
    let repo = Repository::open(
        crate::util::open_store(&env.location()),
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
        original: None,
    };
    writer.commit(&snapshot).unwrap();
}

fn file_node(writer: &mut BlobWriter<'_>, name: &[u8], content: &[u8]) -> Node {
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
fn unsafe_names_are_refused_one_by_one_and_the_rest_restored() {
    for bad in [
        &b".."[..],
        b".",
        b"",
        b"../escape",
        b"a/../../escape",
        b"/escape",
        b"nul\0byte",
    ] {
        let env = Env::new();
        env.init();
        fs::create_dir(env.path("outside")).unwrap();
        store_crafted_snapshot(&env, |w| {
            let mut nodes = vec![
                file_node(w, bad, b"pwned"),
                file_node(w, b"zz-good", b"fine"),
            ];
            // Sorted, as a writer would: the unsafe name is refused for
            // what it is, not for its place.
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes
        });
        let target = env.path("t/inner");
        let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "name {bad:?}");
        assert!(
            stderr(&out).contains("unsafe entry name"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            fs::read(target.join("zz-good")).unwrap(),
            b"fine",
            "name {bad:?}"
        );
        assert_nothing_escaped(&env);
        assert!(!env.path("t/escape").exists());
        // check calls the tree what it is: damaged; ls hides nothing.
        assert_eq!(env.run(&["check"]).status.code(), Some(1));
        let ls = env.run(&["ls", "latest"]);
        assert_eq!(ls.status.code(), Some(1), "name {bad:?}");
        assert!(stderr(&ls).contains("unsafe entry name"), "{}", stderr(&ls));
    }
}

#[test]
fn a_repeated_name_is_refused_and_the_first_entry_restored() {
    let env = Env::new();
    env.init();
    fs::create_dir(env.path("outside")).unwrap();
    store_crafted_snapshot(&env, |w| {
        vec![
            file_node(w, b"same", b"first"),
            file_node(w, b"same", b"second"),
            file_node(w, b"other", b"other"),
        ]
    });
    let target = env.path("t");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/same"), "{}", stderr(&out));
    assert_eq!(fs::read(target.join("same")).unwrap(), b"first");
    // Out of order, "other" follows "same" and is refused as well.
    assert!(!target.join("other").exists());
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

/// Stores a snapshot whose root holds a chain of `depth` directories named
/// `d`, with a file `leaf` holding `content` at the bottom.
fn store_deep_chain(env: &Env, depth: usize, content: &[u8]) {
    store_crafted_snapshot(env, |w| {
        let mut nodes = vec![file_node(w, b"leaf", content)];
        for _ in 0..depth {
            let subtree = w.add_blob(BlobType::Tree, Tree { nodes }.encode()).unwrap();
            nodes = vec![node(b"d", NodeKind::Directory { subtree })];
        }
        nodes.push(file_node(w, b"other", b"not selected"));
        nodes
    });
}

/// Stores a snapshot whose trees form a DAG `levels` deep: the tree of each
/// level has entries `a` and `b` that both point at the tree of the next
/// (with `level_files`, also a file `f<level>`), and the last holds a file
/// `leaf`. Walked naively, it has 2^levels paths.
fn store_dag(env: &Env, levels: usize, level_files: bool) {
    store_crafted_snapshot(env, |w| {
        let mut nodes = vec![file_node(w, b"leaf", b"at the bottom")];
        for level in (0..levels).rev() {
            let subtree = w.add_blob(BlobType::Tree, Tree { nodes }.encode()).unwrap();
            nodes = vec![
                node(b"a", NodeKind::Directory { subtree }),
                node(b"b", NodeKind::Directory { subtree }),
            ];
            if level_files {
                let name = format!("f{level}");
                let content = format!("level {level}");
                nodes.push(file_node(w, name.as_bytes(), content.as_bytes()));
            }
        }
        nodes
    });
}

fn assert_no_crash(out: &std::process::Output) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), None, "killed: {}", stderr(out));
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

/// Levels of the deep chain: paths through it are far longer than PATH_MAX.
const DEEP: usize = 10_000;

#[test]
fn a_dry_run_lists_a_tree_thousands_of_levels_deep() {
    let env = Env::new();
    env.init();
    store_deep_chain(&env, DEEP, b"deep down");
    let target = env.path("t");
    let out = env.try_restore("latest", "t", &["--dry-run"]);
    assert_no_crash(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The listing is the walk's order: the chain, its leaf, then the
    // sibling of its top, then the summary.
    let leaf = "/d".repeat(DEEP) + "/leaf";
    let tail = &out.stdout[out.stdout.len() - leaf.len() - 200..];
    let tail = String::from_utf8_lossy(tail);
    let lines: Vec<&str> = tail.lines().rev().take(3).collect();
    assert!(
        lines[0].starts_with(&format!("would restore 2 files, {DEEP} directories")),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "write  /other  (new)");
    assert_eq!(lines[2], format!("write  {leaf}  (new)"));
    assert!(!target.exists());
}

#[test]
fn an_include_below_paths_too_long_to_create_is_one_error() {
    let env = Env::new();
    env.init();
    store_deep_chain(&env, DEEP, b"deep down");
    let target = env.path("t");
    let out = env.try_restore("latest", "t", &["--include", "leaf"]);
    assert_no_crash(&out);
    // Beyond PATH_MAX, directories cannot be created: one error says so,
    // and nothing below it is tried.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let errors = stderr(&out);
    assert_eq!(errors.matches("cairn: warning:").count(), 1, "{errors}");
    assert!(errors.contains("File name too long"), "{errors}");
    assert!(!target.join("other").exists());
    assert!(target.join("d/d/d").is_dir());
}

#[test]
fn an_include_matching_nothing_in_a_deep_tree_creates_nothing() {
    let env = Env::new();
    env.init();
    store_deep_chain(&env, DEEP, b"deep down");
    let target = env.path("t");
    let out = env.try_restore("latest", "t", &["--include", "nomatch"]);
    assert_no_crash(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fs::read_dir(&target).unwrap().next().is_none());
}

#[test]
fn an_include_deep_in_a_chain_restores_only_its_match() {
    let env = Env::new();
    env.init();
    store_deep_chain(&env, 300, b"three hundred down");
    let target = env.restore("latest", "t", &["--include", "leaf"]);
    let leaf = target.join("d/".repeat(300)).join("leaf");
    assert_eq!(fs::read(&leaf).unwrap(), b"three hundred down");
    assert!(!target.join("other").exists());
    assert_eq!(fs::read_dir(leaf.parent().unwrap()).unwrap().count(), 1);

    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        env.path("dry").to_str().unwrap(),
        "--include",
        "leaf",
        "--dry-run",
    ]);
    let listed: Vec<&str> = out.lines().collect();
    assert_eq!(listed.len(), 302, "300 directories, the leaf, the summary");
    for (i, line) in listed[..300].iter().enumerate() {
        let dir = "/d".repeat(i + 1);
        assert_eq!(
            *line,
            format!("write  {dir}  (new)"),
            "directories outermost first"
        );
    }
    assert_eq!(
        listed[300],
        format!("write  {}/leaf  (new)", "/d".repeat(300))
    );
    assert!(listed[301].starts_with("would restore 1 files, 300 directories"));
}

#[test]
fn a_subtree_referenced_many_times_is_not_walked_many_times() {
    let env = Env::new();
    env.init();
    store_dag(&env, 60, true);

    // Nothing matches: each shared subtree is found barren once.
    let nothing = env.path("nothing");
    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        nothing.to_str().unwrap(),
        "--include",
        "nomatch",
    ]);
    assert!(out.contains("restored 0 files, 0 directories"), "{out}");
    assert!(fs::read_dir(&nothing).unwrap().next().is_none());

    // An anchored include leads down one path, off which nothing can match.
    let target = env.restore("latest", "one", &["--include", "/a/a/a/f3"]);
    assert_eq!(fs::read(target.join("a/a/a/f3")).unwrap(), b"level 3");
    assert!(!target.join("b").exists());
    assert!(!target.join("a/f1").exists());
    assert!(!target.join("a/a/a/a").exists());
    assert!(!target.join("a/a/a/b").exists());

    let bottom = format!("/{}leaf", "b/".repeat(60));
    let target = env.restore("latest", "bottom", &["--include", &bottom]);
    let leaf = target.join(&bottom[1..]);
    assert_eq!(fs::read(&leaf).unwrap(), b"at the bottom");
    assert_eq!(crate::util::walk_files(&target), vec![leaf]);
}

#[test]
fn a_small_dag_restores_every_path() {
    let env = Env::new();
    env.init();
    store_dag(&env, 10, false);
    let target = env.restore("latest", "t", &[]);
    let files = crate::util::walk_files(&target);
    assert_eq!(files.len(), 1 << 10);
    for file in &files {
        assert_eq!(fs::read(file).unwrap(), b"at the bottom");
        let below = file.strip_prefix(&target).unwrap();
        assert_eq!(below.components().count(), 11, "{}", below.display());
    }
    let names: std::collections::HashSet<_> = files.iter().collect();
    assert_eq!(names.len(), 1 << 10);
}

#[test]
fn check_prune_and_repair_walk_a_tree_thousands_of_levels_deep() {
    let env = Env::new();
    env.init();
    store_deep_chain(&env, DEEP, b"deep down");
    for args in [
        &["check"][..],
        &["repair", "snapshots"],
        &["prune", "--dry-run"],
    ] {
        let out = env.run(args);
        assert_no_crash(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
}

/// `node`, as one name of the multiply-linked inode `inode`.
fn linked(mut node: Node, inode: u64) -> Node {
    node.links = 2;
    node.inode = inode;
    node.device = 7;
    node
}

#[test]
fn hard_links_are_made_only_inside_the_target_and_only_to_restored_content() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    env.init();
    fs::create_dir(env.path("outside")).unwrap();
    fs::write(env.path("outside-kept"), b"not yours").unwrap();
    store_crafted_snapshot(&env, |w| {
        let sub = Tree {
            nodes: vec![linked(file_node(w, b"b", b"one"), 77)],
        };
        let sub = w.add_blob(BlobType::Tree, sub.encode()).unwrap();
        // `c` names a blob that is not stored: it fails, and `e`, the
        // next name of its inode, is written whole, not linked to it.
        let mut missing = linked(file_node(w, b"c", b"x"), 88);
        if let NodeKind::File { content, .. } = &mut missing.kind {
            content[0] = cairn_core::BlobId(cairn_core::Id([9; 32]));
        }
        vec![
            // The first name of inode 99 is refused: `f` is written whole.
            linked(file_node(w, b"..", b"pwned"), 99),
            linked(file_node(w, b"a", b"one"), 77),
            missing,
            node(b"d", NodeKind::Directory { subtree: sub }),
            linked(file_node(w, b"e", b"two"), 88),
            linked(file_node(w, b"f", b"three"), 99),
        ]
    });
    let target = env.path("t");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let inode = |path: &Path| fs::metadata(path).unwrap().ino();
    assert_eq!(inode(&target.join("a")), inode(&target.join("d/b")));
    assert_eq!(fs::read(target.join("d/b")).unwrap(), b"one");
    assert_eq!(fs::read(target.join("e")).unwrap(), b"two");
    assert_eq!(fs::metadata(target.join("e")).unwrap().nlink(), 1);
    assert_eq!(fs::read(target.join("f")).unwrap(), b"three");
    assert_eq!(fs::metadata(target.join("f")).unwrap().nlink(), 1);
    assert_eq!(fs::read(env.path("outside-kept")).unwrap(), b"not yours");
    assert_eq!(fs::metadata(env.path("outside-kept")).unwrap().nlink(), 1);
    assert_nothing_escaped(&env);
}
