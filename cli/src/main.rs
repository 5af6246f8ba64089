//! `cairn`: the command line. It parses arguments, calls `cairn-core`, and
//! prints; nothing about formats or storage lives here.

mod browse;
mod copy;
mod diff;
mod dump;
mod entry;
mod filter;
mod find;
mod forget;
mod key;
mod ls;
mod operate;
mod output;
mod password;
mod repair;
mod restore;
mod sources;
mod stats;
mod tag;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use cairn_core::progress::Progress;
use cairn_core::prune::{MaxUnused, PruneOptions};
use cairn_core::{ChunkerParams, InitOptions, LockKind, Repository, RepositoryLock, SnapshotId};
use clap::{Args, Parser, Subcommand};

/// Exit codes, documented in the README.
mod exit {
    pub const FATAL: u8 = 1;
    pub const INCOMPLETE: u8 = 3;
    pub const NO_REPOSITORY: u8 = 10;
    pub const LOCKED: u8 = 11;
    pub const WRONG_PASSWORD: u8 = 12;
    /// The key in use is write-only, and the command reads or deletes.
    pub const WRITE_ONLY: u8 = 13;
    /// The repository's store could not be reached.
    pub const UNREACHABLE: u8 = 14;
    /// `run`: a backup went to the secondary repository.
    pub const DEGRADED: u8 = 4;
}

