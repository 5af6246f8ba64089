//! `cairn run`, `cairn config check` and `cairn status`: profiles of the
//! configuration file, run, checked and reported on.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use cairn_core::operate::config::Config;
use cairn_core::operate::run::{Report, Runner};
use cairn_core::operate::state::{Outcome, ProfileState, StateDir, Step, StepRecord};
use cairn_core::operate::{metrics, schedule, state::write_atomically};

use crate::{exit, output, Cli};

#[derive(Args)]
pub struct RunArgs {
    /// Profiles to run, in this order (default: every profile).
    profiles: Vec<String>,
    /// Print the runs as one JSON array instead of a line per step.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Read the configuration file and report the first problem in it.
    Check,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Profiles to report on (default: every profile).
    profiles: Vec<String>,
    /// Exit with 1 if a profile's last successful backup is older than
    /// this (like 26h, 2d), or it never had one.
    #[arg(long, value_name = "DURATION", value_parser = crate::retry_duration)]
    max_age: Option<std::time::Duration>,
    /// Print one JSON object per profile, in an array.
    #[arg(long)]
    json: bool,
}

/// The configuration file: `--config`, or the first of
/// `$XDG_CONFIG_HOME/cairn/config.toml` and, for root,
/// `/etc/cairn/config.toml` that exists.
fn config_path(cli: &Cli) -> Result<PathBuf> {
    if let Some(path) = &cli.config {
        return Ok(path.clone());
    }
    let mut candidates: Vec<PathBuf> = dirs::config_dir()
        .map(|d| d.join("cairn").join("config.toml"))
        .into_iter()
        .collect();
    if nix::unistd::geteuid().is_root() {
        candidates.push(PathBuf::from("/etc/cairn/config.toml"));
    }
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "no configuration file (looked for {}): give --config FILE or set CAIRN_CONFIG",
        looked.join(" and ")
    )
}

fn load(cli: &Cli) -> Result<(PathBuf, Config)> {
    let path = config_path(cli)?;
    let config = Config::load(&path)?;
    Ok((path, config))
}

/// Where run records are kept: the file's `state-dir`, or
/// `/var/lib/cairn` for root, or the user's state directory.
fn state_dir(config: &Config) -> Result<StateDir> {
    if let Some(dir) = &config.state_dir {
        return Ok(StateDir::new(dir.clone()));
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(StateDir::new(PathBuf::from("/var/lib/cairn")));
    }
    let base = dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
        .context("no state directory: set `state-dir` in the configuration file")?;
    Ok(StateDir::new(base.join("cairn")))
}

pub fn config(cli: &Cli, command: &ConfigCommand) -> Result<u8> {
    match command {
        ConfigCommand::Check => {
            let (path, config) = load(cli)?;
            output::line(
                cli,
                &format!(
                    "{}: {} profiles, all valid: {}",
                    path.display(),
                    config.profiles.len(),
                    config
                        .profiles
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )?;
            Ok(0)
        }
    }
}

pub fn run(cli: &Cli, args: &RunArgs) -> Result<u8> {
    let (path, config) = load(cli)?;
    let shown = path.display().to_string();
    let profiles = config.select(&args.profiles, &shown)?;
    if profiles.is_empty() {
        bail!("{shown}: no profiles to run");
    }
    let states = state_dir(&config)?;
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let quiet = cli.quiet || args.json;
    let mut runner = Runner {
        exe,
        report: Box::new(move |report| match report {
            Report::Line(profile, step, line) => {
                eprintln!("{profile}: {}: {line}", step.name());
            }
            Report::Step(profile, record) => {
                if !quiet {
                    println!("{}", step_line(profile, record));
                } else if record.outcome == Outcome::Failed {
                    // Standard output holds only the JSON, with --json.
                    eprintln!("{}", step_line(profile, record));
                }
            }
        }),
    };
    let mut worst = Outcome::Ok;
    let mut runs = Vec::new();
    for (name, profile) in profiles {
        let record = runner.run(name, profile);
        worst = worst.max(record.outcome);
        let mut state = states.load(name);
        state.record(record.clone());
        if let Err(e) = states.store(name, &state) {
            eprintln!(
                "cairn: warning: {name}: cannot record the run in {}: {e}",
                states.path().display()
            );
        }
        if let Some(file) = &profile.metrics {
            if let Err(e) = write_metrics(&config, &states, file) {
                eprintln!(
                    "cairn: warning: {name}: cannot write metrics to {}: {e}",
                    file.display()
                );
            }
        }
        if !quiet {
            println!(
                "{name}: {} in {:.1}s",
                record.outcome.name(),
                record.duration_ns as f64 / 1e9
            );
        }
        runs.push(record);
    }
    if args.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&runs)?)?;
    }
    Ok(exit_code(worst))
}

