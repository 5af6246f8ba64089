//! The configuration file of `cairn run`: named profiles, each a
//! repository, what to back up into it, and what to do around the backup.
//!
//! Every key is checked: an unknown key, a value of the wrong type or a
//! profile that cannot run is an error naming the file, the line and the
//! table, never silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::database::Database;
use crate::forget::policy::RetentionSpan;
use crate::prune::MaxUnused;

/// A configuration file, as read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where the records of runs are kept (for `status` and metrics);
    /// by default the user's state directory.
    pub state_dir: Option<PathBuf>,
    /// The profiles, by name.
    #[serde(default, rename = "profile")]
    pub profiles: BTreeMap<String, Profile>,
}

/// One profile: a repository and everything a run does with it.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawProfile")]
pub struct Profile {
    /// Where the snapshots go, and how to open it.
    pub repository: RepositoryAccess,
    /// Host name to record instead of this machine's (and to select this
    /// profile's snapshots by, for retention and copies).
    pub host: Option<String>,
    /// Files and directories to back up.
    pub sources: Vec<PathBuf>,
    /// Exclude patterns, as `backup --exclude`.
    pub exclude: Vec<String>,
    /// Files of exclude patterns, as `backup --exclude-file`.
    pub exclude_file: Vec<PathBuf>,
    /// Leave out directories with a CACHEDIR.TAG.
    pub exclude_caches: bool,
    /// Leave out directories holding an entry of one of these names.
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than this (like 500M).
    pub exclude_larger_than: Option<String>,
    /// Stay on the file systems of the sources.
    pub one_file_system: bool,
    /// Tags of every snapshot of this profile.
    pub tags: Vec<String>,
    /// zstd level for the backup.
    pub compression: Option<i32>,
    /// Commands whose output is stored as a file of the snapshot.
    pub commands: Vec<CommandSource>,
    /// Database dumps, stored as files of the snapshot.
    pub databases: Vec<Database>,
    /// What to keep after each backup, and whether to prune.
    pub retention: Option<Retention>,
    /// How much to check after each backup.
    pub check: Option<CheckPolicy>,
    /// Files of the new snapshot to restore and test.
    pub verify: Option<Verify>,
    /// A second repository: copied to, and a fallback if allowed.
    pub secondary: Option<Secondary>,
    /// Commands run around the steps.
    pub hooks: Hooks,
    /// The OpenMetrics file (for node_exporter's textfile collector).
    pub metrics: Option<PathBuf>,
    /// How long to wait for a locked repository (like 10m).
    pub retry_lock: Option<String>,
}

/// A repository and how to get its password.
#[derive(Clone, PartialEq, Eq)]
pub struct RepositoryAccess {
    /// Its location: a directory, or `s3:...`.
    pub location: String,
    /// A file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// A command that prints the password.
    pub password_command: Option<String>,
    /// Environment for every cairn process on it (S3 credentials, say).
    pub environment: BTreeMap<String, String>,
    /// Where its caches live.
    pub cache_dir: Option<PathBuf>,
    /// How many packs to store at once.
    pub connections: Option<u16>,
}

/// A command whose output becomes the file `name` of the snapshot.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandSource {
    /// The file's name at the snapshot's root.
    pub name: String,
    /// The command, split into words as a shell would, run without one.
    pub run: String,
}

/// Retention: the `forget` rules applied to this profile's snapshots.
#[derive(Clone, Debug, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    /// Keep the N newest.
    pub keep_last: Option<u32>,
    /// The newest of each of the last N hours.
    pub keep_hourly: Option<u32>,
    /// ... days.
    pub keep_daily: Option<u32>,
    /// ... ISO weeks.
    pub keep_weekly: Option<u32>,
    /// ... months.
    pub keep_monthly: Option<u32>,
    /// ... years.
    pub keep_yearly: Option<u32>,
    /// Everything within this span of the newest (like 30d).
    pub keep_within: Option<String>,
    /// Snapshots carrying all of these comma-separated tags.
    #[serde(default)]
    pub keep_tag: Vec<String>,
    /// Prune after forgetting.
    #[serde(default)]
    pub prune: bool,
    /// Unused space to tolerate when pruning (like 5%, 1G).
    pub max_unused: Option<String>,
}

