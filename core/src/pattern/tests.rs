//! The matcher against globset on whole paths, and the dialect's rules.

use super::*;
use globset::{GlobSet, GlobSetBuilder};

/// The whole-path matcher restore used before: globset on the full
/// path, `**/` prepended to unanchored patterns.
fn whole_path(pattern: &str) -> GlobSet {
    let trimmed = pattern.trim_end_matches('/');
    let full = if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("**/{trimmed}")
    };
    let glob = GlobBuilder::new(&full)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .unwrap();
    let mut builder = GlobSetBuilder::new();
    builder.add(glob);
    builder.build().unwrap()
}

/// The state of an absolute path, stepped name by name from the root.
fn state_of(patterns: &Patterns, path: &[u8]) -> MatchState {
    patterns.state_of(Path::new(OsStr::from_bytes(path)))
}

fn selects(patterns: &[&str], path: &[u8], is_dir: bool) -> bool {
    let owned: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    let patterns = Patterns::new(&owned, &[]).unwrap();
    patterns.is_match(&state_of(&patterns, path), is_dir)
}

fn matches(pattern: &str, path: &[u8]) -> bool {
    let patterns = Patterns::new(&[pattern.to_string()], &[]).unwrap();
    patterns.is_match(&state_of(&patterns, path), true)
}

const PATTERNS: &[&str] = &[
    "a",
    "/a",
    "a/b",
    "/a/b",
    "/a/b/",
    "dir/",
    "*.txt",
    "/dir/*.txt",
    "/*/b",
    "**/foo.txt",
    "**/**/foo.txt",
    "/**/foo.txt",
    "/**",
    "**",
    "a/**",
    "/a/**",
    "/a/**/**",
    "/a/**/b",
    "a/**/b/**/c",
    "**a",
    "a**",
    "/a**/b",
    "?",
    "/?",
    "a?",
    "???",
    "[ab]",
    "[!a]",
    "[^a]",
    "[a-c]*",
    "[]]",
    "/[!]]x",
    "\\*",
    "\\[x\\]",
    "a\\/b",
    "\\/a",
    "\\/a/b",
    "\\/**",
    "a//b",
    "*/b",
    "*/*",
    "{,x}/a",
    "/*/b",
    "/\\/a",
    "\\a",
    "{a,b}",
    "*.{txt,md}",
    "/{dir,a}/*",
    "é",
    "*é*",
    "",
    "/",
];

const PATHS: &[&[u8]] = &[
    b"/a",
    b"/b",
    b"/c",
    b"/ab",
    b"/ba",
    b"/aa",
    b"/abc",
    b"/a/b",
    b"/a/b/c",
    b"/a/x/b",
    b"/a/x/y/b",
    b"/a/b/x/c",
    b"/x/a",
    b"/x/a/b",
    b"/x/a/b/c",
    b"/foo.txt",
    b"/dir",
    b"/dir/foo.txt",
    b"/dir/sub/foo.txt",
    b"/dir/read.md",
    b"/dir/x",
    b"/x.txt/y",
    b"/*",
    b"/[x]",
    b"/x",
    b"/]",
    b"/]x",
    b"/\xc3\xa9",
    b"/x\xc3\xa9y",
    b"/a\xff",
    b"/\xff/b",
    b"/\xff",
    b"/d/\xfe\xff.txt",
    b"/\xff\xfe\xfd",
];

#[test]
fn agrees_with_globset_on_whole_paths() {
    for pattern in PATTERNS {
        let whole = whole_path(pattern);
        for path in PATHS {
            let expected = whole.is_match(Path::new(OsStr::from_bytes(path)));
            assert_eq!(
                matches(pattern, path),
                expected,
                "pattern {pattern:?}, path {:?}",
                String::from_utf8_lossy(path)
            );
        }
    }
}

#[test]
fn a_trailing_double_star_needs_a_component() {
    assert!(!matches("/a/**", b"/a"));
    assert!(matches("/a/**", b"/a/b"));
    assert!(matches("/a/**", b"/a/b/c/d"));
    assert!(matches("/a/**/b", b"/a/b"));
    assert!(matches("/**", b"/a"));
}

#[test]
fn an_unanchored_pattern_may_match_the_root_name() {
    assert!(matches("*/b", b"/b"));
    assert!(matches("*/b", b"/x/b"));
    assert!(!matches("/*/b", b"/b"));
    assert!(matches("\\/a", b"/a"));
    assert!(!matches("\\/a", b"/x/a"));
}

#[test]
fn stars_and_classes_stay_within_one_name() {
    assert!(!matches("/*", b"/a/b"));
    assert!(!matches("/a?b", b"/a/b"));
    // Whole-path globset would match here: its classes take `/`.
    assert!(!matches("a[/]b", b"/a/b"));
    assert!(!matches("a[!x]b", b"/a/b"));
    assert!(!matches("[^a]b", b"/b"));
    assert!(matches("[^a]b", b"/xb"));
    assert!(matches("a[!x]b", b"/ayb"));
}

#[test]
fn a_question_mark_takes_one_byte() {
    // Names are bytes: `é` is two of them.
    assert!(!matches("/?", "/é".as_bytes()));
    assert!(matches("/??", "/é".as_bytes()));
    assert!(matches("/?", b"/\xff"));
}

