//! Retention against restic's own test cases, and grouping, filtering and
//! the refusals of a plan.

use chrono::{NaiveDateTime, Utc};

use super::policy::{apply, KeepCount, KeepPolicy, RetentionSpan, SpanError};
use super::*;
use crate::id::{BlobId, Id};

const RESTIC_CASES: &str = include_str!("restic_cases.txt");

fn ns(text: &str) -> i64 {
    let format = if text.contains('.') {
        "%Y-%m-%dT%H:%M:%S%.f"
    } else {
        "%Y-%m-%dT%H:%M:%S"
    };
    NaiveDateTime::parse_from_str(text, format)
        .unwrap()
        .and_utc()
        .timestamp_nanos_opt()
        .unwrap()
}

fn count(text: &str) -> KeepCount {
    match text {
        "-1" => KeepCount::All,
        n => KeepCount::Last(n.parse().unwrap()),
    }
}

/// A policy written as restic's Go literal fields, `Daily=7 Within=1d`.
fn policy(spec: &str) -> KeepPolicy {
    let mut p = KeepPolicy::default();
    for field in spec.split_whitespace() {
        let (name, value) = field.split_once('=').unwrap();
        let span = || RetentionSpan::parse(value).unwrap();
        match name {
            "Last" => p.last = count(value),
            "Hourly" => p.hourly = count(value),
            "Daily" => p.daily = count(value),
            "Weekly" => p.weekly = count(value),
            "Monthly" => p.monthly = count(value),
            "Yearly" => p.yearly = count(value),
            "Within" => p.within = span(),
            "WithinHourly" => p.within_hourly = span(),
            "WithinDaily" => p.within_daily = span(),
            "WithinWeekly" => p.within_weekly = span(),
            "WithinMonthly" => p.within_monthly = span(),
            "WithinYearly" => p.within_yearly = span(),
            "Tags" => {
                p.tags = value
                    .split(';')
                    .map(|list| list.split(',').map(String::from).collect())
                    .collect()
            }
            other => panic!("unknown field {other}"),
        }
    }
    p
}

/// One of restic's cases: its number, its policy, and the snapshots it
/// keeps (input index, reasons), newest first.
type Case = (usize, String, Vec<(usize, String)>);

#[test]
fn every_restic_policy_case_keeps_the_same_snapshots_for_the_same_reasons() {
    let mut snapshots: Vec<(i64, Vec<String>)> = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    for line in RESTIC_CASES.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("snapshot"), Some(index), Some(rest)) => {
                assert_eq!(index.parse::<usize>().unwrap(), snapshots.len());
                let mut fields = rest.split(' ');
                let time = ns(fields.next().unwrap());
                let tags = fields.next().unwrap().strip_prefix("tags=").unwrap();
                let tags = tags.split(',').filter(|t| !t.is_empty()).map(String::from);
                snapshots.push((time, tags.collect()));
            }
            (Some("case"), Some(n), spec) => cases.push((
                n.parse().unwrap(),
                spec.unwrap_or("").to_string(),
                Vec::new(),
            )),
            (Some("keep"), Some(index), Some(rest)) => {
                let reasons = rest.strip_prefix("| ").unwrap_or("").to_string();
                let case = cases.last_mut().unwrap();
                case.2.push((index.parse().unwrap(), reasons));
            }
            _ => panic!("unreadable line {line:?}"),
        }
    }
    assert_eq!(snapshots.len(), 103);
    assert_eq!(cases.len(), 40);

    // Newest first, ties in input order: Go's stable sort.
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| snapshots[b].0.cmp(&snapshots[a].0));
    let input: Vec<(i64, &[String])> = order
        .iter()
        .map(|&i| (snapshots[i].0, snapshots[i].1.as_slice()))
        .collect();
    let now = ns("2026-12-01T00:00:00");
    for (n, spec, expected) in &cases {
        let verdicts = apply(&input, &policy(spec), now, &Utc);
        let kept: Vec<(usize, String)> = order
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| v.keep)
            .map(|(&i, v)| (i, v.reasons.join("; ")))
            .collect();
        // Identical snapshots (same time and tags) are interchangeable.
        let shown = |list: &[(usize, String)]| -> Vec<(i64, Vec<String>, String)> {
            list.iter()
                .map(|(i, r)| (snapshots[*i].0, snapshots[*i].1.clone(), r.clone()))
                .collect()
        };
        assert_eq!(shown(&kept), shown(expected), "case {n}: {spec}");
    }
}

