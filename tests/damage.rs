//! Damage on purpose: a flipped bit in, or a truncation of, each kind of
//! object. In each case `check` names the damaged object, what the damage
//! does not touch still restores, the repair for it makes `check` clean
//! again, and nothing panics.

use std::collections::BTreeMap;
use std::fs;
use std::process::Output;

use cairn_core::backend::ObjectKind;

use crate::util::{file_contents, noise, restored, shown_name, stderr, Env};

/// Two snapshots of two sources: the objects the first backup stored
/// (packs, segment, session, snapshot) are the ones damaged.
struct Damaged {
    env: Env,
    first: String,
    second: String,
    /// What the first backup stored, by kind.
    first_objects: BTreeMap<&'static str, Vec<String>>,
}

const KINDS: [(&str, ObjectKind); 4] = [
    ("pack", ObjectKind::Pack),
    ("index", ObjectKind::Index),
    ("session", ObjectKind::Session),
    ("snapshot", ObjectKind::Snapshot),
];

fn two_backups() -> Damaged {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    for (dir, seed) in [("one", 11), ("two", 13)] {
        let src = env.path(dir);
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("big.bin"), noise(2_500_000, seed)).unwrap();
        fs::write(src.join("sub/small.txt"), format!("small {dir}")).unwrap();
    }
    let mut first_objects = BTreeMap::new();
    let first = env.backup(&[&env.path("one")], &[]);
    for (label, kind) in KINDS {
        first_objects.insert(label, env.objects(kind));
    }
    let second = env.backup(&[&env.path("two")], &[]);
    let id = |s: &serde_json::Value| s["snapshot_id"].as_str().unwrap().to_string();
    Damaged {
        first: id(&first),
        second: id(&second),
        env,
        first_objects,
    }
}

fn assert_no_panic(out: &Output, what: &str) {
    let text = stderr(out);
    assert!(!text.contains("panicked"), "{what}: {text}");
    assert_ne!(out.status.code(), Some(101), "{what}: {text}");
    assert!(
        out.status.code().is_some(),
        "{what}: killed by a signal: {text}"
    );
}

/// Runs cairn, insisting only that it does not panic.
fn run(env: &Env, args: &[&str], what: &str) -> Output {
    let out = env.run(args);
    assert_no_panic(&out, &format!("{what}: {args:?}"));
    out
}

fn clean(env: &Env, what: &str) {
    let out = run(env, &["check", "--read-data"], what);
    assert!(
        out.status.success(),
        "{what}: check after repair: {}",
        stderr(&out)
    );
}

/// Snapshot `id` of source `dir` restores byte for byte.
fn restores(env: &Env, id: &str, dir: &str, what: &str) {
    let target = env.path(&format!("restore-{}", &id[..8]));
    let out = run(
        env,
        &["restore", id, "--target", target.to_str().unwrap()],
        what,
    );
    assert!(
        out.status.success(),
        "{what}: restore {dir}: {}",
        stderr(&out)
    );
    let src = env.path(dir);
    assert_eq!(
        file_contents(&restored(&target, &src)),
        file_contents(&src),
        "{what}: {dir}"
    );
    fs::remove_dir_all(&target).unwrap();
}

/// Flips a bit in the middle of `bytes`, or cuts them in half.
fn damage(bytes: &[u8], flip: bool) -> Vec<u8> {
    if flip {
        let mut bytes = bytes.to_vec();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        bytes
    } else {
        bytes[..bytes.len() / 2].to_vec()
    }
}