/// How much a run checks.
#[derive(Clone, Debug, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckPolicy {
    /// Read a slice of the data each run so that all of it is read over
    /// this many days (1: everything, every run); none: structure only.
    pub read_data_days: Option<u32>,
}

/// Restore chosen files of the new snapshot and run a command on them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Verify {
    /// Paths in the snapshot to restore (as `restore --include`).
    pub paths: Vec<String>,
    /// A shell command, run in the directory they were restored into.
    pub command: String,
}

/// A second repository.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawSecondary")]
pub struct Secondary {
    /// Where it is and how to open it.
    pub repository: RepositoryAccess,
    /// Copy this profile's new snapshots there after each run.
    pub copy: bool,
    /// Back up there if the primary cannot be reached.
    pub fallback: bool,
}

/// A secondary repository as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSecondary {
    repository: String,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    cache_dir: Option<PathBuf>,
    connections: Option<u16>,
    #[serde(default = "yes")]
    copy: bool,
    #[serde(default)]
    fallback: bool,
}

fn yes() -> bool {
    true
}

impl TryFrom<RawSecondary> for Secondary {
    type Error = String;

    fn try_from(raw: RawSecondary) -> Result<Self, String> {
        let repository = RepositoryAccess::checked(
            raw.repository,
            raw.password_file,
            raw.password_command,
            raw.environment,
            raw.cache_dir,
            raw.connections,
        )?;
        if !raw.copy && !raw.fallback {
            return Err("a secondary with neither `copy` nor `fallback` is never used".into());
        }
        Ok(Secondary {
            repository,
            copy: raw.copy,
            fallback: raw.fallback,
        })
    }
}

/// Shell commands run around the steps, each with `CAIRN_PROFILE`,
/// `CAIRN_STEP`, `CAIRN_EXIT_CODE` and `CAIRN_ERROR` set.
#[derive(Clone, Debug, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hooks {
    /// Before the first step; if it fails, the profile stops there.
    pub before: Option<String>,
    /// After the last step, whatever happened (to restart what `before`
    /// stopped).
    pub after: Option<String>,
    /// When a step failed, before `after`.
    pub failure: Option<String>,
}

impl std::fmt::Debug for RepositoryAccess {
    /// Without the environment's values: they are often secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryAccess")
            .field("location", &self.location)
            .field("password_file", &self.password_file)
            .field("password_command", &self.password_command)
            .field("environment", &self.environment.keys().collect::<Vec<_>>())
            .field("cache_dir", &self.cache_dir)
            .field("connections", &self.connections)
            .finish()
    }
}

impl RepositoryAccess {
    /// A repository's keys as written in a table, checked together.
    fn checked(
        location: String,
        password_file: Option<PathBuf>,
        password_command: Option<String>,
        environment: BTreeMap<String, String>,
        cache_dir: Option<PathBuf>,
        connections: Option<u16>,
    ) -> Result<Self, String> {
        if location.is_empty() {
            return Err("`repository` is empty".into());
        }
        match (&password_file, &password_command) {
            (Some(_), Some(_)) => {
                return Err("give `password-file` or `password-command`, not both".into())
            }
            (None, None) => {
                return Err("the repository needs `password-file` or `password-command`".into())
            }
            _ => {}
        }
        if connections.is_some_and(|n| !(1..=64).contains(&n)) {
            return Err("`connections` must be 1 to 64".into());
        }
        Ok(RepositoryAccess {
            location,
            password_file,
            password_command,
            environment,
            cache_dir,
            connections,
        })
    }
}

/// A profile as written, before its parts are checked together.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawProfile {
    repository: String,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    cache_dir: Option<PathBuf>,
    connections: Option<u16>,
    host: Option<String>,
    #[serde(default)]
    sources: Vec<PathBuf>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    exclude_file: Vec<PathBuf>,
    #[serde(default)]
    exclude_caches: bool,
    #[serde(default)]
    exclude_if_present: Vec<String>,
    exclude_larger_than: Option<String>,
    #[serde(default)]
    one_file_system: bool,
    #[serde(default)]
    tags: Vec<String>,
    compression: Option<i32>,
    #[serde(default, rename = "command")]
    commands: Vec<CommandSource>,
    #[serde(default, rename = "database")]
    databases: Vec<Database>,
    retention: Option<Retention>,
    check: Option<CheckPolicy>,
    verify: Option<Verify>,
    secondary: Option<Secondary>,
    #[serde(default)]
    hooks: Hooks,
    metrics: Option<PathBuf>,
    retry_lock: Option<String>,
}