#[derive(Parser)]
#[command(name = "cairn", version, about = "Deduplicating, encrypted backups")]
struct Cli {
    /// Repository location: a local directory (or `local:DIR`), or an S3
    /// bucket, `s3:https://HOST[:PORT]/BUCKET[/PREFIX]`.
    #[arg(short = 'r', long, env = "CAIRN_REPO", global = true)]
    repo: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Where the local caches live (the index, and for object storage the
    /// trees).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Print only errors and warnings.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// If the repository is locked, retry for this long (like 30s, 5m, 1h)
    /// before giving up with exit code 11.
    #[arg(long, value_name = "DURATION", global = true, value_parser = retry_duration, default_value = "0s")]
    retry_lock: std::time::Duration,
    /// Take no lock, for a repository this process cannot write to (restore
    /// only). Unsafe beside a forget.
    #[arg(long, global = true)]
    no_lock: bool,
    /// How many packs a backup stores at once (default: 5 on object
    /// storage, 2 on a local disk); a restore from object storage reads
    /// with twice as many threads.
    #[arg(long, value_name = "N", env = "CAIRN_CONNECTIONS", global = true,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: Option<u16>,
    /// The configuration file of `run` and `status` (default:
    /// ~/.config/cairn/config.toml, or for root /etc/cairn/config.toml).
    #[arg(long, value_name = "FILE", env = "CAIRN_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories into a new snapshot.
    Backup(Box<BackupArgs>),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot, or a path inside one, into a directory.
    Restore(restore::RestoreArgs),
    /// Write a file of a snapshot to standard output.
    Cat(CatArgs),
    /// List a directory of a snapshot (-l long, -R recursive, --json).
    Ls(ls::LsArgs),
    /// Find paths by pattern across snapshots, with each one's versions.
    Find(find::FindArgs),
    /// Show what changed between two snapshots.
    Diff(diff::DiffArgs),
    /// Browse snapshots interactively in the terminal.
    Browse(browse::BrowseArgs),
    /// Write a directory or file of a snapshot as a tar or zip archive.
    Dump(dump::DumpArgs),
    /// Count what snapshots hold and what they take in the repository.
    Stats(stats::StatsArgs),
    /// Add, remove or set snapshots' tags.
    Tag(tag::TagArgs),
    /// Copy snapshots, with the data they need, from another repository.
    Copy(copy::CopyArgs),
    /// Remove snapshots by a retention policy, or by id.
    Forget(Box<forget::ForgetArgs>),
    /// Remove stale locks (of processes that are gone), or all locks.
    Unlock(UnlockArgs),
    /// Manage the passwords (key files) that open the repository.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Check the repository: structure, index, and with --read-data, data.
    Check(CheckArgs),
    /// Rebuild what can be rebuilt from what survives.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Delete the packs no snapshot needs any more.
    Prune(PruneArgs),
    /// Run profiles of the configuration file: hooks, backup, verify,
    /// forget, check and copy, each reported in one line.
    Run(operate::RunArgs),
    /// Work with the configuration file.
    #[command(subcommand)]
    Config(operate::ConfigCommand),
    /// Show each profile's last run, backup and check, and its next run.
    Status(operate::StatusArgs),
    /// Run profiles on a schedule, with systemd timers or cron.
    #[command(subcommand)]
    Schedule(operate::ScheduleCommand),
}

#[derive(Args)]
struct PruneArgs {
    /// Say what would be deleted and repacked; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Unused space to tolerate inside packs before repacking them: a
    /// percentage of the packs kept (5%), a size (500M, 2GiB) or unlimited.
    #[arg(long, value_name = "LIMIT", default_value = "5%")]
    max_unused: MaxUnused,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum RepairCommand {
    /// Rebuild the index segments from the pack trailers.
    Index,
    /// Rewrite snapshots whose data is lost: lost chunks become zeros,
    /// lost directories empty, and the damage is listed.
    Snapshots(repair::RepairSnapshotsArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// Also read every pack and verify every blob.
    #[arg(long)]
    read_data: bool,
    /// Read only a slice of the packs: `n/m` (subset n of m), or `P%` (a
    /// window that moves every day, covering everything in 100/P days).
    #[arg(long, value_name = "SUBSET", value_parser = data_subset, conflicts_with = "read_data")]
    read_data_subset: Option<cairn_core::check::DataSubset>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn data_subset(text: &str) -> std::result::Result<cairn_core::check::DataSubset, String> {
    use cairn_core::check::DataSubset;
    let invalid = || format!("{text:?}: expected n/m (1 <= n <= m) or a percentage like 10%");
    if let Some((n, m)) = text.split_once('/') {
        let (n, m): (u32, u32) = (
            n.parse().map_err(|_| invalid())?,
            m.parse().map_err(|_| invalid())?,
        );
        if n == 0 || n > m {
            return Err(invalid());
        }
        return Ok(DataSubset::Slice { n, m });
    }
    let percent: f64 = text
        .strip_suffix('%')
        .ok_or_else(invalid)?
        .parse()
        .map_err(|_| invalid())?;
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(invalid());
    }
    let day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    Ok(DataSubset::Percent { percent, day })
}

#[derive(Args)]
struct UnlockArgs {
    /// Remove every lock, also those of running processes.
    #[arg(long)]
    remove_all: bool,
}

/// Parses `30s`, `5m`, `1h`, `2d` (or a plain number of seconds).
fn retry_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    cairn_core::operate::parse_duration(text)
}

#[derive(Args)]
struct InitArgs {
    /// Default zstd level for new data, 0 (store raw) to 22.
    #[arg(long, default_value_t = cairn_core::DEFAULT_COMPRESSION_LEVEL)]
    compression: i32,
    /// Target packfile size in MiB.
    #[arg(long, default_value_t = 16)]
    pack_size: u32,
    /// Smallest chunk in bytes.
    #[arg(long, default_value_t = ChunkerParams::DEFAULT.min_bytes)]
    chunk_min: u32,
    /// Average chunk in bytes (a power of two).
    #[arg(long, default_value_t = ChunkerParams::DEFAULT.avg_bytes)]
    chunk_avg: u32,
    /// Largest chunk in bytes.
    #[arg(long, default_value_t = ChunkerParams::DEFAULT.max_bytes)]
    chunk_max: u32,
    #[command(flatten)]
    kdf: key::KdfArgs,
    /// Cut and name blobs as the repository of --from-repo does (its
    /// chunker parameters and keys for naming blobs), so that `copy` from
    /// it moves blobs as they are, without reading every file again.
    #[arg(long, requires = "from_repo")]
    copy_chunker_params: bool,
    #[command(flatten)]
    source: copy::SourceArgs,
}

#[derive(Args)]
struct BackupArgs {
    /// Files and directories to back up (with --stdin-from-command: the
    /// command and its arguments, after `--`).
    paths: Vec<OsString>,
    /// Read more paths from FILE, one per line; empty lines and lines
    /// starting with # are skipped (repeatable).
    #[arg(long, value_name = "FILE")]
    files_from: Vec<PathBuf>,
    /// Read more paths from FILE, one per line, taken verbatim (repeatable).
    #[arg(long, value_name = "FILE")]
    files_from_verbatim: Vec<PathBuf>,
    /// Read more paths from FILE, separated by NUL bytes (repeatable).
    #[arg(long, value_name = "FILE")]
    files_from_raw: Vec<PathBuf>,
    /// Store standard input as a file (named by --stdin-filename).
    #[arg(long, conflicts_with = "stdin_from_command")]
    stdin: bool,
    /// Run the command given after `--` and store its output as a file.
    #[arg(long)]
    stdin_from_command: bool,
    /// Name of the file for --stdin or --stdin-from-command.
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    stdin_filename: String,
    /// Store a command's output as the file NAME at the snapshot's root:
    /// NAME=COMMAND, run without a shell (write `sh -c '...'` for one).
    /// Repeatable; all run concurrently with the file walk.
    #[arg(long = "command", value_name = "NAME=COMMAND")]
    commands: Vec<String>,
    /// Leave out paths this pattern selects (repeatable; see "Patterns" in
    /// the README: `!PATTERN` takes back, a trailing `/` means directories).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Like --exclude, but ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    iexcludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Read case-insensitive exclude patterns from FILE (repeatable).
    #[arg(long = "iexclude-file", value_name = "FILE")]
    iexclude_files: Vec<PathBuf>,
    /// Leave out directories that hold a valid CACHEDIR.TAG.
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out directories that hold an entry called NAME (repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    exclude_if_present: Vec<String>,
    /// Leave out files larger than SIZE (e.g. 500M, 2G).
    #[arg(long, value_name = "SIZE")]
    exclude_larger_than: Option<String>,
    /// Do not cross into other file systems below the source paths.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Compare with this snapshot instead of the latest of this host and
    /// these paths.
    #[arg(long, value_name = "SNAPSHOT")]
    parent: Option<String>,
    /// Read every file, even those unchanged since the parent.
    #[arg(long)]
    force: bool,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    host: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Snapshot time instead of now: RFC 3339, or "YYYY-MM-DD HH:MM:SS" local.
    #[arg(long)]
    time: Option<String>,
    /// zstd level for this run (0 stores raw).
    #[arg(long)]
    compression: Option<i32>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SnapshotsArgs {
    /// Only the N newest snapshots of each group (of --group-by, or else
    /// of each host and paths).
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
    /// Group by any of host, paths, tags (comma-separated; "" for one
    /// group); each group is shown apart.
    #[arg(long, value_name = "FIELDS", value_parser = forget::group_by)]
    group_by: Option<cairn_core::forget::GroupBy>,
    #[command(flatten)]
    filter: filter::FilterArgs,
    /// Print a JSON array (of groups, with --group-by).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    cairn_core::allocator::return_large_blocks_when_freed();
    let cli = Cli::parse();
    clean_up_on_signals();
    let outcome = run(&cli);
    for lock in cairn_core::take_unremoved_locks() {
        eprintln!("cairn: warning: could not remove the lock {lock}; it goes stale and a later run removes it, or `cairn unlock`");
    }
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            let mut message = format!("{error:#}");
            message.retain(|c| c != '\n');
            if output::json_errors(&cli) {
                eprintln!(
                    "{}",
                    serde_json::json!({"message_type": "error", "message": message})
                );
            } else {
                eprintln!("cairn: error: {message}");
            }
            ExitCode::from(exit_code(&error))
        }
    }
}

/// On SIGINT or SIGTERM, removes the temporary files of objects being
/// written (a pack half streamed, say), then ends the process as the
/// signal would have. Without a handler, they would stay in the repository.
fn clean_up_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            cairn_core::backend::remove_temporary_files();
            cairn_core::release_held_locks();
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            // Reached only if the default action could not be re-raised.
            std::process::exit(128 + signal);
        }
    });
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn exit_code(error: &anyhow::Error) -> u8 {
    match error
        .chain()
        .find_map(|e| e.downcast_ref::<cairn_core::Error>())
    {
        Some(cairn_core::Error::RepositoryNotFound { .. }) => exit::NO_REPOSITORY,
        Some(cairn_core::Error::Unreachable { .. }) => exit::UNREACHABLE,
        Some(cairn_core::Error::WrongPassword) => exit::WRONG_PASSWORD,
        Some(cairn_core::Error::Locked { .. }) => exit::LOCKED,
        Some(cairn_core::Error::KeyRevoked { .. }) => exit::WRONG_PASSWORD,
        Some(cairn_core::Error::WriteOnly { .. }) => exit::WRITE_ONLY,
        _ => exit::FATAL,
    }
}