#[test]
fn each_kind_of_stored_object_damaged_is_named_contained_and_repaired() {
    for (label, kind) in KINDS {
        for flip in [true, false] {
            let what = format!("{} {label}", if flip { "flipped" } else { "truncated" });
            let d = two_backups();
            let env = &d.env;
            // The first backup's object of this kind (its largest pack).
            let victim = d.first_objects[label]
                .iter()
                .max_by_key(|name| env.object_size(kind, name))
                .unwrap()
                .clone();
            let bytes = env.read_object(kind, &victim);
            env.replace_object(kind, &victim, &damage(&bytes, flip));

            let out = run(env, &["check", "--read-data"], &what);
            assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(&shown_name(kind, &victim)),
                "{what}: check does not name {}: {}",
                shown_name(kind, &victim),
                stderr(&out)
            );
            // The other backup shares nothing with the damaged object.
            restores(env, &d.second, "two", &what);

            match kind {
                ObjectKind::Index => {
                    // The packs are whole: the index is rebuilt from them,
                    // and both snapshots restore.
                    run(env, &["repair", "index"], &what);
                    restores(env, &d.first, "one", &what);
                }
                ObjectKind::Pack => {
                    // What survives of the first snapshot is kept; the
                    // repository is made whole around the loss.
                    for args in [
                        &["repair", "index"][..],
                        &["repair", "snapshots", "--read-data", "--forget"],
                        &["prune", "--max-unused", "0%"],
                    ] {
                        let out = run(env, args, &what);
                        assert!(out.status.success(), "{what}: {args:?}: {}", stderr(&out));
                    }
                    assert_eq!(env.snapshots().len(), 2, "{what}");
                }
                _ => {
                    // A damaged snapshot, or the session that sealed the
                    // first backup: the first snapshot cannot be read. It
                    // is forgotten by its name, and prune deletes what only
                    // it used.
                    for args in [&["forget", &d.first[..12]][..], &["prune"]] {
                        let out = run(env, args, &what);
                        assert!(out.status.success(), "{what}: {args:?}: {}", stderr(&out));
                    }
                    assert_eq!(env.snapshots().len(), 1, "{what}");
                }
            }
            clean(env, &what);
            restores(env, &d.second, "two", &what);
        }
    }
}

#[test]
fn a_pack_with_nothing_left_to_salvage_is_kept_aside_and_only_warned_about() {
    let d = two_backups();
    let env = &d.env;
    let victim = d.first_objects["pack"]
        .iter()
        .max_by_key(|name| env.object_size(ObjectKind::Pack, name))
        .unwrap()
        .clone();
    // Ten bytes: no blob of it can be read back.
    let bytes = env.read_object(ObjectKind::Pack, &victim);
    env.replace_object(ObjectKind::Pack, &victim, &bytes[..10]);
    for args in [
        &["repair", "index"][..],
        &["repair", "snapshots", "--read-data", "--forget"],
        &["prune", "--max-unused", "0%"],
    ] {
        let out = run(env, args, "ten bytes");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // Kept for a person to look at, unlisted: a warning, not damage.
    assert!(env.objects(ObjectKind::Pack).contains(&victim));
    let out = run(env, &["check", "--read-data"], "ten bytes");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warning = stderr(&out);
    assert!(
        warning.contains(&shown_name(ObjectKind::Pack, &victim)),
        "{warning}"
    );
    assert!(warning.contains("no index segment lists it"), "{warning}");
    restores(env, &d.second, "two", "ten bytes");
}

#[test]
fn a_damaged_key_file_or_config_is_named_in_one_line() {
    for (kind, flip) in [
        (ObjectKind::Key, true),
        (ObjectKind::Key, false),
        (ObjectKind::Config, true),
        (ObjectKind::Config, false),
    ] {
        let what = format!("{kind:?} {}", if flip { "flipped" } else { "truncated" });
        let d = two_backups();
        let env = &d.env;
        let victim = env.objects(kind).pop().unwrap();
        let bytes = env.read_object(kind, &victim);
        // For the config, flip the magic: its other fields are not
        // authenticated (SPEC.md §9, "What tampering can do").
        let damaged = match (kind, flip) {
            (ObjectKind::Config, true) => {
                let mut b = bytes.clone();
                b[1] ^= 0x10;
                b
            }
            _ => damage(&bytes, flip),
        };
        env.replace_object(kind, &victim, &damaged);
        for args in [
            &["check"][..],
            &["snapshots"],
            &["restore", "latest", "--target", "t"],
        ] {
            let out = run(env, args, &what);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{what}: {args:?}: {}",
                stderr(&out)
            );
            let text = stderr(&out);
            assert_eq!(text.trim().lines().count(), 1, "{what}: {text}");
            assert!(
                text.contains(&shown_name(kind, &victim)) && text.contains("damaged"),
                "{what}: {args:?}: {text}"
            );
        }
        // Put back, everything works again: nothing else was touched.
        env.replace_object(kind, &victim, &bytes);
        clean(env, &what);
    }
}

#[test]
fn a_deleted_or_scrambled_cache_is_rebuilt_without_being_asked() {
    let d = two_backups();
    let env = &d.env;
    fs::remove_dir_all(&env.cache).unwrap();
    clean(env, "deleted cache");
    restores(env, &d.first, "one", "deleted cache");
    for file in crate::util::walk_files(&env.cache) {
        fs::write(&file, noise(4096, 5)).unwrap();
    }
    clean(env, "scrambled cache");
    restores(env, &d.second, "two", "scrambled cache");
    let out = run(
        env,
        &["backup", env.path("one").to_str().unwrap()],
        "scrambled cache",
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