#[test]
fn spans_parse_as_restic_reads_them() {
    let span = RetentionSpan::parse("1y2m3d4h").unwrap();
    assert_eq!(
        (span.years, span.months, span.days, span.hours),
        (1, 2, 3, 4)
    );
    assert_eq!(span.to_string(), "1y2m3d4h");
    assert_eq!(RetentionSpan::parse("4h1y").unwrap().to_string(), "1y4h");
    assert_eq!(RetentionSpan::parse(" 7d ").unwrap().days, 7);
    assert_eq!(RetentionSpan::parse("12"), Err(SpanError::NoUnit(12)));
    assert_eq!(RetentionSpan::parse("3w"), Err(SpanError::UnknownUnit('w')));
    assert_eq!(RetentionSpan::parse("d"), Err(SpanError::NoNumber));
    assert_eq!(RetentionSpan::parse(""), Err(SpanError::NoNumber));
    assert!(matches!(
        RetentionSpan::parse("99999999999d"),
        Err(SpanError::TooLarge(_))
    ));
}

#[test]
fn a_month_back_from_the_31st_rolls_over_as_in_go() {
    // Go's AddDate(0, -1, 0) from 31 March is "31 February", that is
    // 3 March (2015 is no leap year): a snapshot on 2 March is outside.
    let policy = KeepPolicy {
        within: RetentionSpan::parse("1m").unwrap(),
        ..KeepPolicy::default()
    };
    let newest = ns("2015-03-31T12:00:00");
    let tags: &[String] = &[];
    let input = [
        (newest, tags),
        (ns("2015-03-03T12:00:01"), tags),
        (ns("2015-03-02T12:00:00"), tags),
    ];
    let kept: Vec<bool> = apply(&input, &policy, i64::MAX, &Utc)
        .iter()
        .map(|v| v.keep)
        .collect();
    assert_eq!(kept, [true, true, false]);
}

#[test]
fn snapshots_in_the_future_do_not_move_the_within_cutoff() {
    let policy = KeepPolicy {
        within: RetentionSpan::parse("1d").unwrap(),
        ..KeepPolicy::default()
    };
    let tags: &[String] = &[];
    let now = ns("2020-01-10T00:00:00");
    let input = [
        (ns("2030-01-01T00:00:00"), tags),
        (ns("2020-01-09T12:00:00"), tags),
        (ns("2020-01-08T13:00:00"), tags),
        (ns("2020-01-08T11:00:00"), tags),
    ];
    let kept: Vec<bool> = apply(&input, &policy, now, &Utc)
        .iter()
        .map(|v| v.keep)
        .collect();
    // The newest not in the future is 9 January 12:00; the one from the
    // future is newer than any cutoff and kept.
    assert_eq!(kept, [true, true, true, false]);
}

#[test]
fn periods_follow_the_given_time_zone() {
    // 23:30 and 00:30 UTC on consecutive days are one day at UTC+2.
    let plus_two = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
    let policy = KeepPolicy {
        daily: KeepCount::Last(5),
        ..KeepPolicy::default()
    };
    let tags: &[String] = &[];
    let input = [
        (ns("2020-01-02T00:30:00"), tags),
        (ns("2020-01-01T23:30:00"), tags),
        (ns("2020-01-01T10:30:00"), tags),
    ];
    let by_utc: Vec<bool> = apply(&input, &policy, i64::MAX, &Utc)
        .iter()
        .map(|v| v.keep)
        .collect();
    let by_plus_two: Vec<bool> = apply(&input, &policy, i64::MAX, &plus_two)
        .iter()
        .map(|v| v.keep)
        .collect();
    assert_eq!(by_utc, [true, true, true]);
    // At UTC+2 the first two are 2 January; the last is the oldest, kept
    // while counts are left.
    assert_eq!(by_plus_two, [true, false, true]);
}

