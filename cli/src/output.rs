//! Everything `cairn` prints: tables and JSON for results, one-line
//! warnings on standard error.

use std::io::{self, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use cairn_core::forget::{GroupKey, GroupPlan};
use cairn_core::progress::Progress;
use cairn_core::{BackupOutcome, Snapshot, SnapshotId, Summary};
use chrono::{DateTime, Local};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::{Cli, Command};

/// Version of the JSON objects `cairn` prints; bumped when a field changes
/// meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

/// Whether errors should be printed as JSON (the command asked for JSON).
pub fn json_errors(cli: &Cli) -> bool {
    match &cli.command {
        Command::Backup(args) => args.json,
        Command::Snapshots(args) => args.json,
        Command::Restore(args) => args.json,
        _ => false,
    }
}

/// Prints a line unless `--quiet`.
pub fn line(cli: &Cli, text: &str) -> Result<()> {
    if !cli.quiet {
        writeln!(io::stdout().lock(), "{text}")?;
    }
    Ok(())
}

/// Reports warnings on standard error and, when listing, restored paths on
/// standard output. For a backup it also shows progress: a live display on
/// a terminal, or with `--json` a status line on standard output at most
/// once a second.
pub struct Reporter {
    json: bool,
    listing: bool,
    live: Option<ProgressBar>,
    status: Option<Mutex<Status>>,
}

/// Counters behind the JSON status lines.
struct Status {
    started: Instant,
    last_line: Instant,
    files_done: u64,
    bytes_done: u64,
    total: Option<(u64, u64)>,
    current: Option<String>,
}

impl Reporter {
    /// A reporter for this command line.
    pub fn new(cli: &Cli) -> Reporter {
        Reporter {
            json: json_errors(cli),
            listing: false,
            live: None,
            status: None,
        }
    }

    /// A reporter for a backup: live progress on a terminal unless quiet,
    /// status lines with `--json`.
    pub fn for_backup(cli: &Cli) -> Reporter {
        let mut reporter = Reporter::new(cli);
        if reporter.json {
            let now = Instant::now();
            reporter.status = Some(Mutex::new(Status {
                started: now,
                last_line: now,
                files_done: 0,
                bytes_done: 0,
                total: None,
                current: None,
            }));
        } else if !cli.quiet && io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            reporter.live = Some(bar);
        }
        reporter
    }

    /// Also print each restored path.
    pub fn listing(mut self, on: bool) -> Reporter {
        self.listing = on;
        self
    }

    /// Removes the live display before results are printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.live {
            bar.finish_and_clear();
        }
    }

    /// Updates the status counters and prints a status line if a second
    /// has passed since the last one, or if `now`.
    fn with_status(&self, now: bool, update: impl FnOnce(&mut Status)) {
        let Some(status) = &self.status else { return };
        let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
        update(&mut status);
        if now || status.last_line.elapsed() >= Duration::from_secs(1) {
            status.last_line = Instant::now();
            let (total_files, total_bytes) = match status.total {
                Some((files, bytes)) => (json!(files), json!(bytes)),
                None => (Value::Null, Value::Null),
            };
            let percent = status
                .total
                .filter(|(_, bytes)| *bytes > 0)
                .map(|(_, bytes)| (100.0 * status.bytes_done as f64 / bytes as f64).min(100.0));
            let line = json!({
                "message_type": "status",
                "schema_version": SCHEMA_VERSION,
                "seconds_elapsed": status.started.elapsed().as_secs_f64(),
                "files_done": status.files_done,
                "bytes_done": status.bytes_done,
                "total_files": total_files,
                "total_bytes": total_bytes,
                "percent_done": percent,
                "current_file": status.current,
            });
            let _ = writeln!(io::stdout().lock(), "{line}");
        }
    }
}

impl Progress for Reporter {
    fn warning(&self, path: &Path, message: &str) {
        let path = path.display();
        if self.json {
            eprintln!(
                "{}",
                json!({"message_type": "warning", "path": path.to_string(), "message": message})
            );
        } else if let Some(bar) = &self.live {
            bar.suspend(|| eprintln!("cairn: warning: {path}: {message}"));
        } else {
            eprintln!("cairn: warning: {path}: {message}");
        }
    }

