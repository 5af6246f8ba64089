//! `cairn run`: a profile's steps, each as its own cairn process.
//!
//! A step is the cairn command a user would type (`backup`, `forget`,
//! `check`, `copy`, `restore`), run with `--json` so that its result can
//! be read. Its own process keeps each step's locks, memory and even a
//! crash to itself: a failing step or profile never stops the others.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use super::config::{Profile, RepositoryAccess};
use super::state::{Outcome, RunRecord, Step, StepRecord};

/// Exit codes of cairn that a run tells apart.
pub mod exit {
    /// Some files could not be read; the snapshot was saved without them.
    pub const INCOMPLETE: i32 = 3;
    /// Nothing is at the repository's location.
    pub const NO_REPOSITORY: i32 = 10;
    /// The repository's storage could not be reached.
    pub const UNREACHABLE: i32 = 14;
}

/// Variables a step must not inherit: each step is given its repository
/// and password explicitly, and these would compete with them.
const INHERITED_SETTINGS: &[&str] = &[
    "CAIRN_REPO",
    "CAIRN_PASSWORD",
    "CAIRN_PASSWORD_FILE",
    "CAIRN_PASSWORD_COMMAND",
    "CAIRN_FROM_REPO",
    "CAIRN_FROM_PASSWORD",
    "CAIRN_FROM_PASSWORD_FILE",
    "CAIRN_FROM_PASSWORD_COMMAND",
];

/// Runs profiles' steps.
pub struct Runner {
    /// The cairn executable each step runs.
    pub exe: PathBuf,
    /// Called with each line a step writes to standard error, prefixed
    /// with the profile and step, and with each step's record as it ends.
    pub report: Box<dyn FnMut(Report<'_>)>,
}

/// What a runner tells as it goes.
pub enum Report<'a> {
    /// A line a step wrote to standard error.
    Line(&'a str, Step, &'a str),
    /// A step ended.
    Step(&'a str, &'a StepRecord),
}

/// What a step's process did.
struct Finished {
    exit_code: Option<i32>,
    stdout: Vec<u8>,
    /// The last `cairn: error:` line, or the last line, of its stderr.
    error: Option<String>,
}

impl Runner {
    /// Runs every step of `profile` and returns the run.
    pub fn run(&mut self, name: &str, profile: &Profile) -> RunRecord {
        let started_ns = now_ns();
        let clock = Instant::now();
        let mut steps: Vec<StepRecord> = Vec::new();
        let primary = &profile.repository;
        let secondary = profile.secondary.as_ref();

        let before = profile
            .hooks
            .before
            .as_ref()
            .map(|hook| self.hook(name, profile, Step::Before, hook, &[]));
        let go_on = before.as_ref().is_none_or(|b| b.outcome == Outcome::Ok);
        steps.extend(before);

        let mut snapshot = None;
        let mut target = primary;
        if go_on {
            let mut backup = self.backup(name, profile, primary);
            let unreachable = matches!(
                backup.exit_code,
                Some(exit::NO_REPOSITORY | exit::UNREACHABLE)
            );
            if let Some(fallback) = secondary.filter(|s| s.fallback && unreachable) {
                let error = backup.error.clone().unwrap_or_default();
                // Told, but recorded only if the fallback fails too: a
                // backup that reached the secondary is degraded, not failed.
                self.tell_step(name, &backup);
                let primary_attempt = backup;
                target = &fallback.repository;
                backup = self.backup(name, profile, target);
                if backup.outcome <= Outcome::Incomplete {
                    backup.outcome = Outcome::Degraded;
                    backup.summary = format!(
                        "{} (to the secondary: the primary could not be reached: {error})",
                        backup.summary
                    );
                } else {
                    steps.push(primary_attempt);
                }
            }
            snapshot = backup_snapshot(&backup);
            self.tell_step(name, &backup);
            steps.push(backup);
        }
        let degraded = !std::ptr::eq(target, primary);
        let backed_up = snapshot.is_some();

        let planned: [(Step, bool); 4] = [
            (Step::Verify, profile.verify.is_some()),
            (Step::Forget, profile.retention.is_some()),
            (Step::Check, profile.check.is_some()),
            (Step::Copy, secondary.is_some_and(|s| s.copy)),
        ];
        for (step, wanted) in planned {
            if !wanted {
                continue;
            }
            let why_not = if !backed_up {
                Some("no new snapshot")
            } else if degraded && step != Step::Verify {
                Some("the primary repository could not be reached")
            } else {
                None
            };
            let record = match why_not {
                Some(why) => skipped(step, target, why),
                None => match step {
                    Step::Verify => self.verify(name, profile, target, snapshot.as_deref()),
                    Step::Forget => self.forget(name, profile, &profile.repository),
                    Step::Check => self.check(name, profile),
                    _ => self.copy(name, profile),
                },
            };
            self.tell_step(name, &record);
            steps.push(record);
        }

        let failed = steps.iter().find(|s| s.outcome == Outcome::Failed).cloned();
        if let (Some(hook), Some(failed)) = (&profile.hooks.failure, &failed) {
            let record = self.hook(name, profile, Step::Failure, hook, &hook_variables(failed));
            steps.push(record);
        }
        if let Some(hook) = &profile.hooks.after {
            let last = failed.as_ref().or(steps.last());
            let variables = last.map(hook_variables).unwrap_or_default();
            let record = self.hook(name, profile, Step::After, hook, &variables);
            steps.push(record);
        }
        RunRecord {
            profile: name.to_string(),
            started_ns,
            duration_ns: elapsed_ns(clock),
            outcome: steps
                .iter()
                .map(|s| s.outcome)
                .filter(|o| *o != Outcome::Skipped)
                .max()
                .unwrap_or(Outcome::Ok),
            steps,
        }
    }

