//! Everything a backup records comes back byte for byte on restore.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use crate::util::{is_root, noise, restored, Env};

/// What must survive a round trip, for one entry.
#[derive(Debug, PartialEq)]
struct Entry {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    atime: Option<(i64, i64)>,
    rdev: u64,
    size: u64,
    link_target: Option<Vec<u8>>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Index of the first path sharing this inode, for hard links.
    link_group: Option<PathBuf>,
    holes: bool,
}

/// Metadata of every entry below `root`, keyed by relative path. Each entry
/// is stat'ed before its directory is listed, so listing does not disturb
/// the access times being compared.
fn snapshot_of(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let rel_child = rel.join(&name);
            let path = root.join(&rel_child);
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = meta.mode() & libc::S_IFMT;
            let is_link = meta.file_type().is_symlink();
            let link_group = (meta.is_file() && meta.nlink() > 1).then(|| {
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_insert(rel_child.clone())
                    .clone()
            });
            let xattrs = if is_link {
                BTreeMap::new()
            } else {
                xattr::list(&path)
                    .unwrap()
                    .map(|n| {
                        (
                            n.as_bytes().to_vec(),
                            xattr::get(&path, &n).unwrap().unwrap_or_default(),
                        )
                    })
                    .collect()
            };
            out.insert(
                rel_child.clone(),
                Entry {
                    kind,
                    mode: if is_link { 0 } else { meta.mode() & 0o7777 },
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    // Directory access times move whenever anything lists
                    // them, so only other entries' are compared.
                    atime: (!meta.is_dir()).then_some((meta.atime(), meta.atime_nsec())),
                    rdev: meta.rdev(),
                    size: if meta.is_dir() { 0 } else { meta.len() },
                    link_target: is_link.then(|| {
                        fs::read_link(&path)
                            .unwrap()
                            .as_os_str()
                            .as_bytes()
                            .to_vec()
                    }),
                    xattrs,
                    link_group,
                    holes: meta.is_file() && meta.blocks() * 512 < meta.len(),
                },
            );
            if meta.is_dir() {
                stack.push(rel_child);
            }
        }
    }
    out
}

fn assert_same(source: &Path, target: &Path) {
    assert_same_but(source, target, |_| {});
}

/// [`assert_same`], after `ignore` blanks what the restoring tool does not
/// set, on both sides.
fn assert_same_but(source: &Path, target: &Path, ignore: impl Fn(&mut Entry)) {
    let mut want = snapshot_of(source);
    let mut got = snapshot_of(target);
    want.values_mut().chain(got.values_mut()).for_each(ignore);
    let want_names: Vec<_> = want.keys().collect();
    let got_names: Vec<_> = got.keys().collect();
    assert_eq!(want_names, got_names, "restored entries differ");
    for (path, entry) in &want {
        assert_eq!(entry, &got[path], "metadata of {path:?}");
        let src = source.join(path);
        if fs::symlink_metadata(&src).unwrap().is_file() {
            assert!(
                fs::read(&src).unwrap() == fs::read(target.join(path)).unwrap(),
                "content of {path:?}"
            );
        }
    }
}

fn set_times(path: &Path, atime: (i64, u32), mtime: (i64, u32)) {
    filetime::set_symlink_file_times(
        path,
        FileTime::from_unix_time(atime.0, atime.1),
        FileTime::from_unix_time(mtime.0, mtime.1),
    )
    .unwrap();
}

