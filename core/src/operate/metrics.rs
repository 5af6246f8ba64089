//! The OpenMetrics text a run leaves for node_exporter's textfile
//! collector (or any scraper): per profile and step, when it last ran,
//! when it last succeeded, how long it took and what it counted.

use std::fmt::Write;

use super::state::{Outcome, ProfileState, Step};

/// A metric family: its name, help and the samples of every profile.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

/// The OpenMetrics text for `profiles` (name and state, each once).
pub fn render(profiles: &[(&str, &ProfileState)]) -> String {
    let mut families = vec![
        family(
            "cairn_run_timestamp_seconds",
            "When the profile's last run started.",
        ),
        family(
            "cairn_run_duration_seconds",
            "How long the profile's last run took.",
        ),
        family(
            "cairn_run_success",
            "1 if no step of the last run failed (a degraded run counts), else 0.",
        ),
        family(
            "cairn_run_degraded",
            "1 if the last run backed up to the secondary repository, else 0.",
        ),
        family("cairn_step_timestamp_seconds", "When the step last ran."),
        family(
            "cairn_step_success_timestamp_seconds",
            "When the step last ran without failing.",
        ),
        family(
            "cairn_step_duration_seconds",
            "How long the step took when it last ran.",
        ),
        family(
            "cairn_step_success",
            "1 if the step did not fail when it last ran, else 0.",
        ),
        family("cairn_backup_read_bytes", "Bytes the last backup read."),
        family(
            "cairn_backup_added_bytes",
            "Bytes the last backup added to the repository.",
        ),
        family("cairn_backup_files", "Files in the last backup's snapshot."),
        family(
            "cairn_profile_snapshots",
            "Snapshots of the profile kept by its last retention step.",
        ),
        family(
            "cairn_repository_packs",
            "Packs in the repository at the last check.",
        ),
        family("cairn_check_errors", "Errors the last check found."),
        family(
            "cairn_repository_snapshots",
            "Snapshots in the repository at the last check.",
        ),
        family(
            "cairn_repository_stored_bytes",
            "Bytes of the blobs in the repository's packs at the last check.",
        ),
    ];
    for (profile, state) in profiles {
        let labels = format!("profile=\"{}\"", escape(profile));
        let mut put = |family: usize, labels: &str, value: f64| {
            families[family].samples.push((labels.to_string(), value));
        };
        if let Some(run) = &state.last_run {
            put(0, &labels, seconds(run.started_ns));
            put(1, &labels, run.duration_ns as f64 / 1e9);
            put(
                2,
                &labels,
                f64::from(u8::from(run.outcome != Outcome::Failed)),
            );
            put(
                3,
                &labels,
                f64::from(u8::from(run.outcome == Outcome::Degraded)),
            );
            // One sample per step: of a backup tried twice (the primary,
            // then the secondary) the last counts.
            let mut last: Vec<&super::state::StepRecord> = Vec::new();
            for step in run.steps.iter().filter(|s| s.outcome != Outcome::Skipped) {
                last.retain(|s| s.step != step.step);
                last.push(step);
            }
            for step in last {
                let step_labels = format!("{labels},step=\"{}\"", step.step.name());
                put(4, &step_labels, seconds(step.started_ns));
                put(6, &step_labels, step.duration_ns as f64 / 1e9);
                put(
                    7,
                    &step_labels,
                    f64::from(u8::from(step.outcome != Outcome::Failed)),
                );
            }
        }
        for (step, record) in &state.last_success {
            let step_labels = format!("{labels},step=\"{}\"", step.name());
            put(5, &step_labels, seconds(record.started_ns));
        }
        let count = |step: Step, key: &str| {
            state
                .last_success
                .get(&step)
                .and_then(|r| r.counts.get(key))
                .map(|&n| n as f64)
        };
        for (family, step, key) in [
            (8, Step::Backup, "bytes_read"),
            (9, Step::Backup, "bytes_added"),
            (10, Step::Backup, "files"),
            (11, Step::Forget, "snapshots_kept"),
            (12, Step::Check, "packs"),
            (14, Step::Check, "snapshots"),
            (15, Step::Check, "stored_bytes"),
        ] {
            if let Some(value) = count(step, key) {
                put(family, &labels, value);
            }
        }
        if let Some(check) = state.last(Step::Check) {
            let errors = check.counts.get("errors").copied().unwrap_or(0);
            put(13, &labels, errors as f64);
        }
    }
    let mut text = String::new();
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(text, "# TYPE {} gauge", family.name);
        let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
        for (labels, value) in &family.samples {
            let _ = writeln!(text, "{}{{{labels}}} {value}", family.name);
        }
    }
    text.push_str("# EOF\n");
    text
}

fn family(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        samples: Vec::new(),
    }
}

fn seconds(ns: i64) -> f64 {
    ns as f64 / 1e9
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::super::state::{RunRecord, StepRecord};
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_run_becomes_one_sample_per_profile_and_step() {
        let backup = StepRecord {
            step: Step::Backup,
            outcome: Outcome::Ok,
            exit_code: Some(0),
            started_ns: 2_000_000_000,
            duration_ns: 500_000_000,
            repository: "/r".into(),
            summary: String::new(),
            error: None,
            counts: BTreeMap::from([("bytes_added".to_string(), 42)]),
            snapshot: None,
        };
        let mut state = ProfileState::default();
        state.record(RunRecord {
            profile: "home".into(),
            started_ns: 1_000_000_000,
            duration_ns: 3_000_000_000,
            outcome: Outcome::Ok,
            steps: vec![backup],
        });
        let text = render(&[("home", &state)]);
        assert!(
            text.contains("cairn_run_timestamp_seconds{profile=\"home\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("cairn_step_duration_seconds{profile=\"home\",step=\"backup\"} 0.5\n")
        );
        assert!(text.contains("cairn_backup_added_bytes{profile=\"home\"} 42\n"));
        assert!(!text.contains("cairn_check_errors"), "no check ran");
        assert!(text.ends_with("# EOF\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