impl TryFrom<RawProfile> for Profile {
    type Error = String;

    fn try_from(raw: RawProfile) -> Result<Self, String> {
        let repository = RepositoryAccess::checked(
            raw.repository,
            raw.password_file,
            raw.password_command,
            raw.environment,
            raw.cache_dir,
            raw.connections,
        )?;
        if raw.sources.is_empty() && raw.commands.is_empty() && raw.databases.is_empty() {
            return Err(
                "nothing to back up: give `sources`, a `[[...command]]` or a `[[...database]]`"
                    .into(),
            );
        }
        if let Some(path) = raw.sources.iter().find(|p| !p.is_absolute()) {
            return Err(format!(
                "source {:?} is relative: a scheduled run starts in another directory",
                path.display()
            ));
        }
        let mut names: Vec<String> = raw.commands.iter().map(|c| c.name.clone()).collect();
        names.extend(raw.databases.iter().map(Database::file_name));
        for (i, name) in names.iter().enumerate() {
            if name.is_empty()
                || name.contains('/')
                || name.contains('=')
                || name == "."
                || name == ".."
            {
                return Err(format!(
                    "{name:?} cannot name a file at the snapshot's root: give one name, without `/` or `=`"
                ));
            }
            if raw
                .sources
                .iter()
                .any(|s| s.iter().nth(1) == Some(name.as_ref()))
            {
                return Err(format!("{name:?} is also the first name of a source path"));
            }
            if names[..i].contains(name) {
                return Err(format!(
                    "two commands or databases write {name:?}: give one a `name`"
                ));
            }
        }
        if !names.is_empty() && raw.sources.iter().any(|s| s == Path::new("/")) {
            return Err("commands and databases cannot be stored beside a backup of `/`".into());
        }
        for command in &raw.commands {
            match shell_words::split(&command.run) {
                Ok(words) if !words.is_empty() => {}
                Ok(_) => return Err(format!("the command for {:?} is empty", command.name)),
                Err(e) => return Err(format!("the command for {:?}: {e}", command.name)),
            }
        }
        if let Some(retention) = &raw.retention {
            retention.validate()?;
        }
        if let Some(days) = raw.check.as_ref().and_then(|c| c.read_data_days) {
            if days == 0 {
                return Err("`read-data-days` must be at least 1".into());
            }
        }
        if let Some(verify) = &raw.verify {
            if verify.paths.is_empty() {
                return Err("`verify` needs `paths` to restore".into());
            }
        }
        if let Some(secondary) = &raw.secondary {
            if secondary.repository.location == repository.location {
                return Err("the secondary repository is the primary one".into());
            }
            // A copy opens both repositories in one process, with one
            // environment.
            let clash = secondary
                .repository
                .environment
                .iter()
                .find(|(key, value)| {
                    repository
                        .environment
                        .get(*key)
                        .is_some_and(|v| v != *value)
                });
            if let (true, Some((key, _))) = (secondary.copy, clash) {
                return Err(format!(
                    "the primary and the secondary set {key} differently: a copy reads both with one environment"
                ));
            }
        }
        if let Some(level) = raw.compression {
            if !(0..=22).contains(&level) {
                return Err("`compression` must be 0 to 22".into());
            }
        }
        if let Some(text) = &raw.retry_lock {
            super::parse_duration(text).map_err(|e| format!("`retry-lock`: {e}"))?;
        }
        Ok(Profile {
            repository,
            host: raw.host,
            sources: raw.sources,
            exclude: raw.exclude,
            exclude_file: raw.exclude_file,
            exclude_caches: raw.exclude_caches,
            exclude_if_present: raw.exclude_if_present,
            exclude_larger_than: raw.exclude_larger_than,
            one_file_system: raw.one_file_system,
            tags: raw.tags,
            compression: raw.compression,
            commands: raw.commands,
            databases: raw.databases,
            retention: raw.retention,
            check: raw.check,
            verify: raw.verify,
            secondary: raw.secondary,
            hooks: raw.hooks,
            metrics: raw.metrics,
            retry_lock: raw.retry_lock,
        })
    }
}

