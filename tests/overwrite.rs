//! Restoring into a target that already holds files: `--overwrite`,
//! `--delete` and the dry run that previews them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::util::{file_contents, noise, Env};

/// `restore --json`: each path's (action, reason), and the summary.
fn restore_json(
    env: &Env,
    snapshot: &str,
    target: &Path,
    extra: &[&str],
) -> (BTreeMap<String, (String, String)>, Value) {
    let mut args = vec![
        "restore",
        snapshot,
        "--target",
        target.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut actions = BTreeMap::new();
    let mut summary = Value::Null;
    for line in env.ok(&args).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        match v["message_type"].as_str() {
            Some("action") => {
                actions.insert(
                    v["path"].as_str().unwrap().to_string(),
                    (
                        v["action"].as_str().unwrap().to_string(),
                        v["reason"].as_str().unwrap().to_string(),
                    ),
                );
            }
            Some("summary") => summary = v,
            _ => panic!("unexpected line {line}"),
        }
    }
    (actions, summary)
}

fn set_mtime(path: &Path, secs: i64) {
    let time = filetime::FileTime::from_unix_time(secs, 0);
    filetime::set_symlink_file_times(path, time, time).unwrap();
}

/// A source with a few files, backed up; returns it.
fn source(env: &Env) -> std::path::PathBuf {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("keep.bin"), noise(300_000, 1)).unwrap();
    fs::write(src.join("edit.txt"), b"version one").unwrap();
    fs::write(src.join("dir/gone.txt"), b"removed later").unwrap();
    std::os::unix::fs::symlink("keep.bin", src.join("link")).unwrap();
    env.backup(&[&src], &[]);
    src
}

#[test]
fn restoring_over_an_earlier_restore_writes_only_what_changed() {
    let env = Env::new();
    let src = source(&env);
    let target = env.path("t");
    let first = format!("latest:{}", src.display());
    restore_json(&env, &first, &target, &[]);
    // A second name for keep.bin: it stays one file if not rewritten.
    let probe = env.path("probe");
    fs::hard_link(target.join("keep.bin"), &probe).unwrap();

    fs::write(src.join("edit.txt"), b"version two, longer").unwrap();
    fs::write(src.join("dir/new.txt"), b"new").unwrap();
    fs::remove_file(src.join("dir/gone.txt")).unwrap();
    env.backup(&[&src], &[]);
    let (actions, summary) = restore_json(&env, &first, &target, &[]);
    let action = |path: &str| actions[path].clone();
    let pair = |a: &str, r: &str| (a.to_string(), r.to_string());
    assert_eq!(action("/keep.bin"), pair("skip", "unchanged"));
    assert_eq!(action("/link"), pair("skip", "unchanged"));
    assert_eq!(action("/edit.txt"), pair("write", "changed"));
    assert_eq!(action("/dir/new.txt"), pair("write", "new"));
    assert_eq!(action("/dir"), pair("write", "exists"));
    assert!(!actions.contains_key("/dir/gone.txt"));
    assert_eq!(summary["files"], 2);
    assert_eq!(summary["skipped"], 2);
    assert_eq!(summary["bytes"], 19 + 3);
    assert_eq!(fs::metadata(&probe).unwrap().nlink(), 2, "not rewritten");
    // Without --delete what the snapshot lacks stays; with it, it goes.
    assert!(target.join("dir/gone.txt").exists());
    let (actions, summary) = restore_json(&env, &first, &target, &["--delete"]);
    assert_eq!(actions["/dir/gone.txt"], pair("delete", "not in snapshot"));
    assert_eq!(summary["deleted"], 1);
    assert_eq!(file_contents(&target), file_contents(&src));
}

