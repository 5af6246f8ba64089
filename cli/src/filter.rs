//! `--host`, `--tag` and `--path`: which snapshots a command considers.

use anyhow::{Context, Result};
use cairn_core::forget::SnapshotFilter;
use clap::Args;

/// The snapshot filters, shared by every command that selects snapshots.
#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// Only consider snapshots of this host (repeatable: any of them).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only consider snapshots carrying all of these comma-separated tags
    /// (repeatable: any of the lists).
    #[arg(long = "tag", value_name = "TAGS")]
    pub tags: Vec<String>,
    /// Only consider snapshots that include this source path (repeatable:
    /// all of them).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

impl FilterArgs {
    /// Whether no filter was given.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// The filter, with each path made absolute and normalized.
    pub fn to_filter(&self) -> Result<SnapshotFilter> {
        let paths = self
            .paths
            .iter()
            .map(|p| {
                let normalized = cairn_core::normalize_path(std::path::Path::new(p))
                    .with_context(|| format!("--path {p}"))?;
                Ok(normalized.into_os_string().into_encoded_bytes())
            })
            .collect::<Result<_>>()?;
        Ok(SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: tag_lists(&self.tags),
            paths,
        })
    }
}

/// Comma-separated tag lists, one per flag given.
pub fn tag_lists(values: &[String]) -> Vec<Vec<String>> {
    values
        .iter()
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}
