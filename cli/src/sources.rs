//! Turns the backup command line into `BackupOptions`: paths from
//! arguments and lists, streams from standard input and commands, and
//! exclude patterns from arguments and files.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use cairn_core::{BackupOptions, ExcludeOptions, StreamSource};

use crate::BackupArgs;

/// Builds the options of one backup run.
pub fn backup_options(args: &BackupArgs, time_ns: Option<i64>) -> Result<BackupOptions> {
    let mut streams = Vec::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    if args.stdin_from_command {
        if args.paths.is_empty() {
            bail!("--stdin-from-command needs the command after `--`");
        }
        streams.push(StreamSource::Command {
            name: args.stdin_filename.clone(),
            argv: args.paths.clone(),
            env_remove: cairn_variables(),
        });
    } else {
        paths.extend(args.paths.iter().map(PathBuf::from));
    }
    if args.stdin {
        streams.push(StreamSource::Reader {
            name: args.stdin_filename.clone(),
            reader: Box::new(std::io::stdin()),
        });
    }
    for spec in &args.commands {
        streams.push(command_source(spec)?);
    }
    for file in &args.files_from {
        // Raw bytes, not text: a name that is not UTF-8 must survive.
        let text = read(file)?;
        paths.extend(
            text.split(|&b| b == b'\n')
                .map(<[u8]>::trim_ascii)
                .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
                .map(|line| PathBuf::from(OsString::from_vec(line.to_vec()))),
        );
    }
    for file in &args.files_from_verbatim {
        paths.extend(split_paths(&read(file)?, b'\n'));
    }
    for file in &args.files_from_raw {
        paths.extend(split_paths(&read(file)?, b'\0'));
    }
    if paths.is_empty() && streams.is_empty() {
        bail!("nothing to back up: give paths, --files-from, --stdin or --command");
    }
    let mut excludes = ExcludeOptions {
        patterns: args.excludes.clone(),
        case_insensitive_patterns: args.iexcludes.clone(),
        caches: args.exclude_caches,
        if_present: args.exclude_if_present.clone(),
        larger_than: args
            .exclude_larger_than
            .as_deref()
            .map(parse_size)
            .transpose()
            .context("--exclude-larger-than")?,
        one_file_system: args.one_file_system,
    };
    for file in &args.exclude_files {
        excludes.patterns.extend(pattern_lines(file)?);
    }
    for file in &args.iexclude_files {
        excludes
            .case_insensitive_patterns
            .extend(pattern_lines(file)?);
    }
    let mut options = BackupOptions::new(paths);
    options.streams = streams;
    options.hostname = args.host.clone();
    options.tags = args.tags.clone();
    options.time_ns = time_ns;
    options.compression_level = args.compression;
    options.parent = args.parent.clone();
    options.force = args.force;
    options.excludes = excludes;
    Ok(options)
}

fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// Paths separated by `separator`, each taken as raw bytes; empty ones
/// (such as after a final separator) are skipped.
fn split_paths(bytes: &[u8], separator: u8) -> impl Iterator<Item = PathBuf> + '_ {
    bytes
        .split(move |&b| b == separator)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(OsString::from_vec(p.to_vec())))
}

/// Exclude patterns from a file: one per line, blank lines and `#`
/// comments skipped.
fn pattern_lines(file: &Path) -> Result<Vec<String>> {
    let text = String::from_utf8(read(file)?)
        .with_context(|| format!("{}: exclude patterns must be UTF-8", file.display()))?;
    Ok(text
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Parses `NAME=COMMAND`, splitting COMMAND into words as a POSIX shell
/// would (quotes and escapes), without running a shell.
fn command_source(spec: &str) -> Result<StreamSource> {
    let (name, command) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--command {spec:?}: expected NAME=COMMAND"))?;
    let argv = shell_words::split(command).with_context(|| format!("--command {spec:?}"))?;
    if name.is_empty() || argv.is_empty() {
        bail!("--command {spec:?}: expected NAME=COMMAND with both parts");
    }
    Ok(StreamSource::Command {
        name: name.to_string(),
        argv: argv.into_iter().map(OsString::from).collect(),
        env_remove: cairn_variables(),
    })
}

/// The names of this process's `CAIRN_*` variables: a command whose output
/// is backed up gets the environment without them, so that the repository
/// password does not reach pg_dump's children.
fn cairn_variables() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| key.as_encoded_bytes().starts_with(b"CAIRN_"))
        .collect()
}

/// Parses a size such as `500`, `10k`, `1.5M`, `2G` or `1T` (binary units;
/// a trailing `B` or `iB` is allowed).
fn parse_size(text: &str) -> Result<u64> {
    let bad = || anyhow!("size {text:?}: expected a number with an optional k, M, G or T");
    let trimmed = text.trim();
    let unit_start = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(unit_start);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit
        .trim()
        .to_ascii_lowercase()
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500").unwrap(), 500);
        assert_eq!(parse_size("10k").unwrap(), 10 << 10);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("").is_err());
    }
}
