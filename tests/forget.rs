//! `cairn forget`: retention policies as restic applies them, grouping,
//! filters, refusals, and forgetting by id.

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use crate::util::{stderr, Env};

/// A repository with one small source, backed up at each of `times`
/// (local time, `YYYY-MM-DD HH:MM:SS`) with `extra` backup options.
fn history(env: &Env, times: &[&str], extra: &[&str]) {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for (n, time) in times.iter().enumerate() {
        fs::write(src.join("f"), format!("version {n}")).unwrap();
        let mut options = vec!["--time", time];
        options.extend_from_slice(extra);
        env.backup(&[&src], &options);
    }
}

/// The times (as given to `--time`) of the snapshots left, oldest first.
fn left(env: &Env) -> Vec<String> {
    env.snapshots()
        .iter()
        .map(|s| {
            let time = s["time"].as_str().unwrap();
            chrono::DateTime::parse_from_rfc3339(time)
                .unwrap()
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .collect()
}

const TIMES: &[&str] = &[
    "2023-12-31 23:00:00",
    "2024-01-01 08:00:00",
    "2024-01-01 20:00:00",
    "2024-01-02 09:00:00",
    "2024-01-07 09:00:00",
    "2024-01-08 09:00:00",
    "2024-02-15 09:00:00",
    "2024-02-20 09:00:00",
    "2024-03-01 09:00:00",
    "2025-06-01 09:00:00",
    "2025-06-01 09:30:00",
];

/// Runs `forget ARGS` on a fresh copy of the TIMES history and returns the
/// times left.
fn kept_by(args: &[&str]) -> Vec<String> {
    let env = Env::new();
    env.init();
    history(&env, TIMES, &[]);
    let mut command = vec!["forget"];
    command.extend_from_slice(args);
    env.ok(&command);
    left(&env)
}

fn times(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn keep_last_and_every_period_rule_keep_what_restic_keeps() {
    assert_eq!(
        kept_by(&["--keep-last", "3"]),
        times(&[
            "2024-03-01 09:00:00",
            "2025-06-01 09:00:00",
            "2025-06-01 09:30:00"
        ])
    );
    // The newest of each of the last 3 days that have a snapshot.
    assert_eq!(
        kept_by(&["--keep-daily", "3"]),
        times(&[
            "2024-02-20 09:00:00",
            "2024-03-01 09:00:00",
            "2025-06-01 09:30:00"
        ])
    );
    // ISO weeks: 7 January 2024 is a Sunday, in the week of 1 January;
    // 31 December 2023 belongs to the last week of 2023. Counts left at
    // the oldest snapshot keep it too ("oldest weekly snapshot").
    assert_eq!(
        kept_by(&["--keep-weekly", "10"]),
        times(&[
            "2023-12-31 23:00:00",
            "2024-01-07 09:00:00",
            "2024-01-08 09:00:00",
            "2024-02-15 09:00:00",
            "2024-02-20 09:00:00",
            "2024-03-01 09:00:00",
            "2025-06-01 09:30:00",
        ])
    );
    assert_eq!(
        kept_by(&["--keep-monthly", "2"]),
        times(&["2024-03-01 09:00:00", "2025-06-01 09:30:00"])
    );
    assert_eq!(
        kept_by(&["--keep-yearly", "5"]),
        times(&[
            "2023-12-31 23:00:00",
            "2024-03-01 09:00:00",
            "2025-06-01 09:30:00"
        ])
    );
    // One hour holds both 2025 snapshots: its newest counts for it.
    assert_eq!(
        kept_by(&["--keep-hourly", "2"]),
        times(&["2024-03-01 09:00:00", "2025-06-01 09:30:00"])
    );
    // Rules add up: a snapshot kept by any rule is kept.
    assert_eq!(
        kept_by(&["--keep-last", "1", "--keep-yearly", "2"]),
        times(&["2024-03-01 09:00:00", "2025-06-01 09:30:00"])
    );
}

#[test]
fn unlimited_counts_and_within_spans() {
    let all_days = kept_by(&["--keep-daily", "unlimited"]);
    assert_eq!(all_days.len(), 9, "{all_days:?}");
    assert_eq!(kept_by(&["--keep-daily", "-1"]), all_days);
    assert_eq!(kept_by(&["--keep-last", "-1"]).len(), TIMES.len());
    // Counted back from the newest snapshot (2025-06-01 09:30), not now.
    assert_eq!(
        kept_by(&["--keep-within", "1y3m2d"]),
        times(&[
            "2024-03-01 09:00:00",
            "2025-06-01 09:00:00",
            "2025-06-01 09:30:00"
        ])
    );
    assert_eq!(
        kept_by(&["--keep-within", "1h"]),
        times(&["2025-06-01 09:00:00", "2025-06-01 09:30:00"])
    );
    assert_eq!(
        kept_by(&["--keep-within-monthly", "1y4m"]),
        times(&[
            "2024-02-20 09:00:00",
            "2024-03-01 09:00:00",
            "2025-06-01 09:30:00"
        ])
    );
}

#[test]
fn keep_tag_groups_and_filters() {
    let env = Env::new();
    env.init();
    history(
        &env,
        &["2024-01-01 00:00:00", "2024-01-02 00:00:00"],
        &["--host", "a"],
    );
    history(
        &env,
        &["2024-01-03 00:00:00", "2024-01-04 00:00:00"],
        &["--host", "a", "--tag", "x", "--tag", "y"],
    );
    history(
        &env,
        &["2024-01-05 00:00:00"],
        &["--host", "b", "--tag", "x"],
    );
    history(&env, &["2024-01-06 00:00:00"], &["--host", "b"]);

    // Grouped by host: the newest of each host stays, plus the tagged.
    env.ok(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "x,y",
        "--dry-run",
    ]);
    assert_eq!(env.snapshots().len(), 6, "a dry run removes nothing");
    let json = env.ok(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "x,y",
        "--dry-run",
        "--json",
    ]);
    let groups: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["group"]["host"], "a");
    assert!(groups[0]["group"]["paths"].is_array());
    assert!(groups[0]["group"]["tags"].is_null());
    let reasons: Vec<&Value> = groups[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["reasons"])
        .collect();
    assert_eq!(
        reasons,
        [
            &serde_json::json!(["has tags [x, y]", "last snapshot"]),
            &serde_json::json!(["has tags [x, y]"]),
        ]
    );
    assert_eq!(groups[0]["remove"].as_array().unwrap().len(), 2);
    assert_eq!(groups[1]["remove"][0]["host"], "b");

    // --host and --tag choose which snapshots are considered at all.
    env.ok(&["forget", "--keep-last", "1", "--host", "b"]);
    assert_eq!(left(&env).len(), 5);
    env.ok(&["forget", "--keep-last", "1", "--tag", "x,y"]);
    let now: BTreeSet<String> = left(&env).into_iter().collect();
    assert!(!now.contains("2024-01-03 00:00:00"), "{now:?}");
    assert!(
        now.contains("2024-01-01 00:00:00"),
        "untagged ones untouched: {now:?}"
    );

    // One group for everything.
    env.ok(&["forget", "--keep-last", "2", "--group-by", ""]);
    assert_eq!(left(&env).len(), 2);
}