fn run(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Init(args) => init(cli, args),
        Command::Backup(args) => backup(cli, args),
        Command::Snapshots(args) => snapshots(cli, args),
        Command::Restore(args) => restore::restore(cli, args),
        Command::Cat(args) => cat(cli, args),
        Command::Ls(args) => ls::ls(cli, args),
        Command::Find(args) => find::find(cli, args),
        Command::Diff(args) => diff::diff(cli, args),
        Command::Browse(args) => browse::browse(cli, args),
        Command::Dump(args) => dump::dump(cli, args),
        Command::Stats(args) => stats::stats(cli, args),
        Command::Tag(args) => tag::tag(cli, args),
        Command::Copy(args) => copy::copy(cli, args),
        Command::Forget(args) => forget(cli, args),
        Command::Unlock(args) => unlock(cli, args),
        Command::Key(command) => key::key(cli, command),
        Command::Check(args) => check(cli, args),
        Command::Repair(RepairCommand::Index) => repair_index(cli),
        Command::Repair(RepairCommand::Snapshots(args)) => repair::repair_snapshots(cli, args),
        Command::Prune(args) => prune(cli, args),
        Command::Run(args) => operate::run(cli, args),
        Command::Config(command) => operate::config(cli, command),
        Command::Status(args) => operate::status(cli, args),
        Command::Schedule(command) => operate::schedule(cli, command),
    }
}

