//! `cairn repair index`: the index rebuilt from the pack trailers.

use std::fs;

use cairn_core::backend::ObjectKind;

use serde_json::Value;

use crate::util::{noise, restored, stderr, Env};

fn repository() -> Env {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), b"first").unwrap();
    fs::write(src.join("sub/big.bin"), noise(2 << 20, 9)).unwrap();
    env.backup(&[&src], &[]);
    fs::write(src.join("b.txt"), b"second").unwrap();
    env.backup(&[&src], &[]);
    env
}

fn restores_intact(env: &Env, name: &str) {
    let src = env.path("src");
    let target = env.restore("latest", name, &[]);
    let base = restored(&target, &src);
    assert_eq!(fs::read(base.join("a.txt")).unwrap(), b"first");
    assert_eq!(fs::read(base.join("b.txt")).unwrap(), b"second");
    assert_eq!(
        fs::read(base.join("sub/big.bin")).unwrap(),
        noise(2 << 20, 9)
    );
}

#[test]
fn an_intact_index_is_left_alone() {
    let env = repository();
    let before = env.objects(ObjectKind::Index);
    let out = env.ok(&["repair", "index"]);
    assert!(out.contains("nothing to repair"), "{out}");
    assert_eq!(env.objects(ObjectKind::Index), before);
}

