//! Repositories written by earlier releases keep opening: a fixture of each
//! released format is restored, and written to, by this build.

use std::fs;
use std::path::{Path, PathBuf};

use cairn_core::backend::ObjectKind;

use crate::util::{stderr, Env};

/// Where the fixture's source lived when it was backed up.
const FIXTURE_SOURCE: &str = "/tmp/cairn-fixture-v1/src";

/// The fixture's `data.bin`, as it was generated.
fn fixture_data() -> Vec<u8> {
    (0..300_000usize)
        .map(|i| ((i * 7 + i / 251) % 256) as u8)
        .collect()
}

/// An environment whose repository holds the objects of the version 1 fixture,
/// written by cairn 6311d42 (format version 1, index cache layout v2).
fn fixture_env() -> Env {
    let env = Env::new();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/v1-repo");
    env.import_repository(&fixture);
    env
}

fn assert_fixture_restored(target: &Path) {
    assert_eq!(
        fs::read(target.join("hello.txt")).unwrap(),
        b"hello, cairn\n"
    );
    assert_eq!(fs::read(target.join("data.bin")).unwrap(), fixture_data());
    assert_eq!(
        fs::read(target.join("sub/nested.txt")).unwrap(),
        b"nested\n"
    );
    assert_eq!(
        fs::read_link(target.join("link")).unwrap(),
        Path::new("hello.txt")
    );
    let mtime = filetime::FileTime::from_last_modification_time(
        &fs::metadata(target.join("hello.txt")).unwrap(),
    );
    assert_eq!(
        mtime.unix_seconds(),
        1_580_608_922,
        "2020-02-02 02:02:02 UTC"
    );
}

#[test]
fn a_version_1_repository_restores_and_takes_new_backups() {
    let env = fixture_env();
    let run = |args: &[&str]| {
        let out = env
            .cairn()
            .env("CAIRN_PASSWORD", "fixture")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run(&["snapshots"]).contains("241e31b4"));
    let target = env.path("t");
    let selector = format!("241e31b4:{FIXTURE_SOURCE}");
    run(&["restore", &selector, "--target", target.to_str().unwrap()]);
    assert_fixture_restored(&target);

    // This build writes into it, and both snapshots restore.
    fs::write(target.join("added.txt"), b"written by a newer cairn\n").unwrap();
    run(&["backup", target.to_str().unwrap()]);
    let again = env.path("t2");
    let latest = format!("latest:{}", target.display());
    run(&["restore", &latest, "--target", again.to_str().unwrap()]);
    assert_fixture_restored(&again);
    assert_eq!(
        fs::read(again.join("added.txt")).unwrap(),
        b"written by a newer cairn\n"
    );
    assert_eq!(env.objects(ObjectKind::Snapshot).len(), 2);
}