fn repo_location(cli: &Cli) -> Result<&str> {
    cli.repo
        .as_deref()
        .ok_or_else(|| anyhow!("no repository given: use --repo or set CAIRN_REPO"))
}

fn cache_dir(cli: &Cli) -> Result<PathBuf> {
    match &cli.cache_dir {
        Some(dir) => Ok(dir.clone()),
        None => dirs::cache_dir()
            .map(|dir| dir.join("cairn"))
            .ok_or_else(|| anyhow!("no cache directory: set CAIRN_CACHE_DIR or --cache-dir")),
    }
}

/// Opens the repository for a command a write-only key may not run:
/// refused, with `action` named, before any work.
fn open_full_repository(cli: &Cli, action: &'static str) -> Result<Repository> {
    let repository = open_repository(cli)?;
    repository.require_full_key(action)?;
    Ok(repository)
}

fn open_repository(cli: &Cli) -> Result<Repository> {
    Ok(open_repository_with_password(cli)?.0)
}

/// [`open_repository`], also returning the password that opened it (for
/// `key rotate`, which seals the new keys under it).
fn open_repository_with_password(cli: &Cli) -> Result<(Repository, zeroize::Zeroizing<String>)> {
    let backend = cairn_core::backend::open(repo_location(cli)?)?;
    Repository::ensure_exists(backend.as_ref())?;
    let password = password::read(cli, false)?;
    let mut repository = Repository::open(backend, password.as_bytes(), &cache_dir(cli)?)?;
    if let Some(connections) = cli.connections {
        repository.set_connections(usize::from(connections));
    }
    let reporter = output::Reporter::new(cli);
    report_notices(cli, &repository);
    for damaged in repository.damaged_segments() {
        reporter.warning(Path::new(&repository.location()), &damaged.to_string());
    }
    Ok((repository, password))
}

/// Warns of each snapshot that could not be read.
fn report_damaged(cli: &Cli, repository: &Repository, damaged: &[cairn_core::Error]) {
    let reporter = output::Reporter::new(cli);
    for error in damaged {
        reporter.warning(Path::new(&repository.location()), &error.to_string());
    }
}

