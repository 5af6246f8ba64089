//! Naming snapshots (`latest~N`, `@TIME`, filters, `SNAPSHOT:PATH`) and
//! `cairn cat`.

use std::fs;

use crate::util::{noise, restored, stderr, Env};

/// Three snapshots at chosen times, of `src/v.txt` holding "one", "two",
/// "three" (the third on host "other"), and a large file.
fn three_versions(env: &Env) -> Vec<String> {
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("big.bin"), noise(3_000_000, 71)).unwrap();
    let mut ids = Vec::new();
    for (text, time, host) in [
        ("one", "2024-05-01 10:00:00", "home"),
        ("two", "2024-05-02 10:00:00", "home"),
        ("three", "2024-05-03 10:00:00", "other"),
    ] {
        fs::write(src.join("v.txt"), text).unwrap();
        let summary = env.backup(&[&src], &["--time", time, "--host", host]);
        ids.push(summary["snapshot_id"].as_str().unwrap().to_string());
    }
    ids
}

fn cat(env: &Env, args: &[&str]) -> Vec<u8> {
    let mut command = vec!["cat"];
    command.extend_from_slice(args);
    let out = env.run(&command);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out.stdout
}

#[test]
fn every_selector_form_names_the_snapshot_it_should() {
    let env = Env::new();
    let ids = three_versions(&env);
    let file = |sel: &str| format!("{sel}:{}", env.path("src").join("v.txt").display());
    assert_eq!(cat(&env, &[&file("latest")]), b"three");
    assert_eq!(cat(&env, &[&file("latest~1")]), b"two");
    assert_eq!(cat(&env, &[&file("latest~2")]), b"one");
    assert_eq!(cat(&env, &[&file(&ids[0][..8])]), b"one");
    assert_eq!(cat(&env, &[&file(&ids[1])]), b"two");
    // @TIME: the newest at or before it, in local time or RFC 3339.
    assert_eq!(cat(&env, &[&file("@2024-05-02 12:00")]), b"two");
    assert_eq!(cat(&env, &[&file("@2024-05-02 10:00:00")]), b"two");
    assert_eq!(cat(&env, &[&file("@2024-05-02")]), b"one");
    assert_eq!(cat(&env, &[&file("@2030-01-01T00:00:00Z")]), b"three");
    assert_eq!(cat(&env, &[&file("@1 day ago")]), b"three");
    // Filters apply before latest and @TIME.
    assert_eq!(cat(&env, &["--host", "home", &file("latest")]), b"two");
    assert_eq!(cat(&env, &["--host", "home", &file("@2030-01-01")]), b"two");
    // Restore takes the same forms, with a path inside the snapshot.
    let target = env.path("t");
    env.ok(&[
        "restore",
        &format!("@2024-05-01 23:00:{}", env.path("src").display()),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(target.join("v.txt")).unwrap(), b"one");
    let again = env.restore("latest~1", "t2", &[]);
    assert_eq!(
        fs::read(restored(&again, &env.path("src")).join("v.txt")).unwrap(),
        b"two"
    );
}

#[test]
fn references_that_name_nothing_are_one_line_errors() {
    let env = Env::new();
    let ids = three_versions(&env);
    let path = env.path("src").join("v.txt");
    let path = path.display();
    for (reference, expected) in [
        (format!("latest~3:{path}"), "no snapshot"),
        (format!("@2020-01-01:{path}"), "no snapshot"),
        (format!("@next tuesday:{path}"), "expected"),
        (format!("latest~x:{path}"), "latest~n"),
        (format!("ffffffff:{path}"), "no snapshot"),
        (
            format!("latest:{path}.missing"),
            "no such path in the snapshot",
        ),
        (
            format!("latest:{}", env.path("src").display()),
            "a directory",
        ),
        ("latest".to_string(), "snapshot:path"),
    ] {
        let out = env.run(&["cat", &reference]);
        assert_eq!(out.status.code(), Some(1), "{reference}: {}", stderr(&out));
        let text = stderr(&out);
        assert_eq!(text.trim().lines().count(), 1, "{reference}: {text}");
        assert!(
            text.to_lowercase().contains(expected),
            "{reference}: {text}"
        );
    }
    // An id names its snapshot whatever the filters.
    let one = format!("{}:{path}", &ids[0][..10]);
    assert_eq!(cat(&env, &["--host", "other", &one]), b"one");
}

#[test]
fn cat_streams_a_large_file_byte_for_byte() {
    let env = Env::new();
    three_versions(&env);
    let big = env.path("src").join("big.bin");
    let out = cat(&env, &[&format!("latest:{}", big.display())]);
    assert_eq!(out, fs::read(&big).unwrap());
}

#[test]
fn snapshots_filters_groups_and_keeps_the_latest_of_each() {
    let env = Env::new();
    let ids = three_versions(&env);
    let listed = |args: &[&str]| -> serde_json::Value {
        let mut command = vec!["snapshots", "--json"];
        command.extend_from_slice(args);
        serde_json::from_str(env.ok(&command).trim()).unwrap()
    };
    let ids_of = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids_of(&listed(&[])), ids);
    assert_eq!(ids_of(&listed(&["--host", "home"])), ids[..2]);
    // --latest keeps the newest of each host and paths.
    assert_eq!(
        ids_of(&listed(&["--latest", "1"])),
        vec![ids[1].clone(), ids[2].clone()]
    );
    assert_eq!(
        ids_of(&listed(&["--latest", "1", "--host", "home"])),
        vec![ids[1].clone()]
    );
    // --group-by: one object per group, with its key.
    let groups = listed(&["--group-by", "host"]);
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["group"]["host"], "home");
    assert!(groups[0]["group"]["paths"].is_null());
    assert_eq!(ids_of(&groups[0]["snapshots"]), ids[..2]);
    assert_eq!(ids_of(&groups[1]["snapshots"]), ids[2..]);
    let text = env.ok(&["snapshots", "--group-by", "host", "--latest", "1"]);
    assert!(
        text.contains("host home:") && text.contains("host other:"),
        "{text}"
    );
    assert!(
        text.contains(&ids[1][..8]) && !text.contains(&ids[0][..8]),
        "{text}"
    );
}

