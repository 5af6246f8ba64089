//! Retention policies (SPEC.md §22): which snapshots of one group to keep,
//! with restic's semantics, so that a crontab moved from restic keeps the
//! same snapshots.
//!
//! Snapshots are taken newest first. `--keep-last N` keeps the N newest;
//! `--keep-<period> N` keeps the newest snapshot of each of the last N
//! periods (hour, day, ISO week, month, year, in local time) that hold a
//! snapshot; while a count is left over at the oldest snapshot, that one is
//! kept too ("oldest …"), so the history kept is as long as allowed.
//! `--keep-within D` keeps everything newer than the newest snapshot (that
//! is not in the future) minus D; `--keep-within-<period> D` keeps, within
//! D, the newest snapshot of every period. `--keep-tag` keeps snapshots
//! carrying all the tags of one of its lists. A snapshot is kept if any
//! rule keeps it, and the reasons name every rule that did.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone, Timelike, Utc};

/// How many snapshots or periods a `--keep-last` or `--keep-<period>`
/// rule keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepCount {
    /// The newest N (0: the rule is off).
    Last(u32),
    /// All of them (`-1` or `unlimited`).
    All,
}

impl Default for KeepCount {
    fn default() -> Self {
        KeepCount::Last(0)
    }
}

impl KeepCount {
    fn is_on(self) -> bool {
        self != KeepCount::Last(0)
    }
}

/// A span counted back in calendar units, as `1y2m3d4h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionSpan {
    /// Years.
    pub years: i32,
    /// Months.
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Hours.
    pub hours: i32,
}

/// Why a retention span was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpanError {
    /// A unit without a number before it, or the text is empty.
    #[error("expected a number before each unit")]
    NoNumber,
    /// A number without a unit after it.
    #[error("no unit after {0} (use y, m, d or h)")]
    NoUnit(i64),
    /// A unit other than y, m, d, h.
    #[error("unknown unit {0:?} (use y, m, d or h)")]
    UnknownUnit(char),
    /// A number too large.
    #[error("{0} is too large")]
    TooLarge(String),
}

impl RetentionSpan {
    /// Parses `6y5m234d37h`: numbers each followed by a unit (y, m, d, h),
    /// in any order; a later one of a unit replaces an earlier one.
    pub fn parse(text: &str) -> Result<RetentionSpan, SpanError> {
        let mut span = RetentionSpan::default();
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(SpanError::NoNumber);
        }
        while !rest.is_empty() {
            let negative = rest.starts_with('-');
            let digits_start = usize::from(negative);
            let digits_len = rest[digits_start..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits_len == 0 {
                return Err(SpanError::NoNumber);
            }
            let number_text = &rest[..digits_start + digits_len];
            let number: i32 = number_text
                .parse()
                .map_err(|_| SpanError::TooLarge(number_text.to_string()))?;
            rest = &rest[digits_start + digits_len..];
            let Some(unit) = rest.chars().next() else {
                return Err(SpanError::NoUnit(number.into()));
            };
            match unit {
                'y' => span.years = number,
                'm' => span.months = number,
                'd' => span.days = number,
                'h' => span.hours = number,
                other => return Err(SpanError::UnknownUnit(other)),
            }
            rest = &rest[unit.len_utf8()..];
        }
        Ok(span)
    }

    /// Whether every part is zero: the rule is off.
    pub fn is_zero(&self) -> bool {
        *self == RetentionSpan::default()
    }

    /// The instant this span before `t`, counted in `t`'s local calendar:
    /// years, months and days first (a day past the end of a month rolls
    /// into the next, as restic's Go does), then hours.
    fn before<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Utc>> {
        let local = t.naive_local();
        let months = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = i32::try_from(months.div_euclid(12)).ok()?;
        let month = u32::try_from(months.rem_euclid(12)).ok()? + 1;
        let first = NaiveDate::from_ymd_opt(year, month, 1)?;
        let date = first.checked_add_signed(chrono::Duration::days(
            i64::from(local.day()) - 1 - i64::from(self.days),
        ))?;
        let moved = date.and_time(local.time());
        // Across a daylight-saving change the wall time may not exist or
        // exist twice: keep the offset the snapshot had.
        let instant = match t.timezone().from_local_datetime(&moved).earliest() {
            Some(at) => at.with_timezone(&Utc),
            None => {
                let offset = chrono::Duration::seconds(t.offset().fix().local_minus_utc().into());
                moved.and_utc() - offset
            }
        };
        instant.checked_sub_signed(chrono::Duration::hours(i64::from(self.hours)))
    }
}

impl fmt::Display for RetentionSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Which snapshots of a group to keep; everything else is removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// The newest N snapshots.
    pub last: KeepCount,
    /// The newest snapshot of each of the last N hours.
    pub hourly: KeepCount,
    /// ... days.
    pub daily: KeepCount,
    /// ... ISO weeks.
    pub weekly: KeepCount,
    /// ... months.
    pub monthly: KeepCount,
    /// ... years.
    pub yearly: KeepCount,
    /// Everything within this span of the newest snapshot.
    pub within: RetentionSpan,
    /// The newest snapshot of every hour within this span.
    pub within_hourly: RetentionSpan,
    /// ... of every day.
    pub within_daily: RetentionSpan,
    /// ... of every ISO week.
    pub within_weekly: RetentionSpan,
    /// ... of every month.
    pub within_monthly: RetentionSpan,
    /// ... of every year.
    pub within_yearly: RetentionSpan,
    /// Snapshots carrying every tag of one of these lists.
    pub tags: Vec<Vec<String>>,
}