fn snapshot(time: &str, host: &str, paths: &[&str], tags: &[&str]) -> Snapshot {
    Snapshot {
        time_ns: ns(time),
        hostname: host.into(),
        username: "u".into(),
        paths: paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        parent: None,
        tree: BlobId(Id([0; 32])),
        program_version: "test".into(),
        summary: Default::default(),
        unreadable: Vec::new(),
        original: None,
    }
}

fn listing(snapshots: Vec<Snapshot>) -> SnapshotList {
    let mut list = SnapshotList::default();
    for (n, s) in snapshots.into_iter().enumerate() {
        list.snapshots.push((SnapshotId(Id([n as u8 + 1; 32])), s));
    }
    list
}

fn sample() -> SnapshotList {
    listing(vec![
        snapshot("2020-01-01T00:00:00", "a", &["/etc"], &[]),
        snapshot("2020-01-02T00:00:00", "a", &["/etc"], &["x"]),
        snapshot("2020-01-03T00:00:00", "a", &["/home"], &[]),
        snapshot("2020-01-04T00:00:00", "b", &["/etc"], &["x", "y"]),
        snapshot("2020-01-05T00:00:00", "b", &["/etc"], &["y", "x"]),
    ])
}

fn keep_last(n: u32) -> KeepPolicy {
    KeepPolicy {
        last: KeepCount::Last(n),
        ..KeepPolicy::default()
    }
}

#[test]
fn groups_are_by_host_and_paths_unless_told_otherwise() {
    let options = ForgetOptions {
        policy: keep_last(1),
        ..ForgetOptions::default()
    };
    let groups = plan(sample(), &options, i64::MAX, &Utc).unwrap();
    let shown: Vec<(String, usize, usize)> = groups
        .iter()
        .map(|g| (g.key.to_string(), g.keep.len(), g.remove.len()))
        .collect();
    assert_eq!(
        shown,
        [
            ("host a, paths [/etc]".to_string(), 1, 1),
            ("host a, paths [/home]".to_string(), 1, 0),
            ("host b, paths [/etc]".to_string(), 1, 1),
        ]
    );
    // The newest of each group is the one kept, with its reason.
    assert_eq!(groups[0].keep[0].1.time_ns, ns("2020-01-02T00:00:00"));
    assert_eq!(groups[0].keep[0].2, ["last snapshot"]);

    // Tags group as sets; no field at all makes one group.
    let by_tags = ForgetOptions {
        policy: keep_last(1),
        group_by: GroupBy {
            host: false,
            paths: false,
            tags: true,
        },
        ..ForgetOptions::default()
    };
    let groups = plan(sample(), &by_tags, i64::MAX, &Utc).unwrap();
    let keys: Vec<String> = groups.iter().map(|g| g.key.to_string()).collect();
    assert_eq!(keys, ["tags []", "tags [x]", "tags [x, y]"]);
    assert_eq!(groups[2].remove.len(), 1);
    let one_group = ForgetOptions {
        policy: keep_last(2),
        group_by: GroupBy {
            host: false,
            paths: false,
            tags: false,
        },
        ..ForgetOptions::default()
    };
    let groups = plan(sample(), &one_group, i64::MAX, &Utc).unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].key.to_string(), "all snapshots");
    assert_eq!((groups[0].keep.len(), groups[0].remove.len()), (2, 3));
}

