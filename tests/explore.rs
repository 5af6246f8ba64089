//! `diff`, `find`, `stats` and `tag`, checked against the changes made to
//! the source between backups.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::util::{noise, stderr, Env};

/// `(path, change)` of each line of `diff --json`, and the summary.
fn diff_json(env: &Env, args: &[&str]) -> (BTreeSet<(String, String)>, Value) {
    let mut command = vec!["diff", "--json"];
    command.extend_from_slice(args);
    let out = env.ok(&command);
    let mut changes = BTreeSet::new();
    let mut summary = Value::Null;
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(s) = v.get("summary") {
            summary = s.clone();
        } else {
            changes.insert((
                v["path"].as_str().unwrap().to_string(),
                v["change"].as_str().unwrap().to_string(),
            ));
        }
    }
    (changes, summary)
}

fn set_mtime(path: &Path, secs: i64) {
    filetime::set_symlink_file_times(
        path,
        filetime::FileTime::from_unix_time(secs, 0),
        filetime::FileTime::from_unix_time(secs, 0),
    )
    .unwrap();
}

#[test]
fn diff_lists_exactly_the_changes_made_between_two_backups() {
    let env = Env::new();
    env.init_small_chunks();
    let src = env.path("src");
    for dir in ["same/deep", "edit", "gone/inner", "kind"] {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    fs::write(src.join("same/deep/untouched.txt"), b"never changes").unwrap();
    fs::write(src.join("edit/content.bin"), noise(200_000, 1)).unwrap();
    fs::write(src.join("edit/grows.txt"), b"short").unwrap();
    fs::write(src.join("edit/mode.txt"), b"mode").unwrap();
    fs::write(src.join("edit/time.txt"), b"time").unwrap();
    fs::write(src.join("gone/inner/a"), b"a").unwrap();
    fs::write(src.join("gone/b"), b"bb").unwrap();
    fs::write(src.join("edit/removed.txt"), b"removed").unwrap();
    fs::write(src.join("kind/was_file"), b"file").unwrap();
    std::os::unix::fs::symlink("one", src.join("edit/link")).unwrap();
    env.backup(&[&src], &[]);

    // Content: same length, one byte changed in the middle; appended.
    let mut content = noise(200_000, 1);
    content[100_000] ^= 0xff;
    fs::write(src.join("edit/content.bin"), &content).unwrap();
    fs::write(src.join("edit/grows.txt"), b"short and longer").unwrap();
    // Metadata only.
    fs::set_permissions(src.join("edit/mode.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&src.join("edit/time.txt"), 1_000_000_000);
    // Removed, added, replaced by another kind, retargeted.
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::remove_file(src.join("edit/removed.txt")).unwrap();
    fs::create_dir_all(src.join("new/sub")).unwrap();
    fs::write(src.join("new/sub/n.txt"), b"new file").unwrap();
    fs::remove_file(src.join("kind/was_file")).unwrap();
    fs::create_dir(src.join("kind/was_file")).unwrap();
    fs::write(src.join("kind/was_file/inside"), b"in").unwrap();
    fs::remove_file(src.join("edit/link")).unwrap();
    std::os::unix::fs::symlink("two", src.join("edit/link")).unwrap();
    // A directory touched explicitly, its entries the same.
    set_mtime(&src.join("same"), 2_000_000_000);
    env.backup(&[&src], &[]);

    let p = |rel: &str| src.join(rel).display().to_string();
    let expected: BTreeSet<(String, String)> = [
        ("edit/content.bin", "modified"),
        ("edit/grows.txt", "modified"),
        ("edit/link", "modified"),
        ("edit/mode.txt", "metadata"),
        ("edit/time.txt", "metadata"),
        ("edit/removed.txt", "removed"),
        ("gone", "removed"),
        ("gone/inner", "removed"),
        ("gone/inner/a", "removed"),
        ("gone/b", "removed"),
        ("new", "added"),
        ("new/sub", "added"),
        ("new/sub/n.txt", "added"),
        ("kind/was_file", "type"),
        ("kind/was_file/inside", "added"),
        ("same", "metadata"),
    ]
    .iter()
    .map(|(rel, change)| (p(rel), change.to_string()))
    .collect();
    let (changes, summary) = diff_json(&env, &["latest~1", "latest"]);
    assert_eq!(changes, expected);
    assert_eq!(summary["added"], 4);
    assert_eq!(summary["removed"], 5);
    assert_eq!(summary["modified"], 4);
    assert_eq!(summary["metadata"], 3);
    // Removed: the files' bytes, and the chunks of content.bin the change
    // replaced (at most a few of its ~4 KiB chunks).
    let removed = summary["bytes_removed"].as_u64().unwrap();
    assert!((1 + 2 + 7 + 4 + 5..=1 + 2 + 7 + 4 + 5 + 64_000).contains(&removed));

    // The other way round, added and removed swap.
    let (back, _) = diff_json(&env, &["latest", "latest~1"]);
    assert!(back.contains(&(p("gone/b"), "added".into())));
    assert!(back.contains(&(p("new/sub/n.txt"), "removed".into())));

    // Text: a marker per line, directories with a slash, then the counts.
    let text = env.ok(&["diff", "latest~1", "latest"]);
    assert!(text.contains(&format!("-    {}/\n", p("gone"))), "{text}");
    assert!(
        text.contains(&format!("M    {}\n", p("edit/grows.txt"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("U    {}\n", p("edit/mode.txt"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("+    {}\n", p("new/sub/n.txt"))),
        "{text}"
    );
    assert!(text.trim_end().ends_with("B removed"), "{text}");

    // A path limits the comparison; identical snapshots differ in nothing.
    let (only, _) = diff_json(&env, &["latest~1", "latest", &p("gone")]);
    assert_eq!(only.len(), 4, "{only:?}");
    assert!(only.iter().all(|(_, c)| c == "removed"));
    let (none, summary) = diff_json(&env, &["latest", "latest"]);
    assert!(none.is_empty());
    assert_eq!(summary["added"], 0);
    let missing = env.run(&["diff", "latest~1", "latest", &p("nowhere")]);
    assert_eq!(missing.status.code(), Some(1));
    let message = stderr(&missing);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains("nowhere"), "{message}");
}

#[test]
fn find_lists_exactly_the_snapshots_that_hold_a_path() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    let notes = src.join("docs/notes.txt");
    let mut ids = Vec::new();
    // notes.txt: 1 byte, 2 bytes, absent, 4 bytes.
    for (day, size) in [(1, Some(1)), (2, Some(2)), (3, None), (4, Some(4))] {
        match size {
            Some(n) => {
                fs::write(&notes, vec![b'x'; n]).unwrap();
                set_mtime(&notes, 1_700_000_000 + day * 86_400);
            }
            None => fs::remove_file(&notes).unwrap(),
        }
        fs::write(src.join("docs/other.md"), format!("day {day}")).unwrap();
        let time = format!("2024-05-0{day} 10:00:00");
        let summary = env.backup(&[&src], &["--time", &time]);
        ids.push(summary["snapshot_id"].as_str().unwrap().to_string());
    }
    let find = |args: &[&str]| -> BTreeMap<String, Vec<(String, u64)>> {
        let mut command = vec!["find", "--json"];
        command.extend_from_slice(args);
        env.ok(&command)
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).unwrap();
                let versions = v["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|ver| {
                        (
                            ver["snapshot"].as_str().unwrap().to_string(),
                            ver["size"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                (v["path"].as_str().unwrap().to_string(), versions)
            })
            .collect()
    };
    let holding = vec![
        (ids[0].clone(), 1),
        (ids[1].clone(), 2),
        (ids[3].clone(), 4),
    ];
    let path = notes.display().to_string();
    for pattern in ["notes.txt", "*.txt", path.as_str(), "docs/notes.*"] {
        let found = find(&[pattern]);
        assert_eq!(found.len(), 1, "{pattern}: {found:?}");
        assert_eq!(found[&path], holding, "{pattern}");
    }
    // Several patterns; a directory matches as itself.
    let found = find(&["notes.txt", "other.md", "docs"]);
    assert_eq!(found.len(), 3);
    assert_eq!(
        found[&src.join("docs/other.md").display().to_string()].len(),
        4
    );
    // Only the snapshots named, and only versions modified in a range.
    let found = find(&["notes.txt", "--snapshot", &ids[1][..8], "-s", "latest"]);
    assert_eq!(found[&path], vec![(ids[1].clone(), 2), (ids[3].clone(), 4)]);
    let after_day_1 = "2023-11-16T00:00:00Z"; // 1_700_000_000 + 1.5 days
    let found = find(&["notes.txt", "--newer", after_day_1]);
    assert_eq!(found[&path], holding[1..].to_vec());
    let found = find(&["notes.txt", "--older", after_day_1]);
    assert_eq!(found[&path], holding[..1].to_vec());
    assert!(find(&["nothing-like-this"]).is_empty());
    // The text form: the path, then a line per version.
    let text = env.ok(&["find", "notes.txt"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], path);
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[1].contains(&ids[0][..8]), "{text}");
}

#[test]
fn stats_counts_restore_size_once_per_snapshot_and_blobs_once() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let unique = noise(300_000, 5);
    fs::write(src.join("a.bin"), &unique).unwrap();
    fs::write(src.join("copy.bin"), &unique).unwrap();
    fs::write(src.join("small.txt"), b"0123456789").unwrap();
    env.backup(&[&src], &[]);
    env.backup(&[&src], &[]);
    let stats = |args: &[&str]| -> Value {
        let mut command = vec!["stats", "--json"];
        command.extend_from_slice(args);
        serde_json::from_str(&env.ok(&command)).unwrap()
    };
    let one_snapshot = 300_000 * 2 + 10;
    let all = stats(&[]);
    assert_eq!(all["snapshots"], 2);
    assert_eq!(all["files"], 6);
    assert_eq!(all["restore_size"], 2 * one_snapshot);
    assert_eq!(all["deduplicated_size"], 300_000 + 10);
    assert_eq!(all["missing_blobs"], 0);
    let stored = all["stored_size"].as_u64().unwrap();
    // Noise does not compress; encryption adds a little per blob.
    assert!((300_000..330_000).contains(&stored), "{stored}");
    let ratio = all["dedup_ratio"].as_f64().unwrap();
    assert!((ratio - 2.0 * one_snapshot as f64 / 300_010.0).abs() < 0.01);
    let latest = stats(&["latest"]);
    assert_eq!(latest["snapshots"], 1);
    assert_eq!(latest["restore_size"], one_snapshot);
    assert_eq!(latest["deduplicated_size"], all["deduplicated_size"]);
    let text = env.ok(&["stats"]);
    assert!(text.contains("restore size"), "{text}");
    assert!(text.contains("dedup ratio"), "{text}");
}

#[test]
fn tag_replaces_snapshots_and_records_the_original() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    let first = env.backup(&[&src], &["--tag", "nightly"])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = env.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let by_tags = |env: &Env| -> Vec<(Vec<String>, Option<String>, String)> {
        env.snapshots()
            .iter()
            .map(|s| {
                let tags = s["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect();
                let original = s["original"].as_str().map(String::from);
                (tags, original, s["id"].as_str().unwrap().to_string())
            })
            .collect()
    };

    env.ok(&["tag", &first[..8], "--add", "keep,yearly"]);
    let listed = by_tags(&env);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].0, ["nightly", "keep", "yearly"]);
    assert_eq!(listed[0].1.as_deref(), Some(first.as_str()));
    assert_ne!(listed[0].2, first, "a new snapshot object");
    assert_eq!(listed[1].2, second, "the other one untouched");

    // Again: the original stays the first of the line.
    env.ok(&["tag", "--tag", "keep", "--remove", "nightly"]);
    let listed = by_tags(&env);
    assert_eq!(listed[0].0, ["keep", "yearly"]);
    assert_eq!(listed[0].1.as_deref(), Some(first.as_str()));
    env.ok(&["tag", "latest", "--set", "a,b"]);
    env.ok(&["tag", "latest", "--set", ""]);
    let listed = by_tags(&env);
    assert!(listed[1].0.is_empty());
    assert_eq!(listed[1].1.as_deref(), Some(second.as_str()));

    // A change that changes nothing writes nothing.
    let before = by_tags(&env);
    let out = env.ok(&["tag", "--tag", "keep", "--add", "keep"]);
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(by_tags(&env), before);

    // The retagged snapshots restore and the repository checks clean.
    env.ok(&["check"]);
    let target = env.restore("latest", "t", &[]);
    assert!(target.exists());
    let missing = env.run(&["tag", "latest"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("--add"), "{}", stderr(&missing));
    let gone = env.run(&["tag", &first[..8], "--add", "x"]);
    assert_eq!(gone.status.code(), Some(1));
}