#[test]
fn a_policy_that_would_empty_a_group_is_refused_and_keep_none_is_explicit() {
    let env = Env::new();
    env.init();
    history(&env, &["2024-01-01 00:00:00", "2024-01-02 00:00:00"], &[]);
    let out = env.run(&["forget", "--keep-tag", "nobody-has-this"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("would remove all 2 snapshots"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.snapshots().len(), 2);
    let out = env.run(&["forget"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no policy given"), "{}", stderr(&out));
    let out = env.run(&["forget", "--keep-last", "x"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let out = env.run(&["forget", "--keep-within", "3w"]);
    assert!(stderr(&out).contains("unknown unit"), "{}", stderr(&out));
    env.ok(&["forget", "--keep-none"]);
    assert!(env.snapshots().is_empty());
}

#[test]
fn forget_by_id_removes_exactly_those_and_the_rest_still_restores() {
    let env = Env::new();
    env.init();
    history(
        &env,
        &[
            "2024-01-01 00:00:00",
            "2024-01-02 00:00:00",
            "2024-01-03 00:00:00",
        ],
        &[],
    );
    let ids: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let out = env.run(&["forget", &ids[1][..8], "--keep-last", "1"]);
    assert_eq!(out.status.code(), Some(1), "ids and a policy together");
    env.ok(&["forget", &ids[1][..8], "latest"]);
    let left: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, [ids[0].clone()]);
    let target = env.restore(&ids[0], "t", &[]);
    let restored = crate::util::restored(&target, &env.path("src"));
    assert_eq!(fs::read(restored.join("f")).unwrap(), b"version 0");
    let out = env.run(&["forget", "ffffffff"]);
    assert_eq!(out.status.code(), Some(1));
}