impl KeepPolicy {
    /// Whether no rule is set: such a policy would keep nothing.
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }
}

/// What the policy decided for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether it is kept.
    pub keep: bool,
    /// The rules that kept it, as restic words them ("daily snapshot",
    /// "oldest monthly snapshot", "within 7d", "has tags [a, b]").
    pub reasons: Vec<String>,
}

/// The period a snapshot falls in, for one kind of rule.
#[derive(Clone, Copy)]
enum Period {
    /// Each snapshot its own (for `last`).
    Snapshot,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    /// A number that differs between two times exactly when they fall in
    /// different periods; `index` is the snapshot's place in the list.
    fn of<Tz: TimeZone>(self, t: &DateTime<Tz>, index: usize) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Period::Snapshot => index as i64,
            Period::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Day => (y * 100 + m) * 100 + d,
            Period::Week => {
                let week = t.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Period::Month => y * 100 + m,
            Period::Year => y,
        }
    }
}

/// Whether a rule keeps the snapshot in `period`, given the period of
/// the last one it kept (`last`, updated): the first met in each period,
/// and the oldest of the group while the rule is still on. Returns the
/// reason, `reason` or "oldest `reason`".
fn first_of_period(
    last: &mut Option<i64>,
    period: i64,
    is_oldest: bool,
    reason: &str,
) -> Option<String> {
    let new_period = *last != Some(period);
    if !new_period && !is_oldest {
        return None;
    }
    *last = Some(period);
    Some(if new_period {
        reason.to_string()
    } else {
        format!("oldest {reason}")
    })
}

/// Applies `policy` to one group's snapshots, given by time (nanoseconds
/// since the epoch) and tags, **newest first** (equal times: the one that
/// counts as newer first). `now_ns` says which snapshots are in the future
/// (they do not count as the newest for `within` rules); periods are
/// those of `zone`. Returns a verdict per snapshot, in the same order.
pub fn apply<Tz: TimeZone>(
    snapshots: &[(i64, &[String])],
    policy: &KeepPolicy,
    now_ns: i64,
    zone: &Tz,
) -> Vec<Verdict> {
    let times: Vec<DateTime<Tz>> = snapshots
        .iter()
        .map(|(ns, _)| zone.timestamp_nanos(*ns))
        .collect();
    // The newest snapshot not in the future; none at all means no cutoff.
    let newest = snapshots
        .iter()
        .map(|(ns, _)| *ns)
        .filter(|ns| *ns < now_ns)
        .max()
        .map(|ns| zone.timestamp_nanos(ns));
    let cutoff = |span: &RetentionSpan| -> Option<i64> {
        newest
            .as_ref()
            .and_then(|t| span.before(t))
            .and_then(|t| t.timestamp_nanos_opt())
    };
    struct Counted {
        left: KeepCount,
        period: Period,
        last: Option<i64>,
        reason: &'static str,
    }
    let mut counted = [
        (policy.last, Period::Snapshot, "last snapshot"),
        (policy.hourly, Period::Hour, "hourly snapshot"),
        (policy.daily, Period::Day, "daily snapshot"),
        (policy.weekly, Period::Week, "weekly snapshot"),
        (policy.monthly, Period::Month, "monthly snapshot"),
        (policy.yearly, Period::Year, "yearly snapshot"),
    ]
    .map(|(left, period, reason)| Counted {
        left,
        period,
        last: None,
        reason,
    });
    struct Within {
        span: RetentionSpan,
        cutoff: Option<i64>,
        period: Period,
        last: Option<i64>,
        reason: &'static str,
    }
    let mut within = [
        (policy.within_hourly, Period::Hour, "hourly within"),
        (policy.within_daily, Period::Day, "daily within"),
        (policy.within_weekly, Period::Week, "weekly within"),
        (policy.within_monthly, Period::Month, "monthly within"),
        (policy.within_yearly, Period::Year, "yearly within"),
    ]
    .map(|(span, period, reason)| Within {
        span,
        cutoff: cutoff(&span),
        period,
        last: None,
        reason,
    });
    let within_all = cutoff(&policy.within);
    let oldest = snapshots.len().saturating_sub(1);

    let mut verdicts = Vec::with_capacity(snapshots.len());
    for (index, ((ns, tags), time)) in snapshots.iter().zip(&times).enumerate() {
        let mut reasons = Vec::new();
        for wanted in &policy.tags {
            if wanted.iter().all(|tag| tags.contains(tag)) {
                reasons.push(format!("has tags [{}]", wanted.join(", ")));
            }
        }
        if !policy.within.is_zero() && within_all.is_none_or(|cutoff| *ns > cutoff) {
            reasons.push(format!("within {}", policy.within));
        }
        for rule in &mut counted {
            if !rule.left.is_on() {
                continue;
            }
            let period = rule.period.of(time, index);
            if let Some(reason) =
                first_of_period(&mut rule.last, period, index == oldest, rule.reason)
            {
                if let KeepCount::Last(n) = &mut rule.left {
                    *n -= 1;
                }
                reasons.push(reason);
            }
        }
        for rule in &mut within {
            if rule.span.is_zero() || rule.cutoff.is_some_and(|cutoff| *ns <= cutoff) {
                continue;
            }
            let period = rule.period.of(time, index);
            if let Some(reason) =
                first_of_period(&mut rule.last, period, index == oldest, rule.reason)
            {
                reasons.push(format!("{reason} {}", rule.span));
            }
        }
        verdicts.push(Verdict {
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    verdicts
}
