//! Every way of leaving things out of a backup.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{is_root, restored, stderr, Env};

/// A tree with something for every exclude option to catch.
fn tree(env: &Env) -> PathBuf {
    let root = env.path("src");
    for dir in [
        "docs/deep",
        "build/out",
        "cache",
        "fake-cache",
        "private",
        "node_modules/pkg",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    for file in [
        "docs/a.txt",
        "docs/deep/b.txt",
        "docs/notes.LOG",
        "debug.log",
        "docs/deep/trace.log",
        "build/out/app",
        "private/secret",
        "node_modules/pkg/index.js",
        "fake-cache/data",
        "cache/data",
    ] {
        fs::write(root.join(file), file.as_bytes()).unwrap();
    }
    fs::write(
        root.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# made by a test\n",
    )
    .unwrap();
    fs::write(root.join("fake-cache/CACHEDIR.TAG"), b"not the signature").unwrap();
    fs::write(root.join("private/.nobackup"), b"").unwrap();
    fs::write(root.join("big.iso"), vec![7u8; 3 * 1024 * 1024]).unwrap();
    fs::write(root.join("small.bin"), vec![7u8; 1024]).unwrap();
    root
}

/// Backs up `src` with `options` and returns what was restored, as sorted
/// paths relative to `src`.
fn backed_up(env: &Env, src: &Path, options: &[&str]) -> Vec<String> {
    let mut args = vec!["backup", src.to_str().unwrap()];
    args.extend_from_slice(options);
    env.ok(&args);
    let target = env.path(&format!("t{}", env.snapshots().len()));
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let base = restored(&target, src);
    let mut out = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            } else {
                out.push(path.strip_prefix(&base).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn has(list: &[String], name: &str) -> bool {
    list.iter().any(|p| p == name)
}

#[test]
fn patterns_anchored_unanchored_and_double_star() {
    let env = Env::new();
    env.init();
    let src = tree(&env);
    let anchored = format!("{}/build", src.display());
    let kept = backed_up(
        &env,
        &src,
        &[
            "--exclude",
            "*.log",
            "--exclude",
            &anchored,
            "--exclude",
            "**/node_modules",
        ],
    );
    assert!(
        !has(&kept, "debug.log") && !has(&kept, "docs/deep/trace.log"),
        "{kept:?}"
    );
    assert!(has(&kept, "docs/notes.LOG"), "case-sensitive: {kept:?}");
    assert!(!kept.iter().any(|p| p.starts_with("build/")), "{kept:?}");
    assert!(
        !kept.iter().any(|p| p.starts_with("node_modules/")),
        "{kept:?}"
    );
    assert!(has(&kept, "docs/a.txt") && has(&kept, "docs/deep/b.txt"));

    // Character classes and `?`, unanchored.
    let kept = backed_up(&env, &src, &["--exclude", "[bt]?txt"]);
    assert!(!has(&kept, "docs/deep/b.txt"), "{kept:?}");
    assert!(has(&kept, "docs/a.txt"), "{kept:?}");
    // `!` re-includes what an earlier pattern excluded.
    let kept = backed_up(&env, &src, &["--exclude", "*.txt", "--exclude", "!a.txt"]);
    assert!(has(&kept, "docs/a.txt"), "{kept:?}");
    assert!(!has(&kept, "docs/deep/b.txt"), "{kept:?}");
}

#[test]
fn case_insensitive_patterns() {
    let env = Env::new();
    env.init();
    let src = tree(&env);
    let kept = backed_up(&env, &src, &["--iexclude", "*.log"]);
    assert!(
        !has(&kept, "docs/notes.LOG") && !has(&kept, "debug.log"),
        "{kept:?}"
    );
    assert!(has(&kept, "docs/a.txt"));
}

#[test]
fn exclude_files_with_comments() {
    let env = Env::new();
    env.init();
    let src = tree(&env);
    let file = env.path("excludes");
    fs::write(&file, "# build output\n\n*.log\nnode_modules/\n").unwrap();
    let ifile = env.path("iexcludes");
    fs::write(&ifile, "*.ISO\n").unwrap();
    let kept = backed_up(
        &env,
        &src,
        &[
            "--exclude-file",
            file.to_str().unwrap(),
            "--iexclude-file",
            ifile.to_str().unwrap(),
        ],
    );
    assert!(
        !has(&kept, "debug.log") && !has(&kept, "big.iso"),
        "{kept:?}"
    );
    assert!(
        !kept.iter().any(|p| p.starts_with("node_modules")),
        "{kept:?}"
    );
    assert!(has(&kept, "docs/notes.LOG"));
    let out = env.run(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude-file",
        env.path("missing").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing"));
}

#[test]
fn caches_and_marker_files() {
    let env = Env::new();
    env.init();
    let src = tree(&env);
    let kept = backed_up(
        &env,
        &src,
        &["--exclude-caches", "--exclude-if-present", ".nobackup"],
    );
    assert!(
        !kept.iter().any(|p| p.starts_with("cache/")),
        "tagged cache left out: {kept:?}"
    );
    assert!(
        has(&kept, "fake-cache/data"),
        "a tag without the signature does not count: {kept:?}"
    );
    assert!(!kept.iter().any(|p| p.starts_with("private/")), "{kept:?}");
    let all = backed_up(&env, &src, &[]);
    assert!(has(&all, "cache/data") && has(&all, "private/secret"));
}

#[test]
fn larger_than() {
    let env = Env::new();
    env.init();
    let src = tree(&env);
    let kept = backed_up(&env, &src, &["--exclude-larger-than", "1M"]);
    assert!(
        !has(&kept, "big.iso") && has(&kept, "small.bin"),
        "{kept:?}"
    );
    let out = env.run(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude-larger-than",
        "lots",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exclude-larger-than"));
}

#[test]
fn one_file_system_records_the_mount_point_but_not_its_contents() {
    if !is_root() {
        eprintln!("needs root to mount a file system; skipped");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("mnt")).unwrap();
    fs::write(src.join("local"), b"same fs").unwrap();
    let cairn = assert_cmd::cargo::cargo_bin("cairn");
    let script = format!(
        "mount -t tmpfs tmpfs '{src}/mnt' && echo other > '{src}/mnt/other-fs' && \
         {variables} '{cairn}' backup -q -x '{src}' && \
         {variables} '{cairn}' backup -q '{src}'",
        src = src.display(),
        variables = env.shell_variables(),
        cairn = cairn.display(),
    );
    let out = crate::util::without_cairn_env(&mut Command::new("unshare"))
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let snapshots = env.snapshots();
    let first = snapshots[0]["id"].as_str().unwrap();
    let second = snapshots[1]["id"].as_str().unwrap();
    let t1 = env.restore(first, "t1", &[]);
    assert!(restored(&t1, &src).join("mnt").is_dir());
    assert!(!restored(&t1, &src).join("mnt/other-fs").exists());
    assert!(restored(&t1, &src).join("local").exists());
    let t2 = env.restore(second, "t2", &[]);
    assert!(restored(&t2, &src).join("mnt/other-fs").exists());
}

#[test]
fn excludes_never_apply_to_the_named_paths_or_above() {
    let env = Env::new();
    env.init();
    let src = tree(&env);
    // "src" matches the source itself and "tmp*" a directory above it.
    let kept = backed_up(
        &env,
        &src,
        &[
            "--exclude",
            "src",
            "--exclude",
            "tmp*",
            "--exclude",
            ".tmp*",
        ],
    );
    assert!(has(&kept, "docs/a.txt"), "{kept:?}");
}

/// The files below `base`, as sorted paths relative to it.
fn files_below(base: &Path) -> Vec<String> {
    let mut out: Vec<String> = crate::util::walk_files(base)
        .iter()
        .map(|p| p.strip_prefix(base).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn backup_and_restore_read_a_pattern_the_same_way() {
    // One dialect: `--exclude PATTERN` leaves out the same entries whether
    // backup or restore is given it, and `--include` selects its mirror.
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for dir in ["x/a/b", "y/a", "a", "keep/a/b"] {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    for file in [
        "x/a/b/in-dir",
        "y/a/b",
        "a/b.txt",
        "a/B",
        "keep/a/b/kept",
        "notes.TXT",
        "notes.md",
    ] {
        fs::write(src.join(file), file.as_bytes()).unwrap();
    }
    let full = env.backup(&[&src], &[]);
    let full_id = full["snapshot_id"].as_str().unwrap().to_string();
    let cases: &[&[&str]] = &[
        // Unanchored with an inner slash: at any depth.
        &["--exclude", "a/b"],
        // A trailing slash: directories only (x/a/b, keep/a/b; not y/a/b).
        &["--exclude", "a/b/"],
        // The last matching pattern decides; `!` takes back.
        &["--exclude", "a/b", "--exclude", "!/**/keep/a/b"],
        // Case-insensitive patterns.
        &["--iexclude", "*.txt"],
        &["--iexclude", "b"],
    ];
    for (n, options) in cases.iter().enumerate() {
        let by_backup = backed_up(&env, &src, options);
        let target = env.restore(&full_id, &format!("r{n}"), options);
        let by_restore = files_below(&restored(&target, &src));
        assert_eq!(by_backup, by_restore, "{options:?}");
        assert!(by_backup.contains(&"notes.md".to_string()), "{options:?}");
    }
    let kept = backed_up(&env, &src, &["--exclude", "a/b"]);
    assert_eq!(kept, ["a/B", "a/b.txt", "notes.TXT", "notes.md"]);
    let kept = backed_up(&env, &src, &["--exclude", "a/b/"]);
    assert!(kept.contains(&"y/a/b".to_string()), "{kept:?}");
    assert!(!kept.iter().any(|p| p.starts_with("x/")), "{kept:?}");
    let kept = backed_up(
        &env,
        &src,
        &["--exclude", "a/b", "--exclude", "!/**/keep/a/b"],
    );
    assert!(kept.contains(&"keep/a/b/kept".to_string()), "{kept:?}");
    assert!(!kept.contains(&"y/a/b".to_string()), "{kept:?}");

    // Includes read patterns the same way: `--iinclude` and a take-back.
    let target = env.restore(
        &full_id,
        "inc",
        &[
            "--iinclude",
            "*.txt",
            "--include",
            "a/b",
            "--include",
            "!/**/x/a/b",
        ],
    );
    assert_eq!(
        files_below(&restored(&target, &src)),
        ["a/b.txt", "keep/a/b/kept", "notes.TXT", "y/a/b"]
    );
}
