//! `copy --from-repo`: snapshots with all the data they need, into a
//! repository with another password, other chunker parameters, or another
//! backend; run again, it copies only what is new.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::util::{file_contents, noise, restored, stderr, test_backend, Env, TestBackend};

/// The destination's password: not the source's.
const OTHER: &str = "another password";

/// Runs `cairn copy --json EXTRA` in `destination` from `source`; returns
/// the report.
fn copy(destination: &Env, source: &Env, extra: &[&str]) -> Value {
    let mut cmd = destination.cairn();
    cmd.env("CAIRN_PASSWORD", OTHER)
        .env("CAIRN_FROM_REPO", source.location())
        .env("CAIRN_FROM_PASSWORD", "correct horse")
        .envs(source.store_environment())
        .args(["copy", "--json"])
        .args(extra);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("copy --json prints one object")
}

/// A source with two snapshots of `src`, the second after a change.
fn two_snapshots(source: &Env) -> std::path::PathBuf {
    source.init();
    let src = source.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("big"), noise(3 << 20, 1)).unwrap();
    fs::write(src.join("sub/small"), b"small file").unwrap();
    source.backup(&[&src], &["--tag", "first"]);
    fs::write(src.join("sub/added"), noise(500_000, 2)).unwrap();
    source.backup(&[&src], &[]);
    src
}