#[test]
fn the_top_matches_from_the_snapshot_and_from_the_restore() {
    let patterns =
        Patterns::new(&["/old".to_string(), "/src/docs/a.txt".to_string()], &[]).unwrap();
    let top = patterns.top_state(Path::new("/src/docs"));
    // `/old` in the restore, `/src/docs/old` in the snapshot.
    assert!(patterns.is_match(&patterns.descend(&top, b"old"), false));
    assert!(patterns.is_match(&patterns.descend(&top, b"a.txt"), false));
    assert!(!patterns.is_match(&patterns.descend(&top, b"b.txt"), false));
}

#[test]
fn anchored_patterns_die_off_the_path() {
    let patterns = Patterns::new(&["/a/b".to_string()], &[]).unwrap();
    let top = patterns.top_state(Path::new("/"));
    let a = patterns.descend(&top, b"a");
    assert!(patterns.can_match_below(&a));
    let x = patterns.descend(&top, b"x");
    assert!(!patterns.can_match_below(&x));
    assert_eq!(x, MatchState::default());
    let b = patterns.descend(&a, b"b");
    assert!(patterns.is_match(&b, false));
    assert!(!patterns.can_match_below(&b));
}

#[test]
fn states_do_not_grow_with_depth() {
    // What lets restore remember a subtree by (tree, state): walking
    // down a chain leaves the same state at every level.
    let patterns = Patterns::new(&["nomatch".to_string(), "/x/**/y".to_string()], &[]).unwrap();
    let mut state = state_of(&patterns, b"/x/d");
    let first = state.clone();
    for _ in 0..1000 {
        state = patterns.descend(&state, b"d");
        assert_eq!(state, first);
    }
    assert!(patterns.is_match(&patterns.descend(&state, b"y"), false));
    assert!(patterns.is_match(&patterns.descend(&state, b"nomatch"), false));
}

#[test]
fn several_patterns_match_together() {
    let patterns = Patterns::new(&["*.md".to_string(), "/a/b".to_string()], &[]).unwrap();
    assert!(patterns.is_match(&state_of(&patterns, b"/x/y.md"), false));
    assert!(patterns.is_match(&state_of(&patterns, b"/a/b"), false));
    assert!(!patterns.is_match(&state_of(&patterns, b"/a/c"), false));
    assert!(Patterns::new(&[], &[]).unwrap().is_empty());
}

#[test]
fn bad_patterns_are_errors_that_name_them() {
    for bad in ["[", "a\\", "{a", "a}", "[z-a]", "x/{a/b,c}", "{a\\/b}"] {
        let error = Patterns::new(&["ok".to_string(), bad.to_string()], &[]).unwrap_err();
        assert!(
            matches!(&error, Error::InvalidPattern { pattern, .. } if pattern == bad),
            "{bad:?}: {error}"
        );
    }
}

#[test]
fn bad_patterns_agree_with_globset() {
    // Every pattern globset refuses on the whole path, this refuses too.
    for pattern in ["[", "a\\", "{a", "a}", "[z-a]", "a/[b", "[a/b", "x/{"] {
        let trimmed = format!("**/{pattern}");
        assert!(GlobBuilder::new(&trimmed)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .is_err());
        assert!(
            Patterns::new(&[pattern.to_string()], &[]).is_err(),
            "{pattern:?}"
        );
    }
}

#[test]
fn the_last_matching_pattern_decides_and_negation_takes_back() {
    assert!(!selects(&["*.txt", "!keep.txt"], b"/d/keep.txt", false));
    assert!(selects(&["*.txt", "!keep.txt"], b"/d/other.txt", false));
    // A later positive pattern wins over an earlier negation.
    assert!(selects(&["!keep.txt", "*.txt"], b"/d/keep.txt", false));
    // A negation alone selects nothing.
    assert!(!selects(&["!*.txt"], b"/d/a.txt", false));
    // `\!` is a literal `!`.
    assert!(selects(&["\\!x"], b"/d/!x", false));
    assert!(!selects(&["\\!x"], b"/d/x", false));
}

#[test]
fn a_trailing_slash_matches_directories_only() {
    assert!(selects(&["cache/"], b"/home/u/cache", true));
    assert!(!selects(&["cache/"], b"/home/u/cache", false));
    assert!(selects(&["cache"], b"/home/u/cache", false));
    assert!(selects(&["/home/*/cache/"], b"/home/u/cache", true));
    // `/` alone is the root: it selects everything.
    assert!(selects(&["/"], b"/a/b", false));
    // A negation for directories leaves files as the others decided.
    assert!(selects(&["x*", "!x*/"], b"/a/xfile", false));
    assert!(!selects(&["x*", "!x*/"], b"/a/xdir", true));
}

#[test]
fn case_can_be_ignored() {
    let patterns = Patterns::new(&[], &["*.iso".to_string()]).unwrap();
    assert!(patterns.is_match(&state_of(&patterns, b"/d/DISK.ISO"), false));
    let patterns = Patterns::new(&["*.iso".to_string()], &[]).unwrap();
    assert!(!patterns.is_match(&state_of(&patterns, b"/d/DISK.ISO"), false));
    // Case-insensitive patterns come last: one can take back the others.
    let patterns = Patterns::new(&["*.iso".to_string()], &["!keep.ISO".to_string()]).unwrap();
    assert!(!patterns.is_match(&state_of(&patterns, b"/d/Keep.iso"), false));
    assert!(patterns.is_match(&state_of(&patterns, b"/d/other.iso"), false));
}
