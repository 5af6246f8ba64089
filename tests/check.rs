//! `cairn check`: a clean repository checks clean; each kind of damage is
//! named, with the snapshots and paths it affects.

use std::fs;

use cairn_core::backend::ObjectKind;
use serde_json::Value;

use crate::util::{noise, restored, stderr, Env};

/// A repository with three snapshots of a small tree: the first holds
/// `keep.txt` only; the next add `sub/big.bin`, whose 3 MiB fill packs of
/// their own (packs close at 1 MiB), then `new.txt`.
fn repository() -> Env {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("keep.txt"), b"small and safe").unwrap();
    env.backup(&[&src], &[]);
    fs::write(src.join("sub/big.bin"), noise(3 << 20, 5)).unwrap();
    env.backup(&[&src], &[]);
    fs::write(src.join("new.txt"), b"second").unwrap();
    env.backup(&[&src], &[]);
    env
}

fn check(env: &Env, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut command = vec!["check", "--json"];
    command.extend_from_slice(args);
    let out = env.run(&command);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report, stderr(&out))
}

fn objects_named(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["object"].as_str().unwrap().to_string())
        .collect()
}

/// The pack holding most of `big.bin`: the largest.
fn big_pack(env: &Env) -> String {
    env.objects(ObjectKind::Pack)
        .into_iter()
        .max_by_key(|name| env.read_object(ObjectKind::Pack, name).len())
        .unwrap()
}

#[test]
fn a_clean_repository_checks_clean_with_and_without_reading_data() {
    let env = repository();
    let out = env.ok(&["check"]);
    assert!(
        out.contains("checked 3 snapshots") && out.contains("no errors"),
        "{out}"
    );
    let (code, report, _) = check(&env, &["--read-data"]);
    assert_eq!(code, Some(0));
    assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
    let packs = report["packs"].as_u64().unwrap();
    assert!(packs >= 2);
    assert_eq!(report["packs_read"].as_u64().unwrap(), packs);
    assert!(report["blobs_read"].as_u64().unwrap() > 3);
}

#[test]
fn read_data_subsets_cover_every_pack_once() {
    let env = repository();
    let (_, full, _) = check(&env, &[]);
    let packs = full["packs"].as_u64().unwrap();
    let read: u64 = (1..=3)
        .map(|n| {
            let (code, report, _) = check(&env, &["--read-data-subset", &format!("{n}/3")]);
            assert_eq!(code, Some(0));
            report["packs_read"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(read, packs);
    let (code, report, _) = check(&env, &["--read-data-subset", "100%"]);
    assert_eq!(code, Some(0));
    assert_eq!(report["packs_read"].as_u64().unwrap(), packs);
    for bad in ["0/3", "4/3", "x", "0%", "101%"] {
        let out = env.run(&["check", "--read-data-subset", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn a_missing_pack_is_named_with_the_snapshots_and_paths_it_takes() {
    let env = repository();
    let pack = big_pack(&env);
    env.remove_object(ObjectKind::Pack, &pack);
    let (code, report, _) = check(&env, &[]);
    assert_eq!(code, Some(1));
    let errors = report["errors"].as_array().unwrap();
    let missing = errors
        .iter()
        .find(|p| p["object"].as_str().unwrap().ends_with(&pack))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        missing["message"].as_str().unwrap().contains("missing"),
        "{missing}"
    );
    // The snapshots holding big.bin (not the first), and the paths lost:
    // big.bin, or a directory above it if the pack also held its tree.
    let affected = missing["snapshots"].as_array().unwrap().len();
    assert!((1..=2).contains(&affected), "{missing}");
    let big = env.path("src").join("sub/big.bin").display().to_string();
    let paths: Vec<&str> = missing["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(!paths.is_empty());
    assert!(paths.iter().all(|p| big.starts_with(p)), "{paths:?}");
    // Text output names it too.
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&pack) && stderr(&out).contains("affects snapshots"));
    // What the pack did not hold still restores.
    let first = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    let target = env.restore(&first, "t", &[]);
    let src = env.path("src");
    assert_eq!(
        fs::read(restored(&target, &src).join("keep.txt")).unwrap(),
        b"small and safe"
    );
}

#[test]
fn a_flipped_bit_in_a_pack_is_found_by_reading_the_data() {
    let env = repository();
    let pack = big_pack(&env);
    let mut bytes = env.read_object(ObjectKind::Pack, &pack);
    bytes[1000] ^= 0x10;
    env.replace_object(ObjectKind::Pack, &pack, &bytes);
    // The structure is intact: only reading the data shows it.
    let (code, _, _) = check(&env, &[]);
    assert_eq!(code, Some(0));
    let (code, report, _) = check(&env, &["--read-data"]);
    assert_eq!(code, Some(1));
    let objects = objects_named(&report, "errors");
    assert!(objects.iter().any(|o| o.ends_with(&pack)), "{objects:?}");
    let blob = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["object"].as_str().unwrap().starts_with("blob "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        blob["paths"][0].as_str().unwrap().ends_with("sub/big.bin"),
        "{blob}"
    );
}

#[test]
fn damaged_snapshots_segments_and_sessions_are_named() {
    // A snapshot.
    let env = repository();
    let snapshot = env.objects(ObjectKind::Snapshot)[0].clone();
    let mut bytes = env.read_object(ObjectKind::Snapshot, &snapshot);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    env.replace_object(ObjectKind::Snapshot, &snapshot, &bytes);
    let (code, report, _) = check(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(
        objects_named(&report, "errors")
            .iter()
            .any(|o| o.contains(&snapshot)),
        "{report}"
    );

    // An index segment.
    let env = repository();
    let segment = env.objects(ObjectKind::Index)[0].clone();
    env.replace_object(ObjectKind::Index, &segment, b"garbage");
    let (code, report, _) = check(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(
        objects_named(&report, "errors")
            .iter()
            .any(|o| o.contains(&segment)),
        "{report}"
    );

    // A session: the packs and snapshots it sealed cannot be opened.
    let env = repository();
    for session in env.objects(ObjectKind::Session) {
        env.remove_object(ObjectKind::Session, &session);
    }
    let (code, report, _) = check(&env, &[]);
    assert_eq!(code, Some(1));
    let errors = report["errors"].to_string();
    assert!(errors.contains("session"), "{errors}");
}

#[test]
fn an_unindexed_pack_and_a_leftover_temporary_file_are_warnings() {
    let env = repository();
    // A segment gone: its packs are unindexed (a warning) and the blobs
    // the snapshots name are not in the index (errors).
    let segments = env.objects(ObjectKind::Index);
    env.remove_object(ObjectKind::Index, &segments[0]);
    let (code, report, _) = check(&env, &[]);
    assert_eq!(code, Some(1));
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("no index segment lists this pack"),
        "{warnings}"
    );

    if !crate::util::is_local() {
        eprintln!("leftover temporary files: local-backend property, skipped");
        return;
    }
    let env = repository();
    fs::write(env.repo_dir().join("data/.tmp-stopped"), b"half a pack").unwrap();
    let (code, report, _) = check(&env, &[]);
    assert_eq!(code, Some(0), "leftovers lose nothing");
    assert!(
        report["warnings"].to_string().contains(".tmp-stopped"),
        "{report}"
    );
}
