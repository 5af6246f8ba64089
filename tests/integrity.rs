//! Issue 8: damage must never turn into silent loss. A backup that exits 0
//! restores, `latest` means the latest, a damaged cache heals itself, a
//! foreign key cannot write, and repository files are private.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn_core::backend::ObjectKind;

use crate::util::{noise, restored, skip_unless_local, stderr, walk_files, without_cairn_env, Env};

/// A repository with one backup of a source holding a large and a small
/// file; returns the environment and the source.
fn backed_up() -> (Env, PathBuf) {
    let env = Env::new();
    env.init();
    let source = env.path("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("big"), noise(3 << 20, 11)).unwrap();
    fs::write(source.join("small"), b"small file\n").unwrap();
    env.backup(&[&source], &[]);
    (env, source)
}

fn assert_same_tree(source: &Path, target: &Path) {
    for name in ["big", "small"] {
        assert_eq!(
            fs::read(source.join(name)).unwrap(),
            fs::read(restored(target, source).join(name)).unwrap(),
            "{name} differs after restore"
        );
    }
}

fn assert_no_panic(out: &std::process::Output) {
    let text = stderr(out);
    assert!(!text.contains("panicked"), "{text}");
    assert_ne!(out.status.code(), Some(101), "{text}");
    assert!(out.status.code().is_some(), "killed by a signal: {text}");
}

fn packs(env: &Env) -> Vec<String> {
    env.objects(ObjectKind::Pack)
}

fn cache_file(env: &Env) -> PathBuf {
    walk_files(&env.cache)
        .into_iter()
        .find(|p| p.file_name().unwrap() == "index.redb")
        .expect("a cache file")
}

/// The snapshot id of a `backup --json` summary.
fn snapshot_id(summary: &serde_json::Value) -> String {
    summary["snapshot_id"].as_str().unwrap().to_string()
}

/// A backup after a pack was lost stores the data again: its snapshot
/// restores byte for byte, with and without --force, and the warning names
/// the pack.
#[test]
fn issue_8_backup_after_a_lost_pack_stores_the_data_again() {
    for force in [false, true] {
        let (env, source) = backed_up();
        let lost = packs(&env)
            .into_iter()
            .max_by_key(|name| env.object_size(ObjectKind::Pack, name))
            .unwrap();
        env.remove_object(ObjectKind::Pack, &lost);
        let mut args = vec!["backup", source.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stderr(&out).contains(&lost), "{}", stderr(&out));
        let target = env.restore("latest", &format!("t-{force}"), &[]);
        assert_same_tree(&source, &target);
        // And once more: the next backup deduplicates against the new copy
        // (only the trees of the folders above the source, changed by the
        // restore beside it, are new).
        let again = env.backup(&[&source], &[]);
        assert!(again["bytes_added"].as_u64().unwrap() < 4096, "{again}");
        let target = env.restore("latest", &format!("t2-{force}"), &[]);
        assert_same_tree(&source, &target);
    }
}

/// The same after the session that sealed the packs is lost: the data is
/// stored again under the new session and the new snapshot restores.
#[test]
fn issue_8_backup_after_a_lost_session_stores_the_data_again() {
    let (env, source) = backed_up();
    for session in env.objects(ObjectKind::Session) {
        env.remove_object(ObjectKind::Session, &session);
    }
    let summary = env.backup(&[&source], &[]);
    assert!(
        summary["bytes_added"].as_u64().unwrap() > 3 << 20,
        "{summary}"
    );
    let id = snapshot_id(&summary);
    let target = env.restore(&id, "t", &[]);
    assert_same_tree(&source, &target);
}

/// A cache rebuilt from scratch (say on another machine) does not bring a
/// lost pack's blobs back into use either.
#[test]
fn issue_8_a_rebuilt_cache_does_not_revive_a_lost_pack() {
    let (env, source) = backed_up();
    for pack in packs(&env) {
        env.remove_object(ObjectKind::Pack, &pack);
    }
    fs::remove_dir_all(&env.cache).unwrap();
    let summary = env.backup(&[&source], &[]);
    let target = env.restore(&snapshot_id(&summary), "t", &[]);
    assert_same_tree(&source, &target);
    // With both copies in the index and the cache rebuilt in any order, the
    // readable one serves the restore.
    fs::remove_dir_all(&env.cache).unwrap();
    let target = env.restore(&snapshot_id(&summary), "t2", &[]);
    assert_same_tree(&source, &target);
}

/// The newest snapshot (by the order they were made) among several.
fn newest_snapshot(env: &Env) -> String {
    let snapshots = env.snapshots();
    snapshots.last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `restore latest` with the newest snapshot damaged exits 1 and names it,
/// rather than restoring the one before.
#[test]
fn issue_8_restore_latest_with_a_damaged_newest_snapshot_fails_naming_it() {
    let (env, source) = backed_up();
    fs::write(source.join("small"), b"changed\n").unwrap();
    env.backup(&[&source], &["--time", "2030-01-01 00:00:00"]);
    let newest = newest_snapshot(&env);
    let mut bytes = env.read_object(ObjectKind::Snapshot, &newest);
    bytes[60] ^= 1;
    env.replace_object(ObjectKind::Snapshot, &newest, &bytes);
    let out = env.try_restore("latest", "t", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&newest), "{}", stderr(&out));
    assert!(!env.path("t").exists(), "nothing was restored");
}

/// The same when the newest snapshot's session is gone.
#[test]
fn issue_8_restore_latest_with_the_newest_session_gone_fails_naming_it() {
    let (env, source) = backed_up();
    let before = env.objects(ObjectKind::Session);
    fs::write(source.join("small"), b"changed\n").unwrap();
    env.backup(&[&source], &["--time", "2030-01-01 00:00:00"]);
    let newest = newest_snapshot(&env);
    for session in env.objects(ObjectKind::Session) {
        if !before.contains(&session) {
            env.remove_object(ObjectKind::Session, &session);
        }
    }
    let out = env.try_restore("latest", "t", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&newest), "{}", stderr(&out));
}

