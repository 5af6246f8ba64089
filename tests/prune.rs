//! `cairn prune`: deletes what no snapshot needs, and nothing else, and
//! survives being killed at any point.

use std::collections::BTreeMap;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_core::backend::ObjectKind;
use serde_json::Value;

use crate::util::{file_contents, kill_rounds, noise, restored, skip_unless_local, stderr, Env};

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

/// `check_args` succeed (for `check`, leftovers and unlisted packs are
/// warnings), and every snapshot left restores to what it held.
fn intact(
    env: &Env,
    expected: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    check_args: &[&str],
    tag: &str,
) {
    let out = env.run(check_args);
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

/// Every snapshot left restores to what it held, and check --read-data is
/// clean.
fn all_intact(env: &Env, expected: &BTreeMap<String, BTreeMap<String, Vec<u8>>>, tag: &str) {
    intact(env, expected, &["check", "--read-data"], tag);
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
    // nothing live go; of packs that also hold a live blob, those over
    // `--max-unused` are repacked, the others kept with their dead bytes
    // reported.
    let removed = real["bytes_removed"].as_u64().unwrap();
    let dead_kept = real["dead_bytes_kept"].as_u64().unwrap();
    assert!(
        freed >= removed && removed > 1 << 20,
        "freed {freed}: {real}"
    );
    let freed_reported = real["bytes_freed"].as_u64().unwrap();
    assert!(freed_reported + dead_kept > 2_500_000, "{real}");
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
fn repacking_reclaims_partly_used_packs_within_max_unused() {
    let env = Env::new();
    let expected = history(&env);
    env.ok(&["forget", "--keep-last", "3"]);
    let unlimited = prune_json(&env, &["--dry-run", "--max-unused", "unlimited"]);
    assert_eq!(unlimited["packs_repacked"], 0, "{unlimited}");
    assert!(
        unlimited["dead_bytes_kept"].as_u64().unwrap() > 0,
        "{unlimited}"
    );
    let dry = prune_json(&env, &["--dry-run", "--max-unused", "0%"]);
    assert!(dry["packs_repacked"].as_u64().unwrap() >= 1, "{dry}");
    assert_eq!(dry["dead_bytes_kept"], 0, "{dry}");

    let size_before = env.repo_size();
    let real = prune_json(&env, &["--max-unused", "0%"]);
    assert_eq!(real["packs_repacked"], dry["packs_repacked"], "{real}");
    assert_eq!(real["blobs_repacked"], dry["blobs_repacked"], "{real}");
    assert_eq!(real["dead_bytes_kept"], 0, "{real}");
    // The space reported freed is what the repository shrank by, give or
    // take the new index segments and session objects.
    let shrunk = size_before - env.repo_size();
    let freed = real["bytes_freed"].as_u64().unwrap();
    assert!(freed > 2_000_000, "{real}");
    assert!(
        shrunk.abs_diff(freed) < 64 << 10,
        "shrank {shrunk}, reported {freed}: {real}"
    );
    all_intact(&env, &expected, "repacked");
    let again = prune_json(&env, &["--max-unused", "0%"]);
    assert_eq!(again["packs_repacked"], 0, "{again}");
    assert_eq!(again["packs_removed"], 0, "{again}");

    // With the default, what stays unused is within 5% of what is kept.
    env.ok(&["forget", "--keep-last", "2"]);
    let default = prune_json(&env, &[]);
    let dead = default["dead_bytes_kept"].as_u64().unwrap();
    assert!(dead * 20 <= env.repo_size(), "{default}");
    all_intact(&env, &expected, "default");

    let out = env.run(&["prune", "--max-unused", "150%"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("between 0% and 100%"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn old_temporary_files_of_stopped_writers_are_removed() {
    if skip_unless_local("temporary files are a local store's") {
        return;
    }
    let env = Env::new();
    history(&env);
    let shard = env.repo_dir().join("data/ab");
    fs::create_dir_all(&shard).unwrap();
    let old = shard.join(".tmp-stopped");
    let fresh = shard.join(".tmp-writing");
    fs::write(&old, b"half a pack").unwrap();
    fs::write(&fresh, b"a pack being written").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    assert_eq!(prune_json(&env, &["--dry-run"])["leftovers_removed"], 1);
    assert!(old.exists());
    assert_eq!(prune_json(&env, &[])["leftovers_removed"], 1);
    assert!(!old.exists(), "an hour-old leftover goes");
    assert!(fresh.exists(), "a recent one may be a writer at work");
}

/// Starts `args`, kills it with SIGKILL after `delay`; returns whether it
/// had finished, successfully, by then.
fn run_killed(env: &Env, args: &[&str], delay: Duration) -> bool {
    let mut child = env
        .process()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap().success()
}

/// A new version of the source, backed up: `big.bin` changes every
/// time, `slow.bin` every other time, so that forgetting a version leaves
/// packs partly live, for prune to repack.
fn new_version(
    env: &Env,
    version: u64,
    expected: &mut BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) {
    let src = env.path("src");
    fs::write(src.join("big.bin"), noise(700_000, 2 * version + 1)).unwrap();
    if version.is_multiple_of(2) {
        fs::write(src.join("slow.bin"), noise(400_000, 2 * version + 1001)).unwrap();
    }
    let summary = env.backup(&[&src], &[]);
    expected.insert(
        summary["snapshot_id"].as_str().unwrap().to_string(),
        file_contents(&src),
    );
}

/// After a kill: check is clean, and every snapshot left restores byte
/// for byte.
fn intact_after_kill(
    env: &Env,
    expected: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    round: u32,
) {
    intact(env, expected, &["check"], &format!("round-{round}"));
}

/// How long `args` takes to run to the end, at least 30 ms.
fn timed(env: &Env, args: &[&str]) -> Duration {
    let started = Instant::now();
    env.ok(args);
    started.elapsed().max(Duration::from_millis(30))
}

#[test]
fn prunes_killed_at_many_points_lose_nothing() {
    let env = Env::new();
    let mut expected = history(&env);
    env.ok(&["forget", "--keep-last", "3"]);
    let full = timed(&env, &["prune", "--max-unused", "0%"]);
    let kills = kill_rounds(30);
    let mut killed_midway = 0;
    let mut rounds_repacking = 0;
    for round in 0..kills {
        // Each round has work to do: a new version, and an old one gone.
        new_version(&env, u64::from(round) + 10, &mut expected);
        env.ok(&["forget", "--keep-last", "3"]);
        let dry = prune_json(&env, &["--dry-run", "--max-unused", "0%"]);
        if dry["packs_repacked"].as_u64().unwrap() > 0 {
            rounds_repacking += 1;
        }
        let delay = full.mul_f64(f64::from(round) / f64::from(kills) * 1.2);
        if !run_killed(&env, &["prune", "--quiet", "--max-unused", "0%"], delay) {
            killed_midway += 1;
        }
        assert_eq!(env.snapshots().len(), 3, "round {round}");
        intact_after_kill(&env, &expected, round);
    }
    assert!(
        killed_midway >= kills / 2,
        "only {killed_midway} kills landed mid-run"
    );
    assert!(
        rounds_repacking >= kills / 3,
        "only {rounds_repacking} rounds had packs to repack"
    );
    env.ok(&["prune", "--max-unused", "0%"]);
    let report = prune_json(&env, &["--max-unused", "0%"]);
    assert_eq!(report["packs_removed"], 0, "{report}");
    assert_eq!(report["packs_repacked"], 0, "{report}");
    all_intact(&env, &expected, "killed");
}

#[test]
fn forget_with_prune_killed_at_many_points_loses_nothing() {
    let env = Env::new();
    let mut expected = history(&env);
    let full = timed(&env, &["forget", "--keep-last", "4", "--prune"]);
    let kills = kill_rounds(30);
    let mut killed_midway = 0;
    for round in 0..kills {
        new_version(&env, u64::from(round) + 100, &mut expected);
        let before: Vec<String> = env
            .snapshots()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        let delay = full.mul_f64(f64::from(round) / f64::from(kills) * 1.2);
        let args = ["forget", "--quiet", "--keep-last", "4", "--prune"];
        if !run_killed(&env, &args, delay) {
            killed_midway += 1;
        }
        // Forget removes snapshots one by one: any of the old ones may be
        // gone, but never one of the four newest.
        let after: Vec<String> = env
            .snapshots()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        for id in &before[before.len() - 4..] {
            assert!(after.contains(id), "round {round}: kept snapshot {id} lost");
        }
        intact_after_kill(&env, &expected, round);
    }
    assert!(
        killed_midway >= kills / 2,
        "only {killed_midway} kills landed mid-run"
    );
    env.ok(&["forget", "--keep-last", "4", "--prune"]);
    assert_eq!(env.snapshots().len(), 4);
    all_intact(&env, &expected, "killed");
}

#[test]
fn prune_keeps_the_readable_copy_when_a_pack_session_is_lost() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data.bin"), noise(2_000_000, 61)).unwrap();
    let first = env.backup(&[&src], &[]);
    // The first backup's session is lost: its packs no longer read, so
    // the next backup stores the data again, in packs of its own.
    for session in env.objects(ObjectKind::Session) {
        env.remove_object(ObjectKind::Session, &session);
    }
    env.backup(&[&src], &[]);
    env.ok(&["forget", first["snapshot_id"].as_str().unwrap()]);
    // Every blob now has two listed copies, one unreadable: the readable
    // one must be the one kept, whichever segment comes first.
    let report = prune_json(&env, &["--max-unused", "0%"]);
    assert!(report["packs_removed"].as_u64().unwrap() >= 1, "{report}");
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.restore("latest", "r", &[]);
    assert_eq!(file_contents(&restored(&target, &src)), file_contents(&src));
}
