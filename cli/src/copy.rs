//! `cairn copy`: arguments and printing; the copying is
//! `cairn_core::copy`. Also the source repository that `copy` and `init
//! --copy-chunker-params` read.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use cairn_core::{LockKind, Repository};
use clap::Args;
use serde_json::json;

use crate::filter::FilterArgs;
use crate::{
    cache_dir, lock, open_repository, output, password, report_notices, select_snapshot, Cli,
};

/// The repository snapshots come from, and how to open it.
#[derive(Args)]
pub struct SourceArgs {
    /// The repository to read from (a directory, `local:DIR`, or
    /// `s3:https://HOST/BUCKET[/PREFIX]`).
    #[arg(long, value_name = "LOCATION", env = "CAIRN_FROM_REPO")]
    from_repo: Option<String>,
    /// Read its password from this file (first line); else
    /// `CAIRN_FROM_PASSWORD`, or a prompt.
    #[arg(long, value_name = "FILE", env = "CAIRN_FROM_PASSWORD_FILE")]
    from_password_file: Option<PathBuf>,
    /// Run this shell command and use its output as its password.
    #[arg(long, value_name = "COMMAND", env = "CAIRN_FROM_PASSWORD_COMMAND")]
    from_password_command: Option<String>,
}

impl SourceArgs {
    /// Opens the source repository with a full key (reading its snapshots
    /// needs one).
    pub fn open(&self, cli: &Cli) -> Result<Repository> {
        let location = self.from_repo.as_deref().ok_or_else(|| {
            anyhow!("no source repository: use --from-repo or set CAIRN_FROM_REPO")
        })?;
        let backend = cairn_core::backend::open(location)?;
        Repository::ensure_exists(backend.as_ref())?;
        let password = password::read_source(
            self.from_password_file.as_deref(),
            self.from_password_command.as_deref(),
        )?;
        let repository = Repository::open(backend, password.as_bytes(), &cache_dir(cli)?)
            .with_context(|| format!("source repository {location}"))?;
        report_notices(cli, &repository);
        repository.require_full_key("copy snapshots out of its repository")?;
        Ok(repository)
    }
}

/// `copy`.
#[derive(Args)]
pub struct CopyArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Snapshots of the source to copy (ids, prefixes, `latest`…). Default:
    /// every snapshot the filters admit.
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// zstd level for what is stored (default: the destination's).
    #[arg(long)]
    compression: Option<i32>,
    /// What was copied, as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `copy`.
pub fn copy(cli: &Cli, args: &CopyArgs) -> Result<u8> {
    let source = args.source.open(cli)?;
    let destination = open_repository(cli)?;
    let _source_lock = lock(cli, &source, LockKind::Shared, "copy")?;
    let _lock = lock(cli, &destination, LockKind::Shared, "copy")?;
    let mut snapshots = Vec::new();
    if args.snapshots.is_empty() {
        let list = source.snapshots()?;
        if let Some(damaged) = list.damaged.into_iter().next() {
            return Err(anyhow::Error::new(damaged)
                .context("cannot tell which snapshots of the source the filters admit"));
        }
        let filter = args.filter.to_filter()?;
        snapshots.extend(list.snapshots.into_iter().filter(|(_, s)| filter.admits(s)));
    } else {
        for reference in &args.snapshots {
            let found = select_snapshot(&source, reference, &args.filter)?;
            if !snapshots.iter().any(|(id, _)| *id == found.0) {
                snapshots.push(found);
            }
        }
    }
    let level = args
        .compression
        .unwrap_or(destination.config().compression_level);
    let report = cairn_core::copy::copy(&source, &destination, &snapshots, level, |from, to| {
        if !args.json {
            let _ = output::line(
                cli,
                &format!("copied snapshot {} as {}", from.0.short(), to.0.short()),
            );
        }
    })?;
    if args.json {
        let copied: Vec<_> = report
            .copied
            .iter()
            .map(|(from, to)| json!({"snapshot": from.0.to_string(), "copy": to.0.to_string()}))
            .collect();
        let skipped: Vec<_> = report.skipped.iter().map(|id| id.0.to_string()).collect();
        println!(
            "{}",
            json!({
                "copied": copied,
                "skipped": skipped,
                "rechunked": report.rechunked,
                "bytes_added": report.bytes_added,
                "blobs_added": report.blobs_added,
            })
        );
    } else {
        output::line(
            cli,
            &format!(
                "copied {} snapshots, skipped {} already copied; added {}{}",
                report.copied.len(),
                report.skipped.len(),
                output::bytes(report.bytes_added),
                if report.rechunked {
                    " (files cut again: the repositories cut blobs differently)"
                } else {
                    ""
                }
            ),
        )?;
    }
    Ok(0)
}
