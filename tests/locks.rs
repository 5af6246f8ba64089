//! Locks between processes: who waits for whom, stale locks, unlock.

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cairn_core::{LockKind, Repository};

use crate::util::{stderr, Env};

/// Starts `cairn backup --stdin` and waits until it holds its lock: it then
/// waits for its input, holding a shared lock, until `finish` or a kill.
fn running_backup(env: &Env, name: &str) -> Child {
    let locks_before = env.objects(cairn_core::backend::ObjectKind::Lock);
    let child = env
        .process()
        .args(["backup", "--stdin", "--stdin-filename", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn backup");
    let started = Instant::now();
    while env
        .objects(cairn_core::backend::ObjectKind::Lock)
        .iter()
        .all(|name| locks_before.contains(name))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the backup never locked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Feeds a running backup its input and waits for it to succeed.
fn finish(mut child: Child) {
    child.stdin.take().unwrap().write_all(b"streamed").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn one_snapshot(env: &Env) {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    env.backup(&[&src], &[]);
}

#[test]
fn a_forget_waits_for_a_running_backup_and_names_it() {
    let env = Env::new();
    env.init();
    one_snapshot(&env);
    let backup = running_backup(&env, "a");
    let out = env.run(&["forget", "--keep-last", "1"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("locked") && message.contains("held by backup") && message.contains("pid"),
        "{message}"
    );
    // --retry-lock waits, then gives up the same way.
    let started = Instant::now();
    let out = env.run(&["--retry-lock", "2s", "forget", "--keep-last", "1"]);
    assert_eq!(out.status.code(), Some(11));
    assert!(started.elapsed() >= Duration::from_secs(2));
    // A dry run only reads: it runs beside the backup.
    env.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    // So does a second backup: shared locks coexist.
    let second = running_backup(&env, "b");
    finish(backup);
    finish(second);
    assert_eq!(env.snapshots().len(), 3);
    env.ok(&["forget", "--keep-last", "1", "--group-by", ""]);
    assert_eq!(env.snapshots().len(), 1);
    assert!(
        env.objects(cairn_core::backend::ObjectKind::Lock)
            .is_empty(),
        "all released"
    );
}

#[test]
fn an_exclusive_lock_keeps_backups_and_restores_out() {
    let env = Env::new();
    env.init();
    one_snapshot(&env);
    let repository = Repository::open(
        crate::util::open_store(&env.location()),
        b"correct horse",
        &env.path("other-cache"),
    )
    .unwrap();
    let held = repository
        .lock(LockKind::Exclusive, "forget", Duration::ZERO)
        .unwrap();
    let src = env.path("src");
    let out = env.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exclusive lock held by forget"),
        "{}",
        stderr(&out)
    );
    let out = env.try_restore("latest", "t", &[]);
    assert_eq!(out.status.code(), Some(11));
    assert_eq!(env.snapshots().len(), 1, "nothing was written");
    // --no-lock lets a restore read anyway (for read-only repositories).
    env.ok(&[
        "--no-lock",
        "restore",
        "latest",
        "--target",
        env.path("t2").to_str().unwrap(),
    ]);
    drop(held);
    env.ok(&["backup", src.to_str().unwrap()]);
}

#[test]
fn a_killed_process_leaves_a_stale_lock_that_the_next_run_removes() {
    let env = Env::new();
    env.init();
    one_snapshot(&env);
    let mut backup = running_backup(&env, "a");
    backup.kill().unwrap(); // SIGKILL: no chance to release the lock
    backup.wait().unwrap();
    let stale = env.objects(cairn_core::backend::ObjectKind::Lock);
    assert_eq!(stale.len(), 1);
    let out = env.run(&["forget", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("removed a stale lock"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("its process is gone"),
        "{}",
        stderr(&out)
    );
    let left = env.objects(cairn_core::backend::ObjectKind::Lock);
    assert!(
        left.is_empty(),
        "locks left {left:?}, the stale one {stale:?}; forget said: {}",
        stderr(&out)
    );
}

#[test]
fn unlock_removes_stale_locks_and_with_remove_all_every_lock() {
    let env = Env::new();
    env.init();
    let mut live = running_backup(&env, "b");
    let mut dead = running_backup(&env, "a");
    dead.kill().unwrap();
    dead.wait().unwrap();
    let out = env.ok(&["unlock"]);
    assert!(out.contains("removed 1 locks"), "{out}");
    assert_eq!(
        env.objects(cairn_core::backend::ObjectKind::Lock).len(),
        1,
        "the live one stays"
    );
    let out = env.ok(&["unlock", "--remove-all"]);
    assert!(out.contains("removed 1 locks"), "{out}");
    assert!(env
        .objects(cairn_core::backend::ObjectKind::Lock)
        .is_empty());
    live.kill().unwrap();
    live.wait().unwrap();
}

#[test]
fn sigint_releases_the_lock() {
    let env = Env::new();
    env.init();
    let backup = running_backup(&env, "a");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(backup.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = backup.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(env
        .objects(cairn_core::backend::ObjectKind::Lock)
        .is_empty());
}

#[test]
fn two_backups_at_once_both_succeed_and_prune_handles_their_duplicates() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    // Two sources sharing most of their data: run at once, both store the
    // shared blobs, in packs of their own.
    let shared = crate::util::noise(3_000_000, 41);
    for (dir, seed) in [("a", 43), ("b", 45)] {
        let src = env.path(dir);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("shared.bin"), &shared).unwrap();
        std::fs::write(src.join("own.bin"), crate::util::noise(500_000, seed)).unwrap();
    }
    let spawn = |dir: &str| {
        env.process()
            .args(["backup", "--quiet", env.path(dir).to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn("a"), spawn("b"));
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(env.snapshots().len(), 2);
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Forget one: prune keeps one copy of every blob the other needs.
    let first_id = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    env.ok(&["forget", &first_id, "--prune", "--max-unused", "0%"]);
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kept = env.snapshots()[0]["paths"][0].as_str().unwrap().to_string();
    let dir = if kept.ends_with("/a") { "a" } else { "b" };
    let target = env.restore("latest", "r", &[]);
    assert_eq!(
        crate::util::file_contents(&crate::util::restored(&target, &env.path(dir))),
        crate::util::file_contents(&env.path(dir))
    );
}

#[test]
fn a_prune_waits_for_a_running_backup_then_runs() {
    let env = Env::new();
    env.init();
    one_snapshot(&env);
    let backup = running_backup(&env, "a");
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(stderr(&out).contains("held by backup"), "{}", stderr(&out));
    assert!(env.objects(cairn_core::backend::ObjectKind::Lock).len() == 1);
    // With --retry-lock it waits for the backup to end, then prunes.
    let waiting = env
        .process()
        .args(["--retry-lock", "1m", "prune"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    finish(backup);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.snapshots().len(),
        2,
        "the backup's snapshot survived the prune"
    );
    env.ok(&["check"]);
}

#[test]
fn a_backup_whose_lock_was_removed_stores_no_snapshot() {
    let env = Env::new();
    env.init();
    one_snapshot(&env);
    let mut backup = running_backup(&env, "a");
    // Another process judged the lock stale and removed it: a prune may
    // be deleting what this backup deduplicated against.
    for lock in env.objects(cairn_core::backend::ObjectKind::Lock) {
        env.remove_object(cairn_core::backend::ObjectKind::Lock, &lock);
    }
    backup.stdin.take().unwrap().write_all(b"streamed").unwrap();
    let out = backup.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("lock was removed"), "{message}");
    assert_eq!(env.snapshots().len(), 1, "no snapshot was stored");
    env.ok(&["check"]);
}
