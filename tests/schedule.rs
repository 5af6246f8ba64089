//! `cairn schedule`: systemd units that `systemd-analyze verify` accepts,
//! crontab lines that keep the rest of the crontab, and `status` telling
//! the next run. Nothing is ever enabled on the machine running the tests:
//! units go to `--unit-dir`, lines to `--crontab FILE`.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::operate::{repository_lines, with_config, write_config};
use crate::util::{stderr, Env};

fn config(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_config(
        env,
        &format!(
            "[profile.home]\n{}sources = [{:?}]\n",
            repository_lines(env),
            src.display().to_string()
        ),
    )
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn units_for_a_profile_pass_systemd_analyze_and_are_listed_and_removed() {
    let env = Env::new();
    let config = config(&env);
    let units = env.path("units");
    let dir = units.to_str().unwrap();
    let out = with_config(
        &config,
        &[
            "schedule",
            "install",
            "home",
            "--at",
            "03:15",
            "--unit-dir",
            dir,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("next run"), "{}", stdout(&out));
    let service = fs::read_to_string(units.join("cairn-home.service")).unwrap();
    let timer = fs::read_to_string(units.join("cairn-home.timer")).unwrap();
    assert!(
        service.contains(&format!(
            "--config {} run home",
            fs::canonicalize(&config).unwrap().display()
        )),
        "{service}"
    );
    for expected in [
        "OnCalendar=*-*-* 03:15:00",
        "Persistent=true",
        "RandomizedDelaySec=900",
    ] {
        assert!(timer.contains(expected), "{expected} in {timer}");
    }
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.join("cairn-home.service"))
        .arg(units.join("cairn-home.timer"))
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(
        !stderr(&verified).contains("cairn-home"),
        "warnings: {}",
        stderr(&verified)
    );

    // Hourly, and with a calendar expression, replace the timer.
    let out = with_config(
        &config,
        &[
            "schedule",
            "install",
            "home",
            "--hourly",
            "--at",
            "00:05",
            "--unit-dir",
            dir,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let timer = fs::read_to_string(units.join("cairn-home.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* *:05:00"), "{timer}");
    let out = with_config(
        &config,
        &[
            "schedule",
            "install",
            "home",
            "--on",
            "Mon..Fri 22:00",
            "--unit-dir",
            dir,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = with_config(
        &config,
        &[
            "schedule",
            "install",
            "home",
            "--on",
            "someday",
            "--unit-dir",
            dir,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("someday"), "{}", stderr(&out));

    let out = with_config(&config, &["schedule", "list", "--unit-dir", dir]);
    assert_eq!(stdout(&out).trim(), "home: systemd, Mon..Fri 22:00");
    let out = with_config(&config, &["status"]);
    assert!(stdout(&out).contains("next run"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("not scheduled"), "{}", stdout(&out));

    let out = with_config(&config, &["schedule", "remove", "home", "--unit-dir", dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_dir(&units).unwrap().count(), 0);
    let out = with_config(&config, &["status"]);
    assert!(stdout(&out).contains("not scheduled"), "{}", stdout(&out));
    let out = with_config(&config, &["schedule", "remove", "home", "--unit-dir", dir]);
    assert_eq!(out.status.code(), Some(1));

    let out = with_config(&config, &["schedule", "install", "work", "--unit-dir", dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no profile \"work\""),
        "{}",
        stderr(&out)
    );
}

/// Checks a crontab line's five time fields and that its command exists.
fn assert_valid_cron_line(line: &str) {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (field, (low, high)) in fields.iter().zip(ranges) {
        if *field != "*" {
            let value: u32 = field
                .parse()
                .unwrap_or_else(|_| panic!("{field} in {line}"));
            assert!((low..=high).contains(&value), "{field} in {line}");
        }
    }
    assert!(
        Path::new(fields[5]).is_absolute() && Path::new(fields[5]).is_file(),
        "{line}"
    );
    assert_eq!(fields[6], "--config", "{line}");
    assert!(Path::new(fields[7]).is_file(), "{line}");
    assert_eq!(fields[8..10], ["--quiet", "run"], "{line}");
}

#[test]
fn a_crontab_line_is_added_replaced_and_removed_and_the_rest_kept() {
    let env = Env::new();
    let config = config(&env);
    let crontab = env.path("crontab");
    let file = crontab.to_str().unwrap();
    fs::write(
        &crontab,
        "MAILTO=ops@example.com\n0 4 * * * /usr/bin/true\n",
    )
    .unwrap();
    let out = with_config(
        &config,
        &[
            "schedule",
            "install",
            "home",
            "--cron",
            "--crontab",
            file,
            "--at",
            "02:30",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&crontab).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..2],
        ["MAILTO=ops@example.com", "0 4 * * * /usr/bin/true"]
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[2].starts_with("30 2 * * * "), "{text}");
    assert!(lines[2].ends_with(" run home # cairn:home"), "{text}");
    assert_valid_cron_line(lines[2]);

    let out = with_config(
        &config,
        &[
            "schedule",
            "install",
            "home",
            "--cron",
            "--crontab",
            file,
            "--hourly",
            "--at",
            "00:45",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&crontab).unwrap();
    assert_eq!(text.lines().count(), 3, "replaced, not added: {text}");
    assert!(text.contains("\n45 * * * * "), "{text}");
    let out = with_config(&config, &["schedule", "list", "--cron", "--crontab", file]);
    assert_eq!(stdout(&out).trim(), "home: cron, 45 * * * *");

    let out = with_config(
        &config,
        &[
            "schedule",
            "install",
            "home",
            "--cron",
            "--crontab",
            file,
            "--on",
            "Mon 03:00",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "--on conflicts with --cron");

    let out = with_config(
        &config,
        &["schedule", "remove", "home", "--cron", "--crontab", file],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(&crontab).unwrap(),
        "MAILTO=ops@example.com\n0 4 * * * /usr/bin/true\n"
    );
}
