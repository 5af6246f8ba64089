//! `cairn schedule`: a profile's run as a systemd service and timer, or
//! as a crontab line, written (and found and removed again) by name.
//!
//! Units are `cairn-PROFILE.service` and `cairn-PROFILE.timer`; a crontab
//! line ends with the marker `# cairn:PROFILE`, so that only lines cairn
//! wrote are ever touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a profile runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Every {
    /// Each day at this hour and minute.
    Day {
        /// The hour, 0 to 23.
        hour: u8,
        /// The minute, 0 to 59.
        minute: u8,
    },
    /// Each hour at this minute.
    Hour {
        /// The minute, 0 to 59.
        minute: u8,
    },
    /// A systemd calendar expression (systemd only).
    Calendar(String),
}

/// A schedule that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// `--at` is not `HH:MM`.
    #[error("--at {0:?}: expected HH:MM (like 02:30)")]
    Time(String),
    /// A calendar expression was asked of cron.
    #[error("cron has no calendar expressions: with --cron, give --daily or --hourly")]
    CalendarForCron,
    /// A path that cannot be written into a unit or crontab line.
    #[error("{}: not UTF-8, so it cannot be written into a unit or a crontab", .0.display())]
    NotUtf8(PathBuf),
    /// systemd does not read the calendar expression.
    #[error("--on {expression:?}: {reason}")]
    Calendar {
        /// The expression.
        expression: String,
        /// What systemd-analyze said.
        reason: String,
    },
}

impl Every {
    /// `--daily` (the default) or `--hourly` at `at` (`HH:MM`; for hourly
    /// only the minutes count), or `--on CALENDAR`.
    pub fn parse(at: Option<&str>, hourly: bool, on: Option<&str>) -> Result<Every, ScheduleError> {
        if let Some(expression) = on {
            return Ok(Every::Calendar(expression.to_string()));
        }
        let (hour, minute) = match at {
            None => (2, 30),
            Some(text) => {
                let invalid = || ScheduleError::Time(text.to_string());
                let (h, m) = text.split_once(':').ok_or_else(invalid)?;
                let (h, m): (u8, u8) = (
                    h.parse().map_err(|_| invalid())?,
                    m.parse().map_err(|_| invalid())?,
                );
                if h > 23 || m > 59 || m_digits(text) != 2 {
                    return Err(invalid());
                }
                (h, m)
            }
        };
        Ok(if hourly {
            Every::Hour { minute }
        } else {
            Every::Day { hour, minute }
        })
    }

    /// The timer's `OnCalendar=`.
    pub fn calendar(&self) -> String {
        match self {
            Every::Day { hour, minute } => format!("*-*-* {hour:02}:{minute:02}:00"),
            Every::Hour { minute } => format!("*-*-* *:{minute:02}:00"),
            Every::Calendar(expression) => expression.clone(),
        }
    }

    /// The crontab's five time fields.
    pub fn cron_fields(&self) -> Result<String, ScheduleError> {
        match self {
            Every::Day { hour, minute } => Ok(format!("{minute} {hour} * * *")),
            Every::Hour { minute } => Ok(format!("{minute} * * * *")),
            Every::Calendar(_) => Err(ScheduleError::CalendarForCron),
        }
    }
}

/// A schedule as installed, kept for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// When it runs.
    pub every: Every,
    /// Through cron rather than a systemd timer.
    pub cron: bool,
}

impl Installed {
    /// When it runs next after `now`, as text.
    pub fn next_run(&self, now: chrono::DateTime<chrono::Local>) -> Option<String> {
        use chrono::{Duration as Span, Timelike};
        // Local wall-clock times, stepped in calendar days or hours; a
        // time that a clock change skips runs at the first instant after.
        let local = |naive: chrono::NaiveDateTime| {
            let mut naive = naive;
            loop {
                if let Some(time) = naive.and_local_timezone(chrono::Local).earliest() {
                    return time;
                }
                naive += Span::minutes(1);
            }
        };
        let wall = now.naive_local().with_second(0)?.with_nanosecond(0)?;
        let next = match self.every {
            Every::Day { hour, minute } => {
                let today = wall
                    .with_hour(u32::from(hour))?
                    .with_minute(u32::from(minute))?;
                let date = if local(today) > now {
                    today
                } else {
                    today.checked_add_days(chrono::Days::new(1))?
                };
                local(date)
            }
            Every::Hour { minute } => {
                let this_hour = wall.with_minute(u32::from(minute))?;
                if local(this_hour) > now {
                    local(this_hour)
                } else {
                    local(this_hour + Span::hours(1))
                }
            }
            Every::Calendar(ref expression) => return next_elapse(expression).ok().flatten(),
        };
        Some(next.format("%Y-%m-%d %H:%M").to_string())
    }
}

