//! `cairn dump`: arguments and where the archive goes; the archive is
//! written by `cairn_core::browse::dump`.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cairn_core::browse::{ArchiveFormat, Trees, TREE_CACHE_BYTES};
use cairn_core::progress::Progress;
use clap::{Args, ValueEnum};

use crate::filter::FilterArgs;
use crate::{open_full_repository, read_lock, report_notices, select_snapshot, Cli};

/// The archive formats, as `--archive` names them.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Tar,
    Zip,
}

/// `dump`.
#[derive(Args)]
pub struct DumpArgs {
    /// SNAPSHOT or SNAPSHOT:PATH (as for restore).
    snapshot: String,
    /// The archive format.
    #[arg(long, value_enum, default_value = "tar")]
    archive: Format,
    /// Write the archive to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    target: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Runs `dump`.
pub fn dump(cli: &Cli, args: &DumpArgs) -> Result<u8> {
    let (reference, path) = cairn_core::select::split_path(&args.snapshot);
    if args.target.is_none() && io::stdout().is_terminal() {
        bail!(
            "standard output is a terminal: redirect it to a file or a pipe, or give --target FILE"
        );
    }
    let repository = open_full_repository(cli, "read files from snapshots")?;
    let _lock = read_lock(cli, &repository, "dump")?;
    let (_, snapshot) = select_snapshot(&repository, reference, &args.filter)?;
    let format = match args.archive {
        Format::Tar => ArchiveFormat::Tar,
        Format::Zip => ArchiveFormat::Zip,
    };
    let mut out: Box<dyn Write> = match &args.target {
        Some(file) => Box::new(io::BufWriter::new(
            std::fs::File::create(file).with_context(|| format!("{}", file.display()))?,
        )),
        None => Box::new(io::BufWriter::with_capacity(1 << 20, io::stdout().lock())),
    };
    let mut trees = Trees::new(&repository, TREE_CACHE_BYTES);
    let summary =
        cairn_core::browse::dump(&mut trees, &snapshot, path.map(Path::new), format, &mut out);
    report_notices(cli, &repository);
    let summary = summary?;
    out.flush()?;
    if summary.skipped > 0 {
        crate::output::Reporter::new(cli).warning(
            Path::new(&args.snapshot),
            &format!(
                "{} devices and pipes left out: zip cannot hold them",
                summary.skipped
            ),
        );
    }
    Ok(0)
}
