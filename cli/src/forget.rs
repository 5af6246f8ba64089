//! `cairn forget`: its arguments, turned into core's forget options.

use anyhow::{bail, Result};
use cairn_core::forget::policy::{KeepCount, KeepPolicy, RetentionSpan};
use cairn_core::forget::{ForgetOptions, GroupBy};

use crate::filter::{tag_lists, FilterArgs};
use cairn_core::prune::MaxUnused;
use clap::Args;

/// Arguments of `cairn forget`.
#[derive(Args)]
pub struct ForgetArgs {
    /// Snapshots to forget (ids, unique prefixes, or "latest"), instead of
    /// a policy.
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots (N, or -1 / unlimited for all).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_last: Option<KeepCount>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_hourly: Option<KeepCount>,
    /// ... of each of the last N days.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_daily: Option<KeepCount>,
    /// ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_weekly: Option<KeepCount>,
    /// ... of each of the last N months.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_monthly: Option<KeepCount>,
    /// ... of each of the last N years.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_yearly: Option<KeepCount>,
    /// Keep every snapshot within DURATION (like 1y2m3d4h) of the newest.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within: Option<RetentionSpan>,
    /// Keep the newest snapshot of every hour within DURATION of the newest.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_hourly: Option<RetentionSpan>,
    /// ... of every day.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_daily: Option<RetentionSpan>,
    /// ... of every ISO week.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_weekly: Option<RetentionSpan>,
    /// ... of every month.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_monthly: Option<RetentionSpan>,
    /// ... of every year.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_yearly: Option<RetentionSpan>,
    /// Keep snapshots carrying all of these comma-separated tags
    /// (repeatable: any of the lists).
    #[arg(long, value_name = "TAGS")]
    pub keep_tag: Vec<String>,
    /// Remove every snapshot the filters select.
    #[arg(long)]
    pub keep_none: bool,
    /// Group snapshots by any of host, paths, tags (comma-separated; ""
    /// for one group).
    #[arg(long, value_name = "FIELDS", default_value = "host,paths", value_parser = group_by)]
    pub group_by: GroupBy,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show what would be removed; remove nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print one JSON object per group.
    #[arg(long)]
    pub json: bool,
    /// Prune afterwards, under the same lock.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: unused space to tolerate in packs (see prune).
    #[arg(long, value_name = "LIMIT", default_value = "5%", requires = "prune")]
    pub max_unused: MaxUnused,
}

fn keep_count(text: &str) -> std::result::Result<KeepCount, String> {
    match text {
        "-1" | "unlimited" => Ok(KeepCount::All),
        n => n
            .parse()
            .map(KeepCount::Last)
            .map_err(|_| format!("{text:?} is not a count (N, -1 or unlimited)")),
    }
}

fn span(text: &str) -> std::result::Result<RetentionSpan, String> {
    RetentionSpan::parse(text).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses `--group-by`: any of host, paths, tags, comma-separated.
pub fn group_by(text: &str) -> std::result::Result<GroupBy, String> {
    let mut by = GroupBy {
        host: false,
        paths: false,
        tags: false,
    };
    for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match field {
            "host" => by.host = true,
            "paths" => by.paths = true,
            "tags" => by.tags = true,
            other => return Err(format!("{other:?}: group by host, paths or tags")),
        }
    }
    Ok(by)
}

impl ForgetArgs {
    /// Whether any `--keep-*` rule or filter was given.
    fn has_policy(&self) -> bool {
        self.options()
            .is_ok_and(|o| !o.policy.is_empty() || o.keep_none)
            || !self.filter.is_empty()
    }

    /// Errors if snapshots are named together with a policy.
    pub fn check(&self) -> Result<()> {
        if !self.snapshots.is_empty() && self.has_policy() {
            bail!("name snapshots to forget, or give a policy, not both");
        }
        Ok(())
    }

    /// The policy, grouping and filters given.
    pub fn options(&self) -> Result<ForgetOptions> {
        let or_off = |count: Option<KeepCount>| count.unwrap_or_default();
        let span = |span: Option<RetentionSpan>| span.unwrap_or_default();
        let policy = KeepPolicy {
            last: or_off(self.keep_last),
            hourly: or_off(self.keep_hourly),
            daily: or_off(self.keep_daily),
            weekly: or_off(self.keep_weekly),
            monthly: or_off(self.keep_monthly),
            yearly: or_off(self.keep_yearly),
            within: span(self.keep_within),
            within_hourly: span(self.keep_within_hourly),
            within_daily: span(self.keep_within_daily),
            within_weekly: span(self.keep_within_weekly),
            within_monthly: span(self.keep_within_monthly),
            within_yearly: span(self.keep_within_yearly),
            tags: tag_lists(&self.keep_tag),
        };
        Ok(ForgetOptions {
            policy,
            keep_none: self.keep_none,
            group_by: self.group_by,
            filter: self.filter.to_filter()?,
        })
    }
}