fn m_digits(text: &str) -> usize {
    text.rsplit(':').next().map_or(0, str::len)
}

/// Checks a calendar expression with `systemd-analyze calendar`, if it
/// is installed, and returns its next elapse as systemd prints it.
pub fn next_elapse(expression: &str) -> Result<Option<String>, ScheduleError> {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .args(["calendar", expression])
        .output()
    else {
        return Ok(None);
    };
    if !out.status.success() {
        let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(ScheduleError::Calendar {
            expression: expression.to_string(),
            reason,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.trim()
            .strip_prefix("Next elapse:")
            .map(|n| n.trim().to_string())
    }))
}

/// What runs a profile: `EXE --config CONFIG run PROFILE`.
pub struct Invocation<'a> {
    /// The cairn executable, absolute.
    pub exe: &'a Path,
    /// The configuration file, absolute.
    pub config: &'a Path,
    /// The profile.
    pub profile: &'a str,
}

impl Invocation<'_> {
    /// `EXE --config CONFIG [--quiet] run PROFILE`, quoted for a POSIX
    /// shell; paths that are not UTF-8 cannot be written into a unit or a
    /// crontab.
    fn command_line(&self, quiet: bool) -> Result<String, ScheduleError> {
        fn text(path: &Path) -> Result<&str, ScheduleError> {
            path.to_str()
                .ok_or_else(|| ScheduleError::NotUtf8(path.to_path_buf()))
        }
        let mut words = vec![text(self.exe)?, "--config", text(self.config)?];
        if quiet {
            words.push("--quiet");
        }
        words.extend(["run", self.profile]);
        Ok(shell_words::join(words))
    }

    /// The unit names, `cairn-PROFILE.service` and `.timer`.
    pub fn unit_names(&self) -> (String, String) {
        unit_names(self.profile)
    }

    /// The service unit.
    pub fn service(&self) -> Result<String, ScheduleError> {
        // systemd expands `%` specifiers and `$` variables even inside
        // quotes: doubled, they stand for themselves.
        let command = self
            .command_line(false)?
            .replace('%', "%%")
            .replace('$', "$$");
        Ok(format!(
            "[Unit]\n\
             Description=cairn backup, profile {profile}\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart={command}\n\
             # 3: saved, but some files could not be read (see the journal).\n\
             SuccessExitStatus=3\n\
             Nice=10\n\
             IOSchedulingClass=idle\n",
            profile = self.profile,
        ))
    }

    /// The timer unit: `every`, caught up after downtime (`Persistent`),
    /// started up to `delay` late so that hosts do not all start at once.
    pub fn timer(&self, every: &Every, delay: Duration) -> String {
        format!(
            "[Unit]\n\
             Description=cairn backup schedule, profile {profile}\n\
             \n\
             [Timer]\n\
             OnCalendar={calendar}\n\
             Persistent=true\n\
             RandomizedDelaySec={delay}\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n",
            profile = self.profile,
            calendar = every.calendar(),
            delay = delay.as_secs(),
        )
    }

    /// The crontab line, marked as this profile's; the run is quiet, so
    /// that cron mails only failures.
    pub fn cron_line(&self, every: &Every) -> Result<String, ScheduleError> {
        // cron turns a bare `%` into a newline; quiet, so that cron mails
        // only what went wrong.
        Ok(format!(
            "{} {} {}",
            every.cron_fields()?,
            self.command_line(true)?.replace('%', "\\%"),
            cron_marker(self.profile)
        ))
    }
}

/// The unit names of `profile`.
pub fn unit_names(profile: &str) -> (String, String) {
    (
        format!("cairn-{profile}.service"),
        format!("cairn-{profile}.timer"),
    )
}

/// The marker ending the crontab line of `profile`.
pub fn cron_marker(profile: &str) -> String {
    format!("# cairn:{profile}")
}

