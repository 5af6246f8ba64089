//! Nightly runs that look after themselves: profiles read from a
//! configuration file ([`config`]), their steps run in order ([`run`]),
//! what the runs leave for `status` and monitoring ([`state`],
//! [`metrics`]), and when they run ([`schedule`]).

pub mod config;
pub mod database;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod state;

use std::time::Duration;

/// Parses a duration: a number and `s`, `m`, `h` or `d` (a plain number
/// is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?}: expected a number and s, m, h or d");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    Ok(Duration::from_secs(number.saturating_mul(scale)))
}
