//! The commands as a user runs them: options, output, exit codes.

use std::fs;

use serde_json::Value;

use crate::util::{restored, stderr, Env};

fn sample_source(env: &Env) -> std::path::PathBuf {
    let source = env.path("source");
    fs::create_dir_all(source.join("docs/old")).unwrap();
    fs::create_dir_all(source.join("logs")).unwrap();
    fs::write(source.join("docs/a.txt"), b"alpha").unwrap();
    fs::write(source.join("docs/b.md"), b"beta").unwrap();
    fs::write(source.join("docs/old/c.txt"), b"gamma").unwrap();
    fs::write(source.join("logs/app.log"), b"log line").unwrap();
    source
}

#[test]
fn init_backup_snapshots_restore() {
    let env = Env::new();
    let out = env.ok(&["init"]);
    assert!(out.contains("created cairn repository"));
    let source = sample_source(&env);
    let out = env.ok(&["backup", source.to_str().unwrap()]);
    assert!(out.contains("snapshot") && out.contains("saved"), "{out}");
    let table = env.ok(&["snapshots"]);
    assert!(table.contains(&source.display().to_string()), "{table}");
    assert!(table.contains("1 snapshots"));
    let target = env.restore("latest", "target", &[]);
    assert_eq!(
        fs::read(restored(&target, &source).join("docs/old/c.txt")).unwrap(),
        b"gamma"
    );
}

#[test]
fn snapshots_json_has_the_documented_fields() {
    let env = Env::new();
    env.init();
    let source = sample_source(&env);
    let summary = env.backup(
        &[&source],
        &[
            "--host",
            "db-1",
            "--tag",
            "nightly",
            "--tag",
            "pg",
            "--time",
            "2021-02-03T04:05:06Z",
        ],
    );
    assert_eq!(summary["message_type"], "summary");
    assert_eq!(summary["schema_version"], 1);
    assert_eq!(summary["files_new"], 4);
    let snapshots = env.snapshots();
    assert_eq!(snapshots.len(), 1);
    let s = &snapshots[0];
    for field in [
        "id", "short_id", "time", "host", "username", "paths", "tags", "parent", "tree", "summary",
    ] {
        assert!(s.get(field).is_some(), "missing {field}: {s}");
    }
    assert_eq!(s["id"], summary["snapshot_id"]);
    assert!(s["id"]
        .as_str()
        .unwrap()
        .starts_with(s["short_id"].as_str().unwrap()));
    assert_eq!(s["host"], "db-1");
    assert_eq!(s["tags"], serde_json::json!(["nightly", "pg"]));
    assert_eq!(
        s["paths"],
        serde_json::json!([source.display().to_string()])
    );
    assert_eq!(s["parent"], Value::Null);
    let time = s["time"].as_str().unwrap();
    assert!(
        time.starts_with("2021-02-03T04:05:06")
            && (time.ends_with('Z') || time.ends_with("+00:00")),
        "{time}"
    );
    assert_eq!(s["summary"]["files_new"], 4);
    assert!(s["summary"]["bytes_added"].as_u64().unwrap() > 0);
}