/// Builds a tree with every kind of entry and metadata cairn records.
fn build_rich_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    // Sizes around the small-chunk test bounds (1 KiB / 4 KiB / 16 KiB).
    for (i, size) in [
        0usize, 1, 1023, 1024, 1025, 4096, 16383, 16384, 16385, 100_000,
    ]
    .iter()
    .enumerate()
    {
        fs::write(
            root.join(format!("size-{size}")),
            noise(*size, i as u64 + 1),
        )
        .unwrap();
    }
    fs::write(root.join("zeros"), vec![0u8; 70_000]).unwrap();
    fs::create_dir_all(root.join("empty/nested-empty")).unwrap();

    symlink("size-1", root.join("link-relative")).unwrap();
    symlink("/etc/hostname", root.join("link-absolute")).unwrap();
    symlink("nowhere/at/all", root.join("link-dangling")).unwrap();
    symlink(
        OsStr::from_bytes(b"bad-\xff\xfe-target"),
        root.join("link-non-utf8"),
    )
    .unwrap();

    fs::create_dir(root.join("links")).unwrap();
    fs::write(root.join("links/original"), b"shared content").unwrap();
    fs::hard_link(root.join("links/original"), root.join("links/second-name")).unwrap();
    fs::hard_link(root.join("links/original"), root.join("hard-elsewhere")).unwrap();

    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();

    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("setgid"), b"x").unwrap();
    fs::set_permissions(root.join("setgid"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("private"), b"secret").unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();

    fs::write(root.join("xattrs"), b"has attributes").unwrap();
    xattr::set(root.join("xattrs"), "user.binary", &[0, 1, 2, 255, 0]).unwrap();
    xattr::set(root.join("xattrs"), "user.empty", b"").unwrap();

    fs::write(
        root.join(OsStr::from_bytes(b"non-utf8-\xff\xfe")),
        b"odd name",
    )
    .unwrap();
    fs::write(root.join("line\nbreak"), b"newline in name").unwrap();
    fs::write(root.join("x".repeat(255)), b"longest name").unwrap();

    let mut deep = root.join("deep");
    for _ in 0..64 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), b"deep down").unwrap();

    // Read-only directories full of files: their mode and mtime must be
    // applied only once every file in them is written, however the writes
    // are spread over threads.
    let read_only = root.join("read-only");
    fs::create_dir_all(read_only.join("inner")).unwrap();
    for i in 0..300u64 {
        fs::write(read_only.join(format!("f{i:03}")), noise(2000, 100 + i)).unwrap();
    }
    fs::write(read_only.join("inner/last"), b"inside").unwrap();
    fs::set_permissions(read_only.join("inner"), fs::Permissions::from_mode(0o500)).unwrap();
    fs::set_permissions(&read_only, fs::Permissions::from_mode(0o555)).unwrap();

    // A sparse file: data, a hole, data, and a trailing hole.
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&noise(100_000, 9), 0).unwrap();
    sparse.write_all_at(&noise(100_000, 10), 20 << 20).unwrap();
    sparse.set_len(40 << 20).unwrap();
    drop(sparse);

    if is_root() {
        nix::sys::stat::mknod(
            &root.join("char-device"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o620),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        nix::sys::stat::mknod(
            &root.join("block-device"),
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o660),
            nix::sys::stat::makedev(7, 200),
        )
        .unwrap();
        nix::unistd::chown(&root.join("private"), Some(1234.into()), Some(5678.into())).unwrap();
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &root.join("link-relative"),
            Some(4321.into()),
            Some(8765.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        // chown clears setuid; set it again.
        nix::unistd::chown(&root.join("setuid"), Some(1.into()), Some(1.into())).unwrap();
        fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    }

    // Times before 1970 and after 2038, with nanoseconds; set last, and on
    // directories after their contents.
    set_times(
        &root.join("size-1"),
        (-1_234_567_890, 123_456_789),
        (-987_654_321, 999_999_999),
    );
    set_times(
        &root.join("size-0"),
        (4_102_444_800, 1),
        (7_258_118_400, 987_654_321),
    );
    set_times(&root.join("link-dangling"), (1_000_000_000, 5), (-1, 7));
    set_times(&root.join("empty/nested-empty"), (86_400, 0), (-86_400, 42));
    set_times(&root.join("empty"), (100, 0), (200, 300));
    set_times(&read_only.join("inner"), (300, 0), (400, 500));
    set_times(&read_only, (500, 0), (600, 700));
}

