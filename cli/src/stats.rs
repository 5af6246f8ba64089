//! `cairn stats`: arguments and printing; the counting is
//! `cairn_core::browse::stats`.

use anyhow::Result;
use cairn_core::browse::{Stats, Trees, TREE_CACHE_BYTES};
use clap::Args;
use serde_json::json;

use crate::filter::FilterArgs;
use crate::output::bytes;
use crate::{open_full_repository, read_lock, report_notices, select_snapshot, Cli};

/// `stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// Snapshots to count (as for restore). Default: every snapshot the
    /// filters admit, that is the whole repository.
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// The counts as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `stats`.
pub fn stats(cli: &Cli, args: &StatsArgs) -> Result<u8> {
    let repository = open_full_repository(cli, "read what snapshots hold")?;
    let _lock = read_lock(cli, &repository, "stats")?;
    let mut snapshots = Vec::new();
    let mut damaged = 0;
    if args.snapshots.is_empty() {
        let list = repository.snapshots()?;
        crate::report_damaged(cli, &repository, &list.damaged);
        damaged = list.damaged.len();
        let filter = args.filter.to_filter()?;
        snapshots.extend(
            list.snapshots
                .into_iter()
                .filter(|(_, s)| filter.admits(s))
                .map(|(_, s)| s),
        );
    } else {
        let mut ids = Vec::new();
        for reference in &args.snapshots {
            let (id, snapshot) = select_snapshot(&repository, reference, &args.filter)?;
            if !ids.contains(&id) {
                ids.push(id);
                snapshots.push(snapshot);
            }
        }
    }
    let mut trees = Trees::new(&repository, TREE_CACHE_BYTES);
    let stats = cairn_core::browse::stats(&mut trees, &snapshots);
    report_notices(cli, &repository);
    let stats = stats?;
    if args.json {
        println!("{}", stats_json(&stats));
    } else {
        print!("{}", stats_text(&stats));
    }
    if stats.missing_blobs > 0 {
        anyhow::bail!(
            "{} blobs these snapshots reference are not in the index: run `cairn check`",
            stats.missing_blobs
        );
    }
    Ok(if damaged > 0 { crate::exit::FATAL } else { 0 })
}

fn stats_json(s: &Stats) -> serde_json::Value {
    json!({
        "snapshots": s.snapshots,
        "files": s.files,
        "dirs": s.dirs,
        "others": s.others,
        "restore_size": s.restore_bytes,
        "data_blobs": s.data_blobs,
        "tree_blobs": s.tree_blobs,
        "deduplicated_size": s.data_bytes,
        "tree_size": s.tree_bytes,
        "stored_size": s.stored_bytes,
        "dedup_ratio": s.dedup_ratio(),
        "compression_ratio": s.compression_ratio(),
        "missing_blobs": s.missing_blobs,
    })
}

fn stats_text(s: &Stats) -> String {
    let rows = [
        ("snapshots", s.snapshots.to_string()),
        (
            "entries",
            format!(
                "{} files, {} directories, {} others",
                s.files, s.dirs, s.others
            ),
        ),
        ("restore size", bytes(s.restore_bytes)),
        (
            "blobs",
            format!("{} data, {} trees", s.data_blobs, s.tree_blobs),
        ),
        ("deduplicated size", bytes(s.data_bytes)),
        ("trees", bytes(s.tree_bytes)),
        ("stored size", bytes(s.stored_bytes)),
        ("dedup ratio", format!("{:.2}x", s.dedup_ratio())),
        (
            "compression ratio",
            format!("{:.2}x", s.compression_ratio()),
        ),
    ];
    rows.iter()
        .map(|(name, value)| format!("{name:<18} {value}\n"))
        .collect()
}