    fn tell_step(&mut self, profile: &str, record: &StepRecord) {
        (self.report)(Report::Step(profile, record));
    }

    /// A cairn command on `access`, with its repository and password.
    fn cairn(&self, access: &RepositoryAccess, profile: &Profile) -> Command {
        let mut command = Command::new(&self.exe);
        for name in INHERITED_SETTINGS {
            command.env_remove(name);
        }
        // The profile's environment reaches every step; a secondary's
        // own is laid over it for the steps on the secondary.
        command.envs(&profile.repository.environment);
        if !std::ptr::eq(access, &profile.repository) {
            command.envs(&access.environment);
        }
        command.arg("--repo").arg(&access.location);
        if let Some(file) = &access.password_file {
            command.arg("--password-file").arg(file);
        }
        if let Some(password_command) = &access.password_command {
            command.arg("--password-command").arg(password_command);
        }
        if let Some(dir) = &access.cache_dir {
            command.arg("--cache-dir").arg(dir);
        }
        if let Some(n) = access.connections {
            command.arg("--connections").arg(n.to_string());
        }
        if let Some(wait) = &profile.retry_lock {
            command.arg("--retry-lock").arg(wait);
        }
        command
    }

    /// Runs `command` to its end, passing its stderr on line by line.
    fn finish(&mut self, profile: &str, step: Step, mut command: Command) -> Finished {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Finished {
                    exit_code: None,
                    stdout: Vec::new(),
                    error: Some(format!("cannot start {:?}: {e}", command.get_program())),
                }
            }
        };
        let mut stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        });
        let mut last = None;
        let mut error = None;
        if let Some(stderr) = child.stderr.take() {
            // Read to the end whatever the bytes: a step that saw its pipe
            // close would fail at its next warning.
            let mut stderr = BufReader::new(stderr);
            let mut bytes = Vec::new();
            while matches!(stderr.read_until(b'\n', &mut bytes), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&bytes).trim_end().to_string();
                bytes.clear();
                // With --json, errors are JSON objects too.
                let message = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(|v| v["message_type"] == "error")
                    .and_then(|v| v["message"].as_str().map(str::to_string));
                let line = match message {
                    Some(message) => format!("cairn: error: {message}"),
                    None => line,
                };
                (self.report)(Report::Line(profile, step, &line));
                if let Some(message) = line.strip_prefix("cairn: error: ") {
                    error = Some(message.to_string());
                }
                if !line.trim().is_empty() {
                    last = Some(line);
                }
            }
        }
        let status = child.wait();
        let stdout = reader.join().unwrap_or_default();
        let exit_code = status.ok().and_then(|s| s.code());
        Finished {
            exit_code,
            stdout,
            error: if exit_code == Some(0) {
                None
            } else {
                error.or(last).or(Some("killed by a signal".into()))
            },
        }
    }

    /// Runs a user's shell `script` (a hook, a verify test) with
    /// `variables`, its output going to this process's standard error. It
    /// is waited for, not its output: a background process it leaves
    /// holding the output cannot hold up the run.
    fn shell(
        &mut self,
        profile: &Profile,
        script: &str,
        dir: Option<&std::path::Path>,
        variables: &[(String, String)],
    ) -> Finished {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        for variable in INHERITED_SETTINGS {
            command.env_remove(variable);
        }
        command.envs(&profile.repository.environment);
        command.envs(variables.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let output = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_or_else(|_| Stdio::null(), Stdio::from);
        command.stdin(Stdio::null()).stdout(output);
        let exit_code = command
            .status()
            .map_err(|e| format!("cannot start sh: {e}"))
            .map(|s| s.code());
        match exit_code {
            Ok(Some(0)) => Finished {
                exit_code: Some(0),
                stdout: Vec::new(),
                error: None,
            },
            Ok(code) => Finished {
                exit_code: code,
                stdout: Vec::new(),
                error: Some(match code {
                    Some(code) => format!("`{script}` exited with {code}"),
                    None => format!("`{script}` was killed by a signal"),
                }),
            },
            Err(error) => Finished {
                exit_code: None,
                stdout: Vec::new(),
                error: Some(error),
            },
        }
    }

    fn backup(&mut self, name: &str, profile: &Profile, access: &RepositoryAccess) -> StepRecord {
        let mut command = self.cairn(access, profile);
        command.args(backup_arguments(profile));
        let started = Started::now();
        let finished = self.finish(name, Step::Backup, command);
        let values = json_values(&finished.stdout);
        let summary = values.iter().find(|v| v["message_type"] == "summary");
        let mut record = started.record(Step::Backup, access, &finished);
        if let Some(s) = summary {
            let files = ["files_new", "files_changed", "files_unmodified"]
                .iter()
                .map(|k| s[k].as_u64().unwrap_or(0))
                .sum::<u64>();
            for key in ["bytes_read", "bytes_added", "files_new", "files_changed"] {
                record
                    .counts
                    .insert(key.into(), s[key].as_u64().unwrap_or(0));
            }
            record.counts.insert("files".into(), files);
            record.summary = format!(
                "snapshot {}: {files} files, read {}, added {}",
                s["short_id"].as_str().unwrap_or("?"),
                human_bytes(s["bytes_read"].as_u64().unwrap_or(0)),
                human_bytes(s["bytes_added"].as_u64().unwrap_or(0)),
            );
            record.snapshot = s["snapshot_id"].as_str().map(str::to_string);
            if finished.exit_code == Some(exit::INCOMPLETE) {
                record.outcome = Outcome::Incomplete;
                record.summary.push_str(", some paths could not be read");
            }
        }
        record
    }

    fn verify(
        &mut self,
        name: &str,
        profile: &Profile,
        access: &RepositoryAccess,
        snapshot: Option<&str>,
    ) -> StepRecord {
        let verify = profile
            .verify
            .as_ref()
            .expect("planned with a verify table");
        let started = Started::now();
        let scratch = match tempfile::Builder::new().prefix("cairn-verify-").tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                return started.failed(Step::Verify, access, format!("scratch directory: {e}"))
            }
        };
        let mut restore = self.cairn(access, profile);
        restore
            .arg("restore")
            .arg(snapshot.unwrap_or("latest"))
            .arg("--target")
            .arg(scratch.path());
        for path in &verify.paths {
            restore.arg("--include").arg(path);
        }
        let restored = self.finish(name, Step::Verify, restore);
        if restored.exit_code != Some(0) {
            let error = restored.error.unwrap_or_default();
            return started.failed(Step::Verify, access, format!("restore: {error}"));
        }
        let variables = [
            ("CAIRN_PROFILE".to_string(), name.to_string()),
            (
                "CAIRN_VERIFY_DIR".to_string(),
                scratch.path().display().to_string(),
            ),
            (
                "CAIRN_SNAPSHOT".to_string(),
                snapshot.unwrap_or("").to_string(),
            ),
        ];
        let tested = self.shell(profile, &verify.command, Some(scratch.path()), &variables);
        let mut record = started.record(Step::Verify, access, &tested);
        record.summary = match tested.exit_code {
            Some(0) => format!("restored {} and the test passed", verify.paths.join(", ")),
            Some(code) => format!("the test exited with {code}"),
            None => "the test was killed".into(),
        };
        record
    }

    /// Applies the profile's retention to `access`.
    fn forget(&mut self, name: &str, profile: &Profile, access: &RepositoryAccess) -> StepRecord {
        let retention = profile.retention.as_ref().expect("planned with retention");
        let mut command = self.cairn(access, profile);
        command.args(forget_arguments(profile, retention));
        let started = Started::now();
        let finished = self.finish(name, Step::Forget, command);
        let mut record = started.record(Step::Forget, access, &finished);
        let values = json_values(&finished.stdout);
        let count = |key: &str| -> usize {
            values
                .first()
                .and_then(Value::as_array)
                .map_or(0, |groups| {
                    groups
                        .iter()
                        .map(|g| g[key].as_array().map_or(0, Vec::len))
                        .sum()
                })
        };
        let (kept, removed) = (count("keep"), count("remove"));
        record.counts.insert("snapshots_kept".into(), kept as u64);
        record
            .counts
            .insert("snapshots_removed".into(), removed as u64);
        record.summary = format!("kept {kept} snapshots, removed {removed}");
        if let Some(prune) = values.get(1) {
            let freed = prune["bytes_freed"].as_u64().unwrap_or(0);
            record.counts.insert("bytes_freed".into(), freed);
            record
                .summary
                .push_str(&format!(", freed {}", human_bytes(freed)));
        }
        record
    }

    fn check(&mut self, name: &str, profile: &Profile) -> StepRecord {
        let access = &profile.repository;
        let policy = profile.check.as_ref().expect("planned with a check table");
        let mut command = self.cairn(access, profile);
        command.args(check_arguments(policy.read_data_days, now_ns()));
        let started = Started::now();
        let finished = self.finish(name, Step::Check, command);
        let mut record = started.record(Step::Check, access, &finished);
        if let Some(report) = json_values(&finished.stdout).first() {
            let errors = report["errors"].as_array().map_or(0, Vec::len);
            let packs_read = report["packs_read"].as_u64().unwrap_or(0);
            record.counts.insert("errors".into(), errors as u64);
            record.counts.insert("packs_read".into(), packs_read);
            for key in ["packs", "snapshots", "stored_bytes"] {
                let value = report[key].as_u64().unwrap_or(0);
                record.counts.insert(key.into(), value);
            }
            record.summary = format!(
                "{errors} errors in {} snapshots and {} packs; read {packs_read} packs",
                report["snapshots"], report["packs"]
            );
        }
        record
    }

    fn copy(&mut self, name: &str, profile: &Profile) -> StepRecord {
        let secondary = profile
            .secondary
            .as_ref()
            .expect("planned with a secondary");
        let (from, to) = (&profile.repository, &secondary.repository);
        let mut command = self.cairn(to, profile);
        command
            .arg("copy")
            .arg("--json")
            .arg("--from-repo")
            .arg(&from.location);
        if let Some(file) = &from.password_file {
            command.arg("--from-password-file").arg(file);
        }
        if let Some(password_command) = &from.password_command {
            command.arg("--from-password-command").arg(password_command);
        }
        command.args(selection(profile));
        let started = Started::now();
        let finished = self.finish(name, Step::Copy, command);
        let mut record = started.record(Step::Copy, to, &finished);
        if let Some(report) = json_values(&finished.stdout).first() {
            let copied = report["copied"].as_array().map_or(0, Vec::len);
            let skipped = report["skipped"].as_array().map_or(0, Vec::len);
            let added = report["bytes_added"].as_u64().unwrap_or(0);
            record
                .counts
                .insert("snapshots_copied".into(), copied as u64);
            record.counts.insert("bytes_added".into(), added);
            record.summary = format!(
                "copied {copied} snapshots ({skipped} there already), added {}",
                human_bytes(added)
            );
        }
        // The secondary keeps what the primary keeps: without retention
        // of its own, it would grow by every night's copy.
        if record.outcome == Outcome::Ok && profile.retention.is_some() {
            let forget = self.forget(name, profile, to);
            record.duration_ns = elapsed_ns(started.clock);
            match forget.outcome {
                Outcome::Failed => {
                    let error = forget.error.unwrap_or_default();
                    record.outcome = Outcome::Failed;
                    record.summary = format!("{}; retention there failed: {error}", record.summary);
                    record.error = Some(format!("retention on the secondary: {error}"));
                }
                _ => record.summary = format!("{}; there {}", record.summary, forget.summary),
            }
        }
        record
    }

    fn hook(
        &mut self,
        name: &str,
        profile: &Profile,
        step: Step,
        hook: &str,
        about: &[(String, String)],
    ) -> StepRecord {
        let mut variables = vec![
            ("CAIRN_PROFILE".to_string(), name.to_string()),
            ("CAIRN_HOOK".to_string(), step.name().to_string()),
            ("CAIRN_STEP".to_string(), step.name().to_string()),
        ];
        variables.extend(about.iter().cloned());
        let started = Started::now();
        let finished = self.shell(profile, hook, None, &variables);
        let mut record = started.record(step, &RepositoryAccess::none(), &finished);
        record.summary = match finished.exit_code {
            Some(0) => "hook ran".into(),
            Some(code) => format!("hook exited with {code}"),
            None => "hook was killed".into(),
        };
        self.tell_step(name, &record);
        record
    }
}

