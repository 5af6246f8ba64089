//! `cairn run`, `config check` and `status`: profiles of a configuration
//! file run their steps, report each in a line, keep going past a failing
//! profile, fall back to the secondary, and leave metrics and a status.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::{stderr, Env};

/// The lines of a profile's repository table for `env`'s repository: the
/// location, a password file, the cache and the store's environment.
pub fn repository_lines(env: &Env) -> String {
    let password = env.path("password");
    fs::write(&password, "correct horse\n").unwrap();
    let mut lines = format!(
        "repository = {:?}\npassword-file = {:?}\ncache-dir = {:?}\n",
        env.location(),
        password.display().to_string(),
        env.cache.display().to_string()
    );
    let environment: Vec<String> = env
        .store_environment()
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect();
    if !environment.is_empty() {
        lines.push_str(&format!("environment = {{ {} }}\n", environment.join(", ")));
    }
    lines
}

/// Writes the configuration `text` beside `env`'s repository, with a state
/// directory of its own; returns the file.
pub fn write_config(env: &Env, text: &str) -> PathBuf {
    let path = env.path("config.toml");
    let state = env.path("state");
    fs::write(
        &path,
        format!("state-dir = {:?}\n{text}", state.display().to_string()),
    )
    .unwrap();
    path
}

/// Runs `cairn --config CONFIG ARGS`, with nothing of the test's own
/// repository in the environment: a profile must say everything.
pub fn with_config(config: &Path, args: &[&str]) -> Output {
    crate::util::bare_cairn()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn source(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), "alpha").unwrap();
    fs::write(src.join("sub/b.txt"), "beta").unwrap();
    src
}

