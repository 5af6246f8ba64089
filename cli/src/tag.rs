//! `cairn tag`: arguments and printing; the rewriting is
//! `cairn_core::tag`.

use anyhow::{bail, Result};
use cairn_core::tag::TagChange;
use cairn_core::LockKind;
use clap::Args;
use serde_json::json;

use crate::filter::{tag_lists, FilterArgs};
use crate::{lock, open_full_repository, output, select_snapshot, Cli};

/// `tag`.
#[derive(Args)]
pub struct TagArgs {
    /// Snapshots to change (as for restore). Default: every snapshot the
    /// filters admit.
    snapshots: Vec<String>,
    /// Add these comma-separated tags (repeatable).
    #[arg(long, value_name = "TAGS")]
    add: Vec<String>,
    /// Remove these comma-separated tags (repeatable).
    #[arg(long, value_name = "TAGS")]
    remove: Vec<String>,
    /// Replace all tags by these (repeatable; `--set ''` removes all).
    #[arg(long, value_name = "TAGS")]
    set: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// What became of each snapshot, as one JSON array.
    #[arg(long)]
    json: bool,
}

impl TagArgs {
    fn change(&self) -> TagChange {
        let flat = |lists: &[String]| tag_lists(lists).into_iter().flatten().collect();
        TagChange {
            set: (!self.set.is_empty()).then(|| flat(&self.set)),
            add: flat(&self.add),
            remove: flat(&self.remove),
        }
    }
}

/// Runs `tag`.
pub fn tag(cli: &Cli, args: &TagArgs) -> Result<u8> {
    let change = args.change();
    if change.is_empty() {
        bail!("say how to change the tags: --add, --remove or --set");
    }
    let repository = open_full_repository(cli, "change snapshots")?;
    let held = lock(cli, &repository, LockKind::Exclusive, "tag")?;
    let mut snapshots = Vec::new();
    if args.snapshots.is_empty() {
        let list = repository.snapshots()?;
        if let Some(damaged) = list.damaged.into_iter().next() {
            return Err(anyhow::Error::new(damaged)
                .context("cannot tell which snapshots the filters admit"));
        }
        let filter = args.filter.to_filter()?;
        snapshots.extend(list.snapshots.into_iter().filter(|(_, s)| filter.admits(s)));
    } else {
        for reference in &args.snapshots {
            let found = select_snapshot(&repository, reference, &args.filter)?;
            if !snapshots.iter().any(|(id, _)| *id == found.0) {
                snapshots.push(found);
            }
        }
    }
    let done = cairn_core::tag::retag(&repository, &held, &snapshots, &change)?;
    if args.json {
        let rows: Vec<_> = done
            .iter()
            .map(|r| {
                json!({
                    "snapshot": r.old.0.to_string(),
                    "replaced_by": r.new.map(|id| id.0.to_string()),
                    "tags": r.tags,
                })
            })
            .collect();
        println!("{}", json!(rows));
        return Ok(0);
    }
    for r in &done {
        let tags = r.tags.join(",");
        let text = match r.new {
            Some(new) => format!(
                "snapshot {} is now {} with tags [{tags}]",
                r.old.0.short(),
                new.0.short()
            ),
            None => format!("snapshot {} unchanged: tags [{tags}]", r.old.0.short()),
        };
        output::line(cli, &text)?;
    }
    Ok(0)
}