impl RepositoryAccess {
    /// No repository, for what does not touch one.
    fn none() -> RepositoryAccess {
        RepositoryAccess {
            location: String::new(),
            password_file: None,
            password_command: None,
            environment: BTreeMap::new(),
            cache_dir: None,
            connections: None,
        }
    }
}

/// When a step started.
struct Started {
    at_ns: i64,
    clock: Instant,
}

impl Started {
    fn now() -> Started {
        Started {
            at_ns: now_ns(),
            clock: Instant::now(),
        }
    }

    /// The record of a step whose process `finished`.
    fn record(&self, step: Step, access: &RepositoryAccess, finished: &Finished) -> StepRecord {
        StepRecord {
            step,
            outcome: if finished.exit_code == Some(0) {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            exit_code: finished.exit_code,
            started_ns: self.at_ns,
            duration_ns: elapsed_ns(self.clock),
            repository: access.location.clone(),
            summary: finished.error.clone().unwrap_or_default(),
            error: finished.error.clone(),
            counts: BTreeMap::new(),
            snapshot: None,
        }
    }

    fn failed(&self, step: Step, access: &RepositoryAccess, error: String) -> StepRecord {
        let mut record = self.record(
            step,
            access,
            &Finished {
                exit_code: None,
                stdout: Vec::new(),
                error: Some(error),
            },
        );
        record.outcome = Outcome::Failed;
        record
    }
}

/// A step that did not run, and why.
fn skipped(step: Step, access: &RepositoryAccess, why: &str) -> StepRecord {
    StepRecord {
        step,
        outcome: Outcome::Skipped,
        exit_code: None,
        started_ns: now_ns(),
        duration_ns: 0,
        repository: access.location.clone(),
        summary: format!("skipped: {why}"),
        error: None,
        counts: BTreeMap::new(),
        snapshot: None,
    }
}

/// The snapshot a backup step saved.
fn backup_snapshot(record: &StepRecord) -> Option<String> {
    (record.outcome != Outcome::Failed)
        .then(|| record.snapshot.clone())
        .flatten()
}

/// `CAIRN_STEP`, `CAIRN_EXIT_CODE` and `CAIRN_ERROR` of a hook, from the
/// step it is about (the one that failed, or the last).
fn hook_variables(step: &StepRecord) -> Vec<(String, String)> {
    vec![
        ("CAIRN_STEP".into(), step.step.name().into()),
        (
            "CAIRN_EXIT_CODE".into(),
            step.exit_code.map_or("-1".into(), |c| c.to_string()),
        ),
        ("CAIRN_ERROR".into(), step.error.clone().unwrap_or_default()),
    ]
}

/// The arguments of the profile's `backup`.
pub fn backup_arguments(profile: &Profile) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["backup".into(), "--json".into()];
    let mut flag = |name: &str, value: &dyn AsRef<std::ffi::OsStr>| {
        args.push(name.into());
        args.push(value.as_ref().to_os_string());
    };
    if let Some(host) = &profile.host {
        flag("--host", host);
    }
    for tag in &profile.tags {
        flag("--tag", tag);
    }
    for pattern in &profile.exclude {
        flag("--exclude", pattern);
    }
    for file in &profile.exclude_file {
        flag("--exclude-file", file);
    }
    for name in &profile.exclude_if_present {
        flag("--exclude-if-present", name);
    }
    if let Some(size) = &profile.exclude_larger_than {
        flag("--exclude-larger-than", size);
    }
    if let Some(level) = profile.compression {
        flag("--compression", &level.to_string());
    }
    for source in &profile.commands {
        flag("--command", &format!("{}={}", source.name, source.run));
    }
    for database in &profile.databases {
        let command = shell_words::join(database.command());
        flag("--command", &format!("{}={command}", database.file_name()));
    }
    if profile.exclude_caches {
        args.push("--exclude-caches".into());
    }
    if profile.one_file_system {
        args.push("--one-file-system".into());
    }
    args.push("--".into());
    args.extend(profile.sources.iter().map(|p| p.as_os_str().to_os_string()));
    args
}

