//! `cairn repair index`: the index rebuilt from the pack trailers.

use std::fs;

use cairn_core::backend::ObjectKind;

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
    // Every blob was salvaged from the old index: everything restores.
    restores_intact(&env, "t");
    // The trailer itself is still damaged, and check says so.
    let check = env.run(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(stderr(&check).contains(&pack));
}
