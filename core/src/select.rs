//! Naming snapshots and times, as every command that takes a snapshot
//! accepts them (SPEC.md §26): a full id or unique prefix, `latest`,
//! `latest~N`, or `@TIME`, the newest snapshot taken at or before TIME;
//! `latest` and `@TIME` choose among the snapshots a filter admits.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};

use crate::error::{Error, Result};
use crate::forget::SnapshotFilter;
use crate::id::SnapshotId;
use crate::object::snapshot::Snapshot;
use crate::repository::Repository;

/// What a snapshot reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A full id or a unique prefix of one.
    Id(String),
    /// The newest snapshot (0), or the one `n` before it.
    Latest(usize),
    /// The newest snapshot taken at or before this time (ns since the
    /// epoch).
    At(i64),
}

impl Selector {
    /// Parses a reference; `now_ns` and `tz` give relative and local times
    /// their meaning.
    pub fn parse<Tz: TimeZone>(text: &str, now_ns: i64, tz: &Tz) -> Result<Selector> {
        let bad = |reason: String| Error::BadSnapshotReference {
            reference: text.to_string(),
            reason,
        };
        if text == "latest" {
            return Ok(Selector::Latest(0));
        }
        if let Some(n) = text.strip_prefix("latest~") {
            return n
                .parse()
                .map(Selector::Latest)
                .map_err(|_| bad("expected latest~N, N a count".into()));
        }
        if let Some(time) = text.strip_prefix('@') {
            return parse_time(time, now_ns, tz).map(Selector::At).map_err(bad);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Selector::Id(text.to_ascii_lowercase()));
        }
        Err(bad(
            "expected an id or id prefix, latest, latest~N or @TIME".into(),
        ))
    }
}

/// The snapshot `reference` names. `latest`, `latest~N` and `@TIME`
/// choose among the snapshots `filter` admits, and fail if any snapshot
/// cannot be read (its time is unknown: it might be the one meant); an id
/// names one snapshot whatever the filter.
pub fn select<Tz: TimeZone>(
    repository: &Repository,
    reference: &str,
    filter: &SnapshotFilter,
    now_ns: i64,
    tz: &Tz,
) -> Result<(SnapshotId, Snapshot)> {
    // latest~N is the Nth from the end; @TIME the last at or before it.
    let (back, before) = match Selector::parse(reference, now_ns, tz)? {
        Selector::Id(prefix) => return repository.resolve_snapshot(&prefix),
        Selector::Latest(n) => (n, i64::MAX),
        Selector::At(time) => (0, time),
    };
    let mut list = repository.snapshots()?;
    if !list.damaged.is_empty() {
        return Err(Error::LatestUnknown {
            error: Box::new(list.damaged.remove(0)),
        });
    }
    let chosen = list
        .snapshots
        .into_iter()
        .filter(|(_, s)| filter.admits(s) && s.time_ns <= before)
        .rev()
        .nth(back);
    chosen.ok_or_else(|| Error::SnapshotNotFound {
        reference: reference.to_string(),
    })
}

/// Splits `SNAPSHOT:PATH` into the snapshot and the path (none if there
/// is no colon, or nothing after it). A time may contain colons
/// (`@2024-05-01 12:00`), so for `@TIME` the path starts at the first
/// `:/`.
pub fn split_path(reference: &str) -> (&str, Option<&str>) {
    let at = if reference.starts_with('@') {
        reference.find(":/")
    } else {
        reference.find(':')
    };
    match at {
        Some(at) if at + 1 < reference.len() => (&reference[..at], Some(&reference[at + 1..])),
        Some(at) => (&reference[..at], None),
        None => (reference, None),
    }
}