    fn restored(&self, path: &Path, action: cairn_core::RestoreAction) {
        if !self.listing {
            return;
        }
        let reason = action.reason().as_str();
        let line = if self.json {
            json!({
                "message_type": "action",
                "path": lossy(path.as_os_str().as_bytes()),
                "action": action.verb(),
                "reason": reason,
            })
            .to_string()
        } else {
            format!("{:<6} {}  ({reason})", action.verb(), path.display())
        };
        let _ = writeln!(io::stdout().lock(), "{line}");
    }

    fn wants_totals(&self) -> bool {
        self.live.is_some() || self.status.is_some()
    }

    fn scan_finished(&self, files: u64, bytes: u64) {
        if let Some(bar) = &self.live {
            bar.set_length(bytes);
        }
        // The totals are news worth a line at once.
        self.with_status(true, |s| s.total = Some((files, bytes)));
    }

    fn file_started(&self, path: &Path) {
        if let Some(bar) = &self.live {
            bar.set_message(path.display().to_string());
        }
        self.with_status(false, |s| s.current = Some(path.display().to_string()));
    }

    fn bytes_processed(&self, bytes: u64) {
        if let Some(bar) = &self.live {
            bar.inc(bytes);
        }
        self.with_status(false, |s| s.bytes_done += bytes);
    }

    fn file_finished(&self, _path: &Path) {
        self.with_status(false, |s| s.files_done += 1);
    }
}

/// Human-readable size with binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// A snapshot time (ns since the epoch) in local time.
pub fn time_of(ns: i64) -> DateTime<Local> {
    DateTime::from_timestamp_nanos(ns).with_timezone(&Local)
}

/// Bytes as text, each invalid UTF-8 sequence replaced.
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn summary_json(summary: &Summary) -> Value {
    json!({
        "files_new": summary.files_new,
        "files_changed": summary.files_changed,
        "files_unmodified": summary.files_unmodified,
        "dirs_new": summary.dirs_new,
        "dirs_changed": summary.dirs_changed,
        "dirs_unmodified": summary.dirs_unmodified,
        "bytes_read": summary.bytes_read,
        "bytes_added": summary.bytes_added,
        "blobs_added": summary.blobs_added,
        "duration_seconds": summary.duration_ns as f64 / 1e9,
    })
}

