//! `cairn repair snapshots`: arguments, and what it prints.

use std::io::{self, Write};

use anyhow::Result;
use cairn_core::progress::Progress;
use cairn_core::repair::{Damage, SnapshotRepairOptions, SnapshotsRepair};
use cairn_core::LockKind;
use clap::Args;
use serde_json::json;

use crate::filter::FilterArgs;
use crate::output::{self, bytes};
use crate::{lock, open_full_repository, report_notices, Cli};

/// `repair snapshots`.
#[derive(Args)]
pub struct RepairSnapshotsArgs {
    /// Snapshots to repair (all, or those the filters select, if none).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Read every blob back, so that damaged blobs count as lost, not only
    /// missing ones.
    #[arg(long)]
    pub read_data: bool,
    /// Remove each damaged original once its repaired snapshot is stored.
    #[arg(long)]
    pub forget: bool,
    /// Say what would be repaired; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `repair snapshots`.
pub fn repair_snapshots(cli: &Cli, args: &RepairSnapshotsArgs) -> Result<u8> {
    let repository = open_full_repository(cli, "repair snapshots")?;
    // Removing the originals must not run beside a prune; writing new
    // snapshots is a backup's business.
    let kind = if args.forget && !args.dry_run {
        LockKind::Exclusive
    } else {
        LockKind::Shared
    };
    let _held = lock(cli, &repository, kind, "repair snapshots")?;
    let selected = if args.snapshots.is_empty() {
        let filter = args.filter.to_filter()?;
        let list = repository.snapshots()?;
        let reporter = output::Reporter::new(cli);
        for damaged in &list.damaged {
            reporter.warning(
                std::path::Path::new(&repository.location()),
                &format!("{damaged}: not repaired (the snapshot itself is unreadable; `cairn forget` removes it)"),
            );
        }
        list.snapshots
            .into_iter()
            .filter(|(_, s)| filter.admits(s))
            .collect()
    } else {
        let mut selected = Vec::new();
        for reference in &args.snapshots {
            let resolved = crate::select_snapshot(&repository, reference, &FilterArgs::default())?;
            if !selected.iter().any(|(id, _)| *id == resolved.0) {
                selected.push(resolved);
            }
        }
        selected
    };
    let options = SnapshotRepairOptions {
        read_data: args.read_data,
        dry_run: args.dry_run,
        forget: args.forget,
    };
    let report = cairn_core::repair::repair_snapshots(&repository, &selected, options)?;
    report_notices(cli, &repository);
    if args.json {
        print_json(&report, args.dry_run)?;
    } else {
        print_text(cli, &report, args)?;
    }
    Ok(0)
}

fn describe(damage: &Damage) -> String {
    match damage {
        Damage::File {
            chunks,
            chunks_lost,
            bytes_zeroed,
            chunks_dropped,
        } => {
            let mut text = format!("{chunks_lost} of {chunks} chunks lost");
            if *bytes_zeroed > 0 {
                text.push_str(&format!(", {} replaced by zeros", bytes(*bytes_zeroed)));
            }
            if *chunks_dropped > 0 {
                text.push_str(&format!(
                    ", {chunks_dropped} of unknown length left out (the file is shorter)"
                ));
            }
            text
        }
        Damage::Directory { reason } => format!("directory lost, now empty: {reason}"),
    }
}

fn print_text(cli: &Cli, report: &SnapshotsRepair, args: &RepairSnapshotsArgs) -> Result<()> {
    for repaired in &report.repaired {
        let original = repaired.original.0.short();
        let head = match (&repaired.repaired, repaired.original_removed) {
            (None, _) => format!("snapshot {original}: would be repaired"),
            (Some(new), true) => format!(
                "snapshot {original}: repaired as {}; original removed",
                new.0.short()
            ),
            (Some(new), false) => format!(
                "snapshot {original}: repaired as {}; original kept (--forget removes it)",
                new.0.short()
            ),
        };
        output::line(cli, &head)?;
        for damaged in &repaired.damaged {
            output::line(
                cli,
                &format!(
                    "  {}: {}",
                    String::from_utf8_lossy(&damaged.path),
                    describe(&damaged.damage)
                ),
            )?;
        }
    }
    let verb = if args.dry_run {
        "would repair"
    } else {
        "repaired"
    };
    output::line(
        cli,
        &format!(
            "checked {} snapshots; {verb} {}",
            report.checked,
            report.repaired.len()
        ),
    )
}

fn print_json(report: &SnapshotsRepair, dry_run: bool) -> Result<()> {
    let repaired: Vec<_> = report
        .repaired
        .iter()
        .map(|r| {
            let damaged: Vec<_> = r
                .damaged
                .iter()
                .map(|d| {
                    let path = String::from_utf8_lossy(&d.path).into_owned();
                    match &d.damage {
                        Damage::File {
                            chunks,
                            chunks_lost,
                            bytes_zeroed,
                            chunks_dropped,
                        } => json!({
                            "path": path, "type": "file", "chunks": chunks,
                            "chunks_lost": chunks_lost, "bytes_zeroed": bytes_zeroed,
                            "chunks_dropped": chunks_dropped,
                        }),
                        Damage::Directory { reason } => {
                            json!({"path": path, "type": "dir", "reason": reason})
                        }
                    }
                })
                .collect();
            json!({
                "original": r.original.to_string(),
                "repaired": r.repaired.map(|id| id.to_string()),
                "original_removed": r.original_removed,
                "damaged": damaged,
            })
        })
        .collect();
    let value = json!({
        "dry_run": dry_run,
        "snapshots_checked": report.checked,
        "repaired": repaired,
    });
    writeln!(io::stdout().lock(), "{value}")?;
    Ok(())
}