/// Parses a time: RFC 3339 (`2024-05-01T12:00:00Z`), `YYYY-MM-DD`,
/// `YYYY-MM-DD HH:MM[:SS]` in `tz`, or a span before `now_ns`: `2h`,
/// `1d12h`, `3 days ago`, `90 min`. Errors with the reason.
pub fn parse_time<Tz: TimeZone>(
    text: &str,
    now_ns: i64,
    tz: &Tz,
) -> std::result::Result<i64, String> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return time.timestamp_nanos_opt().ok_or_else(out_of_range);
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        });
    if let Some(naive) = naive {
        return tz
            .from_local_datetime(&naive)
            .earliest()
            .ok_or_else(|| format!("{text}: no such local time"))?
            .timestamp_nanos_opt()
            .ok_or_else(out_of_range);
    }
    let span = parse_span(text.strip_suffix("ago").unwrap_or(text).trim()).ok_or_else(|| {
        format!(
            "{text:?}: expected RFC 3339, YYYY-MM-DD, \"YYYY-MM-DD HH:MM[:SS]\", or a span like 2h, 3d or \"3 days ago\""
        )
    })?;
    now_ns.checked_sub(span).ok_or_else(out_of_range)
}

fn out_of_range() -> String {
    "a time between 1678 and 2262".into()
}

/// Nanoseconds in a span of numbers each followed by a unit (`1d12h`,
/// `3 days`, `90 min`). Months are 30 days, years 365.
fn parse_span(text: &str) -> Option<i64> {
    const SECOND: i64 = 1_000_000_000;
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..letters] {
            "s" | "sec" | "secs" | "second" | "seconds" => SECOND,
            "m" | "min" | "mins" | "minute" | "minutes" => 60 * SECOND,
            "h" | "hour" | "hours" => 3600 * SECOND,
            "d" | "day" | "days" => 86_400 * SECOND,
            "w" | "week" | "weeks" => 7 * 86_400 * SECOND,
            "mo" | "month" | "months" => 30 * 86_400 * SECOND,
            "y" | "year" | "years" => 365 * 86_400 * SECOND,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit)?)?;
        rest = rest[letters..].trim_start();
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    const HOUR: i64 = 3_600_000_000_000;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn references_parse_to_what_they_name() {
        let now = at("2024-05-10T12:00:00Z");
        let parse = |t: &str| Selector::parse(t, now, &Utc);
        assert_eq!(parse("latest").unwrap(), Selector::Latest(0));
        assert_eq!(parse("latest~3").unwrap(), Selector::Latest(3));
        assert_eq!(parse("1A2b").unwrap(), Selector::Id("1a2b".into()));
        assert_eq!(
            parse("@2024-05-01").unwrap(),
            Selector::At(at("2024-05-01T00:00:00Z"))
        );
        assert_eq!(parse("@2h").unwrap(), Selector::At(now - 2 * HOUR));
        for bad in [
            "latest~",
            "latest~x",
            "@",
            "@yesterdayish",
            "",
            "xyz",
            "@3 parsecs ago",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_absolute_local_and_relative() {
        let now = at("2024-05-10T12:00:00Z");
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(
            parse_time("2024-05-01T10:00:00+02:00", now, &Utc),
            Ok(at("2024-05-01T08:00:00Z"))
        );
        assert_eq!(
            parse_time("2024-05-01 10:00", now, &plus2),
            Ok(at("2024-05-01T08:00:00Z"))
        );
        assert_eq!(
            parse_time("2024-05-01 10:00:30", now, &Utc),
            Ok(at("2024-05-01T10:00:30Z"))
        );
        assert_eq!(parse_time("3 days ago", now, &Utc), Ok(now - 72 * HOUR));
        assert_eq!(parse_time("1d12h", now, &Utc), Ok(now - 36 * HOUR));
        assert_eq!(parse_time("90 min", now, &Utc), Ok(now - 3 * HOUR / 2));
        assert!(parse_time("99999999999y", now, &Utc).is_err());
    }

    #[test]
    fn a_path_follows_the_first_colon_or_for_a_time_the_first_colon_slash() {
        assert_eq!(split_path("1a2b:/etc/hosts"), ("1a2b", Some("/etc/hosts")));
        assert_eq!(split_path("latest"), ("latest", None));
        assert_eq!(split_path("latest:"), ("latest", None));
        assert_eq!(
            split_path("@2024-05-01 12:00:/etc"),
            ("@2024-05-01 12:00", Some("/etc"))
        );
        assert_eq!(split_path("@2024-05-01 12:00"), ("@2024-05-01 12:00", None));
    }
}
