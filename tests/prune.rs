//! `cairn prune`: deletes what no snapshot needs, and nothing else, and
//! survives being killed at any point.

use std::collections::BTreeMap;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_core::backend::ObjectKind;
use serde_json::Value;

use crate::util::{file_contents, noise, restored, stderr, Env};

/// Six snapshots; each rewrites `big.bin` (new packs of its own) and keeps
/// `same.txt`. Returns what each snapshot must restore to, by id.
fn history(env: &Env) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("same.txt"), b"unchanged").unwrap();
    let mut expected = BTreeMap::new();
    for version in 0..6u64 {
        fs::write(src.join("big.bin"), noise(1_500_000, 2 * version + 1)).unwrap();
        let summary = env.backup(
            &[&src],
            &["--time", &format!("2024-01-0{} 12:00:00", version + 1)],
        );
        expected.insert(
            summary["snapshot_id"].as_str().unwrap().to_string(),
            file_contents(&src),
        );
    }
    expected
}

/// Runs `cairn prune`, insisting that it refuses and says nothing was
/// deleted.
fn assert_prune_refused(env: &Env) {
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing was deleted"),
        "{}",
        stderr(&out)
    );
}

fn prune_json(env: &Env, args: &[&str]) -> Value {
    let mut command = vec!["prune", "--json"];
    command.extend_from_slice(args);
    serde_json::from_str(env.ok(&command).trim()).unwrap()
}

/// Every snapshot left restores to what it held, and check is clean.
fn all_intact(env: &Env, expected: &BTreeMap<String, BTreeMap<String, Vec<u8>>>, tag: &str) {
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{tag}: {}", stderr(&out));
    let src = env.path("src");
    for snapshot in env.snapshots() {
        let id = snapshot["id"].as_str().unwrap();
        let target = env.restore(id, &format!("{tag}-{}", &id[..8]), &[]);
        assert_eq!(
            &file_contents(&restored(&target, &src)),
            &expected[id],
            "{tag}: snapshot {id}"
        );
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn prune_deletes_only_what_no_snapshot_needs() {
    let env = Env::new();
    let expected = history(&env);
    // Nothing forgotten: nothing to delete.
    let report = prune_json(&env, &[]);
    assert_eq!(report["packs_removed"], 0, "{report}");

    env.ok(&["forget", "--keep-last", "3"]);
    let size_before = env.repo_size();
    let dry = prune_json(&env, &["--dry-run"]);
    assert!(dry["packs_removed"].as_u64().unwrap() >= 1, "{dry}");
    assert_eq!(env.repo_size(), size_before, "a dry run deletes nothing");
    let real = prune_json(&env, &[]);
    assert_eq!(real["packs_removed"], dry["packs_removed"]);
    assert_eq!(real["bytes_removed"], dry["bytes_removed"]);
    let freed = size_before - env.repo_size();
    // Of the three forgotten versions (1.5 MB each), the packs holding
    // nothing live go; packs that also hold a live blob stay whole in this
    // version, their dead bytes reported.
    let removed = real["bytes_removed"].as_u64().unwrap();
    let dead_kept = real["dead_bytes_kept"].as_u64().unwrap();
    assert!(
        freed >= removed && removed > 1 << 20,
        "freed {freed}: {real}"
    );
    assert!(removed + dead_kept > 2_500_000, "{real}");
    all_intact(&env, &expected, "after");
    // Pruning again finds nothing.
    assert_eq!(prune_json(&env, &[])["packs_removed"], 0);
}

#[test]
fn forget_with_prune_does_both_and_prune_refuses_when_it_cannot_see_everything() {
    let env = Env::new();
    let expected = history(&env);
    let out = env.ok(&["forget", "--keep-last", "2", "--prune"]);
    assert!(
        out.contains("deleted") && out.contains("unused packs"),
        "{out}"
    );
    assert_eq!(env.snapshots().len(), 2);
    all_intact(&env, &expected, "pruned");

    // A snapshot that cannot be read: what it needs is unknown.
    let snapshot = env.objects(ObjectKind::Snapshot)[0].clone();
    env.replace_object(ObjectKind::Snapshot, &snapshot, b"garbage");
    let packs = env.objects(ObjectKind::Pack);
    assert_prune_refused(&env);
    assert_eq!(env.objects(ObjectKind::Pack), packs);
}

#[test]
fn packs_no_index_lists_are_deleted_only_when_nothing_in_them_is_needed() {
    let env = Env::new();
    let expected = history(&env);
    // A lost segment: its packs hold blobs the snapshots need. Prune must
    // refuse, not take them for leftovers.
    let segments = env.objects(ObjectKind::Index);
    let lost = segments.last().unwrap().clone();
    let saved = env.read_object(ObjectKind::Index, &lost);
    env.remove_object(ObjectKind::Index, &lost);
    let packs = env.objects(ObjectKind::Pack);
    assert_prune_refused(&env);
    assert_eq!(env.objects(ObjectKind::Pack), packs, "nothing deleted");
    env.put_object(ObjectKind::Index, &lost, &saved);

    // A pack whose trailer does not open: not known to be garbage, kept.
    let junk = noise(5000, 77);
    let name = cairn_core::Id::of_bytes(&junk).to_hex();
    env.put_object(ObjectKind::Pack, &name, &junk);
    let report = prune_json(&env, &[]);
    assert_eq!(report["unreadable_packs_kept"], 1, "{report}");
    assert!(env.objects(ObjectKind::Pack).contains(&name));
    env.remove_object(ObjectKind::Pack, &name);

    // A backup of other data, forgotten, whose segment is then lost, as
    // after a backup killed before it stored its segment: its packs are
    // unlisted and nothing in them is live, so they go.
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("x.bin"), noise(200_000, 4242)).unwrap();
    let segments_before = env.objects(ObjectKind::Index);
    let packs_before = env.objects(ObjectKind::Pack);
    let summary = env.backup(&[&other], &[]);
    env.ok(&["forget", summary["snapshot_id"].as_str().unwrap()]);
    for segment in env.objects(ObjectKind::Index) {
        if !segments_before.contains(&segment) {
            env.remove_object(ObjectKind::Index, &segment);
        }
    }
    let report = prune_json(&env, &[]);
    assert!(
        report["unindexed_packs_removed"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(env.objects(ObjectKind::Pack), packs_before);
    all_intact(&env, &expected, "orphan");
}

#[test]
fn prunes_killed_at_many_points_lose_nothing() {
    let env = Env::new();
    let expected = history(&env);
    env.ok(&["forget", "--keep-last", "2"]);
    // Time one prune on a copy's worth of work: a dry run reads as much.
    let started = Instant::now();
    env.ok(&["prune", "--dry-run"]);
    let full = started.elapsed().max(Duration::from_millis(30)) * 2;
    const KILLS: u32 = 20;
    for round in 0..KILLS {
        let mut child = env
            .process()
            .args(["prune", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(f64::from(round) / f64::from(KILLS)));
        let _ = child.kill();
        child.wait().unwrap();
        // check: clean (leftovers and unlisted packs are warnings).
        let out = env.run(&["check"]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert_eq!(env.snapshots().len(), 2, "round {round}");
    }
    env.ok(&["prune"]);
    assert_eq!(prune_json(&env, &[])["packs_removed"], 0);
    all_intact(&env, &expected, "killed");
}