/// The exit code of a run: its worst outcome.
fn exit_code(worst: Outcome) -> u8 {
    match worst {
        Outcome::Ok | Outcome::Skipped => 0,
        Outcome::Incomplete => exit::INCOMPLETE,
        Outcome::Degraded => exit::DEGRADED,
        Outcome::Failed => exit::FATAL,
    }
}

/// `PROFILE: STEP: OUTCOME: SUMMARY (DURATION)`.
fn step_line(profile: &str, record: &StepRecord) -> String {
    let mut line = format!(
        "{profile}: {}: {}",
        record.step.name(),
        record.outcome.name()
    );
    if !record.summary.is_empty() {
        line.push_str(": ");
        line.push_str(&record.summary);
    }
    if record.outcome != Outcome::Skipped {
        line.push_str(&format!(" ({:.1}s)", record.duration_ns as f64 / 1e9));
    }
    line
}

/// Writes the metrics of every profile whose metrics go to `file`.
fn write_metrics(config: &Config, states: &StateDir, file: &Path) -> std::io::Result<()> {
    let loaded: Vec<(&str, ProfileState)> = config
        .profiles
        .iter()
        .filter(|(_, p)| p.metrics.as_deref() == Some(file))
        .map(|(name, _)| (name.as_str(), states.load(name)))
        .collect();
    let borrowed: Vec<(&str, &ProfileState)> = loaded.iter().map(|(n, s)| (*n, s)).collect();
    write_atomically(file, metrics::render(&borrowed).as_bytes(), 0o644)
}

pub fn status(cli: &Cli, args: &StatusArgs) -> Result<u8> {
    let (path, config) = load(cli)?;
    let profiles = config.select(&args.profiles, &path.display().to_string())?;
    let states = state_dir(&config)?;
    let now_ns = crate::now_ns();
    let mut too_old = Vec::new();
    let mut values = Vec::new();
    for (name, _) in &profiles {
        let state = states.load(name);
        let last_backup = state.last_success.get(&Step::Backup);
        let age_ns = last_backup.map(|b| now_ns.saturating_sub(b.started_ns));
        if let Some(max) = args.max_age {
            let max_ns = i64::try_from(max.as_nanos()).unwrap_or(i64::MAX);
            if age_ns.is_none_or(|age| age > max_ns) {
                too_old.push(name.to_string());
            }
        }
        let check = state.last(Step::Check);
        let next = state
            .schedule
            .as_ref()
            .and_then(|s| s.next_run(chrono::Local::now()));
        if args.json {
            values.push(json!({
                "profile": name,
                "last_run": state.last_run.as_ref().map(|r| json!({
                    "time": output::time_of(r.started_ns).to_rfc3339(),
                    "outcome": r.outcome.name(),
                    "duration_seconds": r.duration_ns as f64 / 1e9,
                })),
                "last_backup": last_backup.map(|b| json!({
                    "time": output::time_of(b.started_ns).to_rfc3339(),
                    "age_seconds": age_ns.unwrap_or(0) / 1_000_000_000,
                    "snapshot": b.snapshot,
                })),
                "next_run": next,
                "last_check": check.map(|c| json!({
                    "time": output::time_of(c.started_ns).to_rfc3339(),
                    "outcome": c.outcome.name(),
                    "errors": c.counts.get("errors"),
                })),
            }));
            continue;
        }
        let run = match &state.last_run {
            Some(run) => format!(
                "last run {} ({})",
                output::time_of(run.started_ns).format("%Y-%m-%d %H:%M:%S"),
                run.outcome.name()
            ),
            None => "never ran".into(),
        };
        let backup = match age_ns {
            Some(age) => format!("last backup {} ago", age_text(age)),
            None => "no successful backup".into(),
        };
        let check = match check {
            Some(c) => format!(
                "last check {} ({})",
                output::time_of(c.started_ns).format("%Y-%m-%d %H:%M:%S"),
                c.outcome.name()
            ),
            None => "no check".into(),
        };
        let next = match next {
            Some(next) => format!("next run {next}"),
            None => "not scheduled".into(),
        };
        output::line(cli, &format!("{name}: {run}; {backup}; {check}; {next}"))?;
    }
    if args.json {
        println!("{}", serde_json::Value::Array(values));
    }
    if !too_old.is_empty() {
        bail!(
            "no successful backup within {} for: {}",
            age_text(
                i64::try_from(args.max_age.unwrap_or_default().as_nanos()).unwrap_or(i64::MAX)
            ),
            too_old.join(", ")
        );
    }
    Ok(0)
}

