//! Backup sources beyond plain paths: standard input, commands, path lists;
//! and what decides whether a file is read again.

use std::fs;
use std::os::unix::ffi::OsStrExt;

use crate::util::{noise, restored, stderr, Env};

#[test]
fn stdin_is_stored_as_one_file() {
    let env = Env::new();
    env.init();
    let data = noise(300_000, 3);
    let out = env
        .cairn()
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "upload.bin",
            "--json",
        ])
        .write_stdin(data.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let snapshots = env.snapshots();
    assert_eq!(snapshots[0]["paths"], serde_json::json!(["/upload.bin"]));
    let target = env.restore("latest", "t", &[]);
    assert!(fs::read(target.join("upload.bin")).unwrap() == data);
}

/// A real database, dumped by its own tool as cairn runs it.
#[test]
fn sqlite_dump_from_a_command_restores_to_the_same_database() {
    let env = Env::new();
    env.init();
    let db = env.path("app.db");
    let sql = "create table t(id integer primary key, name text);
               insert into t(name) values ('alpha'), ('beta'), ('gamma');";
    let made = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(sql)
        .status()
        .unwrap();
    assert!(made.success());
    env.ok(&[
        "backup",
        "--stdin-filename",
        "app.sql",
        "--stdin-from-command",
        "--",
        "sqlite3",
        db.to_str().unwrap(),
        ".dump",
    ]);
    let target = env.restore("latest", "t", &[]);
    let restored_db = env.path("restored.db");
    let load = std::process::Command::new("sqlite3")
        .arg(&restored_db)
        .stdin(fs::File::open(target.join("app.sql")).unwrap())
        .status()
        .unwrap();
    assert!(load.success());
    let rows = std::process::Command::new("sqlite3")
        .arg(&restored_db)
        .arg("select group_concat(name) from t order by id")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        "alpha,beta,gamma"
    );
}

#[test]
fn failing_stdin_command_saves_no_snapshot() {
    let env = Env::new();
    env.init();
    let out = env.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "echo partial; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("exit status: 7") && text.contains("echo partial"),
        "{text}"
    );
    assert!(env.snapshots().is_empty());
}

#[test]
fn several_commands_and_paths_in_one_snapshot() {
    let env = Env::new();
    env.init();
    let etc = env.path("etc");
    fs::create_dir(&etc).unwrap();
    fs::write(etc.join("hosts"), b"127.0.0.1 localhost").unwrap();
    let summary = env.backup(
        &[&etc],
        &[
            "--command",
            "users.sql=printf 'users dump'",
            "--command",
            "orders.sql=sh -c 'echo orders; echo dump'",
        ],
    );
    assert_eq!(summary["files_new"], 3);
    let snapshots = env.snapshots();
    let paths = &snapshots[0]["paths"];
    assert!(
        paths
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("/users.sql")),
        "{paths}"
    );
    let target = env.restore("latest", "t", &[]);
    assert_eq!(fs::read(target.join("users.sql")).unwrap(), b"users dump");
    assert_eq!(
        fs::read(target.join("orders.sql")).unwrap(),
        b"orders\ndump\n"
    );
    assert_eq!(
        fs::read(restored(&target, &etc).join("hosts")).unwrap(),
        b"127.0.0.1 localhost"
    );
}

