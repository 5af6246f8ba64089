//! `cairn ls`: arguments, and which of the three ways an entry is printed.

use std::io::{self, Write};

use anyhow::Result;
use clap::Args;

use crate::entry::{json_line, long_line};
use crate::filter::FilterArgs;
use crate::output::{lossy, printable};
use crate::{open_full_repository, read_lock, report_notices, select_snapshot, Cli};

/// `ls`.
#[derive(Args)]
pub struct LsArgs {
    /// SNAPSHOT or SNAPSHOT:PATH (SNAPSHOT as for restore).
    snapshot: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Long format, like `ls -l`: mode, owner, group, size, mtime, path.
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// Everything below, not only the directory's entries (`-R`, as in
    /// `ls`: `-r` is `--repo`).
    #[arg(short = 'R', long)]
    recursive: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// Runs `ls`.
pub fn ls(cli: &Cli, args: &LsArgs) -> Result<u8> {
    let (reference, path) = cairn_core::select::split_path(&args.snapshot);
    let repository = open_full_repository(cli, "list what snapshots hold")?;
    let _lock = read_lock(cli, &repository, "ls")?;
    let (_, snapshot) = select_snapshot(&repository, reference, &args.filter)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let listed = cairn_core::browse::list(
        &repository,
        &snapshot,
        path.map(std::path::Path::new),
        args.recursive,
        &mut |path, node| {
            let line = if args.json {
                json_line(path, node)
            } else if args.long {
                long_line(path, node)
            } else {
                printable(&lossy(path))
            };
            writeln!(out, "{line}").map_err(|error| cairn_core::Error::Output { error })
        },
    );
    report_notices(cli, &repository);
    listed?;
    out.flush()?;
    Ok(0)
}
