//! Several passwords: `key list`, `key add`, `key remove`, `key passwd`.

use std::fs;

use serde_json::Value;

use crate::util::{file_contents, stderr, Env};

fn keys(env: &Env, password: &str) -> Vec<Value> {
    let out = env.run_as(password, &["key", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn add(env: &Env, password: &str, new: &str) -> String {
    let out = env
        .cairn()
        .env("CAIRN_PASSWORD", password)
        .env("CAIRN_NEW_PASSWORD", new)
        .args(["key", "add"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn added_passwords_open_the_repository_and_removed_ones_do_not() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    env.backup(&[&src], &[]);
    let data_before: Vec<_> = env.objects(cairn_core::backend::ObjectKind::Pack);

    add(&env, "correct horse", "second password");
    let listed = keys(&env, "second password");
    assert_eq!(listed.len(), 2);
    let in_use: Vec<&Value> = listed.iter().filter(|k| k["in_use"] == true).collect();
    assert_eq!(in_use.len(), 1, "{listed:?}");
    let second = in_use[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed.iter().filter(|k| k["kind"] == "full").count(), 2);
    assert!(listed.iter().all(|k| k["kdf"]["algorithm"] == "argon2id"));

    // Both open it; the snapshot restores with the new one.
    let target = env.path("t");
    let out = env.run_as(
        "second password",
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        file_contents(&crate::util::restored(&target, &src)),
        file_contents(&src)
    );

    // The key in use cannot be removed; another can, by a prefix.
    let out = env.run_as("second password", &["key", "remove", &second[..10]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the key this password opened"),
        "{}",
        stderr(&out)
    );
    let first = listed.iter().find(|k| k["in_use"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.run_as("second password", &["key", "remove", &first[..10]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run_as("correct horse", &["snapshots"]);
    assert_eq!(
        out.status.code(),
        Some(12),
        "the removed password is refused"
    );
    // The last key file cannot go; a prefix that names nothing is an error.
    let out = env.run_as("second password", &["key", "remove", "ffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(keys(&env, "second password").len(), 1);
    assert_eq!(
        env.objects(cairn_core::backend::ObjectKind::Pack),
        data_before
    );
}

#[test]
fn passwd_replaces_the_password_in_use() {
    let env = Env::new();
    env.init();
    add(&env, "correct horse", "other");
    let out = env
        .cairn()
        .env("CAIRN_NEW_PASSWORD", "brand new")
        .args(["key", "passwd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.run_as("correct horse", &["snapshots"]).status.code(),
        Some(12)
    );
    assert!(env.run_as("brand new", &["snapshots"]).status.success());
    assert!(env.run_as("other", &["snapshots"]).status.success());
    assert_eq!(keys(&env, "brand new").len(), 2);

    // A new password from a file, with a cheaper derivation recorded.
    let file = env.path("pw");
    fs::write(&file, "from a file\n").unwrap();
    let out = env.run_as(
        "brand new",
        &[
            "key",
            "add",
            "--new-password-file",
            file.to_str().unwrap(),
            "--kdf-memory",
            "8",
            "--kdf-time",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = keys(&env, "from a file");
    let mine = listed.iter().find(|k| k["in_use"] == true).unwrap();
    assert_eq!(mine["kdf"]["memory_kib"], 8 * 1024);
    assert_eq!(mine["kdf"]["iterations"], 1);
    // An empty new password is refused.
    let out = env
        .cairn()
        .env("CAIRN_NEW_PASSWORD", "")
        .env("CAIRN_PASSWORD", "brand new")
        .args(["key", "add"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
