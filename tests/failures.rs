//! Bad input and damage: one clear line naming what is wrong, the right
//! exit code, and nothing stored is lost.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use cairn_core::backend::ObjectKind;

use crate::util::{is_root, noise, restored, shown_name, skip_unless_local, stderr, Env};

fn backed_up_env() -> (Env, PathBuf) {
    let env = Env::new();
    env.init();
    let source = env.path("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("data"), noise(3 << 20, 5)).unwrap();
    env.backup(&[&source], &[]);
    (env, source)
}

/// `cairn restore latest` into a fresh target, whatever the outcome.
fn restore_latest(env: &Env) -> std::process::Output {
    env.try_restore("latest", "t", &[])
}

/// The name of the repository's largest pack.
fn largest_pack(env: &Env) -> String {
    env.objects(ObjectKind::Pack)
        .into_iter()
        .max_by_key(|name| env.object_size(ObjectKind::Pack, name))
        .unwrap()
}

/// Asserts every line a failed run printed on standard error is one
/// message from cairn, the last an error; returns them.
fn reported(out: &std::process::Output) -> String {
    let text = stderr(out);
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.lines().all(|l| l.starts_with("cairn: ")), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap_or("")
            .starts_with("cairn: error: "),
        "{text}"
    );
    text
}

/// Asserts a failed run printed exactly one line, on standard error.
fn one_line_error(out: &std::process::Output) -> String {
    let text = stderr(out);
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "expected one line, got:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    text
}