fn lines(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_profile_runs_every_step_and_reports_each_in_a_line() {
    let (primary, secondary) = (Env::new(), Env::new());
    primary.init();
    secondary.init();
    let src = source(&primary);
    let hooks = primary.path("hooks.log");
    let config = write_config(
        &primary,
        &format!(
            r#"
[profile.home]
{primary_repo}sources = [{src:?}]
tags = ["nightly"]
metrics = {metrics:?}
[[profile.home.command]]
name = "greeting.txt"
run = "echo hello from a command"
[profile.home.retention]
keep-last = 2
prune = true
[profile.home.check]
read-data-days = 3
[profile.home.verify]
paths = ["/greeting.txt"]
command = "grep -q 'hello from a command' greeting.txt && test \"$CAIRN_PROFILE\" = home"
[profile.home.secondary]
{secondary_repo}
[profile.home.hooks]
before = "echo before $CAIRN_HOOK ${{CAIRN_PASSWORD_FILE:-none}} >> {hooks}"
after = "echo after $CAIRN_HOOK $CAIRN_STEP $CAIRN_EXIT_CODE >> {hooks}"
failure = "echo failure >> {hooks}"
"#,
            primary_repo = repository_lines(&primary),
            secondary_repo = repository_lines(&secondary),
            src = src.display().to_string(),
            metrics = primary.path("metrics/cairn.prom").display().to_string(),
            hooks = hooks.display(),
        ),
    );
    let out = with_config(&config, &["config", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(lines(&out).contains("1 profiles"), "{}", lines(&out));

    for round in 0..3 {
        fs::write(src.join("a.txt"), format!("alpha, round {round}")).unwrap();
        let out = with_config(&config, &["run"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = lines(&out);
        for step in [
            "before", "backup", "verify", "forget", "check", "copy", "after",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("home: {step}: ok"))),
                "no ok line for {step}:\n{text}"
            );
        }
        assert!(!text.contains("failure"), "{text}");
    }
    // Retention kept two snapshots of the three, on both repositories.
    assert_eq!(primary.snapshots().len(), 2);
    let copies = secondary.snapshots();
    assert_eq!(copies.len(), 2);
    assert!(
        copies.iter().all(|s| s["original"].is_string()),
        "each a copy"
    );
    assert!(copies.iter().all(|s| s["tags"][0] == "nightly"));
    let restored = secondary.restore("latest", "t", &[]);
    assert_eq!(
        fs::read_to_string(crate::util::restored(&restored, &src).join("a.txt")).unwrap(),
        "alpha, round 2"
    );
    assert_eq!(
        fs::read_to_string(restored.join("greeting.txt")).unwrap(),
        "hello from a command\n"
    );
    let log = fs::read_to_string(&hooks).unwrap();
    assert_eq!(log.matches("before before none").count(), 3, "{log}");
    assert_eq!(log.matches("after after copy 0").count(), 3, "{log}");

    let metrics = fs::read_to_string(primary.path("metrics/cairn.prom")).unwrap();
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    for expected in [
        "cairn_run_success{profile=\"home\"} 1",
        "cairn_step_success{profile=\"home\",step=\"copy\"} 1",
        "cairn_profile_snapshots{profile=\"home\"} 2",
        "cairn_repository_snapshots{profile=\"home\"} 2",
        "cairn_check_errors{profile=\"home\"} 0",
    ] {
        assert!(metrics.contains(expected), "{expected} in:\n{metrics}");
    }
    let stored: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cairn_repository_stored_bytes{profile=\"home\"} "))
        .expect("the repository's size")
        .parse()
        .unwrap();
    assert!(stored > 0.0, "{metrics}");

    let out = with_config(&config, &["status", "--max-age", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(lines(&out).contains("home: last run"), "{}", lines(&out));
    let out = with_config(&config, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["profile"], "home");
    assert_eq!(status[0]["last_run"]["outcome"], "ok");
    assert_eq!(status[0]["last_check"]["outcome"], "ok");
    assert!(status[0]["last_backup"]["snapshot"].is_string());
}

#[test]
fn a_failing_profile_does_not_stop_the_next_and_the_exit_code_says_so() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let failures = env.path("failures.log");
    let config = write_config(
        &env,
        &format!(
            r#"
[profile.broken]
{repo}sources = [{src:?}]
[[profile.broken.command]]
name = "dump.sql"
run = "sh -c 'echo half a dump; exit 7'"
[profile.broken.hooks]
failure = "echo $CAIRN_PROFILE $CAIRN_STEP $CAIRN_EXIT_CODE \"$CAIRN_ERROR\" >> {failures}"

[profile.fine]
{repo}sources = [{src:?}]
"#,
            repo = repository_lines(&env),
            src = src.display().to_string(),
            failures = failures.display(),
        ),
    );
    let out = with_config(&config, &["run", "broken", "fine"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = lines(&out);
    assert!(text.contains("broken: backup: failed"), "{text}");
    assert!(text.contains("fine: backup: ok"), "{text}");
    assert!(
        stderr(&out).contains("broken: backup: cairn: error:"),
        "the step's own error is passed on: {}",
        stderr(&out)
    );
    let logged = fs::read_to_string(&failures).unwrap();
    assert!(logged.starts_with("broken backup 1 "), "{logged}");
    assert!(logged.contains("dump.sql"), "{logged}");
    assert_eq!(env.snapshots().len(), 1, "only the fine profile saved one");

    let out = with_config(&config, &["status", "--max-age", "1h"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("broken"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("fine"), "{}", stderr(&out));

    let out = with_config(&config, &["run", "--json", "broken", "fine"]);
    assert_eq!(out.status.code(), Some(1));
    let runs: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", lines(&out)));
    assert_eq!(runs[0]["profile"], "broken");
    assert_eq!(runs[0]["outcome"], "failed");
    assert_eq!(runs[0]["steps"][0]["outcome"], "failed");
    assert_eq!(runs[0]["steps"][0]["exit_code"], 1);
    assert_eq!(runs[1]["profile"], "fine");
    assert_eq!(runs[1]["steps"][0]["step"], "backup");
    assert_eq!(runs[1]["steps"][0]["outcome"], "ok");

    let out = with_config(&config, &["run", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no profile \"nosuch\" (it has: broken, fine)"));
}

#[test]
fn an_unreachable_primary_falls_back_to_the_secondary_and_says_degraded() {
    let secondary = Env::new();
    secondary.init();
    let src = source(&secondary);
    let unmounted = secondary.path("unmounted-disk/repo");
    let password = secondary.path("password");
    let config = write_config(
        &secondary,
        &format!(
            r#"
[profile.laptop]
repository = {unmounted:?}
password-file = {password:?}
sources = [{src:?}]
[profile.laptop.retention]
keep-last = 1
[profile.laptop.secondary]
{repo}fallback = true
"#,
            unmounted = unmounted.display().to_string(),
            repo = repository_lines(&secondary),
            password = password.display().to_string(),
            src = src.display().to_string(),
        ),
    );
    let out = with_config(&config, &["run"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let text = lines(&out);
    assert!(text.contains("laptop: backup: failed"), "{text}");
    assert!(text.contains("laptop: backup: degraded"), "{text}");
    assert!(text.contains("laptop: forget: skipped"), "{text}");
    assert_eq!(secondary.snapshots().len(), 1);
    let out = with_config(&config, &["status", "--json", "--max-age", "1h"]);
    assert!(
        out.status.success(),
        "a degraded backup is a backup: {}",
        stderr(&out)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["last_run"]["outcome"], "degraded");
}

#[test]
fn config_check_names_the_file_line_and_key_of_each_mistake() {
    let env = Env::new();
    let src = env.path("src");
    for (text, expected) in [
        (
            format!(
                "[profile.a]\n{}sources = [{src:?}]\nkeep-daily = 7\n",
                repository_lines(&env)
            ),
            "unknown field `keep-daily`",
        ),
        (
            format!(
                "[profile.a]\n{}sources = [{src:?}]\n[profile.a.retention]\nkeep-last = \"two\"\n",
                repository_lines(&env)
            ),
            "in [profile.a.retention]",
        ),
        (
            format!(
                "[profile.a]\n{}[[profile.a.database]]\ntype = \"postgresql\"\n",
                repository_lines(&env)
            ),
            "needs `database`",
        ),
        ("[profile.a]\nrepository = \n".to_string(), "config.toml:3:"),
    ] {
        let config = write_config(&env, &text);
        let out = with_config(&config, &["config", "check"]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let error = stderr(&out);
        assert_eq!(error.trim_end().lines().count(), 1, "{error}");
        assert!(error.contains(&config.display().to_string()), "{error}");
        assert!(error.contains(expected), "{expected}: {error}");
    }
    let out = crate::util::bare_cairn()
        .env("XDG_CONFIG_HOME", env.path("nothing-here"))
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no configuration file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_store_that_does_not_answer_is_exit_14_and_a_profile_falls_back() {
    let secondary = Env::new();
    secondary.init();
    let src = source(&secondary);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("s3:http://127.0.0.1:{port}/backups");
    let out = crate::util::bare_cairn()
        .env("CAIRN_REPO", &nowhere)
        .env("CAIRN_PASSWORD", "pw")
        .env("AWS_ACCESS_KEY_ID", "GK0")
        .env("AWS_SECRET_ACCESS_KEY", "0")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let error = stderr(&out);
    assert_eq!(error.trim_end().lines().count(), 1, "{error}");
    assert!(error.contains("cannot reach the repository at"), "{error}");

    let password = secondary.path("password");
    let config = write_config(
        &secondary,
        &format!(
            r#"
[profile.office]
repository = {nowhere:?}
password-file = {password:?}
environment = {{ AWS_ACCESS_KEY_ID = "GK0", AWS_SECRET_ACCESS_KEY = "0" }}
sources = [{src:?}]
[profile.office.secondary]
{repo}fallback = true
copy = false
"#,
            repo = repository_lines(&secondary),
            password = password.display().to_string(),
            src = src.display().to_string(),
        ),
    );
    let out = with_config(&config, &["run"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        lines(&out).contains("office: backup: degraded"),
        "{}",
        lines(&out)
    );
    assert_eq!(secondary.snapshots().len(), 1);
}