/// A span like `3h 20m`, `2d 4h`, `45s`.
fn age_text(ns: i64) -> String {
    let seconds = ns.max(0) / 1_000_000_000;
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Run a profile on a schedule: a systemd service and timer
    /// (`cairn-PROFILE.timer`, enabled at once), or a crontab line.
    Install(ScheduleInstallArgs),
    /// List the profiles scheduled.
    List(ScheduleTarget),
    /// Stop running a profile on a schedule, and remove its units or line.
    Remove(ScheduleRemoveArgs),
}

#[derive(Args)]
pub struct ScheduleInstallArgs {
    /// The profile to run.
    profile: String,
    /// The time of day (HH:MM; for --hourly, the minutes count).
    #[arg(long, value_name = "HH:MM")]
    at: Option<String>,
    /// Every day (the default).
    #[arg(long, conflicts_with_all = ["hourly", "on"])]
    daily: bool,
    /// Every hour.
    #[arg(long, conflicts_with = "on")]
    hourly: bool,
    /// A systemd calendar expression instead (like "Mon..Fri 22:00").
    #[arg(long, value_name = "CALENDAR", conflicts_with_all = ["at", "cron"])]
    on: Option<String>,
    /// Start up to this much later, at random, so that many hosts do not
    /// start at once (systemd only).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = crate::retry_duration)]
    randomized_delay: std::time::Duration,
    #[command(flatten)]
    target: ScheduleTarget,
}

#[derive(Args)]
pub struct ScheduleRemoveArgs {
    /// The profile.
    profile: String,
    #[command(flatten)]
    target: ScheduleTarget,
}

/// Where schedules are written.
#[derive(Args)]
pub struct ScheduleTarget {
    /// The user's systemd units (`systemctl --user`), not the system's.
    #[arg(long)]
    user: bool,
    /// A crontab line instead of systemd units (the user's crontab).
    #[arg(long)]
    cron: bool,
    /// Write the units into DIR and enable nothing (to inspect them, or to
    /// install them elsewhere).
    #[arg(long, value_name = "DIR", conflicts_with = "cron")]
    unit_dir: Option<PathBuf>,
    /// With --cron: edit this crontab file instead of the user's crontab.
    #[arg(long, value_name = "FILE", requires = "cron")]
    crontab: Option<PathBuf>,
}

impl ScheduleTarget {
    fn unit_dir(&self) -> Result<PathBuf> {
        match &self.unit_dir {
            Some(dir) => Ok(dir.clone()),
            None => schedule::default_unit_dir(self.user)
                .context("no HOME for the user's systemd units: give --unit-dir"),
        }
    }