impl Retention {
    fn validate(&self) -> Result<(), String> {
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        if counts.iter().all(Option::is_none)
            && self.keep_within.is_none()
            && self.keep_tag.is_empty()
        {
            return Err("`retention` keeps nothing: give at least one `keep-*` rule".into());
        }
        if let Some(span) = &self.keep_within {
            RetentionSpan::parse(span).map_err(|e| format!("`keep-within` {span:?}: {e}"))?;
        }
        if let Some(limit) = &self.max_unused {
            limit
                .parse::<MaxUnused>()
                .map_err(|e| format!("`max-unused` {limit:?}: {e}"))?;
        }
        Ok(())
    }
}

/// A configuration file that could not be used, named with where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path}:{line}:{column}: {table}{message}")]
    Invalid {
        /// The file.
        path: String,
        /// Line of the offending key or table, from 1.
        line: usize,
        /// Its column, from 1.
        column: usize,
        /// `in [TABLE]: ` of the table it is in, or nothing at the top.
        table: String,
        /// What is wrong.
        message: String,
    },
    /// A profile named on the command line is not in the file.
    #[error("{path}: no profile {name:?} (it has: {known})")]
    UnknownProfile {
        /// The file.
        path: String,
        /// The name asked for.
        name: String,
        /// The profiles it has.
        known: String,
    },
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and checks `text`, read from `path` (named in errors).
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start);
            let (line, column) = line_and_column(text, offset);
            let table = table_at(text, line)
                .map(|t| format!("in [{t}]: "))
                .unwrap_or_default();
            ConfigError::Invalid {
                path: path.to_string(),
                line,
                column,
                table,
                message: e.message().replace('\n', " ").trim().to_string(),
            }
        })?;
        let invalid_at = |needle: &str, message: String| {
            let offset = text.find(needle).unwrap_or(0);
            let (line, column) = line_and_column(text, offset);
            ConfigError::Invalid {
                path: path.to_string(),
                line,
                column,
                table: String::new(),
                message,
            }
        };
        let mut selections: Vec<(&str, Selection)> = Vec::new();
        for (name, profile) in &config.profiles {
            let mut tags: Vec<&String> = profile.tags.iter().collect();
            tags.sort();
            let selection = (profile.repository.location.as_str(), &profile.host, tags);
            let prunes = profile.retention.is_some() || profile.secondary.is_some();
            if let Some((other, _)) = selections.iter().find(|(_, s)| *s == selection) {
                if prunes || config.profiles[*other].retention.is_some() {
                    return Err(invalid_at(
                        &format!("profile.{name}]"),
                        format!(
                            "profiles {other:?} and {name:?} back up into one repository with the same host and tags, so retention and copies could not tell their snapshots apart: give one a tag"
                        ),
                    ));
                }
            }
            selections.push((name, selection));
        }
        for name in config.profiles.keys() {
            if !valid_profile_name(name) {
                let needle = format!("profile.{name}");
                let offset = text.find(&needle).unwrap_or(0);
                let (line, column) = line_and_column(text, offset);
                return Err(ConfigError::Invalid {
                    path: path.to_string(),
                    line,
                    column,
                    table: String::new(),
                    message: format!(
                        "profile name {name:?}: use letters, digits, `-` and `_`, not first `-` (it names files and units)"
                    ),
                });
            }
        }
        Ok(config)
    }

    /// The profiles named, in the order given, or all of them (in name
    /// order) if none is named.
    pub fn select<'a>(
        &'a self,
        names: &[String],
        path: &str,
    ) -> Result<Vec<(&'a str, &'a Profile)>, ConfigError> {
        if names.is_empty() {
            return Ok(self.profiles.iter().map(|(n, p)| (n.as_str(), p)).collect());
        }
        names
            .iter()
            .map(|name| {
                self.profiles
                    .get_key_value(name)
                    .map(|(n, p)| (n.as_str(), p))
                    .ok_or_else(|| ConfigError::UnknownProfile {
                        path: path.to_string(),
                        name: name.clone(),
                        known: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
                    })
            })
            .collect()
    }
}

/// What tells a profile's snapshots from others': repository, host, tags.
type Selection<'a> = (&'a str, &'a Option<String>, Vec<&'a String>);