/// A truncated cache is rebuilt on the next command, with a notice, no
/// panic, and an intact restore.
#[test]
fn issue_8_truncated_cache_is_rebuilt() {
    let (env, source) = backed_up();
    let cache = cache_file(&env);
    fs::OpenOptions::new()
        .write(true)
        .open(&cache)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let out = env.run(&["snapshots"]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("rebuilt"), "{}", stderr(&out));
    let target = env.restore("latest", "t", &[]);
    assert_same_tree(&source, &target);
}

/// Scrambled bytes all over the cache: every command still works, and the
/// restore of the intact repository is exact.
#[test]
fn issue_8_scrambled_cache_is_rebuilt() {
    for seed in 1..=4u64 {
        let (env, source) = backed_up();
        let cache = cache_file(&env);
        let mut bytes = fs::read(&cache).unwrap();
        let len = bytes.len();
        let garbage = noise(len, seed);
        // Keep the first page (redb's header) half the time, so that the
        // damage is found deeper inside.
        let start = if seed % 2 == 0 { 4096.min(len) } else { 0 };
        for at in (start..len).step_by(97) {
            bytes[at] = garbage[at];
        }
        fs::write(&cache, bytes).unwrap();
        let out = env.run(&["snapshots"]);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let out = env.try_restore("latest", "t", &[]);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", stderr(&out));
        assert_same_tree(&source, &env.path("t"));
        env.backup(&[&source], &[]);
    }
}