#[test]
fn snapshot_references_latest_prefix_and_full_id() {
    let env = Env::new();
    env.init();
    let source = sample_source(&env);
    env.backup(&[&source], &["--time", "2020-01-01 00:00:00"]);
    fs::write(source.join("docs/a.txt"), b"alpha two").unwrap();
    env.backup(&[&source], &["--time", "2020-06-01 00:00:00"]);
    let snapshots = env.snapshots();
    let old = snapshots[0]["id"].as_str().unwrap();
    let target = env.restore(&old[..6], "by-prefix", &[]);
    assert_eq!(
        fs::read(restored(&target, &source).join("docs/a.txt")).unwrap(),
        b"alpha"
    );
    let target = env.restore(old, "by-id", &[]);
    assert_eq!(
        fs::read(restored(&target, &source).join("docs/a.txt")).unwrap(),
        b"alpha"
    );
    let target = env.restore("latest", "latest", &[]);
    assert_eq!(
        fs::read(restored(&target, &source).join("docs/a.txt")).unwrap(),
        b"alpha two"
    );
    let out = env.run(&[
        "restore",
        "0000000000",
        "--target",
        env.path("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no snapshot matches"));
}

#[test]
fn include_and_exclude_patterns() {
    let env = Env::new();
    env.init();
    let source = sample_source(&env);
    env.backup(&[&source], &[]);

    let target = env.restore("latest", "only-txt", &["--include", "*.txt"]);
    let base = restored(&target, &source);
    assert!(base.join("docs/a.txt").exists());
    assert!(base.join("docs/old/c.txt").exists());
    assert!(!base.join("docs/b.md").exists());
    assert!(!base.join("logs").exists());

    let anchored = format!("{}/docs/old", source.display());
    let target = env.restore(
        "latest",
        "no-logs",
        &["--exclude", "logs", "--exclude", &anchored],
    );
    let base = restored(&target, &source);
    assert!(base.join("docs/a.txt").exists());
    assert!(!base.join("logs").exists());
    assert!(!base.join("docs/old").exists());

    let target = env.restore(
        &format!("latest:{}", source.join("docs").display()),
        "sub-include",
        &["--include", "/old"],
    );
    assert!(target.join("old/c.txt").exists());
    assert!(!target.join("a.txt").exists());
}

#[test]
fn dry_run_lists_and_writes_nothing() {
    let env = Env::new();
    env.init();
    let source = sample_source(&env);
    env.backup(&[&source], &[]);
    let target = env.path("dry");
    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(out.contains("docs/old/c.txt"), "{out}");
    assert!(out.contains("would restore 4 files"), "{out}");
    assert!(!target.exists());
}

#[test]
fn verify_reports_checked_files() {
    let env = Env::new();
    env.init();
    let source = sample_source(&env);
    env.backup(&[&source], &[]);
    let target = env.path("v");
    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert!(out.contains("verified 4 files"), "{out}");
}

#[test]
fn password_from_file_and_command() {
    let env = Env::new();
    let file = env.path("pw");
    fs::write(&file, "from a file\n").unwrap();
    let base = || {
        let mut cmd = crate::util::bare_cairn();
        cmd.env("CAIRN_REPO", env.location())
            .env("CAIRN_CACHE_DIR", &env.cache)
            .envs(env.store_environment());
        cmd
    };
    assert!(base()
        .args(["init", "--password-file", file.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .success());
    let out = base()
        .env("CAIRN_PASSWORD_FILE", &file)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = base()
        .args(["--password-command", "echo from a file", "snapshots"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = base()
        .args(["--password-command", "echo nope", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    let out = base()
        .args(["--password-command", "exit 4", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("password command"));
}

#[test]
fn password_is_never_a_plain_argument() {
    let env = Env::new();
    let out = env.run(&["--password", "x", "init"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn backup_json_errors_are_json() {
    let env = Env::new();
    env.init();
    let out = env.run(&["backup", "--json", env.path("absent").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let line: Value = serde_json::from_str(stderr(&out).trim()).expect("JSON error line");
    assert_eq!(line["message_type"], "error");
    assert!(line["message"].as_str().unwrap().contains("absent"));
}

#[test]
fn bad_time_is_refused() {
    let env = Env::new();
    env.init();
    let source = sample_source(&env);
    let out = env.run(&[
        "backup",
        "--time",
        "yesterday-ish",
        source.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--time"));
    assert!(env.snapshots().is_empty());
}

#[test]
fn backup_json_is_newline_delimited_status_then_summary() {
    let env = Env::new();
    env.init();
    let source = sample_source(&env);
    let out = env.ok(&["backup", "--json", source.to_str().unwrap()]);
    let lines: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    let (summary, statuses) = lines.split_last().expect("at least the summary");
    assert_eq!(summary["message_type"], "summary");
    assert!(
        !statuses.is_empty(),
        "the scan's totals give at least one status line"
    );
    for status in statuses {
        assert_eq!(status["message_type"], "status");
        assert_eq!(status["schema_version"], 1);
        for field in [
            "seconds_elapsed",
            "files_done",
            "bytes_done",
            "total_files",
            "total_bytes",
            "percent_done",
            "current_file",
        ] {
            assert!(
                status.get(field).is_some(),
                "status lacks {field}: {status}"
            );
        }
    }
    let last = statuses.last().unwrap();
    assert_eq!(last["total_files"], 4, "{last}");
    assert_eq!(last["total_bytes"], 5 + 4 + 5 + 8, "{last}");
    for field in [
        "snapshot_id",
        "short_id",
        "files_new",
        "files_changed",
        "files_unmodified",
        "dirs_new",
        "dirs_changed",
        "dirs_unmodified",
        "bytes_read",
        "bytes_added",
        "blobs_added",
        "duration_seconds",
        "incomplete",
        "unreadable",
    ] {
        assert!(
            summary.get(field).is_some(),
            "summary lacks {field}: {summary}"
        );
    }
}

#[test]
fn quiet_and_non_terminal_runs_print_no_progress() {
    let env = Env::new();
    env.init();
    let source = sample_source(&env);
    let out = env.run(&["backup", "--quiet", source.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let out = env.run(&["backup", source.to_str().unwrap()]);
    assert!(
        out.stderr.is_empty(),
        "no progress display without a terminal: {}",
        stderr(&out)
    );
}

#[test]
fn out_of_range_compression_and_dot_dot_paths_are_refused() {
    let env = Env::new();
    env.init();
    let source = sample_source(&env);
    let out = env.run(&["backup", "--compression", "30", source.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("compression level 30"),
        "{}",
        stderr(&out)
    );
    assert!(env.snapshots().is_empty());
    env.backup(&[&source], &[]);
    let sneaky = format!("latest:{}/docs/../logs", source.display());
    let out = env.run(&[
        "restore",
        &sneaky,
        "--target",
        env.path("t").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot contain .."),
        "{}",
        stderr(&out)
    );
}
