//! `cairn browse`: an interactive terminal browser over the snapshots.
//! Snapshots → directories → an entry's details and its versions across
//! snapshots; a file's text can be viewed, and the selected entry restored
//! into a directory typed in. The screens and keys live in `app`, the
//! drawing in `ui`; what is read comes from `cairn_core::browse`.

mod app;
mod ui;

use anyhow::{Context, Result};
use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::filter::FilterArgs;
use crate::{open_full_repository, read_lock, select_snapshot, Cli};
use app::App;

/// `browse`.
#[derive(Args)]
pub struct BrowseArgs {
    /// Open this snapshot (or SNAPSHOT:PATH) at once; without one, start
    /// at the list of snapshots.
    snapshot: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Runs `browse` until the user quits.
pub fn browse(cli: &Cli, args: &BrowseArgs) -> Result<u8> {
    let repository = open_full_repository(cli, "browse snapshots")?;
    let _lock = read_lock(cli, &repository, "browse")?;
    let list = repository.snapshots()?;
    let filter = args.filter.to_filter()?;
    let snapshots: Vec<_> = list
        .snapshots
        .into_iter()
        .filter(|(_, s)| filter.admits(s))
        .collect();
    let mut app = App::new(&repository, snapshots);
    if let Some(reference) = &args.snapshot {
        let (reference, path) = cairn_core::select::split_path(reference);
        let (id, _) = select_snapshot(&repository, reference, &args.filter)?;
        app.open_snapshot(id, path.unwrap_or("/"))?;
    }
    let mut terminal = ratatui::try_init().context("cannot use the terminal")?;
    let result = run(&mut terminal, &mut app);
    ratatui::restore();
    result?;
    Ok(0)
}

fn run(terminal: &mut ratatui::DefaultTerminal, app: &mut App<'_>) -> Result<()> {
    while !app.quit {
        terminal.draw(|frame| ui::draw(frame, app))?;
        if let Event::Key(key) = event::read()? {
            if key.kind == KeyEventKind::Press {
                app.key(key);
            }
        }
    }
    Ok(())
}