#[test]
fn every_kind_of_entry_and_metadata_round_trips() {
    let env = Env::new();
    env.init_small_chunks();
    let source = env.path("source");
    build_rich_tree(&source);
    std::os::unix::net::UnixListener::bind(source.join("socket")).unwrap();

    let out = env
        .cairn()
        .args(["backup", source.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("socket") && stderr.contains("skipped"),
        "socket warning: {stderr}"
    );
    fs::remove_file(source.join("socket")).unwrap();

    let target = env.restore("latest", "target", &["--verify"]);
    assert_same(&source, &restored(&target, &source));
}

#[test]
fn dump_as_tar_extracts_with_gnu_tar_to_the_source() {
    let env = Env::new();
    env.init_small_chunks();
    let source = env.path("source");
    build_rich_tree(&source);
    env.backup(&[&source], &[]);
    let archive = env.path("source.tar");
    let dumped = format!("latest:{}", source.display());
    env.ok(&["dump", &dumped, "--target", archive.to_str().unwrap()]);
    let target = env.path("extracted");
    fs::create_dir(&target).unwrap();
    let tar = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    // GNU tar sets access times to the time of extraction, whatever the
    // archive says.
    assert_same_but(&source, &target, |entry| entry.atime = None);

    // On standard output too, and one file alone under its name.
    let file = source.join("links/original");
    let out = env
        .cairn()
        .args(["dump", &format!("latest:{}", file.display())])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = std::process::Command::new("tar")
        .arg("-tvf")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&out.stdout)?;
            child.wait_with_output()
        })
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(listing.trim_end().ends_with(" original"), "{listing}");
}

#[test]
fn dump_as_zip_extracts_with_unzip_to_the_source_files() {
    let env = Env::new();
    env.init_small_chunks();
    let source = env.path("source");
    fs::create_dir_all(source.join("dir/inner")).unwrap();
    fs::write(source.join("dir/inner/big.bin"), noise(300_000, 8)).unwrap();
    fs::write(source.join("script.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(source.join("script.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(source.join("zeros"), vec![0u8; 100_000]).unwrap();
    fs::hard_link(source.join("zeros"), source.join("zeros-again")).unwrap();
    symlink("script.sh", source.join("link")).unwrap();
    set_times(
        &source.join("script.sh"),
        (1_600_000_000, 0),
        (1_600_000_000, 0),
    );
    env.backup(&[&source], &[]);
    let archive = env.path("source.zip");
    let dumped = format!("latest:{}", source.display());
    env.ok(&[
        "dump",
        &dumped,
        "--archive",
        "zip",
        "--target",
        archive.to_str().unwrap(),
    ]);
    let target = env.path("extracted");
    fs::create_dir(&target).unwrap();
    let unzip = std::process::Command::new("unzip")
        .arg("-q")
        .arg(&archive)
        .arg("-d")
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        unzip.status.success(),
        "{}",
        String::from_utf8_lossy(&unzip.stderr)
    );
    for file in ["dir/inner/big.bin", "script.sh", "zeros", "zeros-again"] {
        assert!(
            fs::read(source.join(file)).unwrap() == fs::read(target.join(file)).unwrap(),
            "{file}"
        );
    }
    let script = fs::metadata(target.join("script.sh")).unwrap();
    assert_eq!(script.mode() & 0o7777, 0o750);
    assert_eq!(script.mtime(), 1_600_000_000);
    assert_eq!(
        fs::read_link(target.join("link")).unwrap(),
        Path::new("script.sh")
    );
}

#[test]
fn restore_of_a_subpath_and_a_single_file() {
    let env = Env::new();
    env.init_small_chunks();
    let source = env.path("source");
    build_rich_tree(&source);
    env.backup(&[&source], &[]);

    let links = source.join("links");
    let target = env.restore(&format!("latest:{}", links.display()), "sub", &[]);
    assert_same(&links, &target);

    let file = source.join("size-100000");
    let target = env.restore(&format!("latest:{}", file.display()), "one", &[]);
    assert_eq!(
        fs::read(target.join("size-100000")).unwrap(),
        fs::read(&file).unwrap()
    );
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1);
}

