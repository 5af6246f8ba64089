//! Drawing the browser's screens.

use cairn_core::browse::Version;
use cairn_core::{Node, NodeKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::app::{App, Screen};
use crate::entry::{mode_string, mtime, size, type_of};
use crate::output::{bytes, lossy, printable, time_of};

/// Draws the screen the app is on, with the status line at the bottom.
pub fn draw(frame: &mut Frame, app: &App<'_>) {
    let [main, status] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(frame.area());
    match &app.screen {
        Screen::Snapshots => snapshots(frame, main, app),
        Screen::Directory => directory(frame, main, app),
        Screen::Details(versions) => details(frame, main, app, versions),
        Screen::View { lines, scroll } => view(frame, main, app, lines, *scroll),
        Screen::RestoreTarget(text) => {
            directory(frame, main, app);
            let prompt = Paragraph::new(format!("restore to: {text}_"))
                .block(Block::bordered().title(" restore "));
            let [_, area, _] = Layout::vertical([
                Constraint::Fill(1),
                Constraint::Length(3),
                Constraint::Fill(1),
            ])
            .areas(main);
            frame.render_widget(ratatui::widgets::Clear, area);
            frame.render_widget(prompt, area);
        }
    }
    frame.render_widget(Paragraph::new(app.status.as_str()), status);
}

fn highlight() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

fn snapshots(frame: &mut Frame, area: ratatui::layout::Rect, app: &App<'_>) {
    let rows = app.snapshots.iter().map(|(id, s)| {
        Row::new(vec![
            Cell::from(id.0.short()),
            Cell::from(time_of(s.time_ns).format("%Y-%m-%d %H:%M:%S").to_string()),
            Cell::from(s.hostname.clone()),
            Cell::from(s.tags.join(",")),
            Cell::from(
                s.paths
                    .iter()
                    .map(|p| printable(&lossy(p)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(19),
            Constraint::Length(16),
            Constraint::Length(16),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["ID", "Time", "Host", "Tags", "Paths"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(format!(" {} snapshots ", app.snapshots.len())))
    .row_highlight_style(highlight())
    .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(Some(app.selected_snapshot));
    frame.render_stateful_widget(table, area, &mut state);
}

fn directory(frame: &mut Frame, area: ratatui::layout::Rect, app: &App<'_>) {
    let title = match &app.open {
        Some((id, _)) => format!(" {}:{} ", id.0.short(), app.dir.display()),
        None => " ".into(),
    };
    let rows = app.entries.iter().map(|entry| {
        let node = &entry.node;
        let mut name = printable(&lossy(&node.name));
        match &node.kind {
            NodeKind::Directory { .. } => name.push('/'),
            NodeKind::Symlink { target } => {
                name.push_str(" -> ");
                name.push_str(&printable(&lossy(target)));
            }
            _ => {}
        }
        Row::new(vec![
            Cell::from(mode_string(node)),
            Cell::from(bytes(size(&node.kind))),
            Cell::from(mtime(node).format("%Y-%m-%d %H:%M").to_string()),
            Cell::from(name),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(11),
            Constraint::Length(16),
            Constraint::Fill(1),
        ],
    )
    .block(Block::bordered().title(title))
    .row_highlight_style(highlight())
    .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(Some(app.selected_entry));
    frame.render_stateful_widget(table, area, &mut state);
}

fn details(frame: &mut Frame, area: ratatui::layout::Rect, app: &App<'_>, versions: &[Version]) {
    let Some(entry) = app.entries.get(app.selected_entry) else {
        return;
    };
    let node = &entry.node;
    let path = app
        .selected_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let [info, history] =
        Layout::vertical([Constraint::Length(9), Constraint::Fill(1)]).areas(area);
    let lines: Vec<Line> = metadata_lines(node).into_iter().map(Line::from).collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(" {path} "))),
        info,
    );
    let rows = versions.iter().map(|v| {
        Row::new(vec![
            Cell::from(
                time_of(v.snapshot_time_ns)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
            ),
            Cell::from(v.snapshot.0.short()),
            Cell::from(type_of(&v.node.kind).0),
            Cell::from(bytes(size(&v.node.kind))),
            Cell::from(format!(
                "modified {}",
                mtime(&v.node).format("%Y-%m-%d %H:%M:%S")
            )),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(19),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Fill(1),
        ],
    )
    .block(Block::bordered().title(format!(" in {} snapshots ", versions.len())));
    frame.render_widget(table, history);
}

fn metadata_lines(node: &Node) -> Vec<String> {
    let owner = |name: &Option<Vec<u8>>, id: u32| match name {
        Some(n) => format!("{} ({id})", printable(&lossy(n))),
        None => id.to_string(),
    };
    let mut lines = vec![
        format!("type   {}", type_of(&node.kind).0),
        format!("mode   {} ({:o})", mode_string(node), node.mode),
        format!(
            "owner  {}  group {}",
            owner(&node.user, node.uid),
            owner(&node.group, node.gid)
        ),
        format!(
            "size   {} ({} bytes)",
            bytes(size(&node.kind)),
            size(&node.kind)
        ),
        format!("mtime  {}", mtime(node).format("%Y-%m-%d %H:%M:%S%.9f %z")),
    ];
    match &node.kind {
        NodeKind::Symlink { target } => lines.push(format!("target {}", printable(&lossy(target)))),
        NodeKind::File { content, .. } => {
            lines.push(format!("chunks {}  links {}", content.len(), node.links));
        }
        _ => {}
    }
    if !node.xattrs.is_empty() {
        let names: Vec<String> = node.xattrs.iter().map(|x| lossy(&x.name)).collect();
        lines.push(format!("xattrs {}", names.join(", ")));
    }
    lines
}

fn view(
    frame: &mut Frame,
    area: ratatui::layout::Rect,
    app: &App<'_>,
    lines: &[String],
    scroll: usize,
) {
    let path = app
        .selected_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let visible = area.height.saturating_sub(2) as usize;
    let text: Vec<Line> = lines
        .iter()
        .skip(scroll)
        .take(visible)
        .map(|l| Line::from(printable(l)))
        .collect();
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(format!(" {path} "))),
        area,
    );
}