/// Whether `name` may name a profile: it becomes part of file and unit
/// names.
fn valid_profile_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Line and column (from 1) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The name of the `[table]` or `[[table]]` header above line `line`.
fn table_at(text: &str, line: usize) -> Option<String> {
    text.lines()
        .take(line)
        .collect::<Vec<_>>()
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[profile.home]
repository = "/srv/repo"
password-file = "/etc/cairn/pw"
sources = ["/home"]
"#;

    fn invalid(text: &str) -> String {
        Config::parse(text, "c.toml").unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_profile_reads() {
        let config = Config::parse(MINIMAL, "c.toml").unwrap();
        let home = &config.profiles["home"];
        assert_eq!(home.repository.location, "/srv/repo");
        assert_eq!(home.sources, vec![PathBuf::from("/home")]);
        assert!(home.retention.is_none());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_table() {
        let text = format!("{MINIMAL}keep-daily = 7\n");
        let error = invalid(&text);
        assert!(
            error.starts_with("c.toml:6:1: in [profile.home]: "),
            "{error}"
        );
        assert!(error.contains("unknown field `keep-daily`"), "{error}");
        assert!(!error.contains('\n'));
    }

    #[test]
    fn a_misplaced_key_in_a_subtable_is_named() {
        let text = format!("{MINIMAL}[profile.home.retention]\nkeep-daly = 7\n");
        let error = invalid(&text);
        assert!(
            error.starts_with("c.toml:7:1: in [profile.home.retention]: "),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_type_is_an_error() {
        let error = invalid(&MINIMAL.replace(r#"["/home"]"#, r#""/home""#));
        assert!(error.starts_with("c.toml:5:"), "{error}");
    }

    #[test]
    fn profiles_that_cannot_run_are_refused() {
        for (text, expected) in [
            (
                MINIMAL.replace(r#"sources = ["/home"]"#, ""),
                "nothing to back up",
            ),
            (MINIMAL.replace(r#"["/home"]"#, r#"["home"]"#), "relative"),
            (
                MINIMAL.replace(r#"password-file = "/etc/cairn/pw""#, ""),
                "needs `password-file`",
            ),
        ] {
            let error = invalid(&text);
            assert!(error.contains(expected), "{error}");
            assert!(error.contains("in [profile.home]"), "{error}");
        }
        let error = invalid(&format!(
            "{MINIMAL}[profile.home.retention]\nprune = true\n"
        ));
        assert!(error.contains("keeps nothing"), "{error}");
        let error = invalid(&format!(
            "{MINIMAL}[profile.home.retention]\nkeep-within = \"3 weeks\"\n"
        ));
        assert!(error.contains("keep-within"), "{error}");
    }

    #[test]
    fn the_readme_example_is_a_valid_configuration() {
        let readme = include_str!("../../../README.md");
        let example = |heading: &str| {
            let start = readme
                .find(heading)
                .expect("the README shows a configuration file");
            let text = &readme[start..start + readme[start..].find("```").unwrap()];
            Config::parse(text, "README.md").unwrap()
        };
        let first = example("# /etc/cairn/config.toml");
        let server = &first.profiles["server"];
        assert_eq!(server.sources, [PathBuf::from("/etc")]);
        assert_eq!(server.databases.len(), 1);
        assert!(server.retention.as_ref().unwrap().prune);
        assert!(server.check.is_some() && server.secondary.is_some());
        let every_key = example("# every key of a profile");
        let server = &every_key.profiles["server"];
        assert_eq!(server.databases.len(), 5);
        assert!(server.secondary.as_ref().unwrap().fallback);
    }

    #[test]
    fn profiles_whose_snapshots_cannot_be_told_apart_are_refused() {
        let second = MINIMAL.replace("profile.home", "profile.work");
        let retention = "[profile.work.retention]\nkeep-last = 3\n";
        let error = invalid(&format!("{MINIMAL}{second}{retention}"));
        assert!(error.contains("give one a tag"), "{error}");
        assert!(error.starts_with("c.toml:7:"), "{error}");
        let tagged = second.replace("sources", "tags = [\"work\"]\nsources");
        Config::parse(&format!("{MINIMAL}{tagged}{retention}"), "c.toml").unwrap();
        Config::parse(&format!("{MINIMAL}{second}"), "c.toml").unwrap();
    }

    #[test]
    fn an_unknown_profile_is_named_with_those_there_are() {
        let config = Config::parse(MINIMAL, "c.toml").unwrap();
        let error = config
            .select(&["work".to_string()], "c.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "c.toml: no profile \"work\" (it has: home)");
    }
}
