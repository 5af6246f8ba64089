//! Helpers shared by the black-box tests.
//!
//! Tests reach the repository only through [`Env::location`] (what
//! `CAIRN_REPO` is set to) and the object-level helpers below, which go
//! through the public [`Backend`] trait: so the suite means the same on any
//! backend. `CAIRN_TEST_BACKEND` chooses the backend: unset or `local`, a
//! directory; `memory`, the in-memory backend kept in an image file between
//! processes; `garage`, a prefix of a bucket in a real Garage server the
//! suite starts ([`crate::garage`]). The few tests about the local directory itself check
//! [`is_local`] and skip themselves on other backends.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use cairn_core::backend::{open, Backend, ObjectKind};
use serde_json::Value;
use tempfile::TempDir;

/// The variable that chooses the backend the suite runs against.
const BACKEND_VARIABLE: &str = "CAIRN_TEST_BACKEND";

/// The backends the suite can run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    /// A directory, `<scratch>/repo`.
    Local,
    /// The in-memory backend with its image file, `memory:<scratch>/memory/repo.img`.
    Memory,
    /// A prefix of a bucket in a Garage server the suite starts,
    /// `s3:http://127.0.0.1:PORT/cairn/<scratch name>`.
    Garage,
}

impl TestBackend {
    /// The backend's name, as `CAIRN_TEST_BACKEND` spells it.
    pub fn name(self) -> &'static str {
        match self {
            TestBackend::Local => "local",
            TestBackend::Memory => "memory",
            TestBackend::Garage => "garage",
        }
    }
}

/// The backend `CAIRN_TEST_BACKEND` chooses; panics on a value it does not
/// know, so that a typo never silently runs the local suite again.
pub fn test_backend() -> TestBackend {
    match std::env::var(BACKEND_VARIABLE) {
        Err(std::env::VarError::NotPresent) => TestBackend::Local,
        Ok(value) if value == "local" => TestBackend::Local,
        Ok(value) if value == "memory" => TestBackend::Memory,
        Ok(value) if value == "garage" => TestBackend::Garage,
        Ok(value) => panic!(
            "{BACKEND_VARIABLE}={value:?} names no backend: use `local` (the default), `memory` or `garage`"
        ),
        Err(std::env::VarError::NotUnicode(value)) => {
            panic!("{BACKEND_VARIABLE}={value:?} is not UTF-8: use `local` or `memory`")
        }
    }
}

/// Opens the store at `location` as a `cairn` process of the suite would:
/// with the test server's credentials for an `s3:` location.
pub fn open_store(location: &str) -> Box<dyn Backend> {
    let garage = location.starts_with("s3:").then(crate::garage::shared);
    open_store_on(location, garage)
}

/// Opens the store at `location`, an `s3:` one in `garage`'s bucket.
fn open_store_on(location: &str, garage: Option<&crate::garage::Garage>) -> Box<dyn Backend> {
    if let (Some(rest), Some(garage)) = (location.strip_prefix("s3:"), garage) {
        let parsed = cairn_core::backend::S3Location::parse(rest).expect("an s3 location");
        let settings = garage.settings();
        return Box::new(
            cairn_core::backend::S3Backend::new(location, &parsed, &settings)
                .unwrap_or_else(|e| panic!("open the store at {location}: {e}")),
        );
    }
    open(location).unwrap_or_else(|e| panic!("open the store at {location}: {e}"))
}

/// Whether the suite runs against the local directory backend.
pub fn is_local() -> bool {
    test_backend() == TestBackend::Local
}

/// Whether the suite runs on the memory backend (whose image can crash a
/// process at a chosen change: `CAIRN_MEMORY_CRASH_AFTER`).
pub fn is_memory() -> bool {
    test_backend() == TestBackend::Memory
}

/// How many times a kill test stops a command, spread over one whole run:
/// `local` on the local and memory backends, a third as many on Garage,
/// where each round costs several times as much. The local suite covers
/// the fine spacing; on Garage the same span is sampled more coarsely.
pub fn kill_rounds(local: u32) -> u32 {
    if test_backend() == TestBackend::Garage {
        (local / 3).max(8)
    } else {
        local
    }
}

