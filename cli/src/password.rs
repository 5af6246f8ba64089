//! Where the password comes from: `CAIRN_PASSWORD`, a file, a command, or a
//! prompt on the terminal; never a plain argument, which `ps` would show.

use std::io::IsTerminal;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use crate::Cli;

/// Reads the password; with `confirm`, a prompt asks twice. Every copy is
/// wiped from memory when dropped.
pub fn read(cli: &Cli, confirm: bool) -> Result<Zeroizing<String>> {
    read_from(
        &Sources {
            file: cli.password_file.as_deref(),
            command: cli.password_command.as_deref(),
            variable: "CAIRN_PASSWORD",
            prompt: "enter repository password: ",
            hint: "set CAIRN_PASSWORD or CAIRN_PASSWORD_FILE, or use --password-file or --password-command",
        },
        confirm,
    )
}

/// Reads a new password (`key add`, `key passwd`): from `file`, from
/// `command`, from `CAIRN_NEW_PASSWORD`, or asked twice on the terminal.
pub fn read_new(file: Option<&Path>, command: Option<&str>) -> Result<Zeroizing<String>> {
    read_from(
        &Sources {
            file,
            command,
            variable: "CAIRN_NEW_PASSWORD",
            prompt: "enter the new password: ",
            hint: "set CAIRN_NEW_PASSWORD, or use --new-password-file or --new-password-command",
        },
        true,
    )
}

/// Reads the password of the repository `copy` reads from: from `file`,
/// from `command`, from `CAIRN_FROM_PASSWORD`, or asked on the terminal.
pub fn read_source(file: Option<&Path>, command: Option<&str>) -> Result<Zeroizing<String>> {
    read_from(
        &Sources {
            file,
            command,
            variable: "CAIRN_FROM_PASSWORD",
            prompt: "enter the source repository's password: ",
            hint: "set CAIRN_FROM_PASSWORD, or use --from-password-file or --from-password-command",
        },
        false,
    )
}

/// Where one password may come from, in the order they are tried.
struct Sources<'a> {
    file: Option<&'a Path>,
    command: Option<&'a str>,
    variable: &'a str,
    prompt: &'a str,
    /// What to say when none gives one and there is no terminal.
    hint: &'a str,
}

fn read_from(sources: &Sources<'_>, confirm: bool) -> Result<Zeroizing<String>> {
    // A file or command named on the command line (or in its variables)
    // wins over the variable; naming both is a mistake worth reporting.
    if sources.file.is_some() && sources.command.is_some() {
        bail!("give either a password file or a password command, not both");
    }
    if let Some(path) = sources.file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading password file {}", path.display()))?,
        );
        let first = Zeroizing::new(text.lines().next().unwrap_or("").to_string());
        return non_empty(first, &format!("password file {}", path.display()));
    }
    if let Some(command) = sources.command {
        let output = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running password command {command:?}"))?;
        let stdout = Zeroizing::new(output.stdout);
        if !output.status.success() {
            bail!("password command {command:?} failed: {}", output.status);
        }
        let text = std::str::from_utf8(&stdout)
            .map_err(|_| anyhow::anyhow!("password command printed non-UTF-8"))?;
        let first = Zeroizing::new(text.lines().next().unwrap_or("").to_string());
        return non_empty(first, "password command");
    }
    if let Ok(password) = std::env::var(sources.variable) {
        return non_empty(Zeroizing::new(password), sources.variable);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password given: {}", sources.hint);
    }
    let password =
        Zeroizing::new(rpassword::prompt_password(sources.prompt).context("reading password")?);
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("enter it again: ").context("reading password")?,
        );
        if again != password {
            bail!("the passwords do not match");
        }
    }
    non_empty(password, "the prompt")
}

fn non_empty(password: Zeroizing<String>, source: &str) -> Result<Zeroizing<String>> {
    if password.is_empty() {
        bail!("empty password from {source}");
    }
    Ok(password)
}