/// Asserts that each snapshot of `destination` restores exactly what the
/// source snapshot it copies does.
fn assert_copies_restore(destination: &Env, source: &Env, report: &Value) {
    for pair in report["copied"].as_array().unwrap() {
        let from = pair["snapshot"].as_str().unwrap();
        let to = pair["copy"].as_str().unwrap();
        let original = source.restore(from, &format!("from-{}", &from[..8]), &[]);
        let copied = destination.path(&format!("to-{}", &to[..8]));
        let out = destination.run_as(
            OTHER,
            &["restore", to, "--target", copied.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            file_contents(&copied),
            file_contents(&original),
            "{from} → {to}"
        );
    }
    let out = destination.run_as(OTHER, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn init_destination(destination: &Env, extra: &[&str]) {
    let mut args = vec!["init", "--kdf-memory", "1", "--kdf-time", "1"];
    args.extend_from_slice(extra);
    let out = destination
        .cairn()
        .env("CAIRN_PASSWORD", OTHER)
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn copies_restore_alike_and_a_second_run_copies_nothing() {
    let source = Env::new();
    two_snapshots(&source);
    let destination = Env::new();
    init_destination(&destination, &[]);
    let report = copy(&destination, &source, &[]);
    assert_eq!(report["copied"].as_array().unwrap().len(), 2, "{report}");
    // Another repository names blobs under its own key: files are cut again.
    assert_eq!(report["rechunked"], true);
    assert_copies_restore(&destination, &source, &report);

    let again = copy(&destination, &source, &[]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2, "{again}");
    assert_eq!(again["bytes_added"], 0);

    // A snapshot tagged anew in the source is copied again, tags and all.
    let out = source.run(&["tag", "latest", "--add", "offsite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let retagged = copy(&destination, &source, &[]);
    assert_eq!(
        retagged["copied"].as_array().unwrap().len(),
        1,
        "{retagged}"
    );
    assert!(
        retagged["bytes_added"].as_u64().unwrap() < 10_000,
        "{retagged}"
    );

    // A copy keeps what the snapshot says about itself.
    let listed = |env: &Env, password: &str| -> Vec<Value> {
        let out = env.run_as(password, &["snapshots", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let originals = listed(&source, "correct horse");
    let copies = listed(&destination, OTHER);
    assert_eq!(
        copies.len(),
        3,
        "two copies, and the copy of the one tagged anew"
    );
    let fields = |s: &Value| -> Vec<Value> {
        ["time", "host", "paths", "tags"]
            .iter()
            .map(|f| s[*f].clone())
            .collect()
    };
    for original in &originals {
        assert!(
            copies.iter().any(|c| fields(c) == fields(original)),
            "no copy of {original}"
        );
    }
}

#[test]
fn a_destination_sharing_the_chunker_parameters_takes_blobs_as_they_are() {
    let source = Env::new();
    let src = two_snapshots(&source);
    let destination = Env::new();
    let out = destination
        .cairn()
        .env("CAIRN_PASSWORD", OTHER)
        .env("CAIRN_FROM_PASSWORD", "correct horse")
        .envs(source.store_environment())
        .args([
            "init",
            "--kdf-memory",
            "1",
            "--kdf-time",
            "1",
            "--copy-chunker-params",
        ])
        .args(["--from-repo", &source.location()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Only the first snapshot, named by its tag.
    let first = copy(&destination, &source, &["--tag", "first"]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["rechunked"], false);
    // Then the rest: only the file added since is new.
    let rest = copy(&destination, &source, &[]);
    assert_eq!(rest["copied"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["skipped"].as_array().unwrap().len(), 1, "{rest}");
    let added = rest["bytes_added"].as_u64().unwrap();
    assert!(added < 1 << 20, "{added} bytes added for a 500 kB change");
    assert_copies_restore(&destination, &source, &first);
    assert_copies_restore(&destination, &source, &rest);

    // The destination's own backups of the same files deduplicate against
    // the copies.
    let out = destination
        .cairn()
        .env("CAIRN_PASSWORD", OTHER)
        .args(["backup", "--json", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert!(
        summary["bytes_added"].as_u64().unwrap() < 100_000,
        "{summary}"
    );
}

#[test]
fn a_wrong_source_password_is_refused_and_nothing_is_copied() {
    let source = Env::new();
    two_snapshots(&source);
    let destination = Env::new();
    init_destination(&destination, &[]);
    let out = destination
        .cairn()
        .env("CAIRN_PASSWORD", OTHER)
        .env("CAIRN_FROM_REPO", source.location())
        .env("CAIRN_FROM_PASSWORD", "not it")
        .envs(source.store_environment())
        .arg("copy")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    let listed = destination.run_as(OTHER, &["snapshots", "--json"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
}

/// `cairn` for a repository at `location` (a local directory) with the
/// test's cache and `password`.
fn at(env: &Env, location: &Path, password: &str, args: &[&str]) -> Value {
    let out = crate::util::bare_cairn()
        .env("CAIRN_REPO", location)
        .env("CAIRN_PASSWORD", password)
        .env("CAIRN_CACHE_DIR", &env.cache)
        .envs(env.store_environment())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

#[test]
fn copies_go_from_a_local_directory_to_object_storage_and_back() {
    if test_backend() != TestBackend::Garage {
        eprintln!(
            "local and S3: needs Garage, skipped on {}",
            test_backend().name()
        );
        return;
    }
    let env = Env::new();
    let local = env.path("local-repo");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(2 << 20, 7)).unwrap();
    fs::write(src.join("g"), b"small").unwrap();
    at(
        &env,
        &local,
        "local pw",
        &["init", "--kdf-memory", "1", "--kdf-time", "1"],
    );
    at(&env, &local, "local pw", &["backup", src.to_str().unwrap()]);

    // Local → S3 (the suite's bucket).
    env.init();
    let out = env
        .cairn()
        .env("CAIRN_FROM_REPO", &local)
        .env("CAIRN_FROM_PASSWORD", "local pw")
        .args(["copy", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let on_s3 = env.restore("latest", "from-s3", &[]);
    assert_eq!(file_contents(&restored(&on_s3, &src)), file_contents(&src));

    // S3 → another local directory.
    let back = env.path("back-repo");
    at(
        &env,
        &back,
        "back pw",
        &["init", "--kdf-memory", "1", "--kdf-time", "1"],
    );
    let out = crate::util::bare_cairn()
        .env("CAIRN_REPO", &back)
        .env("CAIRN_PASSWORD", "back pw")
        .env("CAIRN_CACHE_DIR", &env.cache)
        .env("CAIRN_FROM_REPO", env.location())
        .env("CAIRN_FROM_PASSWORD", "correct horse")
        .envs(env.store_environment())
        .arg("copy")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.path("from-back");
    at(
        &env,
        &back,
        "back pw",
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(file_contents(&restored(&target, &src)), file_contents(&src));
    at(&env, &back, "back pw", &["check", "--read-data"]);
}
