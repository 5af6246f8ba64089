//! What runs leave behind for `status` and metrics: per profile, the last
//! run with each of its steps, and the last success of each step.
//!
//! One JSON file per profile in the state directory, replaced whole
//! (temporary name, fsync, rename), so that a reader never sees half of
//! one and a crash keeps the previous record.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The steps of a run, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The `before` hook.
    Before,
    /// The backup (with the database dumps).
    Backup,
    /// The restore test of the new snapshot.
    Verify,
    /// Retention (and prune).
    Forget,
    /// The repository check.
    Check,
    /// The copy to the secondary repository.
    Copy,
    /// The `failure` hook.
    Failure,
    /// The `after` hook.
    After,
}

impl Step {
    /// Its name, as in output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Step::Before => "before",
            Step::Backup => "backup",
            Step::Verify => "verify",
            Step::Forget => "forget",
            Step::Check => "check",
            Step::Copy => "copy",
            Step::Failure => "failure",
            Step::After => "after",
        }
    }
}

/// How a step or a run ended, from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It did what it should.
    Ok,
    /// Not run, because of an earlier failure or the profile's settings.
    Skipped,
    /// It finished, but missed something (files that could not be read).
    Incomplete,
    /// The backup went to the secondary: the primary could not be reached.
    Degraded,
    /// It failed.
    Failed,
}

impl Outcome {
    /// Its name, as in output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Incomplete => "incomplete",
            Outcome::Degraded => "degraded",
            Outcome::Failed => "failed",
        }
    }
}

/// What one step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Which step.
    pub step: Step,
    /// How it ended.
    pub outcome: Outcome,
    /// The exit code of its process, if one ran and exited.
    pub exit_code: Option<i32>,
    /// When it started, in nanoseconds since the epoch.
    pub started_ns: i64,
    /// How long it took.
    pub duration_ns: i64,
    /// The repository it worked on.
    pub repository: String,
    /// What it did, in one line.
    pub summary: String,
    /// Why it failed, in one line.
    pub error: Option<String>,
    /// Numbers it reported.
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    /// The snapshot it saved (a backup).
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// One run of one profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The profile.
    pub profile: String,
    /// When it started.
    pub started_ns: i64,
    /// How long it took.
    pub duration_ns: i64,
    /// The worst outcome of its steps.
    pub outcome: Outcome,
    /// Its steps, in order.
    pub steps: Vec<StepRecord>,
}

/// What is kept of a profile between runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    /// The last run.
    pub last_run: Option<RunRecord>,
    /// Each step's last run that did not fail (ok, incomplete or
    /// degraded), by step.
    #[serde(default)]
    pub last_success: BTreeMap<Step, StepRecord>,
    /// How the profile is scheduled, if `cairn schedule` installed it.
    #[serde(default)]
    pub schedule: Option<super::schedule::Installed>,
}

impl ProfileState {
    /// Adds `run` as the last run.
    pub fn record(&mut self, run: RunRecord) {
        for step in &run.steps {
            if matches!(
                step.outcome,
                Outcome::Ok | Outcome::Incomplete | Outcome::Degraded
            ) {
                self.last_success.insert(step.step, step.clone());
            }
        }
        self.last_run = Some(run);
    }

    /// The last step `step` of the last run, if it ran.
    pub fn last(&self, step: Step) -> Option<&StepRecord> {
        self.last_run
            .as_ref()?
            .steps
            .iter()
            .find(|s| s.step == step && s.outcome != Outcome::Skipped)
    }
}

/// Where profile states are kept.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

/// Records larger than this are not read (a state file is a few KiB).
const MAX_STATE_BYTES: u64 = 16 << 20;

impl StateDir {
    /// The state directory `dir` (created when first written to).
    pub fn new(dir: PathBuf) -> StateDir {
        StateDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, profile: &str) -> PathBuf {
        self.dir.join(format!("{profile}.json"))
    }

    /// The state of `profile`: empty if it never ran, or if its record
    /// cannot be read (it is only a record; the next run replaces it).
    pub fn load(&self, profile: &str) -> ProfileState {
        let path = self.file(profile);
        let readable = std::fs::metadata(&path).is_ok_and(|m| m.len() <= MAX_STATE_BYTES);
        readable
            .then(|| std::fs::read(&path).ok())
            .flatten()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Replaces the state of `profile`.
    pub fn store(&self, profile: &str, state: &ProfileState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomically(&self.file(profile), &bytes, 0o600)
    }
}

/// Writes `bytes` to `path` through a temporary file in its directory,
/// fsynced, then renamed over it: a reader sees the old file or the new.
/// The file gets `mode` (a metrics file must be readable by the exporter
/// that serves it, a unit by everyone).
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new()
        .prefix(".cairn-")
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: Step, outcome: Outcome, started_ns: i64) -> StepRecord {
        StepRecord {
            step,
            outcome,
            exit_code: Some(0),
            started_ns,
            duration_ns: 1,
            repository: "/r".into(),
            summary: String::new(),
            error: None,
            counts: BTreeMap::new(),
            snapshot: None,
        }
    }

    #[test]
    fn a_failed_step_keeps_the_last_success_of_before() {
        let dir = tempfile::tempdir().unwrap();
        let states = StateDir::new(dir.path().join("state"));
        let mut state = states.load("home");
        assert_eq!(state, ProfileState::default());
        let run = |outcome, at| RunRecord {
            profile: "home".into(),
            started_ns: at,
            duration_ns: 1,
            outcome,
            steps: vec![step(Step::Backup, outcome, at)],
        };
        state.record(run(Outcome::Ok, 10));
        state.record(run(Outcome::Failed, 20));
        states.store("home", &state).unwrap();
        let again = states.load("home");
        assert_eq!(again.last(Step::Backup).unwrap().outcome, Outcome::Failed);
        assert_eq!(again.last_success[&Step::Backup].started_ns, 10);
    }

    #[test]
    fn an_unreadable_record_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("home.json"), b"{ half").unwrap();
        let states = StateDir::new(dir.path().to_path_buf());
        assert_eq!(states.load("home"), ProfileState::default());
    }
}