/// Takes a lock of `kind` for `command`, retrying as `--retry-lock` says,
/// and reports stale locks it removed.
fn lock(
    cli: &Cli,
    repository: &Repository,
    kind: LockKind,
    command: &str,
) -> Result<RepositoryLock> {
    let lock = repository.lock(kind, command, cli.retry_lock);
    report_notices(cli, repository);
    Ok(lock?)
}

/// [`lock`], unless `--no-lock` was given to a command that only reads.
fn read_lock(cli: &Cli, repository: &Repository, command: &str) -> Result<Option<RepositoryLock>> {
    if cli.no_lock {
        return Ok(None);
    }
    lock(cli, repository, LockKind::Shared, command).map(Some)
}

fn check(cli: &Cli, args: &CheckArgs) -> Result<u8> {
    let repository = open_full_repository(cli, "check the repository")?;
    let _lock = read_lock(cli, &repository, "check")?;
    let options = cairn_core::check::CheckOptions {
        read_data: if args.read_data {
            Some(cairn_core::check::DataSubset::All)
        } else {
            args.read_data_subset
        },
    };
    let report = cairn_core::check::check(&repository, &options)?;
    report_notices(cli, &repository);
    if args.json {
        output::check_json(&report)?;
    } else {
        output::check_text(cli, &report)?;
    }
    Ok(if report.is_clean() { 0 } else { exit::FATAL })
}

fn prune(cli: &Cli, args: &PruneArgs) -> Result<u8> {
    let repository = open_full_repository(cli, "prune")?;
    let held = lock(cli, &repository, LockKind::Exclusive, "prune")?;
    let options = PruneOptions {
        dry_run: args.dry_run,
        max_unused: args.max_unused,
    };
    run_prune(cli, &repository, &held, &options, args.json)
}

/// Prunes under `held`, an exclusive lock, and reports.
fn run_prune(
    cli: &Cli,
    repository: &Repository,
    held: &RepositoryLock,
    options: &PruneOptions,
    json: bool,
) -> Result<u8> {
    let report = cairn_core::prune::prune(repository, held, options)?;
    report_notices(cli, repository);
    if json {
        output::prune_json(&report, options.dry_run)?;
    } else {
        output::prune_text(cli, &report, options.dry_run)?;
    }
    Ok(0)
}

fn repair_index(cli: &Cli) -> Result<u8> {
    let repository = open_full_repository(cli, "repair the index")?;
    let _lock = lock(cli, &repository, LockKind::Exclusive, "repair index")?;
    let report = cairn_core::repair::repair_index(&repository)?;
    report_notices(cli, &repository);
    let reporter = output::Reporter::new(cli);
    let location = repository.location();
    for damaged in report.damaged_segments.iter().chain(&report.damaged_packs) {
        reporter.warning(Path::new(&location), damaged);
    }
    if report.was_complete {
        output::line(
            cli,
            &format!(
                "the index already lists all {} packs as their trailers do: nothing to repair",
                report.packs_indexed
            ),
        )?;
        return Ok(0);
    }
    let mut text = format!(
        "indexed {} packs in {} new segments; removed {} old segments",
        report.packs_indexed, report.segments_written, report.segments_removed
    );
    if !report.damaged_packs.is_empty() {
        text.push_str(&format!(
            "\n{} packs have damaged trailers: {} of their blobs verified and copied into new packs, {} lost; {} damaged packs removed; run `cairn check` to see what the lost blobs affect",
            report.damaged_packs.len(),
            report.blobs_salvaged,
            report.blobs_lost,
            report.damaged_packs_removed
        ));
    }
    output::line(cli, &text)?;
    Ok(0)
}

fn unlock(cli: &Cli, args: &UnlockArgs) -> Result<u8> {
    let repository = open_repository(cli)?;
    if args.remove_all {
        // Removing the locks of running processes lets a write-only host
        // break into a forget, prune or rotation.
        repository.require_full_key("remove the locks of running processes")?;
    }
    let removed = repository.remove_locks(args.remove_all)?;
    report_notices(cli, &repository);
    output::line(cli, &format!("removed {removed} locks"))?;
    Ok(0)
}