#[test]
fn multi_gigabyte_sparse_file_round_trips_with_its_holes() {
    let env = Env::new();
    env.init();
    let source = env.path("big");
    fs::create_dir(&source).unwrap();
    let file = fs::File::create(source.join("disk.img")).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"header", 0).unwrap();
    file.write_all_at(&noise(3 << 20, 4), 2 << 30).unwrap();
    file.set_len(3 << 30).unwrap();
    drop(file);
    let summary = env.backup(&[&source], &[]);
    assert_eq!(summary["bytes_read"], 3u64 << 30);
    let target = env.restore("latest", "target", &["--verify"]);
    let restored_file = restored(&target, &source).join("disk.img");
    let meta = fs::metadata(&restored_file).unwrap();
    assert_eq!(meta.len(), 3 << 30);
    assert!(
        meta.blocks() * 512 < 64 << 20,
        "holes were written as zeros: {} blocks",
        meta.blocks()
    );
    let restored_file = fs::File::open(&restored_file).unwrap();
    let mut buf = vec![0u8; 3 << 20];
    restored_file.read_exact_at(&mut buf, 2 << 30).unwrap();
    assert!(buf == noise(3 << 20, 4));
}

#[test]
fn second_backup_of_the_same_tree_adds_under_one_percent() {
    let env = Env::new();
    env.init();
    let source = env.path("source");
    fs::create_dir(&source).unwrap();
    for i in 0..20 {
        fs::write(source.join(format!("file-{i}")), noise(200_000, i)).unwrap();
    }
    let first = env.backup(&[&source], &[]);
    let size_after_first = env.repo_size();
    let second = env.backup(&[&source], &["--host", "other-host"]);
    let size_after_second = env.repo_size();
    assert_eq!(first["files_new"], 20);
    // Only directory trees may be new: the ancestors of the source (the
    // system's temporary directory) change as other tests run.
    assert!(
        second["bytes_added"].as_u64().unwrap() < 4096,
        "nothing new to store: {second}"
    );
    let growth = (size_after_second - size_after_first) as f64 / size_after_first as f64;
    assert!(growth < 0.01, "repository grew by {:.2}%", growth * 100.0);
}

#[test]
fn unchanged_files_are_not_read_again() {
    let env = Env::new();
    env.init();
    let source = env.path("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("stays"), noise(300_000, 1)).unwrap();
    fs::write(source.join("changes"), noise(1000, 2)).unwrap();
    env.backup(&[&source], &[]);
    fs::write(source.join("changes"), noise(2000, 3)).unwrap();
    fs::write(source.join("new"), b"new").unwrap();
    let second = env.backup(&[&source], &[]);
    assert_eq!(second["files_unmodified"], 1);
    assert_eq!(second["files_changed"], 1);
    assert_eq!(second["files_new"], 1);
    assert_eq!(second["bytes_read"], 2003);
    let snapshots = env.snapshots();
    assert_eq!(snapshots[1]["parent"], snapshots[0]["id"]);
}

#[test]
fn no_plaintext_of_a_backed_up_file_is_in_the_repository() {
    let env = Env::new();
    // Without compression, any plaintext that reached storage would show.
    env.ok(&["init", "--compression", "0"]);
    let source = env.path("source");
    fs::create_dir(&source).unwrap();
    let secret = noise(64 * 1024, 77);
    let text = b"The quick brown fox, a very recognisable sentence. ".repeat(200);
    fs::write(source.join("secret-file-name.txt"), &secret).unwrap();
    fs::write(source.join("prose.txt"), &text).unwrap();
    env.backup(&[&source], &[]);
    for (kind, name) in env.all_objects() {
        let bytes = env.read_object(kind, &name);
        for needle in [
            &secret[1000..1032],
            &text[..32],
            b"secret-file-name",
            b"prose.txt",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext {:?}",
                cairn_core::backend::object_name(kind, &name),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn a_file_holding_an_empty_tree_encoding_does_not_shadow_empty_directories() {
    // The encoding of an empty directory's tree is these 9 bytes. With ids
    // that ignore the blob type, the file and the tree shared one blob.
    let env = Env::new();
    env.init();
    let source = env.path("source");
    fs::create_dir_all(source.join("empty-dir")).unwrap();
    fs::write(source.join("a-file"), [1u8, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    env.backup(&[&source], &[]);
    fs::create_dir_all(source.join("later-empty")).unwrap();
    env.backup(&[&source], &[]);
    let target = env.restore("latest", "t", &[]);
    let base = restored(&target, &source);
    assert_eq!(
        fs::read(base.join("a-file")).unwrap(),
        [1u8, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert!(base.join("empty-dir").is_dir() && base.join("later-empty").is_dir());
}