/// For a test (or the part of one) about the local directory backend
/// itself: true, after saying so on standard error, when the suite runs
/// against another backend and the test must skip it.
pub fn skip_unless_local(what: &str) -> bool {
    if is_local() {
        return false;
    }
    eprintln!(
        "{what}: local-backend property, skipped on {}",
        test_backend().name()
    );
    true
}

/// A scratch directory with a repository location, a cache and a password.
pub struct Env {
    pub dir: TempDir,
    /// What `CAIRN_REPO` is set to.
    location: String,
    /// The repository directory, for the local backend.
    repo_dir: PathBuf,
    pub cache: PathBuf,
    /// The Garage cluster the repository is in, if it is in one.
    garage: Option<crate::garage::Garage>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo_dir = dir.path().join("repo");
        let location = match test_backend() {
            TestBackend::Local => repo_dir.display().to_string(),
            // In a folder of its own: each change renames a new image into
            // place, which must not touch the folders that hold sources.
            TestBackend::Memory => {
                let folder = dir.path().join("memory");
                std::fs::create_dir(&folder).expect("image folder");
                format!("memory:{}", folder.join("repo.img").display())
            }
            TestBackend::Garage => {
                let prefix = dir.path().file_name().expect("a scratch name");
                crate::garage::shared().location(prefix.to_string_lossy().trim_start_matches('.'))
            }
        };
        let cache = dir.path().join("cache");
        let garage =
            (test_backend() == TestBackend::Garage).then(|| crate::garage::shared().clone());
        Env {
            dir,
            location,
            repo_dir,
            cache,
            garage,
        }
    }

    /// A scratch directory with a repository location in `garage`'s
    /// bucket, whatever backend the suite runs on: for tests of a cluster
    /// of their own.
    pub fn on_garage(garage: &crate::garage::Garage) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let prefix = dir.path().file_name().expect("a scratch name");
        let location = garage.location(prefix.to_string_lossy().trim_start_matches('.'));
        Env {
            repo_dir: dir.path().join("repo"),
            cache: dir.path().join("cache"),
            dir,
            location,
            garage: Some(garage.clone()),
        }
    }

    /// The repository's location, as `CAIRN_REPO` gives it.
    pub fn location(&self) -> String {
        self.location.clone()
    }

    /// The repository's directory, for tests about the local backend
    /// itself; panics on any other backend.
    pub fn repo_dir(&self) -> &Path {
        assert!(
            is_local(),
            "the repository is a directory only on the local backend: guard the test with is_local()"
        );
        &self.repo_dir
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The environment that points a `cairn` process at this test's
    /// repository: location, password, cache, and what the store needs.
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        let mut variables = vec![
            ("CAIRN_REPO", self.location.clone()),
            ("CAIRN_PASSWORD", "correct horse".to_string()),
            ("CAIRN_CACHE_DIR", self.cache.display().to_string()),
        ];
        variables.extend(self.store_environment());
        variables
    }

    /// What a `cairn` process needs in its environment to reach the store:
    /// the Garage key, for a repository in Garage.
    pub fn store_environment(&self) -> Vec<(&'static str, String)> {
        self.garage
            .iter()
            .flat_map(|garage| garage.environment())
            .collect()
    }

    /// [`Env::variables`] as shell assignments (`NAME='value' …`), for a
    /// script or a terminal to run `cairn` with.
    pub fn shell_variables(&self) -> String {
        self.variables()
            .iter()
            .map(|(name, value)| format!("{name}='{value}'"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `cairn` with only this test's settings in its environment.
    pub fn cairn(&self) -> Command {
        let mut cmd = bare_cairn();
        cmd.envs(self.variables());
        cmd
    }

    /// `cairn` with this test's settings, as a plain process to spawn (to
    /// signal or kill it while it runs).
    pub fn process(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("cairn"));
        without_cairn_env(&mut cmd);
        cmd.envs(self.variables());
        cmd
    }

    /// Runs `cairn ARGS` and returns its output, whatever the exit code.
    /// An `init` gets a cheap key derivation unless it names one: every
    /// later command derives the key again, and the default's cost, right
    /// for a user, would add minutes to the suite.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut args = args.to_vec();
        if args.first() == Some(&"init") && !args.contains(&"--kdf-memory") {
            args.extend(["--kdf-memory", "1", "--kdf-time", "1"]);
        }
        self.cairn().args(&args).output().expect("run cairn")
    }

    /// Runs `cairn ARGS` with `password` in place of the test's own,
    /// whatever the exit code.
    pub fn run_as(&self, password: &str, args: &[&str]) -> Output {
        self.cairn()
            .env("CAIRN_PASSWORD", password)
            .args(args)
            .output()
            .expect("run cairn")
    }

    /// Runs `cairn ARGS`, insisting on success; returns standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed with {:?}:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    pub fn init(&self) {
        self.ok(&["init"]);
    }

    /// `init` with small chunks, so small test files span many of them.
    pub fn init_small_chunks(&self) {
        self.ok(&[
            "init",
            "--chunk-min",
            "1024",
            "--chunk-avg",
            "4096",
            "--chunk-max",
            "16384",
        ]);
    }

    /// Backs up `paths` with `--json` and returns the summary object.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let mut args: Vec<String> = vec!["backup".into(), "--json".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stdout = self.ok(&args);
        let summary = stdout
            .lines()
            .last()
            .expect("backup --json prints a summary line");
        serde_json::from_str(summary).expect("the summary is a JSON object")
    }

    pub fn snapshots(&self) -> Vec<Value> {
        let stdout = self.ok(&["snapshots", "--json"]);
        match serde_json::from_str(&stdout).expect("snapshots --json is JSON") {
            Value::Array(items) => items,
            other => panic!("expected an array, got {other}"),
        }
    }

    /// Runs `cairn restore SNAPSHOT --target <target_name> EXTRA...`,
    /// whatever the outcome.
    pub fn try_restore(&self, snapshot: &str, target_name: &str, extra: &[&str]) -> Output {
        let target = self.path(target_name);
        let mut args = vec!["restore", snapshot, "--target", target.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Restores `snapshot` into a fresh target and returns the target.
    pub fn restore(&self, snapshot: &str, target_name: &str, extra: &[&str]) -> PathBuf {
        let target = self.path(target_name);
        let mut args = vec!["restore", snapshot, "--target", target.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ok(&args);
        target
    }

    /// The repository's store, opened afresh (as a new process would).
    pub fn store(&self) -> Box<dyn Backend> {
        open_store_on(&self.location, self.garage.as_ref())
    }

    /// Names of the repository's objects of `kind`, sorted: for `Config`,
    /// the one name `""` if there is a config, else none.
    pub fn objects(&self, kind: ObjectKind) -> Vec<String> {
        objects_of(self.store().as_ref(), kind)
            .unwrap_or_else(|e| panic!("list {kind:?} objects at {}: {e}", self.location))
    }

    /// The bytes of one object.
    pub fn read_object(&self, kind: ObjectKind, name: &str) -> Vec<u8> {
        self.store()
            .get(kind, name)
            .unwrap_or_else(|e| panic!("read {kind:?} {name:?}: {e}"))
    }

    /// The length of one object in bytes.
    pub fn object_size(&self, kind: ObjectKind, name: &str) -> u64 {
        self.store()
            .size(kind, name)
            .unwrap_or_else(|e| panic!("size of {kind:?} {name:?}: {e}"))
    }

    /// Removes one object.
    pub fn remove_object(&self, kind: ObjectKind, name: &str) {
        self.store()
            .delete(kind, name)
            .unwrap_or_else(|e| panic!("delete {kind:?} {name:?}: {e}"));
    }

    /// Stores an object under `name`. A put keeps an object that exists
    /// under the name: to change one, use [`Env::replace_object`].
    pub fn put_object(&self, kind: ObjectKind, name: &str, bytes: &[u8]) {
        self.store()
            .put(kind, name, bytes)
            .unwrap_or_else(|e| panic!("put {kind:?} {name:?}: {e}"));
    }

    /// Replaces an existing object's bytes (to damage it, say): a delete,
    /// then a put.
    pub fn replace_object(&self, kind: ObjectKind, name: &str, bytes: &[u8]) {
        let store = self.store();
        store
            .delete(kind, name)
            .unwrap_or_else(|e| panic!("delete {kind:?} {name:?}: {e}"));
        store
            .put(kind, name, bytes)
            .unwrap_or_else(|e| panic!("put {kind:?} {name:?}: {e}"));
    }

    /// Every object of the repository, of every kind, as (kind, name).
    pub fn all_objects(&self) -> Vec<(ObjectKind, String)> {
        let store = self.store();
        all_kinds()
            .flat_map(|kind| {
                let names = objects_of(store.as_ref(), kind)
                    .unwrap_or_else(|e| panic!("list {kind:?} objects at {}: {e}", self.location));
                names.into_iter().map(move |name| (kind, name))
            })
            .collect()
    }

    /// Total bytes of all the repository's objects.
    pub fn repo_size(&self) -> u64 {
        let store = self.store();
        self.all_objects()
            .into_iter()
            .map(|(kind, name)| {
                store
                    .size(kind, &name)
                    .unwrap_or_else(|e| panic!("size of {kind:?} {name:?}: {e}"))
            })
            .sum()
    }

    /// Copies every object of the local repository directory `from` (a
    /// fixture, say) into this environment's store, which must hold no
    /// repository yet. The config goes last, as `init` writes it.
    pub fn import_repository(&self, from: &Path) {
        let source = open(&format!("local:{}", from.display()))
            .unwrap_or_else(|e| panic!("open {}: {e}", from.display()));
        let store = self.store();
        // The layout first: a local store's folders must exist to take
        // objects.
        store
            .create()
            .unwrap_or_else(|e| panic!("create the layout at {}: {e}", self.location));
        for kind in ObjectKind::FOLDERS.into_iter().chain([ObjectKind::Config]) {
            // Git keeps no empty folder: a fixture may lack `locks/`.
            let names = match objects_of(source.as_ref(), kind) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                names => {
                    names.unwrap_or_else(|e| panic!("list {kind:?} in {}: {e}", from.display()))
                }
            };
            for name in names {
                let bytes = source.get(kind, &name).unwrap_or_else(|e| {
                    panic!("read {kind:?} {name:?} of {}: {e}", from.display())
                });
                store
                    .put(kind, &name, &bytes)
                    .unwrap_or_else(|e| panic!("put {kind:?} {name:?}: {e}"));
            }
        }
    }
}

/// Every kind of object: the config, then the folders.
fn all_kinds() -> impl Iterator<Item = ObjectKind> {
    [ObjectKind::Config].into_iter().chain(ObjectKind::FOLDERS)
}

/// Names of the objects of `kind` in `store`, sorted; for `Config`, `""`
/// if there is one.
fn objects_of(store: &dyn Backend, kind: ObjectKind) -> io::Result<Vec<String>> {
    if kind == ObjectKind::Config {
        return match store.size(kind, "") {
            Ok(_) => Ok(vec![String::new()]),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(e),
        };
    }
    let mut names = store.list(kind)?;
    names.sort();
    Ok(names)
}

/// How messages name an object: its name, or for the config, `config`.
pub fn shown_name(kind: ObjectKind, name: &str) -> String {
    match kind {
        ObjectKind::Config => "config".into(),
        _ => name.to_string(),
    }
}

/// The names of the `CAIRN_*` variables in this process's environment.
fn cairn_variables() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| key.to_string_lossy().starts_with("CAIRN_"))
}