fn snapshot_json(id: &SnapshotId, snapshot: &Snapshot) -> Value {
    json!({
        "id": id.to_string(),
        "short_id": id.0.short(),
        "time": time_of(snapshot.time_ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
        "host": snapshot.hostname,
        "username": snapshot.username,
        "paths": snapshot.paths.iter().map(|p| lossy(p)).collect::<Vec<_>>(),
        "tags": snapshot.tags,
        "parent": snapshot.parent.map(|p| p.to_string()),
        "original": snapshot.original.map(|p| p.to_string()),
        "tree": snapshot.tree.to_string(),
        "program_version": snapshot.program_version,
        "incomplete": snapshot.is_incomplete(),
        "unreadable": snapshot.unreadable.iter().map(|p| lossy(p)).collect::<Vec<_>>(),
        "summary": summary_json(&snapshot.summary),
    })
}

/// Prints what a backup did, as text or as one JSON summary object.
pub fn backup_summary(cli: &Cli, as_json: bool, outcome: &BackupOutcome) -> Result<()> {
    let snapshot = &outcome.snapshot;
    let s = &snapshot.summary;
    if as_json {
        let mut value = summary_json(s);
        let object = value.as_object_mut().expect("summary is an object");
        object.insert("message_type".into(), json!("summary"));
        object.insert("schema_version".into(), json!(SCHEMA_VERSION));
        object.insert("snapshot_id".into(), json!(outcome.snapshot_id.to_string()));
        object.insert("short_id".into(), json!(outcome.snapshot_id.0.short()));
        object.insert("incomplete".into(), json!(snapshot.is_incomplete()));
        object.insert(
            "unreadable".into(),
            json!(snapshot
                .unreadable
                .iter()
                .map(|p| lossy(p))
                .collect::<Vec<_>>()),
        );
        writeln!(io::stdout().lock(), "{value}")?;
        return Ok(());
    }
    let mut text = format!(
        "files: {} new, {} changed, {} unmodified\ndirs:  {} new, {} changed, {} unmodified\nread {}, added {} to the repository in {:.2}s\nsnapshot {} saved",
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        s.dirs_new,
        s.dirs_changed,
        s.dirs_unmodified,
        bytes(s.bytes_read),
        bytes(s.bytes_added),
        s.duration_ns as f64 / 1e9,
        outcome.snapshot_id.0.short(),
    );
    if snapshot.is_incomplete() {
        text.push_str("\nincomplete: these paths could not be read:");
        for path in &snapshot.unreadable {
            text.push_str(&format!(
                "\n  {}",
                Path::new(std::ffi::OsStr::from_bytes(path)).display()
            ));
        }
    }
    line(cli, &text)
}

/// Prints snapshots as a JSON array.
pub fn snapshots_json(snapshots: &[(SnapshotId, Snapshot)]) -> Result<()> {
    let array: Vec<Value> = snapshots
        .iter()
        .map(|(id, s)| snapshot_json(id, s))
        .collect();
    writeln!(io::stdout().lock(), "{}", Value::Array(array))?;
    Ok(())
}

/// A group's key as JSON: host, paths, tags (null for fields not grouped
/// by).
fn group_json(key: &GroupKey) -> Value {
    json!({
        "host": key.host,
        "paths": key.paths.as_ref().map(|paths| paths.iter().map(|p| lossy(p)).collect::<Vec<_>>()),
        "tags": key.tags,
    })
}

/// Prints groups of snapshots as a JSON array of `group` and `snapshots`.
pub fn snapshot_groups_json(groups: &[(GroupKey, Vec<(SnapshotId, Snapshot)>)]) -> Result<()> {
    let array: Vec<Value> = groups
        .iter()
        .map(|(key, members)| {
            let snapshots: Vec<Value> =
                members.iter().map(|(id, s)| snapshot_json(id, s)).collect();
            json!({"group": group_json(key), "snapshots": snapshots})
        })
        .collect();
    writeln!(io::stdout().lock(), "{}", Value::Array(array))?;
    Ok(())
}

/// Prints groups of snapshots, a heading and a table each.
pub fn snapshot_groups_table(groups: &[(GroupKey, Vec<(SnapshotId, Snapshot)>)]) -> Result<()> {
    for (n, (key, members)) in groups.iter().enumerate() {
        if n > 0 {
            writeln!(io::stdout().lock())?;
        }
        writeln!(io::stdout().lock(), "{}:", printable(&key.to_string()))?;
        snapshots_table(members)?;
    }
    Ok(())
}

/// `text` with control characters (escape sequences, newlines) shown as
/// escapes: host names, tags and paths come from the repository, and must
/// not drive the terminal or break the table's lines.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A snapshot's cells in a table: id, time, host, tags, paths.
fn snapshot_row(id: &SnapshotId, s: &Snapshot) -> Vec<String> {
    vec![
        id.0.short(),
        time_of(s.time_ns).format("%Y-%m-%d %H:%M:%S").to_string(),
        printable(&s.hostname),
        s.tags
            .iter()
            .map(|t| printable(t))
            .collect::<Vec<_>>()
            .join(","),
        s.paths
            .iter()
            .map(|p| printable(&lossy(p)))
            .collect::<Vec<_>>()
            .join(" ")
            + if s.is_incomplete() {
                " (incomplete)"
            } else {
                ""
            },
    ]
}

/// Writes `rows` under `header`, each column as wide as its widest cell.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

const SNAPSHOT_COLUMNS: [&str; 5] = ["ID", "Time", "Host", "Tags", "Paths"];

/// Prints snapshots as a table, oldest first.
pub fn snapshots_table(snapshots: &[(SnapshotId, Snapshot)]) -> Result<()> {
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|(id, s)| snapshot_row(id, s))
        .collect();
    let mut out = io::stdout().lock();
    table(&mut out, &SNAPSHOT_COLUMNS, &rows)?;
    writeln!(out, "{} snapshots", rows.len())?;
    Ok(())
}