/// The snapshot filters that select this profile's snapshots: its host
/// (or this machine's) and its tags.
fn selection(profile: &Profile) -> Vec<String> {
    let host = profile
        .host
        .clone()
        .unwrap_or_else(crate::archiver::local_hostname);
    let mut args = vec!["--host".to_string(), host];
    if !profile.tags.is_empty() {
        args.extend(["--tag".to_string(), profile.tags.join(",")]);
    }
    args
}

/// The arguments of the profile's `forget`.
fn forget_arguments(profile: &Profile, retention: &super::config::Retention) -> Vec<String> {
    let mut args = vec!["forget".to_string(), "--json".to_string()];
    let counts = [
        ("--keep-last", retention.keep_last),
        ("--keep-hourly", retention.keep_hourly),
        ("--keep-daily", retention.keep_daily),
        ("--keep-weekly", retention.keep_weekly),
        ("--keep-monthly", retention.keep_monthly),
        ("--keep-yearly", retention.keep_yearly),
    ];
    for (flag, count) in counts {
        if let Some(n) = count {
            args.extend([flag.to_string(), n.to_string()]);
        }
    }
    if let Some(span) = &retention.keep_within {
        args.extend(["--keep-within".to_string(), span.clone()]);
    }
    for tags in &retention.keep_tag {
        args.extend(["--keep-tag".to_string(), tags.clone()]);
    }
    args.extend(selection(profile));
    if retention.prune {
        args.push("--prune".into());
        if let Some(limit) = &retention.max_unused {
            args.extend(["--max-unused".to_string(), limit.clone()]);
        }
    }
    args
}

/// The arguments of the check: structure only, or with `days`, the slice
/// of the data for today, so that all of it is read every `days` days.
pub fn check_arguments(days: Option<u32>, now_ns: i64) -> Vec<String> {
    let mut args = vec!["check".to_string(), "--json".to_string()];
    match days {
        None => {}
        Some(1) => args.push("--read-data".into()),
        Some(days) => {
            let day = u32::try_from(
                now_ns
                    .div_euclid(86_400_000_000_000)
                    .rem_euclid(i64::from(days)),
            )
            .unwrap_or(0);
            args.extend([
                "--read-data-subset".to_string(),
                format!("{}/{days}", day + 1),
            ]);
        }
    }
    args
}

/// The JSON values a step printed, one after another.
fn json_values(stdout: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

/// Bytes for a summary line.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn elapsed_ns(clock: Instant) -> i64 {
    i64::try_from(clock.elapsed().as_nanos()).unwrap_or(i64::MAX)
}