#[test]
fn wrong_password_exits_12() {
    let (env, _) = backed_up_env();
    let out = env
        .cairn()
        .env("CAIRN_PASSWORD", "wrong")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert!(one_line_error(&out).contains("wrong password"));
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::new();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(one_line_error(&out).contains(&env.location()));
    // An existing directory that is not a repository is missing one too.
    if skip_unless_local("missing_repository_exits_10 (an empty directory)") {
        return;
    }
    fs::create_dir(env.repo_dir()).unwrap();
    let out = env.run(&["backup", "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(10));
}

#[test]
fn init_over_an_existing_repository_fails_and_keeps_it() {
    let (env, _) = backed_up_env();
    let config_before = env.read_object(ObjectKind::Config, "");
    let out = env
        .cairn()
        .env("CAIRN_PASSWORD", "another")
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("already exists"));
    assert_eq!(env.read_object(ObjectKind::Config, ""), config_before);
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn truncated_pack_is_named_and_restore_fails() {
    let (env, _) = backed_up_env();
    let pack = largest_pack(&env);
    let bytes = env.read_object(ObjectKind::Pack, &pack);
    env.replace_object(ObjectKind::Pack, &pack, &bytes[..bytes.len() / 2]);
    let out = restore_latest(&env);
    assert_eq!(out.status.code(), Some(1));
    // Which blobs lie in the lost half depends on the order the sealing
    // workers finished in: the root tree (then one error line) or only
    // file data (then a warning per entry and a closing error).
    let text = reported(&out);
    assert!(text.contains(&pack) && text.contains("truncated"), "{text}");
}

#[test]
fn bit_flipped_pack_is_detected() {
    let (env, _) = backed_up_env();
    let pack = largest_pack(&env);
    let mut bytes = env.read_object(ObjectKind::Pack, &pack);
    bytes[1000] ^= 0x10;
    env.replace_object(ObjectKind::Pack, &pack, &bytes);
    let out = restore_latest(&env);
    assert_eq!(out.status.code(), Some(1));
    // The damaged file is named in a warning, the restore goes on, and it
    // ends with an error saying how many entries are missing.
    let text = reported(&out);
    assert!(text.contains("damaged") && text.contains(&pack), "{text}");
    assert!(text.contains("1 entries of snapshot"), "{text}");
}

#[test]
fn missing_pack_is_named() {
    let (env, _) = backed_up_env();
    let pack = largest_pack(&env);
    env.remove_object(ObjectKind::Pack, &pack);
    let out = restore_latest(&env);
    assert_eq!(out.status.code(), Some(1));
    // One line where the pack held the root tree; where a tree cache still
    // has it (a remote store), a warning for the file, then the error.
    let text = reported(&out);
    assert!(text.contains("missing") && text.contains(&pack), "{text}");
}

#[test]
fn bit_flipped_snapshot_is_named_and_hides_nothing_else() {
    let (env, source) = backed_up_env();
    let name = env.objects(ObjectKind::Snapshot).pop().unwrap();
    env.backup(&[&source], &[]);
    let mut bytes = env.read_object(ObjectKind::Snapshot, &name);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    env.replace_object(ObjectKind::Snapshot, &name, &bytes);

    let out = env.run(&["snapshots", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "the intact snapshot is still listed"
    );

    // Backups go on, with a warning naming the damaged snapshot.
    let out = env.run(&["backup", source.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains(&name));
}

#[test]
fn damaged_index_segment_is_named_and_does_not_block_the_repository() {
    let (env, source) = backed_up_env();
    let segment = env.objects(ObjectKind::Index).pop().unwrap();
    fs::remove_dir_all(&env.cache).unwrap();
    let mut bytes = env.read_object(ObjectKind::Index, &segment);
    bytes[60] ^= 4;
    env.replace_object(ObjectKind::Index, &segment, &bytes);

    // A restore needs the lost entries and says which blob is missing.
    let out = restore_latest(&env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&segment),
        "warning names the segment: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("not in the index"),
        "{}",
        stderr(&out)
    );

    // A backup stores the data again, after which the restore works.
    let out = env.run(&["backup", source.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let target = env.restore("latest", "t2", &[]);
    assert_eq!(
        fs::read(restored(&target, &source).join("data")).unwrap(),
        noise(3 << 20, 5)
    );
}

#[test]
fn init_refuses_a_directory_left_by_an_unfinished_init() {
    let (env, _) = backed_up_env();
    env.remove_object(ObjectKind::Config, "");
    let out = env.run(&["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("did not finish"));
}

#[test]
fn source_path_that_does_not_exist_fails_without_a_snapshot() {
    let env = Env::new();
    env.init();
    let missing = env.path("no-such-dir");
    let out = env.run(&["backup", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("no-such-dir"));
    assert!(env.snapshots().is_empty());
}

#[test]
fn one_missing_source_among_several_is_an_incomplete_snapshot() {
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
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing"));
    let snapshots = env.snapshots();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0]["incomplete"], true);
}

/// Runs `cairn` without the capabilities that let root read anything, so
/// a mode-000 file is unreadable even in a root CI container.
fn cairn_without_read_override(env: &Env) -> Command {
    let mut cmd = Command::new("setpriv");
    crate::util::without_cairn_env(&mut cmd);
    cmd.args(["--bounding-set", "-dac_override,-dac_read_search", "--"]);
    cmd.arg(assert_cmd::cargo::cargo_bin("cairn"));
    cmd.envs(env.variables());
    cmd
}

#[test]
fn unreadable_source_file_exits_3_and_saves_an_incomplete_snapshot() {
    let env = Env::new();
    env.init();
    let source = env.path("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("readable"), b"fine").unwrap();
    fs::write(source.join("locked"), b"secret").unwrap();
    fs::set_permissions(
        source.join("locked"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let mut cmd = if is_root() {
        cairn_without_read_override(&env)
    } else {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("cairn"));
        crate::util::without_cairn_env(&mut cmd);
        cmd.envs(env.variables());
        cmd
    };
    let out = cmd
        .args(["backup", source.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let locked = source.join("locked").display().to_string();
    assert!(stderr(&out).contains(&locked));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&locked),
        "unreadable paths are listed"
    );
    let snapshots = env.snapshots();
    assert_eq!(snapshots[0]["incomplete"], true);
    assert_eq!(snapshots[0]["unreadable"][0], locked);
    let target = env.restore("latest", "t", &[]);
    assert_eq!(
        fs::read(restored(&target, &source).join("readable")).unwrap(),
        b"fine"
    );
}

#[test]
fn full_disk_during_backup_loses_nothing() {
    // The repository is a directory on a small file system of its own.
    if skip_unless_local("full_disk_during_backup_loses_nothing") {
        return;
    }
    if !is_root() {
        eprintln!("needs root to mount a small file system; skipped");
        return;
    }
    let env = Env::new();
    let mount = env.path("small-disk");
    fs::create_dir(&mount).unwrap();
    let small = env.path("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("f"), noise(100_000, 1)).unwrap();
    let big = env.path("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("f"), noise(8 << 20, 2)).unwrap();
    let cairn = assert_cmd::cargo::cargo_bin("cairn");
    let repo = mount.join("repo");
    let target = env.path("target");
    // The mount lives in a private namespace: the script does all the work.
    let script = format!(
        "set -u
mount -t tmpfs -o size=4m tmpfs '{mount}' || exit 99
export CAIRN_REPO='{repo}' CAIRN_PASSWORD=pw CAIRN_CACHE_DIR='{cache}'
'{cairn}' init >/dev/null || exit 98
'{cairn}' backup '{small}' >/dev/null || exit 97
'{cairn}' backup '{big}' 2>'{err}'
echo \"big=$?\"
find '{repo}' -name '.tmp-*' | wc -l
'{cairn}' restore latest --target '{target}' >/dev/null || exit 96
'{cairn}' snapshots --json
",
        mount = mount.display(),
        repo = repo.display(),
        cache = env.cache.display(),
        cairn = cairn.display(),
        small = small.display(),
        big = big.display(),
        target = target.display(),
        err = env.path("err").display(),
    );
    let out = crate::util::without_cairn_env(&mut Command::new("unshare"))
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "script failed: {:?} {stdout} {}",
        out.status,
        stderr(&out)
    );
    assert!(stdout.contains("big=1"), "{stdout}");
    let error = fs::read_to_string(env.path("err")).unwrap();
    assert_eq!(error.trim_end().lines().count(), 1, "{error}");
    assert!(error.contains("No space left on device"), "{error}");
    assert!(
        stdout.lines().nth(1) == Some("0"),
        "temporary files left: {stdout}"
    );
    assert_eq!(
        fs::read(restored(&target, &small).join("f")).unwrap(),
        noise(100_000, 1)
    );
    assert_eq!(stdout.matches("\"short_id\"").count(), 1);
}

#[test]
fn missing_password_without_a_terminal_is_a_clear_error() {
    let env = Env::new();
    let out = crate::util::bare_cairn()
        .env("CAIRN_REPO", env.location())
        .env("CAIRN_CACHE_DIR", &env.cache)
        .envs(env.store_environment())
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("no password"));
    assert!(env.objects(ObjectKind::Config).is_empty());
}

#[test]
fn truncated_config_key_session_or_snapshot_is_named() {
    for kind in [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Session,
        ObjectKind::Snapshot,
    ] {
        let (env, _) = backed_up_env();
        let victim = env.objects(kind).pop().unwrap();
        let bytes = env.read_object(kind, &victim);
        env.replace_object(kind, &victim, &bytes[..20]);
        let out = restore_latest(&env);
        assert_eq!(out.status.code(), Some(1), "{kind:?}: {}", stderr(&out));
        let text = one_line_error(&out);
        let name = shown_name(kind, &victim);
        assert!(
            text.contains(&name) && text.contains("damaged"),
            "{kind:?}: {text}"
        );
    }
}

#[test]
fn a_remote_location_is_refused_clearly_and_local_prefix_works() {
    let env = Env::new();
    let out = env
        .cairn()
        .env("CAIRN_REPO", "sftp:backup@example.invalid:/srv/repo")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        one_line_error(&out).contains("not supported yet"),
        "{}",
        stderr(&out)
    );
    // An s3: location that names no bucket says what it should look like.
    let out = env
        .cairn()
        .env("CAIRN_REPO", "s3:example.com/bucket")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        one_line_error(&out).contains("s3:https://HOST"),
        "{}",
        stderr(&out)
    );
    if skip_unless_local("a_remote_location_is_refused_clearly_and_local_prefix_works (local:)") {
        return;
    }
    let location = format!("local:{}", env.repo_dir().display());
    let out = env
        .cairn()
        .env("CAIRN_REPO", &location)
        .arg("init")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.repo_dir().join("config").is_file());
    env.ok(&["snapshots"]);
}