/// Prints what the repository has to say about its index cache (rebuilt,
/// or a temporary one used) and its locks, as warnings.
fn report_notices(cli: &Cli, repository: &Repository) {
    let reporter = output::Reporter::new(cli);
    for notice in repository.take_notices() {
        reporter.warning(Path::new(&repository.location()), &notice);
    }
}

fn init(cli: &Cli, args: &InitArgs) -> Result<u8> {
    let location = repo_location(cli)?;
    let options = InitOptions {
        chunker: ChunkerParams {
            min_bytes: args.chunk_min,
            avg_bytes: args.chunk_avg,
            max_bytes: args.chunk_max,
        },
        compression_level: args.compression,
        pack_target_bytes: args
            .pack_size
            .checked_mul(1 << 20)
            .ok_or_else(|| anyhow!("--pack-size {} is too large", args.pack_size))?,
        kdf: args.kdf.params(),
        labels: key::default_labels(),
    };
    let like = args
        .copy_chunker_params
        .then(|| args.source.open(cli))
        .transpose()?;
    let backend = cairn_core::backend::open(location)?;
    Repository::ensure_absent(backend.as_ref())?;
    let password = password::read(cli, true)?;
    let cache = cache_dir(cli)?;
    let repository = match &like {
        Some(like) => Repository::init_naming_blobs_like(
            backend,
            password.as_bytes(),
            &options,
            &cache,
            like,
        )?,
        None => Repository::init(backend, password.as_bytes(), &options, &cache)?,
    };
    output::line(
        cli,
        &format!(
            "created cairn repository {} at {}\nKeep the password safe: without it the data cannot be read.",
            repository.config().id.short(),
            repository.location()
        ),
    )?;
    Ok(0)
}

fn backup(cli: &Cli, args: &BackupArgs) -> Result<u8> {
    let time_ns = args
        .time
        .as_deref()
        .map(|t| {
            cairn_core::select::parse_time(t, now_ns(), &chrono::Local)
                .map_err(|reason| anyhow!("--time {reason}"))
        })
        .transpose()?;
    let options = sources::backup_options(args, time_ns)?;
    let repository = open_repository(cli)?;
    let _lock = lock(cli, &repository, LockKind::Shared, "backup")?;
    let reporter = output::Reporter::for_backup(cli);
    let outcome = cairn_core::backup(&repository, options, &reporter);
    reporter.finish();
    report_notices(cli, &repository);
    let outcome = outcome?;
    output::backup_summary(cli, args.json, &outcome)?;
    Ok(if outcome.snapshot.is_incomplete() {
        exit::INCOMPLETE
    } else {
        0
    })
}

fn snapshots(cli: &Cli, args: &SnapshotsArgs) -> Result<u8> {
    let repository = open_repository(cli)?;
    let list = repository.snapshots()?;
    let by = args.group_by.unwrap_or_default();
    let mut groups = cairn_core::forget::group(list.snapshots, &args.filter.to_filter()?, by);
    if let Some(n) = args.latest {
        for (_, members) in &mut groups {
            let drop = members.len().saturating_sub(n);
            members.drain(..drop);
        }
    }
    match (args.group_by.is_some(), args.json) {
        (true, true) => output::snapshot_groups_json(&groups)?,
        (true, false) => output::snapshot_groups_table(&groups)?,
        (false, json) => {
            // One listing, in time order, as without grouping.
            let mut all: Vec<_> = groups.into_iter().flat_map(|(_, m)| m).collect();
            all.sort_by_key(|(id, s)| (s.time_ns, *id));
            if json {
                output::snapshots_json(&all)?;
            } else {
                output::snapshots_table(&all)?;
            }
        }
    }
    report_damaged(cli, &repository, &list.damaged);
    // The listing is shown, but a damaged snapshot must not go unnoticed
    // by a script.
    Ok(if list.damaged.is_empty() {
        0
    } else {
        exit::FATAL
    })
}