/// Removes every `CAIRN_*` variable from a command's environment, so that
/// the caller's settings cannot leak into a test.
pub fn without_cairn_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for key in cairn_variables() {
        cmd.env_remove(key);
    }
    cmd
}

/// `cairn` with no `CAIRN_*` variables at all.
pub fn bare_cairn() -> Command {
    let mut cmd = Command::cargo_bin("cairn").expect("cairn binary");
    for key in cairn_variables() {
        cmd.env_remove(key);
    }
    cmd.env("HOME", std::env::temp_dir());
    cmd
}

/// Every regular file below `root`.
pub fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// Where a source directory lands inside a restore target: restores
/// reproduce the absolute source path.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap())
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Deterministic incompressible bytes. Seeds that differ only in their
/// lowest bit give the same bytes.
pub fn noise(len: usize, state: u64) -> Vec<u8> {
    cairn_core::internals::Xorshift64::new(state | 1).bytes(len)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Every file below `root`, by path relative to it, with its content.
pub fn file_contents(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    walk_files(root)
        .into_iter()
        .map(|p| {
            let relative = p.strip_prefix(root).unwrap().display().to_string();
            (relative, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// A process the test started, killed and reaped when dropped: when the
/// test ends, however it ends.
pub struct KilledOnDrop(pub std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
