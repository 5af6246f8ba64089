//! Crash safety, tested: `cairn backup` killed with SIGKILL at many points
//! leaves a repository that checks clean, whose earlier snapshots restore
//! byte for byte, and that the next backup writes to as usual.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_core::backend::ObjectKind;

use crate::util::{file_contents, kill_rounds, noise, restored, stderr, Env};

/// Changes a few files of the source, differently each round.
fn mutate(src: &Path, round: u64) {
    for n in 0..4u64 {
        let file = src.join(format!("dir{}/file{n}", round % 3));
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(
            &file,
            noise(300_000 + (round as usize % 5) * 70_000, round * 10 + n + 1),
        )
        .unwrap();
    }
}

#[test]
fn backups_killed_at_many_points_lose_nothing() {
    let env = Env::new();
    env.init_small_chunks();
    let src = env.path("src");
    mutate(&src, 0);
    mutate(&src, 1);
    env.backup(&[&src], &[]);
    // What each snapshot must restore to, by snapshot id.
    let mut expected: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let first = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    expected.insert(first, file_contents(&src));

    // Time one backup, to spread the kills over its whole run.
    mutate(&src, 2);
    let started = Instant::now();
    env.backup(&[&src], &[]);
    let full = started.elapsed().max(Duration::from_millis(50));
    let second = env.snapshots().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    expected.insert(second, file_contents(&src));

    let kills = u64::from(kill_rounds(40));
    let mut killed_midway = 0;
    for round in 0..kills {
        mutate(&src, round + 3);
        let before: Vec<String> = env
            .snapshots()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        let mut child = env
            .process()
            .args(["backup", "--quiet", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // From the start to a little past the end of a typical run.
        std::thread::sleep(full.mul_f64(round as f64 / kills as f64 * 1.2));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            killed_midway += 1;
        }
        // A snapshot either was saved whole or not at all.
        for snapshot in env.snapshots() {
            let id = snapshot["id"].as_str().unwrap().to_string();
            if !before.contains(&id) {
                expected.insert(id, file_contents(&src));
            }
        }
        let out = env.run(&["check"]);
        assert!(
            out.status.success(),
            "round {round}: check after a kill:\n{}",
            stderr(&out)
        );
    }
    assert!(
        killed_midway >= kills / 2,
        "only {killed_midway} kills landed mid-run"
    );

    // The next backup works, and every snapshot restores byte for byte.
    mutate(&src, 99);
    env.backup(&[&src], &[]);
    let last = env.snapshots().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    expected.insert(last, file_contents(&src));
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (n, (id, files)) in expected.iter().enumerate() {
        let target = env.restore(id, &format!("r{n}"), &[]);
        assert_eq!(
            &file_contents(&restored(&target, &src)),
            files,
            "snapshot {id}"
        );
    }
}

#[test]
fn packs_a_killed_backup_finished_are_reused_by_the_next_one() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), noise(3_000_000, 31)).unwrap();
    let segments = env.objects(ObjectKind::Index);
    let full = env.backup(&[&src], &[]);
    // As if killed after its packs were stored, before its segment and
    // its snapshot: only the packs (and its session) remain.
    for segment in env.objects(ObjectKind::Index) {
        if !segments.contains(&segment) {
            env.remove_object(ObjectKind::Index, &segment);
        }
    }
    env.ok(&["forget", full["snapshot_id"].as_str().unwrap()]);
    let packs = env.objects(ObjectKind::Pack);
    let again = env.backup(&[&src], &[]);
    assert!(
        again["bytes_added"].as_u64().unwrap() < full["bytes_added"].as_u64().unwrap() / 10,
        "the next backup stored the data again: {again}"
    );
    // The packs it found were indexed, not duplicated.
    let new_packs = env
        .objects(ObjectKind::Pack)
        .into_iter()
        .filter(|p| !packs.contains(p))
        .count();
    assert!(new_packs <= 1, "{new_packs} new packs");
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("no index"), "{}", stderr(&out));
    let target = env.restore("latest", "r", &[]);
    assert_eq!(file_contents(&restored(&target, &src)), file_contents(&src));
}