#[test]
fn if_changed_reads_content_when_size_and_mtime_agree() {
    let env = Env::new();
    let src = source(&env);
    let target = env.path("t");
    let snapshot = format!("latest:{}", src.display());
    restore_json(&env, &snapshot, &target, &[]);
    // Same length, same mtime, one byte different.
    let file = target.join("keep.bin");
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    bytes[150_000] ^= 1;
    fs::write(&file, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (actions, _) = restore_json(&env, &snapshot, &target, &[]);
    assert_eq!(actions["/keep.bin"], ("write".into(), "changed".into()));
    assert!(fs::read(&file).unwrap() == fs::read(src.join("keep.bin")).unwrap());
}

#[test]
fn each_overwrite_policy_keeps_or_replaces_as_it_says() {
    let env = Env::new();
    let src = source(&env);
    let snapshot = format!("latest:{}", src.display());
    let source_mtime = fs::metadata(src.join("edit.txt")).unwrap().mtime();
    let prepare = |name: &str, mtime: i64| {
        let target = env.path(name);
        restore_json(&env, &snapshot, &target, &[]);
        fs::write(target.join("edit.txt"), b"local edit").unwrap();
        set_mtime(&target.join("edit.txt"), mtime);
        target
    };
    let content = |target: &Path| fs::read(target.join("edit.txt")).unwrap();

    let never = prepare("never", source_mtime - 100);
    let (actions, _) = restore_json(&env, &snapshot, &never, &["--overwrite", "never"]);
    assert_eq!(actions["/edit.txt"], ("skip".into(), "kept".into()));
    assert_eq!(content(&never), b"local edit");

    let newer = prepare("newer", source_mtime + 100);
    let (actions, _) = restore_json(&env, &snapshot, &newer, &["--overwrite", "if-newer"]);
    assert_eq!(actions["/edit.txt"], ("skip".into(), "not newer".into()));
    assert_eq!(content(&newer), b"local edit");

    let older = prepare("older", source_mtime - 100);
    let (actions, _) = restore_json(&env, &snapshot, &older, &["--overwrite", "if-newer"]);
    assert_eq!(actions["/edit.txt"], ("write".into(), "newer".into()));
    assert_eq!(content(&older), b"version one");

    let always = prepare("always", source_mtime);
    // A second name for the old file: replaced, keep.bin is another file.
    let probe = env.path("probe");
    fs::hard_link(always.join("keep.bin"), &probe).unwrap();
    let (actions, _) = restore_json(&env, &snapshot, &always, &["--overwrite", "always"]);
    assert_eq!(actions["/keep.bin"], ("write".into(), "replaced".into()));
    assert_eq!(fs::metadata(&probe).unwrap().nlink(), 1, "rewritten");
    assert_eq!(content(&always), b"version one");
}

#[test]
fn delete_stays_below_the_snapshot_paths_and_spares_excluded_names() {
    let env = Env::new();
    let src = source(&env);
    let target = env.path("t");
    // A whole-snapshot restore: the target stands for `/`, which was not
    // backed up; only below the source path are extras removed.
    restore_json(&env, "latest", &target, &[]);
    let inside = crate::util::restored(&target, &src);
    fs::write(target.join("outside.txt"), b"not below a source path").unwrap();
    fs::write(inside.join("extra.txt"), b"extra").unwrap();
    fs::create_dir_all(inside.join("extra-dir/nested")).unwrap();
    fs::write(inside.join("extra-dir/nested/f"), b"f").unwrap();
    fs::write(inside.join("local.log"), b"excluded from the restore").unwrap();
    let (actions, summary) = restore_json(
        &env,
        "latest",
        &target,
        &["--delete", "--exclude", "*.log", "--dry-run"],
    );
    let shown = |name: &str| format!("{}/{name}", src.display());
    assert_eq!(actions[&shown("extra.txt")].0, "delete");
    assert_eq!(actions[&shown("extra-dir")].0, "delete");
    assert_eq!(summary["deleted"], 2);
    assert!(
        inside.join("extra.txt").exists(),
        "a dry run deletes nothing"
    );
    restore_json(&env, "latest", &target, &["--delete", "--exclude", "*.log"]);
    assert!(target.join("outside.txt").exists());
    assert!(inside.join("local.log").exists());
    assert!(!inside.join("extra.txt").exists());
    assert!(!inside.join("extra-dir").exists());

    // A subpath restore: the target is that directory.
    let sub = env.path("sub");
    let dir = format!("latest:{}", src.join("dir").display());
    restore_json(&env, &dir, &sub, &[]);
    fs::write(sub.join("stray"), b"x").unwrap();
    restore_json(&env, &dir, &sub, &["--delete"]);
    assert!(!sub.join("stray").exists());
    // One file restored into a directory leaves its neighbours alone.
    let one = env.path("one");
    fs::create_dir(&one).unwrap();
    fs::write(one.join("neighbour"), b"mine").unwrap();
    let file = format!("latest:{}", src.join("edit.txt").display());
    restore_json(&env, &file, &one, &["--delete"]);
    assert!(one.join("neighbour").exists());
    assert!(one.join("edit.txt").exists());
}

#[test]
fn a_dry_run_lists_each_path_with_its_reason_and_changes_nothing() {
    let env = Env::new();
    let src = source(&env);
    let target = env.path("t");
    let snapshot = format!("latest:{}", src.display());
    restore_json(&env, &snapshot, &target, &[]);
    fs::write(target.join("edit.txt"), b"edited").unwrap();
    fs::write(target.join("extra"), b"extra").unwrap();
    let before = file_contents(&target);
    let out = env.ok(&[
        "restore",
        &snapshot,
        "--target",
        target.to_str().unwrap(),
        "--dry-run",
        "--delete",
    ]);
    assert!(out.contains("write  /edit.txt  (changed)"), "{out}");
    assert!(out.contains("skip   /keep.bin  (unchanged)"), "{out}");
    assert!(out.contains("delete /extra  (not in snapshot)"), "{out}");
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("would restore 1 files"), "{last}");
    assert!(
        last.contains("would leave 3 entries as they were, would delete 1"),
        "{last}"
    );
    assert_eq!(file_contents(&target), before);
}