/// A cache that cannot be created (its folder is a file) does not stop
/// a command: a temporary index is used, and the user is told.
#[test]
fn issue_8_unusable_cache_directory_runs_without_it() {
    let (env, source) = backed_up();
    let blocked = env.path("not-a-dir");
    fs::write(&blocked, b"").unwrap();
    let out = env
        .cairn()
        .env("CAIRN_CACHE_DIR", &blocked)
        .args(["restore", "latest", "--target"])
        .arg(env.path("t"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("temporary"), "{}", stderr(&out));
    assert_same_tree(&source, &env.path("t"));
}

/// A key file from another repository that opens with the same password:
/// backup exits non-zero and writes nothing; with the real key beside it,
/// everything works.
#[test]
fn issue_8_foreign_key_file_cannot_back_up() {
    let (env, source) = backed_up();
    let other = Env::new();
    other.init();
    let saved: Vec<(String, Vec<u8>)> = env
        .objects(ObjectKind::Key)
        .into_iter()
        .map(|name| {
            let bytes = env.read_object(ObjectKind::Key, &name);
            (name, bytes)
        })
        .collect();
    for (name, _) in &saved {
        env.remove_object(ObjectKind::Key, name);
    }
    for key in other.objects(ObjectKind::Key) {
        env.put_object(
            ObjectKind::Key,
            &key,
            &other.read_object(ObjectKind::Key, &key),
        );
    }
    let snapshots_before = env.objects(ObjectKind::Snapshot).len();
    let out = env.run(&["backup", source.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not this repository's key"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.objects(ObjectKind::Snapshot).len(), snapshots_before);
    let out = env.run(&["snapshots"]);
    assert_ne!(out.status.code(), Some(0));

    for (name, bytes) in &saved {
        env.put_object(ObjectKind::Key, name, bytes);
    }
    env.backup(&[&source], &[]);
    let target = env.restore("latest", "t", &[]);
    assert_same_tree(&source, &target);
}

/// Runs `cairn ARGS` for `env` under `umask`.
fn run_with_umask(env: &Env, umask: &str, args: &str) {
    let cairn = assert_cmd::cargo::cargo_bin("cairn");
    let mut cmd = Command::new("sh");
    without_cairn_env(&mut cmd);
    let out = cmd
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" {args}"))
        .arg(&cairn)
        .envs(env.variables())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Every file and folder under `root`, with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        out.push((
            path.clone(),
            meta.permissions().mode() & 0o777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out
}

/// Key files, the config, packs, the cache: 0600, folders 0700, whatever
/// the umask.
#[test]
fn issue_8_repository_and_cache_files_are_private() {
    // The cache is private on any backend; the repository's files and
    // folders are the local backend's.
    let check_repository =
        !skip_unless_local("issue_8_repository_and_cache_files_are_private (repository modes)");
    for umask in ["022", "000"] {
        let env = Env::new();
        let source = env.path("source");
        fs::create_dir(&source).unwrap();
        fs::write(source.join("f"), b"data").unwrap();
        run_with_umask(&env, umask, "init");
        run_with_umask(&env, umask, &format!("backup {}", source.display()));
        let mut roots = vec![env.cache.clone()];
        if check_repository {
            roots.push(env.repo_dir().to_path_buf());
        }
        for root in &roots {
            let all = modes(root);
            assert!(all.iter().any(|(_, _, dir)| !dir));
            for (path, mode, dir) in all {
                let want = if dir { 0o700 } else { 0o600 };
                assert_eq!(mode, want, "umask {umask}: {} is {mode:o}", path.display());
            }
        }
    }
}

/// `init` refuses a directory that holds other things (the source, say),
/// and accepts an empty one.
#[test]
fn issue_8_init_refuses_a_non_empty_directory() {
    if skip_unless_local("issue_8_init_refuses_a_non_empty_directory") {
        return;
    }
    let env = Env::new();
    let repo = env.repo_dir();
    fs::create_dir(repo).unwrap();
    fs::write(repo.join("notes.txt"), b"mine").unwrap();
    let out = env.run(&["init"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(fs::read_dir(repo).unwrap().count(), 1, "nothing added");
    fs::remove_file(repo.join("notes.txt")).unwrap();
    env.init();
}

/// Host names and tags with escape codes and newlines are shown escaped,
/// one snapshot per line.
#[test]
fn issue_8_snapshots_escapes_control_characters() {
    let env = Env::new();
    env.init();
    let source = env.path("source");
    fs::create_dir(&source).unwrap();
    env.backup(
        &[&source],
        &["--host", "evil\u{1b}[2J\nhost", "--tag", "a\rb"],
    );
    let out = env.ok(&["snapshots"]);
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("\\u{1b}[2J\\nhost"), "{out}");
}

/// SIGINT and SIGTERM during a backup leave no temporary pack behind.
#[test]
fn issue_8_interrupted_backup_leaves_no_temporary_files() {
    // A pack being streamed shows as a temporary file in data/.
    if skip_unless_local("issue_8_interrupted_backup_leaves_no_temporary_files") {
        return;
    }
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let env = Env::new();
        env.init();
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("cairn"));
        without_cairn_env(&mut cmd);
        let mut child = cmd
            .envs(env.variables())
            .args(["backup", "--stdin", "--stdin-filename", "dump"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // Write until a pack is being streamed: a temporary file in data/.
        let chunk = noise(1 << 20, 3);
        let temporary = |env: &Env| {
            walk_files(&env.repo_dir().join("data"))
                .into_iter()
                .any(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".tmp-")
                })
        };
        let mut written = 0;
        while !temporary(&env) {
            use std::io::Write;
            stdin.write_all(&chunk).unwrap();
            written += 1;
            assert!(written < 4096, "no temporary pack ever appeared");
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert!(!out.status.success());
        assert!(!temporary(&env), "a temporary pack was left behind");
        assert!(env.objects(ObjectKind::Snapshot).is_empty());
    }
}

/// A full disk under the cache does not block reading commands: the cache
/// cannot be filled, and a temporary index is used instead.
#[test]
fn issue_8_full_cache_disk_does_not_block_restore() {
    if !crate::util::is_root() {
        eprintln!("needs root to mount a small file system; skipped");
        return;
    }
    let (env, source) = backed_up();
    let mount = env.path("small-disk");
    fs::create_dir(&mount).unwrap();
    let cairn = assert_cmd::cargo::cargo_bin("cairn");
    let target = env.path("t");
    // The mount lives in a private namespace: the script does all the work.
    let script = format!(
        "set -u
mount -t tmpfs -o size=1m tmpfs '{mount}' || exit 99
dd if=/dev/zero of='{mount}/filler' bs=4k 2>/dev/null
export CAIRN_CACHE_DIR='{mount}/cache'
'{cairn}' snapshots >/dev/null || exit 98
exec '{cairn}' restore latest --target '{target}'
",
        mount = mount.display(),
        cairn = cairn.display(),
        target = target.display(),
    );
    let out = without_cairn_env(&mut Command::new("unshare"))
        .envs(env.variables())
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    assert!(stderr(&out).contains("temporary"), "{}", stderr(&out));
    assert_same_tree(&source, &target);
}

/// Sessions planted in the repository (intact, but sealed by no key of
/// it), named to come first in a listing, do not make the repository's own
/// key look foreign.
#[test]
fn issue_8_planted_sessions_do_not_lock_out_the_real_key() {
    let (env, source) = backed_up();
    let mut planted = 0;
    let mut seed = 1;
    while planted < 12 {
        let bytes = noise(97, seed);
        seed += 1;
        let name = cairn_core::Id::of_bytes(&bytes).to_hex();
        if name.starts_with('0') {
            env.put_object(ObjectKind::Session, &name, &bytes);
            planted += 1;
        }
    }
    env.ok(&["snapshots"]);
    let target = env.restore("latest", "t", &[]);
    assert_same_tree(&source, &target);
    env.backup(&[&source], &[]);
}

/// A snapshot intact but sealed under another repository's keys (copied in
/// with its session) makes every backup fail, with or without --parent:
/// the repository holds data this key cannot read, so it may be the wrong
/// key. Restoring the repository's own snapshots by id still works.
#[test]
fn issue_8_a_foreign_snapshot_stops_backups() {
    let (env, source) = backed_up();
    let own = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    let other = Env::new();
    other.init();
    let other_source = other.path("src");
    fs::create_dir(&other_source).unwrap();
    other.backup(&[&other_source], &[]);
    for kind in [ObjectKind::Snapshot, ObjectKind::Session] {
        for name in other.objects(kind) {
            env.put_object(kind, &name, &other.read_object(kind, &name));
        }
    }
    let src = source.to_str().unwrap();
    for args in [vec!["backup", src], vec!["backup", "--parent", &own, src]] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("does not open it"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(env.objects(ObjectKind::Snapshot).len(), 2);
    let target = env.restore(&own, "t", &[]);
    assert_same_tree(&source, &target);
}