#[test]
fn lost_and_damaged_segments_are_rebuilt_from_the_trailers() {
    let env = repository();
    let segments = env.objects(ObjectKind::Index);
    assert!(segments.len() >= 2);
    env.remove_object(ObjectKind::Index, &segments[0]);
    env.replace_object(ObjectKind::Index, &segments[1], b"not a segment");
    assert_eq!(
        env.run(&["check"]).status.code(),
        Some(1),
        "the damage shows"
    );

    let out = env.run(&["repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("indexed") && text.contains("new segments"),
        "{text}"
    );
    assert!(
        stderr(&out).contains(&segments[1]),
        "the unreadable segment is named"
    );
    assert!(
        !env.objects(ObjectKind::Index).contains(&segments[1]),
        "old segments removed"
    );
    let check = env.run(&["check", "--read-data"]);
    assert!(check.status.success(), "{}", stderr(&check));
    restores_intact(&env, "t");
    // A second run finds nothing to do.
    assert!(env.ok(&["repair", "index"]).contains("nothing to repair"));
}

#[test]
fn a_pack_with_a_damaged_trailer_keeps_the_blobs_that_verify() {
    let env = repository();
    // The largest pack: big.bin's. Its trailer sits just before the footer.
    let pack = env
        .objects(ObjectKind::Pack)
        .into_iter()
        .max_by_key(|name| env.read_object(ObjectKind::Pack, name).len())
        .unwrap();
    let mut bytes = env.read_object(ObjectKind::Pack, &pack);
    let at = bytes.len() - 8 - 20;
    bytes[at] ^= 0x01;
    env.replace_object(ObjectKind::Pack, &pack, &bytes);

    let out = env.run(&["repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("damaged trailers") && text.contains("0 lost"),
        "{text}"
    );
    assert!(stderr(&out).contains(&pack), "{}", stderr(&out));
    // Every blob was salvaged from the old index into new packs, and the
    // damaged pack is gone: everything restores, and check is clean.
    restores_intact(&env, "t");
    assert!(!env.objects(ObjectKind::Pack).contains(&pack));
    let check = env.run(&["check", "--read-data"]);
    assert!(check.status.success(), "{}", stderr(&check));
}

/// A snapshot of `big.bin` alone, then one that adds `small.txt`: the
/// second's trees are all in its own packs. Returns the packs the first
/// backup stored (big.bin's data, and the first snapshot's trees).
fn two_snapshots(env: &Env) -> Vec<String> {
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(4 << 20, 21)).unwrap();
    env.backup(&[&src], &[]);
    let first = env.objects(ObjectKind::Pack);
    fs::write(src.join("small.txt"), b"small").unwrap();
    env.backup(&[&src], &[]);
    first
}

fn repair_json(env: &Env, args: &[&str]) -> Value {
    let mut command = vec!["repair", "snapshots", "--json"];
    command.extend_from_slice(args);
    serde_json::from_str(env.ok(&command).trim()).unwrap()
}

#[test]
fn repair_snapshots_keeps_what_survives_and_lists_the_damage() {
    let env = Env::new();
    let first_packs = two_snapshots(&env);
    let original = noise(4 << 20, 21);
    // Lose the pack holding the first chunk of big.bin: the one whose
    // bytes start with that chunk's data is unknown from outside, so lose
    // the largest of the first backup's packs, a pack of data.
    let lost = first_packs
        .iter()
        .max_by_key(|p| env.object_size(ObjectKind::Pack, p))
        .unwrap()
        .clone();
    env.remove_object(ObjectKind::Pack, &lost);
    assert!(!env.run(&["check"]).status.success());

    // A dry run says what it would do and writes nothing.
    let snapshots_before = env.snapshots().len();
    let dry = repair_json(&env, &["--dry-run", "latest"]);
    assert_eq!(dry["repaired"].as_array().unwrap().len(), 1, "{dry}");
    assert!(dry["repaired"][0]["repaired"].is_null(), "{dry}");
    assert_eq!(env.snapshots().len(), snapshots_before);

    let report = repair_json(&env, &["latest"]);
    let repaired = &report["repaired"][0];
    let damaged = repaired["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{report}");
    assert!(
        damaged[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("/src/big.bin"),
        "{report}"
    );
    let lost_chunks = damaged[0]["chunks_lost"].as_u64().unwrap();
    assert!(
        lost_chunks >= 1 && lost_chunks < damaged[0]["chunks"].as_u64().unwrap(),
        "{report}"
    );
    let zeroed = damaged[0]["bytes_zeroed"].as_u64().unwrap() as usize;
    assert!(zeroed > 0, "{report}");
    // The original stays, the repaired one is tagged and lists the file.
    assert_eq!(env.snapshots().len(), snapshots_before + 1);
    let new_id = repaired["repaired"].as_str().unwrap();
    let new = env
        .snapshots()
        .into_iter()
        .find(|s| s["id"] == new_id)
        .unwrap();
    assert!(
        new["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "repaired"),
        "{new}"
    );

    // It restores: the small file whole, big.bin at its full length with
    // the lost chunk as zeros and every other byte in place.
    let target = env.restore(new_id, "r", &[]);
    let base = restored(&target, &env.path("src"));
    assert_eq!(fs::read(base.join("small.txt")).unwrap(), b"small");
    let big = fs::read(base.join("big.bin")).unwrap();
    assert_eq!(big.len(), original.len());
    let differing = big.iter().zip(&original).filter(|(a, b)| a != b).count();
    assert!(
        differing > 0 && differing <= zeroed,
        "{differing} bytes differ"
    );
    let zeros = big.iter().filter(|b| **b == 0).count();
    assert!(zeros >= zeroed, "the lost chunk reads as zeros");

    // With --forget over all snapshots, the damaged originals go; prune
    // then drops the lost pack from the index, and the repository checks
    // clean.
    let all = repair_json(&env, &["--forget"]);
    assert!(!all["repaired"].as_array().unwrap().is_empty(), "{all}");
    let pruned: Value = serde_json::from_str(env.ok(&["prune", "--json"]).trim()).unwrap();
    assert_eq!(pruned["missing_packs_unlisted"], 1, "{pruned}");
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Nothing left to repair.
    let again = repair_json(&env, &[]);
    assert_eq!(again["repaired"].as_array().unwrap().len(), 0, "{again}");
}

#[test]
fn repair_snapshots_with_read_data_finds_damaged_blobs_too() {
    let env = Env::new();
    two_snapshots(&env);
    // Flip a byte in the middle of the largest pack, which holds only
    // chunks of big.bin: one of them no longer authenticates, though every
    // pack is present.
    let pack = env
        .objects(ObjectKind::Pack)
        .into_iter()
        .max_by_key(|p| env.object_size(ObjectKind::Pack, p))
        .unwrap();
    let mut bytes = env.read_object(ObjectKind::Pack, &pack);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    env.replace_object(ObjectKind::Pack, &pack, &bytes);
    // Trees are always read, so a damaged tree shows either way; a
    // damaged chunk of a file only when the data is read.
    let damaged_files = |report: &Value| {
        report["repaired"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["damaged"].as_array().unwrap().clone())
            .filter(|d| d["type"] == "file")
            .count()
    };
    let without = repair_json(&env, &["--dry-run"]);
    assert_eq!(damaged_files(&without), 0, "{without}");
    let with = repair_json(&env, &["--dry-run", "--read-data"]);
    assert!(damaged_files(&with) > 0, "{with}");
}

#[test]
fn repair_index_keeps_the_packs_of_a_damaged_session() {
    let env = repository();
    // The first backup's session: restored later, its packs read again.
    let session = env.objects(ObjectKind::Session)[0].clone();
    let saved = env.read_object(ObjectKind::Session, &session);
    let mut damaged = saved.clone();
    damaged[50] ^= 0x01;
    env.replace_object(ObjectKind::Session, &session, &damaged);
    let packs = env.objects(ObjectKind::Pack);
    let out = env.run(&["repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.objects(ObjectKind::Pack), packs, "no pack deleted");
    env.replace_object(ObjectKind::Session, &session, &saved);
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    restores_intact(&env, "t");
}