#[test]
fn delete_is_refused_for_an_incomplete_snapshot() {
    let env = Env::new();
    env.init();
    let present = env.path("present");
    fs::create_dir(&present).unwrap();
    fs::write(present.join("f"), b"x").unwrap();
    let missing = env.path("missing");
    let out = env.run(&[
        "backup",
        present.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let target = env.path("t");
    let snapshot = format!("latest:{}", present.display());
    restore_json(&env, &snapshot, &target, &[]);
    fs::write(target.join("mine"), b"keep me").unwrap();
    let out = env.run(&[
        "restore",
        &snapshot,
        "--target",
        target.to_str().unwrap(),
        "--delete",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let message = crate::util::stderr(&out);
    assert!(message.contains("incomplete"), "{message}");
    assert_eq!(fs::read(target.join("mine")).unwrap(), b"keep me");
}

#[test]
fn delete_keeps_a_directory_an_exclude_may_match_inside() {
    let env = Env::new();
    let src = source(&env);
    let target = env.path("t");
    let snapshot = format!("latest:{}", src.display());
    restore_json(&env, &snapshot, &target, &[]);
    fs::create_dir_all(target.join("old/deeper")).unwrap();
    fs::write(target.join("old/deeper/id.key"), b"secret").unwrap();
    fs::write(target.join("old/junk"), b"junk").unwrap();
    fs::create_dir_all(target.join("plain-old")).unwrap();
    fs::write(target.join("plain-old/junk"), b"junk").unwrap();
    let (actions, _) = restore_json(
        &env,
        &snapshot,
        &target,
        &["--delete", "--exclude", "*.key"],
    );
    assert_eq!(
        fs::read(target.join("old/deeper/id.key")).unwrap(),
        b"secret"
    );
    assert!(!actions.contains_key("/old"), "{actions:?}");
    assert_eq!(actions["/plain-old"].0, "delete");
    assert!(!target.join("plain-old").exists());
}