fn forget(cli: &Cli, args: &forget::ForgetArgs) -> Result<u8> {
    args.check()?;
    let repository = open_full_repository(cli, "forget snapshots")?;
    // Removing snapshots must not run beside a prune or another forget; a
    // dry run only reads.
    let kind = if args.dry_run {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    };
    let held = lock(cli, &repository, kind, "forget")?;
    if !args.snapshots.is_empty() {
        return forget_named(cli, args, &repository, &held);
    }
    let options = args.options()?;
    let list = repository.snapshots()?;
    let groups = cairn_core::forget::plan(list, &options, now_ns(), &chrono::Local)?;
    if args.json {
        output::forget_json(&groups)?;
    } else if !cli.quiet {
        output::forget_tables(&groups)?;
    }
    let doomed: Vec<SnapshotId> = groups
        .iter()
        .flat_map(|g| g.remove.iter().map(|(id, _)| *id))
        .collect();
    if args.dry_run {
        if !args.json {
            output::line(
                cli,
                &format!("would remove {} snapshots (dry run)", doomed.len()),
            )?;
        }
        return Ok(0);
    }
    removed(cli, args, &repository, &held, &doomed)
}

/// `forget ID...`: the named snapshots, resolved before any is removed.
fn forget_named(
    cli: &Cli,
    args: &forget::ForgetArgs,
    repository: &Repository,
    held: &RepositoryLock,
) -> Result<u8> {
    let mut doomed = Vec::new();
    for reference in &args.snapshots {
        // An id by name, without reading: a damaged snapshot can be
        // forgotten.
        let id = match cairn_core::select::Selector::parse(reference, now_ns(), &chrono::Local)? {
            cairn_core::select::Selector::Id(prefix) => repository.resolve_snapshot_id(&prefix)?,
            _ => select_snapshot(repository, reference, &filter::FilterArgs::default())?.0,
        };
        if !doomed.contains(&id) {
            doomed.push(id);
        }
    }
    if args.dry_run {
        for id in &doomed {
            output::line(cli, &format!("would remove snapshot {}", id.0.short()))?;
        }
        return Ok(0);
    }
    removed(cli, args, repository, held, &doomed)
}

/// Removes `doomed` and says so.
fn removed(
    cli: &Cli,
    args: &forget::ForgetArgs,
    repository: &Repository,
    held: &RepositoryLock,
    doomed: &[SnapshotId],
) -> Result<u8> {
    if let Err((done, error)) = cairn_core::forget::remove(repository, doomed) {
        return Err(anyhow::Error::new(error).context(format!(
            "removed {done} of {} snapshots, then failed",
            doomed.len()
        )));
    }
    if !args.json {
        output::line(
            cli,
            &format!(
                "removed {} snapshots{}",
                doomed.len(),
                if args.prune {
                    ""
                } else {
                    "; the data only they referenced stays until `cairn prune`"
                }
            ),
        )?;
    }
    if args.prune {
        let options = PruneOptions {
            dry_run: false,
            max_unused: args.max_unused,
        };
        return run_prune(cli, repository, held, &options, args.json);
    }
    Ok(0)
}

/// The snapshot `reference` names (see `cairn_core::select`), among those
/// `filter` admits.
fn select_snapshot(
    repository: &Repository,
    reference: &str,
    filter: &filter::FilterArgs,
) -> Result<(SnapshotId, cairn_core::Snapshot)> {
    Ok(cairn_core::select::select(
        repository,
        reference,
        &filter.to_filter()?,
        now_ns(),
        &chrono::Local,
    )?)
}

/// Now, in nanoseconds since the epoch.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[derive(Args)]
struct CatArgs {
    /// SNAPSHOT:PATH, the file to write (SNAPSHOT as for restore).
    file: String,
    #[command(flatten)]
    filter: filter::FilterArgs,
}

fn cat(cli: &Cli, args: &CatArgs) -> Result<u8> {
    let (reference, path) = cairn_core::select::split_path(&args.file);
    let Some(path) = path else {
        bail!("{}: name a file as SNAPSHOT:PATH", args.file);
    };
    let repository = open_full_repository(cli, "read files from snapshots")?;
    let _lock = read_lock(cli, &repository, "cat")?;
    let (_, snapshot) = select_snapshot(&repository, reference, &args.filter)?;
    let mut out = io::stdout().lock();
    let written = cairn_core::browse::cat(&repository, &snapshot, Path::new(path), &mut out);
    report_notices(cli, &repository);
    written?;
    Ok(0)
}
