//! The one pattern dialect of cairn (SPEC.md §16, "Patterns"): backup's
//! excludes and restore's includes and excludes, matched one path
//! component at a time.
//!
//! A pattern that starts with `/` is anchored at the root; any other matches
//! at any depth, as if it started with `**/`. A leading `!` negates: among
//! the patterns of one list that match an entry, the last decides, so
//! `!pattern` takes back what earlier ones matched (`\!` is a literal `!`).
//! A trailing `/` makes a pattern match directories only. The rest is split
//! at `/` into components: `**` as a whole component matches any number of
//! path components (at the end of a pattern, at least one, so `/a/**`
//! matches what is below `/a` but not `/a`), and any other component is a
//! glob over one name (`*`, `?`, `[abc]`, `{a,b}`, `\` escapes), compiled by
//! globset, optionally without regard to case. As when globset matches an
//! absolute path, a path starts with the root's empty name before its first
//! `/`: an anchored pattern's leading `/` is the one after it, and an
//! unanchored pattern may match it, so `*/b` matches `/b`.
//!
//! Walks go down trees, so matching follows the walk: the state of a
//! directory is the set of pattern positions still alive after its path,
//! and a child's state follows from its parent's and the child's name
//! alone. The work per entry is the same at any depth, where matching whole
//! path strings costs time and memory that grow with it. The outcome is
//! what globset gives on the whole path with `literal_separator` (the tests
//! below compare the two), except in two corners where whole-path matching
//! would let a glob reach across a `/`: a class never matches `/` (no name
//! holds one), and a `/` inside `{…}` is refused.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component as PathComponent, Path};

use globset::{Candidate, GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};

/// One component of a compiled pattern.
#[derive(Debug)]
enum Component {
    /// `**`: any number of path components.
    AnyDepth,
    /// A glob over a single name.
    Name(GlobMatcher),
}

/// One compiled pattern.
#[derive(Debug)]
struct Pattern {
    /// Its components, starting with one for the root's empty name: the
    /// empty glob if anchored, `**` if not.
    components: Vec<Component>,
    /// `!pattern`: a match takes back what earlier patterns matched.
    negated: bool,
    /// `pattern/`: matches directories only.
    directories_only: bool,
}

/// Compiled patterns, matched together: the last one that matches a path
/// decides whether it is selected.
#[derive(Debug)]
pub(crate) struct Patterns {
    patterns: Vec<Pattern>,
}

/// How far a pattern got along a path: its index in [`Patterns`] and the
/// number of its components matched so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Position {
    pattern: usize,
    component: usize,
}

/// Where matching stands after a path: the positions still alive. Kept
/// sorted and without duplicates, so that two paths from which the same
/// paths below would match have equal states (restore remembers states).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct MatchState {
    positions: Vec<Position>,
}

