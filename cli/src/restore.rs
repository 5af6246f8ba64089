//! `cairn restore`: arguments, and what it prints: with `--dry-run` each
//! path and what would be done with it, with `--json` each action and the
//! counts as JSON, and a closing line.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use cairn_core::{Overwrite, RestoreOptions};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::filter::FilterArgs;
use crate::{open_full_repository, output, read_lock, report_notices, select_snapshot, Cli};

/// `--overwrite`, as clap names its values.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OverwriteArg {
    Always,
    IfChanged,
    IfNewer,
    Never,
}

/// `restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:PATH; SNAPSHOT is an id, a unique id prefix,
    /// latest, latest~N, or @TIME (the newest at or before TIME).
    snapshot: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Directory to restore into.
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only paths this pattern selects, with what they contain
    /// (repeatable; the same patterns as backup's --exclude).
    #[arg(long = "include", value_name = "PATTERN")]
    includes: Vec<String>,
    /// Like --include, but ignoring case.
    #[arg(long = "iinclude", value_name = "PATTERN")]
    iincludes: Vec<String>,
    /// Skip paths this pattern selects, with what they contain (repeatable).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Like --exclude, but ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    iexcludes: Vec<String>,
    /// What to do with entries already in the target: replace them
    /// (always), unless they already equal the snapshot's in size, mtime
    /// and content (if-changed), if the snapshot's are newer (if-newer), or
    /// keep them (never).
    #[arg(long, value_enum, default_value = "if-changed")]
    overwrite: OverwriteArg,
    /// Remove what is in the target but not in the snapshot, below the
    /// snapshot's source paths.
    #[arg(long)]
    delete: bool,
    /// Show, per path, what would be written, skipped or deleted, and why;
    /// change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Re-read restored files and compare them with the snapshot.
    #[arg(long)]
    verify: bool,
    /// Each action, then the counts, as one JSON object a line.
    #[arg(long)]
    pub json: bool,
}

/// Runs `restore`.
pub fn restore(cli: &Cli, args: &RestoreArgs) -> Result<u8> {
    let (reference, subpath) = cairn_core::select::split_path(&args.snapshot);
    let subpath = subpath.map(PathBuf::from);
    let repository = open_full_repository(cli, "restore")?;
    let _lock = read_lock(cli, &repository, "restore")?;
    let reporter = output::Reporter::new(cli).listing(args.dry_run || args.json);
    let (id, snapshot) = select_snapshot(&repository, reference, &args.filter)?;
    let options = RestoreOptions {
        target: args.target.clone(),
        subpath,
        includes: args.includes.clone(),
        case_insensitive_includes: args.iincludes.clone(),
        excludes: args.excludes.clone(),
        case_insensitive_excludes: args.iexcludes.clone(),
        dry_run: args.dry_run,
        verify: args.verify,
        overwrite: match args.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::IfNewer => Overwrite::IfNewer,
            OverwriteArg::Never => Overwrite::Never,
        },
        delete: args.delete,
    };
    let summary = cairn_core::restore(&repository, &snapshot, &options, &reporter);
    report_notices(cli, &repository);
    let summary = summary.with_context(|| format!("restoring snapshot {}", id.0.short()))?;
    if args.json {
        let line = json!({
            "message_type": "summary",
            "schema_version": output::SCHEMA_VERSION,
            "dry_run": args.dry_run,
            "snapshot_id": id.to_string(),
            "files": summary.files,
            "dirs": summary.dirs,
            "others": summary.others,
            "bytes": summary.bytes,
            "skipped": summary.skipped,
            "deleted": summary.deleted,
            "verified_files": summary.verified_files,
            "errors": summary.errors,
        });
        writeln!(io::stdout().lock(), "{line}")?;
    } else {
        let verb = if args.dry_run {
            "would restore"
        } else {
            "restored"
        };
        let mut text = format!(
            "{verb} {} files, {} directories, {} other entries, {} from snapshot {} to {}",
            summary.files,
            summary.dirs,
            summary.others,
            output::bytes(summary.bytes),
            id.0.short(),
            args.target.display()
        );
        let (skipped, deleted) = if args.dry_run {
            ("would leave", "would delete")
        } else {
            ("left", "deleted")
        };
        if summary.skipped > 0 || summary.deleted > 0 || args.delete {
            text.push_str(&format!(
                "; {skipped} {} entries as they were, {deleted} {}",
                summary.skipped, summary.deleted
            ));
        }
        if args.verify && !args.dry_run {
            text.push_str(&format!(
                "\nverified {} files against the snapshot",
                summary.verified_files
            ));
        }
        output::line(cli, &text)?;
    }
    io::stdout().flush()?;
    if !summary.is_complete() {
        bail!(
            "{} entries of snapshot {} could not be restored: see the warnings above",
            summary.errors,
            id.0.short()
        );
    }
    Ok(0)
}
