//! `cairn diff`: arguments and printing; the comparison is
//! `cairn_core::browse::diff`.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{bail, Result};
use cairn_core::browse::{Change, DiffEntry, DiffSummary, Trees, TREE_CACHE_BYTES};
use cairn_core::NodeKind;
use clap::Args;
use serde_json::json;

use crate::entry::json_object;
use crate::filter::FilterArgs;
use crate::output::{bytes, lossy, printable};
use crate::{open_full_repository, read_lock, report_notices, select_snapshot, Cli};

/// `diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// The first snapshot (as for restore; SNAPSHOT:PATH compares PATH).
    first: String,
    /// The second snapshot.
    second: String,
    /// Compare only this path in both.
    path: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// One JSON object per change, then one with the counts.
    #[arg(long)]
    json: bool,
}

/// Runs `diff`.
pub fn diff(cli: &Cli, args: &DiffArgs) -> Result<u8> {
    let (first, first_path) = cairn_core::select::split_path(&args.first);
    let (second, second_path) = cairn_core::select::split_path(&args.second);
    let mut paths = [args.path.as_deref(), first_path, second_path]
        .into_iter()
        .flatten()
        .map(|p| p.trim_end_matches('/'));
    let path = paths.next();
    if let Some(other) = paths.find(|p| Some(*p) != path) {
        bail!(
            "diff compares one path in both snapshots: got {} and {other}",
            path.unwrap_or_default()
        );
    }
    let path = path.map(|p| if p.is_empty() { "/" } else { p });
    let repository = open_full_repository(cli, "compare snapshots")?;
    let _lock = read_lock(cli, &repository, "diff")?;
    let (_, first) = select_snapshot(&repository, first, &args.filter)?;
    let (_, second) = select_snapshot(&repository, second, &args.filter)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut trees = Trees::new(&repository, TREE_CACHE_BYTES);
    let summary = cairn_core::browse::diff(
        &mut trees,
        &first,
        &second,
        path.map(Path::new),
        &mut |entry| {
            let line = if args.json {
                json_line(entry)
            } else {
                text_line(entry)
            };
            writeln!(out, "{line}").map_err(|error| cairn_core::Error::Output { error })
        },
    );
    report_notices(cli, &repository);
    let summary = summary?;
    if args.json {
        writeln!(out, "{}", json!({ "summary": summary_json(&summary) }))?;
    } else if !cli.quiet {
        writeln!(out, "{}", summary_text(&summary))?;
    }
    out.flush()?;
    Ok(0)
}

/// `M    /path`, directories with a trailing `/`.
fn text_line(entry: &DiffEntry<'_>) -> String {
    let is_dir = entry
        .new
        .or(entry.old)
        .is_some_and(|n| matches!(n.kind, NodeKind::Directory { .. }));
    format!(
        "{}    {}{}",
        entry.change.marker(),
        printable(&lossy(entry.path)),
        if is_dir { "/" } else { "" }
    )
}

fn json_line(entry: &DiffEntry<'_>) -> String {
    let node = entry.new.or(entry.old).expect("a change has a side");
    let mut object = json_object(entry.path, node);
    object.insert("change".into(), json!(entry.change.name()));
    if entry.change != Change::Added && entry.change != Change::Removed {
        let old = entry.old.expect("both sides");
        let mut before = json_object(entry.path, old);
        before.remove("path");
        before.remove("path_hex");
        object.insert("before".into(), serde_json::Value::Object(before));
    }
    serde_json::Value::Object(object).to_string()
}

fn summary_json(summary: &DiffSummary) -> serde_json::Value {
    json!({
        "added": summary.added,
        "removed": summary.removed,
        "modified": summary.modified,
        "metadata": summary.metadata,
        "bytes_added": summary.bytes_added,
        "bytes_removed": summary.bytes_removed,
    })
}

fn summary_text(s: &DiffSummary) -> String {
    format!(
        "{} added, {} removed, {} modified, {} metadata only; {} added, {} removed",
        s.added,
        s.removed,
        s.modified,
        s.metadata,
        bytes(s.bytes_added),
        bytes(s.bytes_removed)
    )
}
