//! `cairn browse` in a real terminal: tmux runs it, keys are sent with
//! `send-keys`, and the screen is read with `capture-pane`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::Env;

/// A tmux server of the test's own, on a socket in its directory.
struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    /// Starts `cairn browse ARGS` in a 140×40 terminal.
    fn start(env: &Env, args: &[&str]) -> Terminal {
        let socket = env.path("tmux.sock");
        let cairn = assert_cmd::cargo::cargo_bin("cairn");
        let mut command = format!(
            "env -u CAIRN_REPO {} '{}' browse",
            env.shell_variables(),
            cairn.display()
        );
        for arg in args {
            command.push_str(&format!(" '{arg}'"));
        }
        let terminal = Terminal { socket };
        terminal.tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "140",
            "-y",
            "40",
            &command,
        ]);
        terminal
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.tmux(&["send-keys", "-t", "t", key]);
        }
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Waits until the screen shows `text`; panics with the screen if it
    /// does not within ten seconds.
    fn wait_for(&self, text: &str) -> String {
        self.wait_for_all(&[text])
    }

    /// Waits until the screen shows every one of `texts` at once: a frame
    /// may be captured while it is still being drawn.
    fn wait_for_all(&self, texts: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if texts.iter().all(|text| screen.contains(text)) {
                return screen;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!("waited for {texts:?}; the screen shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the program has quit and the session is gone.
    fn wait_for_exit(&self) {
        let start = Instant::now();
        while self.tmux(&["has-session", "-t", "t"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "browse did not quit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn backups(env: &Env) -> (PathBuf, Vec<String>) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::write(src.join("dir/sub/deep.txt"), b"deep").unwrap();
    let mut ids = Vec::new();
    for text in ["version one\n", "version two\nsecond line\n"] {
        fs::write(src.join("notes.txt"), text).unwrap();
        let summary = env.backup(&[&src], &[]);
        ids.push(summary["snapshot_id"].as_str().unwrap()[..8].to_string());
    }
    (src, ids)
}

#[test]
fn the_browser_walks_snapshots_directories_versions_and_restores() {
    let env = Env::new();
    let (src, ids) = backups(&env);
    let term = Terminal::start(&env, &[]);
    // Snapshots, newest first.
    let screen = term.wait_for_all(&["2 snapshots", &ids[0], &ids[1]]);
    let (newest, oldest) = (screen.find(&ids[1]), screen.find(&ids[0]));
    assert!(newest.unwrap() < oldest.unwrap(), "{screen}");
    // Into the newest; the source is one entry per level down from /.
    term.keys(&["Enter"]);
    term.wait_for(&format!("{}:/ ", ids[1]));
    let depth = src.components().count() - 1;
    for _ in 0..depth {
        term.keys(&["Enter"]);
    }
    term.wait_for_all(&[
        &format!("{}:{} ", ids[1], src.display()),
        "dir/",
        "notes.txt",
    ]);
    // Details and versions of notes.txt.
    term.keys(&["Down", "i"]);
    term.wait_for_all(&["in 2 snapshots", &ids[0], &ids[1], "12 B", "24 B"]);
    // Its text.
    term.keys(&["v"]);
    term.wait_for_all(&["second line", "version two"]);
    term.keys(&["q"]);
    term.wait_for("notes.txt");
    // Restore it into a directory typed in.
    let target = env.path("restored");
    term.keys(&["r"]);
    term.wait_for("restore to:");
    term.type_text(target.to_str().unwrap());
    term.keys(&["Enter"]);
    term.wait_for("restored ");
    assert_eq!(
        fs::read(target.join("notes.txt")).unwrap(),
        b"version two\nsecond line\n"
    );
    // Into dir/, back up, back to the snapshots, quit.
    term.keys(&["Up", "Enter"]);
    term.wait_for_all(&["sub/", &format!("{}/dir ", src.display())]);
    term.keys(&["Left"]);
    term.wait_for("notes.txt");
    term.keys(&["s"]);
    term.wait_for("2 snapshots");
    term.keys(&["q"]);
    term.wait_for_exit();
}

#[test]
fn the_browser_opens_a_snapshot_path_given_on_the_command_line() {
    let env = Env::new();
    let (src, ids) = backups(&env);
    let start = format!("{}:{}", ids[0], src.join("dir/sub").display());
    let term = Terminal::start(&env, &[&start]);
    term.wait_for_all(&[
        "deep.txt",
        &format!("{}:{}", ids[0], Path::new(&src).join("dir/sub").display()),
    ]);
    term.keys(&["v"]);
    term.wait_for("deep");
    term.keys(&["Escape", "q"]);
    term.wait_for_exit();
}
