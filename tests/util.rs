//! Helpers shared by the black-box tests.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// A scratch directory with a repository path, a cache and a password.
pub struct Env {
    pub dir: TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Env { dir, repo, cache }
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `cairn` with only this test's settings in its environment.
    pub fn cairn(&self) -> Command {
        let mut cmd = bare_cairn();
        cmd.env("CAIRN_REPO", &self.repo)
            .env("CAIRN_PASSWORD", "correct horse")
            .env("CAIRN_CACHE_DIR", &self.cache);
        cmd
    }

    /// Runs `cairn ARGS` and returns its output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cairn().args(args).output().expect("run cairn")
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

    /// Total bytes of all files under the repository.
    pub fn repo_size(&self) -> u64 {
        walk_files(&self.repo)
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum()
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

/// Deterministic incompressible bytes.
pub fn noise(len: usize, mut state: u64) -> Vec<u8> {
    state |= 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