/// Prints a forget plan: per group, the snapshots kept (with the rules
/// that kept them) and those removed, newest first.
pub fn forget_tables(groups: &[GroupPlan]) -> Result<()> {
    let mut out = io::stdout().lock();
    for (n, group) in groups.iter().enumerate() {
        if n > 0 {
            writeln!(out)?;
        }
        writeln!(out, "snapshots of {}:", printable(&group.key.to_string()))?;
        if !group.keep.is_empty() {
            writeln!(out, "keep {} snapshots:", group.keep.len())?;
            let rows: Vec<Vec<String>> = group
                .keep
                .iter()
                .map(|(id, s, reasons)| {
                    let mut row = snapshot_row(id, s);
                    row.insert(4, reasons.join(", "));
                    row
                })
                .collect();
            table(
                &mut out,
                &["ID", "Time", "Host", "Tags", "Reasons", "Paths"],
                &rows,
            )?;
        }
        if !group.remove.is_empty() {
            writeln!(out, "remove {} snapshots:", group.remove.len())?;
            let rows: Vec<Vec<String>> = group
                .remove
                .iter()
                .map(|(id, s)| snapshot_row(id, s))
                .collect();
            table(&mut out, &SNAPSHOT_COLUMNS, &rows)?;
        }
    }
    Ok(())
}

/// Prints a forget plan as a JSON array, one object per group: `group`
/// (host, paths, tags: those grouped by), `keep` (snapshots as `snapshots
/// --json` prints them, each with its `reasons`) and `remove`.
pub fn forget_json(groups: &[GroupPlan]) -> Result<()> {
    let array: Vec<Value> = groups
        .iter()
        .map(|g| {
            let keep: Vec<Value> = g
                .keep
                .iter()
                .map(|(id, s, reasons)| {
                    let mut value = snapshot_json(id, s);
                    value["reasons"] = json!(reasons);
                    value
                })
                .collect();
            let remove: Vec<Value> = g
                .remove
                .iter()
                .map(|(id, s)| snapshot_json(id, s))
                .collect();
            json!({
                "group": group_json(&g.key),
                "keep": keep,
                "remove": remove,
            })
        })
        .collect();
    writeln!(io::stdout().lock(), "{}", Value::Array(array))?;
    Ok(())
}

/// One problem of a check, with what it affects, for JSON.
fn problem_json(problem: &cairn_core::check::Problem) -> Value {
    json!({
        "object": problem.object,
        "message": problem.message,
        "snapshots": problem.snapshots,
        "paths": problem.paths,
        "more_paths": problem.more_paths,
    })
}

/// Prints a check report as one JSON object: `errors` and `warnings`
/// (each with `object`, `message`, `snapshots`, `paths`, `more_paths`) and
/// the counters.
pub fn check_json(report: &cairn_core::check::CheckReport) -> Result<()> {
    let value = json!({
        "errors": report.errors.iter().map(problem_json).collect::<Vec<_>>(),
        "warnings": report.warnings.iter().map(problem_json).collect::<Vec<_>>(),
        "snapshots": report.snapshots,
        "packs": report.packs,
        "stored_bytes": report.stored_bytes,
        "trees": report.trees,
        "packs_read": report.packs_read,
        "blobs_read": report.blobs_read,
    });
    writeln!(io::stdout().lock(), "{value}")?;
    Ok(())
}