    /// `systemctl [--user] ARGS`, unless the units went to a directory
    /// of the caller's choosing.
    fn systemctl(&self, args: &[&str]) -> Result<()> {
        if self.unit_dir.is_some() {
            return Ok(());
        }
        let mut command = std::process::Command::new("systemctl");
        if self.user {
            command.arg("--user");
        }
        let out = command
            .args(args)
            .output()
            .with_context(|| format!("systemctl {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "systemctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn read_crontab(&self) -> Result<String> {
        if let Some(file) = &self.crontab {
            return match std::fs::read_to_string(file) {
                Ok(text) => Ok(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(e).with_context(|| file.display().to_string()),
            };
        }
        let out = std::process::Command::new("crontab")
            .arg("-l")
            .output()
            .context("crontab -l (is cron installed?)")?;
        if !out.status.success() {
            let error = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // No crontab yet is an empty one; any other failure must not
            // lead to a crontab written over one that could not be read.
            if error.starts_with("no crontab for") {
                return Ok(String::new());
            }
            bail!("crontab -l: {error}");
        }
        String::from_utf8(out.stdout).context(
            "the crontab is not UTF-8: edit it with `crontab -e`, cairn will not rewrite it",
        )
    }

    fn write_crontab(&self, text: &str) -> Result<()> {
        if let Some(file) = &self.crontab {
            // A crontab file keeps the mode it had.
            let mode = std::fs::metadata(file)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                .unwrap_or(0o600);
            return write_atomically(file, text.as_bytes(), mode)
                .with_context(|| file.display().to_string());
        }
        let mut child = std::process::Command::new("crontab")
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("crontab -")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())?;
        if !child.wait()?.success() {
            bail!("crontab - refused the new crontab");
        }
        Ok(())
    }
}

pub fn schedule(cli: &Cli, command: &ScheduleCommand) -> Result<u8> {
    match command {
        ScheduleCommand::Install(args) => schedule_install(cli, args),
        ScheduleCommand::List(target) => schedule_list(cli, target),
        ScheduleCommand::Remove(args) => schedule_remove(cli, args),
    }
}

fn schedule_install(cli: &Cli, args: &ScheduleInstallArgs) -> Result<u8> {
    let (path, config) = load(cli)?;
    config.select(
        std::slice::from_ref(&args.profile),
        &path.display().to_string(),
    )?;
    let config_path = std::fs::canonicalize(&path).with_context(|| path.display().to_string())?;
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let every = schedule::Every::parse(args.at.as_deref(), args.hourly, args.on.as_deref())?;
    let invocation = schedule::Invocation {
        exe: &exe,
        config: &config_path,
        profile: &args.profile,
    };
    let target = &args.target;
    let said = if target.cron {
        let line = invocation.cron_line(&every)?;
        let crontab = schedule::with_cron_line(&target.read_crontab()?, &args.profile, Some(&line));
        target.write_crontab(&crontab)?;
        format!("{}: added the crontab line: {line}", args.profile)
    } else {
        let next = schedule::next_elapse(&every.calendar())?;
        let dir = target.unit_dir()?;
        let (service, timer) = invocation.unit_names();
        write_atomically(&dir.join(&service), invocation.service()?.as_bytes(), 0o644)
            .with_context(|| dir.join(&service).display().to_string())?;
        write_atomically(
            &dir.join(&timer),
            invocation.timer(&every, args.randomized_delay).as_bytes(),
            0o644,
        )
        .with_context(|| dir.join(&timer).display().to_string())?;
        target.systemctl(&["daemon-reload"])?;
        target.systemctl(&["enable", "--now", &timer])?;
        let enabled = if target.unit_dir.is_some() {
            "not enabled (--unit-dir)".to_string()
        } else {
            format!("enabled {timer}")
        };
        format!(
            "{}: wrote {service} and {timer} in {}; {enabled}{}",
            args.profile,
            dir.display(),
            next.map(|n| format!("; next run {n}")).unwrap_or_default()
        )
    };
    let states = state_dir(&config)?;
    let mut state = states.load(&args.profile);
    state.schedule = Some(schedule::Installed {
        every,
        cron: target.cron,
    });
    states
        .store(&args.profile, &state)
        .with_context(|| format!("recording the schedule in {}", states.path().display()))?;
    output::line(cli, &said)?;
    Ok(0)
}

fn schedule_list(cli: &Cli, target: &ScheduleTarget) -> Result<u8> {
    let (kind, found) = if target.cron {
        ("cron", schedule::cron_profiles(&target.read_crontab()?))
    } else {
        ("systemd", schedule::timer_profiles(&target.unit_dir()?))
    };
    for (profile, when) in found {
        output::line(cli, &format!("{profile}: {kind}, {when}"))?;
    }
    Ok(0)
}

fn schedule_remove(cli: &Cli, args: &ScheduleRemoveArgs) -> Result<u8> {
    let target = &args.target;
    let removed = if target.cron {
        let crontab = target.read_crontab()?;
        let kept = schedule::with_cron_line(&crontab, &args.profile, None);
        let found = kept != crontab;
        if found {
            target.write_crontab(&kept)?;
        }
        found
    } else {
        let dir = target.unit_dir()?;
        let (service, timer) = schedule::unit_names(&args.profile);
        let found = dir.join(&timer).exists();
        if found {
            target.systemctl(&["disable", "--now", &timer])?;
        }
        for unit in [&timer, &service] {
            match std::fs::remove_file(dir.join(unit)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| dir.join(unit).display().to_string())
                }
                _ => {}
            }
        }
        if found {
            target.systemctl(&["daemon-reload"])?;
        }
        found
    };
    if !removed {
        bail!("{}: not scheduled there", args.profile);
    }
    if let Ok((_, config)) = load(cli) {
        if let Ok(states) = state_dir(&config) {
            let mut state = states.load(&args.profile);
            if state.schedule.take().is_some() {
                let _ = states.store(&args.profile, &state);
            }
        }
    }
    output::line(cli, &format!("{}: no longer scheduled", args.profile))?;
    Ok(0)
}
