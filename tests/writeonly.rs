//! Write-only keys: `key add --write-only` makes a key that backs up
//! (deduplicating, and skipping unchanged files through what it recorded
//! on this host) and is refused every command that reads or deletes.

use std::fs;

use serde_json::Value;

use crate::util::{file_contents, noise, restored, stderr, Env};

const WRITE_ONLY: &str = "write only password";

/// `backup --json` with `password`; the summary.
fn backup_as(env: &Env, password: &str, path: &std::path::Path) -> Value {
    let out = env.run_as(password, &["backup", "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn add_write_only(env: &Env) -> String {
    let out = env
        .cairn()
        .env("CAIRN_NEW_PASSWORD", WRITE_ONLY)
        .args([
            "key",
            "add",
            "--write-only",
            "--host",
            "web1",
            "--user",
            "nightly",
        ])
        .args(["--kdf-memory", "1", "--kdf-time", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn snapshot_ids(env: &Env, password: &str) -> Vec<String> {
    let out = env.run_as(password, &["snapshots", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    listed
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_write_only_key_backs_up_what_a_full_key_restores() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a"), noise(300_000, 1)).unwrap();
    fs::write(src.join("sub/b"), b"small file").unwrap();
    // A full key's backup first: the write-only key must not see it.
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("x"), noise(200_000, 2)).unwrap();
    env.backup(&[&other], &[]);

    assert!(add_write_only(&env).contains("write-only"));
    let keys: Vec<Value> = serde_json::from_str(&env.ok(&["key", "list", "--json"])).unwrap();
    let write_only: Vec<&Value> = keys.iter().filter(|k| k["kind"] == "write-only").collect();
    assert_eq!(write_only.len(), 1, "{keys:?}");
    assert_eq!(write_only[0]["host"], "web1");
    assert_eq!(write_only[0]["user"], "nightly");
    assert!(write_only[0]["created"].as_str().unwrap().len() >= 19);

    let first = backup_as(&env, WRITE_ONLY, &src);
    assert_eq!(first["files_new"], 2, "{first}");
    // The second run reads nothing again: it compares against the trees
    // it recorded on this host.
    let second = backup_as(&env, WRITE_ONLY, &src);
    assert_eq!(second["files_unmodified"], 2, "{second}");
    assert_eq!(second["files_new"], 0, "{second}");
    fs::write(src.join("sub/b"), b"changed small file").unwrap();
    let third = backup_as(&env, WRITE_ONLY, &src);
    assert_eq!(third["files_changed"], 1, "{third}");
    assert_eq!(third["files_unmodified"], 1, "{third}");

    // It shows its own three snapshots, not the full key's.
    let own = snapshot_ids(&env, WRITE_ONLY);
    assert_eq!(own.len(), 3, "{own:?}");
    let all = snapshot_ids(&env, "correct horse");
    assert_eq!(all.len(), 4);
    assert!(own.iter().all(|id| all.contains(id)));

    // A full key restores them byte for byte.
    let target = env.path("t2");
    let out = env
        .cairn()
        .args(["restore", &own[2], "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_contents(&restored(&target, &src)), file_contents(&src));
}

#[test]
fn a_write_only_key_stores_no_content_already_stored() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), noise(2_000_000, 3)).unwrap();
    env.backup(&[&src], &[]);
    add_write_only(&env);
    let copy = env.path("copy");
    fs::create_dir_all(&copy).unwrap();
    fs::copy(src.join("big"), copy.join("big")).unwrap();
    let summary = backup_as(&env, WRITE_ONLY, &copy);
    assert_eq!(summary["files_new"], 1);
    assert!(
        summary["bytes_added"].as_u64().unwrap() < 20_000,
        "the content was stored again: {summary}"
    );
}

#[test]
fn a_write_only_key_is_refused_every_read_and_every_deletion() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"secret content").unwrap();
    env.backup(&[&src], &[]);
    add_write_only(&env);
    backup_as(&env, WRITE_ONLY, &src);
    let own = snapshot_ids(&env, WRITE_ONLY);
    let file = format!("{}:{}/f", own[0], src.display());
    let target = env.path("t");
    let refused: Vec<Vec<&str>> = vec![
        vec!["restore", &own[0], "--target", target.to_str().unwrap()],
        vec!["ls", &own[0]],
        vec!["cat", &file],
        vec!["dump", &file],
        vec!["find", "f"],
        vec!["diff", &own[0], &own[0]],
        vec!["stats"],
        vec!["tag", "--add", "x", &own[0]],
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["check"],
        vec!["repair", "index"],
        vec!["repair", "snapshots"],
        vec!["key", "remove", "0000"],
        vec!["key", "add"],
        vec!["key", "rotate"],
        vec!["unlock", "--remove-all"],
    ];
    for args in refused {
        let out = env
            .cairn()
            .env("CAIRN_PASSWORD", WRITE_ONLY)
            .env("CAIRN_NEW_PASSWORD", "another")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(13), "{args:?}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(message.contains("write-only"), "{args:?}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "{args:?}: {message}");
    }
    assert!(!target.exists());
    // Nothing was deleted: the full key still restores everything.
    assert_eq!(snapshot_ids(&env, "correct horse").len(), 2);
    let restored_to = env.restore("latest", "full", &[]);
    assert_eq!(
        fs::read(restored(&restored_to, &src).join("f")).unwrap(),
        b"secret content"
    );
}

#[test]
fn the_record_of_a_write_only_key_is_safe_to_delete() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    add_write_only(&env);
    backup_as(&env, WRITE_ONLY, &src);
    assert_eq!(snapshot_ids(&env, WRITE_ONLY).len(), 1);
    // The cache deleted: no parent, every file read again, nothing lost.
    fs::remove_dir_all(&env.cache).unwrap();
    let summary = backup_as(&env, WRITE_ONLY, &src);
    assert_eq!(summary["files_new"], 1, "{summary}");
    assert_eq!(snapshot_ids(&env, WRITE_ONLY).len(), 1);
    assert_eq!(snapshot_ids(&env, "correct horse").len(), 2);
    // From there it compares against what it recorded again.
    let summary = backup_as(&env, WRITE_ONLY, &src);
    assert_eq!(summary["files_unmodified"], 1, "{summary}");
}

#[test]
fn a_write_only_key_made_after_a_rotation_deduplicates_and_names_its_parent() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), noise(1_000_000, 5)).unwrap();
    env.backup(&[&src], &[]);
    env.ok(&["key", "rotate", "--kdf-memory", "1", "--kdf-time", "1"]);
    add_write_only(&env);
    // The content stored before the rotation is found, not stored again,
    // and no session looks missing.
    let out = env.run_as(WRITE_ONLY, &["backup", "--json", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("missing"), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        summary["bytes_added"].as_u64().unwrap() < 20_000,
        "{summary}"
    );
    // --parent names one of its own snapshots.
    let own = snapshot_ids(&env, WRITE_ONLY);
    let out = env.run_as(
        WRITE_ONLY,
        &[
            "backup",
            "--json",
            "--parent",
            &own[0][..8],
            src.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["files_unmodified"], 1, "{summary}");
    // A snapshot it did not write cannot be its parent.
    let all = snapshot_ids(&env, "correct horse");
    let theirs = all.iter().find(|id| !own.contains(id)).unwrap();
    let out = env.run_as(
        WRITE_ONLY,
        &["backup", "--parent", theirs, src.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
}