/// `crontab` with the line of `profile` replaced by `line` (or removed,
/// for none); other lines are kept as they are.
pub fn with_cron_line(crontab: &str, profile: &str, line: Option<&str>) -> String {
    let marker = cron_marker(profile);
    let mut lines: Vec<&str> = crontab
        .lines()
        .filter(|l| !l.trim_end().ends_with(&marker))
        .collect();
    lines.extend(line);
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// The profiles with a line in `crontab`, with their time fields.
pub fn cron_profiles(crontab: &str) -> Vec<(String, String)> {
    crontab
        .lines()
        .filter_map(|line| {
            let (_, profile) = line.rsplit_once("# cairn:")?;
            let fields: Vec<&str> = line.split_whitespace().take(5).collect();
            Some((profile.trim().to_string(), fields.join(" ")))
        })
        .collect()
}

/// The profiles with a timer in `dir`, with their `OnCalendar=`.
pub fn timer_profiles(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let profile = name.strip_prefix("cairn-")?.strip_suffix(".timer")?;
            let text = std::fs::read_to_string(entry.path()).ok()?;
            let calendar = text
                .lines()
                .find_map(|l| l.strip_prefix("OnCalendar="))
                .unwrap_or_default();
            Some((profile.to_string(), calendar.to_string()))
        })
        .collect();
    found.sort();
    found
}

/// Where systemd units go: the system's, or with `user` the user's.
pub fn default_unit_dir(user: bool) -> Option<PathBuf> {
    if user {
        std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|config| config.join("systemd/user"))
    } else {
        Some(PathBuf::from("/etc/systemd/system"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_calendars_and_cron_fields() {
        let daily = Every::parse(Some("02:30"), false, None).unwrap();
        assert_eq!(daily.calendar(), "*-*-* 02:30:00");
        assert_eq!(daily.cron_fields().unwrap(), "30 2 * * *");
        let hourly = Every::parse(Some("00:15"), true, None).unwrap();
        assert_eq!(hourly.calendar(), "*-*-* *:15:00");
        assert_eq!(hourly.cron_fields().unwrap(), "15 * * * *");
        for bad in ["2:3", "24:00", "12:60", "noon", "12:5"] {
            assert!(Every::parse(Some(bad), false, None).is_err(), "{bad}");
        }
        let calendar = Every::parse(None, false, Some("Mon *-*-* 03:00")).unwrap();
        assert!(matches!(
            calendar.cron_fields(),
            Err(ScheduleError::CalendarForCron)
        ));
    }

    #[test]
    fn percent_and_dollar_stand_for_themselves_in_units_and_cron() {
        let (exe, config) = (
            Path::new("/usr/bin/cairn"),
            Path::new("/etc/cairn/100%$x.toml"),
        );
        let invocation = Invocation {
            exe,
            config,
            profile: "home",
        };
        let service = invocation.service().unwrap();
        assert!(
            service.contains(
                "ExecStart=/usr/bin/cairn --config '/etc/cairn/100%%$$x.toml' run home\n"
            ),
            "{service}"
        );
        let line = invocation
            .cron_line(&Every::Day {
                hour: 2,
                minute: 30,
            })
            .unwrap();
        assert_eq!(
            line,
            "30 2 * * * /usr/bin/cairn --config '/etc/cairn/100\\%$x.toml' --quiet run home # cairn:home"
        );
    }

    #[test]
    fn a_daily_run_already_past_today_is_next_tomorrow() {
        use chrono::TimeZone;
        let now = chrono::Local
            .with_ymd_and_hms(2026, 6, 10, 12, 0, 0)
            .unwrap();
        let daily = |hour, minute| Installed {
            every: Every::Day { hour, minute },
            cron: false,
        };
        assert_eq!(daily(13, 5).next_run(now).unwrap(), "2026-06-10 13:05");
        assert_eq!(daily(2, 30).next_run(now).unwrap(), "2026-06-11 02:30");
        let hourly = Installed {
            every: Every::Hour { minute: 0 },
            cron: true,
        };
        assert_eq!(hourly.next_run(now).unwrap(), "2026-06-10 13:00");
    }

    #[test]
    fn only_the_profiles_own_crontab_line_is_replaced() {
        let crontab =
            "MAILTO=root\n0 1 * * * other-job\n5 3 * * * /bin/cairn run home # cairn:home\n";
        let replaced = with_cron_line(crontab, "home", Some("30 2 * * * new # cairn:home"));
        assert_eq!(
            replaced,
            "MAILTO=root\n0 1 * * * other-job\n30 2 * * * new # cairn:home\n"
        );
        assert_eq!(
            cron_profiles(&replaced),
            vec![("home".to_string(), "30 2 * * *".to_string())]
        );
        let removed = with_cron_line(&replaced, "home", None);
        assert_eq!(removed, "MAILTO=root\n0 1 * * * other-job\n");
        assert_eq!(with_cron_line(&removed, "homes", None), removed);
    }
}