impl Patterns {
    /// Compiles `patterns`, matched with regard to case, then
    /// `case_insensitive`, matched without: those count as later when the
    /// last matching pattern decides. Errors with [`Error::InvalidPattern`],
    /// naming the pattern, on a glob that globset refuses or a `/` inside
    /// `{…}`.
    pub(crate) fn new(patterns: &[String], case_insensitive: &[String]) -> Result<Patterns> {
        let with_case = patterns.iter().map(|p| (p, false));
        let without = case_insensitive.iter().map(|p| (p, true));
        let patterns = with_case
            .chain(without)
            .map(|(pattern, ignore_case)| {
                compile(pattern, ignore_case).map_err(|e| Error::InvalidPattern {
                    pattern: pattern.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Patterns { patterns })
    }

    /// Whether there are no patterns at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The state of a directory known by two paths, `in_snapshot` in the
    /// snapshot and `/` in the restore: a path below it matches if its path
    /// from either start does. Both runs step through the same names from
    /// here on, so one set of positions holds them both.
    pub(crate) fn top_state(&self, in_snapshot: &Path) -> MatchState {
        let mut positions = self.root_state().positions;
        positions.extend(self.state_of(in_snapshot).positions);
        self.close(positions)
    }

    /// The state of the absolute path `path`, stepped name by name from
    /// the root.
    pub(crate) fn state_of(&self, path: &Path) -> MatchState {
        let mut state = self.root_state();
        for component in path.components() {
            if let PathComponent::Normal(name) = component {
                state = self.descend(&state, name.as_bytes());
            }
        }
        state
    }

    /// The state of `/`: every pattern past the root's empty name.
    fn root_state(&self) -> MatchState {
        self.descend(&self.close(self.starts()), b"")
    }

    /// The state of the entry `name` inside a directory whose state is
    /// `state`. Takes time in the number of patterns and positions alive,
    /// never in the depth.
    pub(crate) fn descend(&self, state: &MatchState, name: &[u8]) -> MatchState {
        if state.positions.is_empty() {
            return MatchState::default();
        }
        let candidate = Candidate::new(OsStr::from_bytes(name));
        let mut next = Vec::new();
        for &position in &state.positions {
            match self.component(position) {
                // The whole pattern matched already: nothing below does.
                None => {}
                // `**` takes this name and may take more, or stop here.
                Some(Component::AnyDepth) => next.extend([position, position.advanced()]),
                Some(Component::Name(glob)) if glob.is_match_candidate(&candidate) => {
                    next.push(position.advanced());
                }
                Some(Component::Name(_)) => {}
            }
        }
        self.close(next)
    }

    /// Whether the path whose state is `state`, a directory if `is_dir`,
    /// is selected: whether the last pattern that matches it is not a
    /// negated one.
    pub(crate) fn is_match(&self, state: &MatchState, is_dir: bool) -> bool {
        // Positions are sorted by pattern, so the last complete one that
        // applies is the last pattern that matches.
        state
            .positions
            .iter()
            .rev()
            .filter(|&&p| self.component(p).is_none())
            .map(|p| &self.patterns[p.pattern])
            .find(|pattern| is_dir || !pattern.directories_only)
            .is_some_and(|pattern| !pattern.negated)
    }

    /// Whether some path below the one whose state is `state` could still
    /// match a pattern; when not, a walk need not look below it.
    pub(crate) fn can_match_below(&self, state: &MatchState) -> bool {
        state.positions.iter().any(|&p| self.component(p).is_some())
    }

    /// Every pattern at its start.
    fn starts(&self) -> Vec<Position> {
        (0..self.patterns.len())
            .map(|pattern| Position {
                pattern,
                component: 0,
            })
            .collect()
    }

    /// The component a position waits for; `None` once all matched.
    fn component(&self, position: Position) -> Option<&Component> {
        self.patterns[position.pattern]
            .components
            .get(position.component)
    }

    /// Adds the positions past every `**` that may match no component
    /// (all but a last one, as in globset), then sorts and dedups.
    fn close(&self, mut positions: Vec<Position>) -> MatchState {
        let mut i = 0;
        while i < positions.len() {
            let position = positions[i];
            let components = &self.patterns[position.pattern].components;
            if matches!(self.component(position), Some(Component::AnyDepth))
                && position.component + 1 < components.len()
            {
                positions.push(position.advanced());
            }
            i += 1;
        }
        positions.sort_unstable();
        positions.dedup();
        MatchState { positions }
    }
}

impl Position {
    fn advanced(self) -> Position {
        Position {
            component: self.component + 1,
            ..self
        }
    }
}

/// Compiles one pattern.
fn compile(pattern: &str, case_insensitive: bool) -> std::result::Result<Pattern, String> {
    let (negated, pattern) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let trimmed = pattern.trim_end_matches('/');
    let (anchored, body) = match trimmed.strip_prefix('/') {
        Some(body) => (true, body),
        None => (false, trimmed),
    };
    // `/`, or nothing, is the root: everything is below it (globset reads
    // the `**/` it becomes as `**`).
    if body.is_empty() {
        return Ok(Pattern {
            components: vec![Component::AnyDepth],
            negated,
            directories_only: false,
        });
    }
    // An anchored pattern's leading `/` is the one that follows the root's
    // empty name; an unanchored one may start anywhere, even at that name
    // (`*/b` matches `/b`, as `*` matches the empty name).
    let mut texts = vec![String::new()];
    if !anchored {
        texts[0] = "**".into();
    }
    texts.extend(split(body)?);
    let components = texts
        .iter()
        .map(|text| compile_component(text, case_insensitive))
        .collect::<std::result::Result<_, _>>()?;
    Ok(Pattern {
        components,
        negated,
        directories_only: trimmed.len() < pattern.len(),
    })
}

/// Compiles one component: `**`, or a glob over one name.
fn compile_component(text: &str, case_insensitive: bool) -> std::result::Result<Component, String> {
    if text == "**" {
        return Ok(Component::AnyDepth);
    }
    let glob = GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(true)
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Component::Name(glob.compile_matcher()))
}

/// Splits a pattern at each `/` (or `\/`, which globset also takes for a
/// separator) outside a class, the way globset's parser reads it: in a
/// class, `]` first (after `!` or `^`) is a member and `\` is no escape.
/// Anything globset would refuse is left in the component, for globset to
/// name the fault.
fn split(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut components = Vec::new();
    let mut current = String::new();
    let mut braces = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let separator = c == '/' || (c == '\\' && chars.get(i + 1) == Some(&'/'));
        if separator {
            if braces > 0 {
                return Err("a `/` inside `{...}` is not supported".into());
            }
            components.push(std::mem::take(&mut current));
            i += if c == '/' { 1 } else { 2 };
            continue;
        }
        let end = match c {
            '\\' => (i + 2).min(chars.len()),
            '[' => class_end(&chars, i),
            _ => i + 1,
        };
        match c {
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            _ => {}
        }
        current.extend(&chars[i..end]);
        i = end;
    }
    components.push(current);
    Ok(components)
}

/// Where the class opened at `chars[start]` ends (just past its `]`), or
/// the end of the pattern if it is never closed.
fn class_end(chars: &[char], start: usize) -> usize {
    let mut i = start + 1;
    if matches!(chars.get(i), Some('!' | '^')) {
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        i += 1;
    }
    match chars[i.min(chars.len())..].iter().position(|&c| c == ']') {
        Some(offset) => i + offset + 1,
        None => chars.len(),
    }
}

#[cfg(test)]
mod tests;