#[test]
fn one_failing_command_among_several_saves_no_snapshot_and_is_named() {
    let env = Env::new();
    env.init();
    let etc = env.path("etc");
    fs::create_dir(&etc).unwrap();
    let out = env.run(&[
        "backup",
        etc.to_str().unwrap(),
        "--command",
        "good.sql=echo fine",
        "--command",
        "bad.sql=sh -c 'exit 3'",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exit 3"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("echo fine"));
    assert!(env.snapshots().is_empty());
    let out = env.run(&["backup", "--command", "x.sql=/no/such/program"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such/program"));
}

#[test]
fn files_from_lists_including_odd_names() {
    let env = Env::new();
    env.init();
    let dir = env.path("d");
    fs::create_dir(&dir).unwrap();
    let odd = dir.join("line\nbreak");
    let plain = dir.join("plain");
    let spaced = dir.join(" spaced ");
    for path in [&odd, &plain, &spaced] {
        fs::write(path, b"x").unwrap();
    }
    let list = env.path("list");
    fs::write(&list, format!("# comment\n\n{}\n", plain.display())).unwrap();
    let verbatim = env.path("verbatim");
    fs::write(&verbatim, format!("{}\n", spaced.display())).unwrap();
    let raw = env.path("raw");
    let mut bytes = odd.as_os_str().as_bytes().to_vec();
    bytes.push(0);
    fs::write(&raw, bytes).unwrap();
    env.ok(&[
        "backup",
        "--files-from",
        list.to_str().unwrap(),
        "--files-from-verbatim",
        verbatim.to_str().unwrap(),
        "--files-from-raw",
        raw.to_str().unwrap(),
    ]);
    let paths = env.snapshots()[0]["paths"].clone();
    assert_eq!(paths.as_array().unwrap().len(), 3, "{paths}");
    let target = env.restore("latest", "t", &[]);
    let base = restored(&target, &dir);
    for name in ["line\nbreak", "plain", " spaced "] {
        assert!(base.join(name).exists(), "{name:?} restored");
    }
}

#[test]
fn a_file_rewritten_with_the_same_size_and_mtime_is_read_again() {
    let env = Env::new();
    env.init();
    let dir = env.path("d");
    fs::create_dir(&dir).unwrap();
    let file = dir.join("f");
    fs::write(&file, b"version one!").unwrap();
    let mtime = filetime::FileTime::from_unix_time(1_600_000_000, 0);
    filetime::set_file_mtime(&file, mtime).unwrap();
    let first = env.backup(&[&dir], &[]);
    assert_eq!(first["bytes_read"], 12);
    let unchanged = env.backup(&[&dir], &[]);
    assert_eq!(unchanged["bytes_read"], 0);
    assert_eq!(unchanged["files_unmodified"], 1);
    // Same size, same mtime: only the ctime tells.
    fs::write(&file, b"version two!").unwrap();
    filetime::set_file_mtime(&file, mtime).unwrap();
    let after = env.backup(&[&dir], &[]);
    assert_eq!(after["bytes_read"], 12, "{after}");
    assert_eq!(after["files_changed"], 1);
    let target = env.restore("latest", "t", &[]);
    assert_eq!(
        fs::read(restored(&target, &dir).join("f")).unwrap(),
        b"version two!"
    );
}

#[test]
fn force_reads_everything_and_parent_can_be_chosen() {
    let env = Env::new();
    env.init();
    let dir = env.path("d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("f"), noise(5000, 1)).unwrap();
    env.backup(&[&dir], &[]);
    let forced = env.backup(&[&dir], &["--force"]);
    assert_eq!(forced["bytes_read"], 5000);
    assert!(
        forced["bytes_added"].as_u64().unwrap() < 4096,
        "content already stored: {forced}"
    );

    // A backup under another host name finds no parent by itself...
    let other = env.backup(&[&dir], &["--host", "elsewhere"]);
    assert_eq!(other["bytes_read"], 5000);
    // ...but reads nothing when given one.
    let first = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    let chosen = env.backup(&[&dir], &["--host", "elsewhere", "--parent", &first[..8]]);
    assert_eq!(chosen["bytes_read"], 0);
    let snapshots = env.snapshots();
    assert_eq!(
        snapshots.last().unwrap()["parent"],
        serde_json::json!(first)
    );
}

#[test]
fn a_file_written_to_during_the_backup_is_reported_and_stored_as_read() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let env = Env::new();
    env.init();
    let dir = env.path("d");
    fs::create_dir(&dir).unwrap();
    let file = dir.join("growing.log");
    let original = noise(16 << 20, 5);
    fs::write(&file, &original).unwrap();
    fs::write(dir.join("quiet"), b"left alone").unwrap();
    // A writer appends for as long as the backup runs, so the file changes
    // between the walk's look at it and the end of its read.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let file = file.clone();
        std::thread::spawn(move || {
            let mut log = fs::OpenOptions::new().append(true).open(file).unwrap();
            while !stop.load(Ordering::Relaxed) {
                log.write_all(b"another line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = env.run(&["backup", dir.to_str().unwrap()]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out);
    assert_eq!(
        warnings.matches("changed while being read").count(),
        1,
        "{warnings}"
    );
    assert!(warnings.contains("growing.log"), "{warnings}");

    // The snapshot holds a consistent prefix: what was read.
    let target = env.restore("latest", "t", &[]);
    let stored = fs::read(restored(&target, &dir).join("growing.log")).unwrap();
    let now = fs::read(&file).unwrap();
    assert!(stored.len() >= original.len());
    assert!(stored.len() <= now.len());
    assert_eq!(&now[..stored.len()], &stored[..]);
}

#[test]
fn summary_counts_new_changed_and_unmodified_files_and_directories() {
    let env = Env::new();
    env.init();
    let dir = env.path("d");
    fs::create_dir_all(dir.join("a")).unwrap();
    fs::create_dir_all(dir.join("b")).unwrap();
    fs::write(dir.join("a/x"), noise(3000, 1)).unwrap();
    fs::write(dir.join("b/y"), noise(3000, 2)).unwrap();
    let first = env.backup(&[&dir], &[]);
    let dirs = first["dirs_new"].as_u64().unwrap();
    assert!(dirs >= 3, "d, a, b and the directories above d: {first}");
    assert_eq!(first["files_new"], 2);

    let again = env.backup(&[&dir], &[]);
    // The temporary folder above the scratch directory may have changed:
    // other tests make their folders in it meanwhile.
    let changed = again["dirs_changed"].as_u64().unwrap();
    assert!(changed <= 1, "{again}");
    assert_eq!(
        again["dirs_unmodified"].as_u64().unwrap() + changed,
        dirs,
        "{again}"
    );
    assert_eq!(again["dirs_new"], 0);
    assert_eq!(again["files_unmodified"], 2);
    assert_eq!(again["bytes_read"], 0);

    fs::write(dir.join("a/x"), noise(3000, 3)).unwrap();
    fs::create_dir(dir.join("c")).unwrap();
    fs::write(dir.join("c/z"), noise(3000, 4)).unwrap();
    let third = env.backup(&[&dir], &[]);
    assert_eq!(third["files_new"], 1, "{third}");
    assert_eq!(third["files_changed"], 1);
    assert_eq!(third["files_unmodified"], 1);
    assert_eq!(third["dirs_new"], 1);
    assert_eq!(third["dirs_unmodified"], 1, "b");
    // a, d and everything above d hold a changed entry.
    assert_eq!(third["dirs_changed"], dirs - 1);
    assert_eq!(third["bytes_read"], 6000);
}

/// A command whose output is backed up inherits the environment, but not
/// cairn's own settings: the repository password must not reach it.
#[test]
fn a_command_gets_the_environment_without_cairn_settings() {
    let env = Env::new();
    env.init();
    let out = env
        .cairn()
        .env("UNRELATED_MARKER", "kept")
        .args(["backup", "--command", "environment=env"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.restore("latest", "t", &[]);
    let seen = fs::read_to_string(target.join("environment")).unwrap();
    assert!(seen.contains("UNRELATED_MARKER=kept"), "{seen}");
    assert!(!seen.contains("CAIRN_"), "{seen}");
}