#[test]
fn filters_choose_what_is_considered() {
    let options = |filter: SnapshotFilter| ForgetOptions {
        policy: keep_last(1),
        filter,
        ..ForgetOptions::default()
    };
    let considered = |filter| -> usize {
        plan(sample(), &options(filter), i64::MAX, &Utc)
            .unwrap()
            .iter()
            .map(|g| g.keep.len() + g.remove.len())
            .sum()
    };
    assert_eq!(considered(SnapshotFilter::default()), 5);
    let hosts = |h: &[&str]| SnapshotFilter {
        hosts: h.iter().map(|s| s.to_string()).collect(),
        ..SnapshotFilter::default()
    };
    assert_eq!(considered(hosts(&["b"])), 2);
    assert_eq!(considered(hosts(&["a", "b"])), 5);
    let tags = |lists: &[&[&str]]| SnapshotFilter {
        tags: lists
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect(),
        ..SnapshotFilter::default()
    };
    assert_eq!(considered(tags(&[&["x"]])), 3);
    assert_eq!(considered(tags(&[&["x", "y"]])), 2, "all tags of a list");
    assert_eq!(considered(tags(&[&["y"], &["nope"]])), 2, "any list");
    let paths = SnapshotFilter {
        paths: vec![b"/home".to_vec()],
        ..SnapshotFilter::default()
    };
    assert_eq!(considered(paths), 1);
}

#[test]
fn a_plan_that_would_empty_a_group_or_has_no_rule_is_refused() {
    let within = ForgetOptions {
        policy: KeepPolicy {
            within: RetentionSpan::parse("1d").unwrap(),
            tags: vec![vec!["never".into()]],
            ..KeepPolicy::default()
        },
        ..ForgetOptions::default()
    };
    // Within a day of each group's newest keeps each newest, so nothing
    // empties; a tag nobody has alone would.
    assert!(plan(sample(), &within, i64::MAX, &Utc).is_ok());
    let only_tag = ForgetOptions {
        policy: KeepPolicy {
            tags: vec![vec!["never".into()]],
            ..KeepPolicy::default()
        },
        ..ForgetOptions::default()
    };
    let error = plan(sample(), &only_tag, i64::MAX, &Utc).unwrap_err();
    assert!(
        matches!(&error, Error::PolicyRemovesAll { group, count: 2 } if group == "host a, paths [/etc]"),
        "{error}"
    );
    assert!(matches!(
        plan(sample(), &ForgetOptions::default(), i64::MAX, &Utc),
        Err(Error::EmptyPolicy)
    ));
    let none = ForgetOptions {
        keep_none: true,
        ..ForgetOptions::default()
    };
    let groups = plan(sample(), &none, i64::MAX, &Utc).unwrap();
    assert!(groups.iter().all(|g| g.keep.is_empty()));
    let both = ForgetOptions {
        keep_none: true,
        policy: keep_last(1),
        ..ForgetOptions::default()
    };
    assert!(matches!(
        plan(sample(), &both, i64::MAX, &Utc),
        Err(Error::PolicyConflict)
    ));
    let mut damaged = sample();
    damaged
        .damaged
        .push(Error::corrupted("snapshots/ab", "bad"));
    assert!(matches!(
        plan(damaged, &within, i64::MAX, &Utc),
        Err(Error::PolicyUnknown { .. })
    ));
}

#[test]
fn equal_times_are_distinct_snapshots() {
    let list = listing(vec![
        snapshot("2020-01-01T00:00:00", "a", &["/p"], &[]),
        snapshot("2020-01-01T00:00:00", "a", &["/p"], &[]),
    ]);
    let options = ForgetOptions {
        policy: keep_last(1),
        ..ForgetOptions::default()
    };
    let groups = plan(list, &options, i64::MAX, &Utc).unwrap();
    assert_eq!((groups[0].keep.len(), groups[0].remove.len()), (1, 1));
    // The later in the listing (here the larger id) counts as newer.
    assert_eq!(groups[0].keep[0].0, SnapshotId(Id([2; 32])));
}
