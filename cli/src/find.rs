//! `cairn find`: arguments and printing; the search is
//! `cairn_core::browse::find`.

use std::io::{self, Write};

use anyhow::{Context, Result};
use cairn_core::browse::{FindOptions, Trees, Version, TREE_CACHE_BYTES};
use cairn_core::{Snapshot, SnapshotId};
use clap::Args;
use serde_json::json;

use crate::entry::{json_object, mtime, size, type_of};
use crate::filter::FilterArgs;
use crate::output::{bytes, lossy, printable, time_of};
use crate::{now_ns, open_full_repository, read_lock, report_notices, select_snapshot, Cli};

/// `find`.
#[derive(Args)]
pub struct FindArgs {
    /// Patterns, as for excludes: `notes.txt` matches that name anywhere,
    /// `/home/*/notes.txt` one place, `*.pdf` every PDF.
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Like a pattern, but matched without regard to case (repeatable).
    #[arg(long = "iname", value_name = "PATTERN")]
    case_insensitive: Vec<String>,
    /// Search only this snapshot (repeatable; as for restore). Default:
    /// every snapshot the filters admit.
    #[arg(short = 's', long = "snapshot", value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Only entries modified at or after TIME (as for `@TIME`).
    #[arg(long, value_name = "TIME")]
    newer: Option<String>,
    /// Only entries modified at or before TIME.
    #[arg(long, value_name = "TIME")]
    older: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// One JSON object per path found, with its versions.
    #[arg(long)]
    json: bool,
}

/// Runs `find`.
pub fn find(cli: &Cli, args: &FindArgs) -> Result<u8> {
    let time = |flag: &str, text: &Option<String>| -> Result<Option<i64>> {
        text.as_deref()
            .map(|t| {
                cairn_core::select::parse_time(t, now_ns(), &chrono::Local)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("--{flag} {t}"))
            })
            .transpose()
    };
    let options = FindOptions {
        patterns: args.patterns.clone(),
        case_insensitive: args.case_insensitive.clone(),
        newer_ns: time("newer", &args.newer)?,
        older_ns: time("older", &args.older)?,
    };
    let repository = open_full_repository(cli, "search snapshots")?;
    let _lock = read_lock(cli, &repository, "find")?;
    let (snapshots, damaged) = chosen_snapshots(cli, &repository, args)?;
    let mut trees = Trees::new(&repository, TREE_CACHE_BYTES);
    let found = cairn_core::browse::find(&mut trees, &snapshots, &options);
    report_notices(cli, &repository);
    let found = found?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    for (path, versions) in &found {
        if args.json {
            writeln!(out, "{}", json_path(path, versions))?;
        } else {
            writeln!(out, "{}", printable(&lossy(path)))?;
            for version in versions {
                writeln!(out, "  {}", version_line(version))?;
            }
        }
    }
    out.flush()?;
    if !args.json && !cli.quiet {
        eprintln!(
            "{} paths found in {} snapshots",
            found.len(),
            snapshots.len()
        );
    }
    // As for `snapshots`: what was found is shown, but a snapshot that
    // could not be searched must not go unnoticed by a script.
    Ok(if damaged > 0 { crate::exit::FATAL } else { 0 })
}

/// The snapshots to search, oldest first: those named, or every one the
/// filters admit; and how many could not be read.
fn chosen_snapshots(
    cli: &Cli,
    repository: &cairn_core::Repository,
    args: &FindArgs,
) -> Result<(Vec<(SnapshotId, Snapshot)>, usize)> {
    let mut chosen = Vec::new();
    let mut damaged = 0;
    if args.snapshots.is_empty() {
        let list = repository.snapshots()?;
        crate::report_damaged(cli, repository, &list.damaged);
        damaged = list.damaged.len();
        let filter = args.filter.to_filter()?;
        chosen.extend(list.snapshots.into_iter().filter(|(_, s)| filter.admits(s)));
    } else {
        for reference in &args.snapshots {
            let found = select_snapshot(repository, reference, &args.filter)?;
            if !chosen.iter().any(|(id, _)| *id == found.0) {
                chosen.push(found);
            }
        }
        chosen.sort_by_key(|(id, s)| (s.time_ns, *id));
    }
    Ok((chosen, damaged))
}

/// `2026-11-28 02:00:00  3f2a1b9c  file  1.20 KiB  modified 2026-11-27 18:03:11`
fn version_line(version: &Version) -> String {
    let node = &version.node;
    format!(
        "{}  {}  {:<7}  {:>10}  modified {}",
        time_of(version.snapshot_time_ns).format("%Y-%m-%d %H:%M:%S"),
        version.snapshot.0.short(),
        type_of(&node.kind).0,
        bytes(size(&node.kind)),
        mtime(node).format("%Y-%m-%d %H:%M:%S")
    )
}

fn json_path(path: &[u8], versions: &[Version]) -> serde_json::Value {
    let versions: Vec<serde_json::Value> = versions
        .iter()
        .map(|version| {
            let mut object = json_object(path, &version.node);
            object.remove("path");
            object.remove("path_hex");
            object.insert("snapshot".into(), json!(version.snapshot.0.to_string()));
            object.insert(
                "snapshot_time".into(),
                json!(time_of(version.snapshot_time_ns).to_rfc3339()),
            );
            serde_json::Value::Object(object)
        })
        .collect();
    let mut object = serde_json::Map::new();
    crate::entry::name_fields("path", path, &mut object);
    object.insert("versions".into(), json!(versions));
    serde_json::Value::Object(object)
}