/// Prints a check report: each problem on a line of standard error, with
/// what it affects below it, then a summary on standard output.
pub fn check_text(cli: &Cli, report: &cairn_core::check::CheckReport) -> Result<()> {
    let mut err = io::stderr().lock();
    for (label, problems) in [("error", &report.errors), ("warning", &report.warnings)] {
        for problem in problems {
            writeln!(
                err,
                "cairn: {label}: {}: {}",
                printable(&problem.object),
                printable(&problem.message)
            )?;
            if !problem.snapshots.is_empty() {
                let mut paths: Vec<String> = problem.paths.iter().map(|p| printable(p)).collect();
                if problem.more_paths > 0 {
                    paths.push(format!("and {} more", problem.more_paths));
                }
                writeln!(
                    err,
                    "  affects snapshots {}: {}",
                    problem.snapshots.join(", "),
                    paths.join(", ")
                )?;
            }
        }
    }
    let mut text = format!(
        "checked {} snapshots, {} packs, {} trees",
        report.snapshots, report.packs, report.trees
    );
    if report.packs_read > 0 {
        text.push_str(&format!(
            "; read {} packs, {} blobs",
            report.packs_read, report.blobs_read
        ));
    }
    text.push_str(&match report.errors.len() {
        0 => "; no errors".to_string(),
        n => format!("; {n} errors"),
    });
    if !report.warnings.is_empty() {
        text.push_str(&format!(", {} warnings", report.warnings.len()));
    }
    line(cli, &text)
}

/// Prints a prune report as one JSON object.
pub fn prune_json(report: &cairn_core::prune::PruneReport, dry_run: bool) -> Result<()> {
    let value = json!({
        "dry_run": dry_run,
        "snapshots": report.snapshots,
        "live_blobs": report.live_blobs,
        "packs_removed": report.packs_removed,
        "bytes_removed": report.bytes_removed,
        "packs_repacked": report.packs_repacked,
        "bytes_repacked": report.bytes_repacked,
        "blobs_repacked": report.blobs_repacked,
        "bytes_rewritten": report.bytes_rewritten,
        "bytes_freed": report.bytes_freed(),
        "unindexed_packs_removed": report.unindexed_packs_removed,
        "unindexed_bytes_removed": report.unindexed_bytes_removed,
        "unreadable_packs_kept": report.unreadable_packs_kept,
        "packs_kept": report.packs_kept,
        "dead_bytes_kept": report.dead_bytes_kept,
        "missing_packs_unlisted": report.missing_packs_unlisted,
        "leftovers_removed": report.leftovers_removed,
        "segments_removed": report.segments_removed,
        "segments_written": report.segments_written,
    });
    writeln!(io::stdout().lock(), "{value}")?;
    Ok(())
}

/// Prints what a prune did, or would do.
pub fn prune_text(cli: &Cli, report: &cairn_core::prune::PruneReport, dry_run: bool) -> Result<()> {
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut text = format!(
        "{} live blobs in {} snapshots; {verb} {} unused packs ({})",
        report.live_blobs,
        report.snapshots,
        report.packs_removed,
        bytes(report.bytes_removed)
    );
    if report.unindexed_packs_removed > 0 {
        text.push_str(&format!(
            " and {} packs no index lists ({})",
            report.unindexed_packs_removed,
            bytes(report.unindexed_bytes_removed)
        ));
    }
    if report.unreadable_packs_kept > 0 {
        text.push_str(&format!(
            "; kept {} packs no index lists whose trailer does not open (see `cairn check`)",
            report.unreadable_packs_kept
        ));
    }
    if report.packs_repacked > 0 {
        let verb = if dry_run { "would repack" } else { "repacked" };
        text.push_str(&format!(
            "; {verb} {} packs ({}), copying {} live blobs ({})",
            report.packs_repacked,
            bytes(report.bytes_repacked),
            report.blobs_repacked,
            bytes(report.bytes_rewritten)
        ));
    }
    if report.missing_packs_unlisted > 0 {
        let verb = if dry_run { "would drop" } else { "dropped" };
        text.push_str(&format!(
            "; {verb} {} missing packs from the index",
            report.missing_packs_unlisted
        ));
    }
    if report.leftovers_removed > 0 {
        let verb = if dry_run { "would remove" } else { "removed" };
        text.push_str(&format!(
            "; {verb} {} temporary files of stopped writers",
            report.leftovers_removed
        ));
    }
    text.push_str(&format!(
        "; kept {} packs, with {} of unused blobs inside them; {} {}",
        report.packs_kept,
        bytes(report.dead_bytes_kept),
        if dry_run { "would free" } else { "freed" },
        bytes(report.bytes_freed())
    ));
    line(cli, &text)
}