#[test]
fn ls_recursive_json_equals_a_listing_of_the_source() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/deep.txt"), b"deep").unwrap();
    fs::write(src.join("top.bin"), noise(100_000, 3)).unwrap();
    fs::set_permissions(src.join("top.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("a/b/deep.txt", src.join("link")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(src.join(odd), b"latin-1 name").unwrap();
    env.backup(&[&src], &[]);

    let out = env.ok(&["ls", "-R", "--json", &format!("latest:{}", src.display())]);
    let mut listed: Vec<(Vec<u8>, String, u64, u64)> = out
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = match v.get("path_hex") {
                Some(hex) => (0..hex.as_str().unwrap().len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex.as_str().unwrap()[i..i + 2], 16).unwrap())
                    .collect(),
                None => v["path"].as_str().unwrap().as_bytes().to_vec(),
            };
            (
                path,
                v["type"].as_str().unwrap().to_string(),
                v["size"].as_u64().unwrap(),
                v["mode"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let (kind, size) = if meta.is_dir() {
                dirs.push(path.clone());
                ("dir", 0)
            } else if meta.file_type().is_symlink() {
                (
                    "symlink",
                    fs::read_link(&path).unwrap().as_os_str().len() as u64,
                )
            } else {
                ("file", meta.len())
            };
            expected.push((
                path.as_os_str().as_bytes().to_vec(),
                kind.to_string(),
                size,
                u64::from(meta.mode() & 0o7777),
            ));
        }
    }
    // ls lists each directory's entries in name order, depth first.
    let order: Vec<Vec<u8>> = listed.iter().map(|e| e.0.clone()).collect();
    let mut walk_order = order.clone();
    walk_order.sort();
    assert_eq!(order, walk_order, "depth first, in name order");
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);

    // Plain and long forms.
    let plain = env.ok(&["ls", &format!("latest:{}", src.join("a").display())]);
    assert_eq!(plain.trim(), src.join("a/b").display().to_string());
    let long = env.ok(&["ls", "-l", &format!("latest:{}", src.display())]);
    assert!(long.contains("-rw-r----- "), "{long}");
    assert!(long.contains("link -> a/b/deep.txt"), "{long}");
    let missing = env.run(&["ls", &format!("latest:{}", src.join("nope").display())]);
    assert_eq!(missing.status.code(), Some(1));
}
