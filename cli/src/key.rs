//! `cairn key list|add|remove|passwd`: arguments and printing; the key
//! files are handled by `cairn_core::keys`.

use std::path::PathBuf;

use anyhow::Result;
use cairn_core::keys::NewKey;
use cairn_core::progress::Progress;
use cairn_core::{KdfParams, KeyLabels, KeyRole, LockKind};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::{
    lock, open_repository, open_repository_with_password, output, password, read_lock, Cli,
};

/// `key`.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// List the key files: id, kind, host, user, creation time, key
    /// derivation cost, which one this password opened.
    List(KeyListArgs),
    /// Add a password: a new key file for the same repository keys, full
    /// or write-only.
    Add(KeyAddArgs),
    /// Remove a key file (not the one in use, not the last one).
    Remove(KeyRemoveArgs),
    /// Replace the password in use by a new one.
    Passwd(NewPasswordArgs),
    /// Draw a new key pair: every session's key is wrapped to it, and
    /// every other key file (all of which hold the old pair) is removed.
    /// The password in use keeps working; add the others again.
    Rotate(KeyRotateArgs),
}

/// `key rotate`.
#[derive(Args)]
pub struct KeyRotateArgs {
    #[command(flatten)]
    kdf: KdfArgs,
}

/// `key list`.
#[derive(Args)]
pub struct KeyListArgs {
    /// One JSON array.
    #[arg(long)]
    json: bool,
}

/// `key add`.
#[derive(Args)]
pub struct KeyAddArgs {
    #[command(flatten)]
    password: NewPasswordArgs,
    /// A write-only key: it can back up, and cannot restore, list, read
    /// or delete anything.
    #[arg(long)]
    write_only: bool,
    #[command(flatten)]
    labels: LabelArgs,
}

/// Who a new key file is for, as `key list` shows it.
#[derive(Args)]
pub struct LabelArgs {
    /// Host name to record in the key file (default: this host's).
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// User name to record in the key file (default: the current user's).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

impl LabelArgs {
    /// The labels to seal: the given names, or this host's and user's.
    pub fn labels(&self) -> KeyLabels {
        KeyLabels {
            host: self.host.clone().unwrap_or_else(cairn_core::local_hostname),
            user: self.user.clone().unwrap_or_else(cairn_core::local_username),
            created_s: 0,
        }
    }
}

/// The labels of the first key file: this host and user.
pub fn default_labels() -> KeyLabels {
    LabelArgs {
        host: None,
        user: None,
    }
    .labels()
}

/// The first eight digits of a key file's id, as lists show it.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `key remove`.
#[derive(Args)]
pub struct KeyRemoveArgs {
    /// The key file's id, or a unique prefix of it.
    id: String,
}

/// The cost of deriving a key from a password (Argon2id).
#[derive(Args, Clone, Copy)]
pub struct KdfArgs {
    /// Memory in MiB (small devices may need less than the default).
    #[arg(long, value_name = "MIB", default_value_t = KdfParams::DEFAULT.memory_kib / 1024)]
    pub kdf_memory: u32,
    /// Passes over that memory.
    #[arg(long, value_name = "PASSES", default_value_t = KdfParams::DEFAULT.iterations)]
    pub kdf_time: u32,
}

impl KdfArgs {
    /// The parameters to seal a key file with.
    pub fn params(&self) -> KdfParams {
        KdfParams {
            memory_kib: self.kdf_memory.saturating_mul(1024),
            iterations: self.kdf_time,
            parallelism: KdfParams::DEFAULT.parallelism,
        }
    }
}

/// Where a new password comes from, and its key derivation's cost.
#[derive(Args)]
pub struct NewPasswordArgs {
    /// Read the new password from this file (first line).
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the new password.
    #[arg(long, value_name = "COMMAND")]
    new_password_command: Option<String>,
    #[command(flatten)]
    kdf: KdfArgs,
}

impl NewPasswordArgs {
    fn read(&self) -> Result<zeroize::Zeroizing<String>> {
        password::read_new(
            self.new_password_file.as_deref(),
            self.new_password_command.as_deref(),
        )
    }
}

/// Runs a `key` subcommand.
pub fn key(cli: &Cli, command: &KeyCommand) -> Result<u8> {
    match command {
        KeyCommand::List(args) => list(cli, args),
        KeyCommand::Add(args) => {
            let repository = open_repository(cli)?;
            let _lock = read_lock(cli, &repository, "key add")?;
            let new = args.password.read()?;
            let key = NewKey {
                role: if args.write_only {
                    KeyRole::WriteOnly
                } else {
                    KeyRole::Full
                },
                labels: args.labels.labels(),
                kdf: args.password.kdf.params(),
            };
            let id = cairn_core::keys::add(&repository, new.as_bytes(), &key)?;
            let kind = if args.write_only { "write-only " } else { "" };
            output::line(cli, &format!("added {kind}key {}", short(&id)))?;
            Ok(0)
        }
        KeyCommand::Remove(args) => {
            let repository = open_repository(cli)?;
            repository.require_full_key("remove keys")?;
            let held = lock(cli, &repository, LockKind::Exclusive, "key remove")?;
            let id = cairn_core::keys::resolve(&repository, &args.id)?;
            cairn_core::keys::remove(&repository, &held, &id)?;
            output::line(cli, &format!("removed key {}", short(&id)))?;
            Ok(0)
        }
        KeyCommand::Rotate(args) => rotate(cli, args),
        KeyCommand::Passwd(args) => {
            let repository = open_repository(cli)?;
            let held = lock(cli, &repository, LockKind::Exclusive, "key passwd")?;
            let new = args.read()?;
            let old = repository.key_in_use();
            let id = cairn_core::keys::change_password(
                &repository,
                &held,
                new.as_bytes(),
                args.kdf.params(),
            )?;
            output::line(
                cli,
                &format!("replaced key {} by key {}", short(&old), short(&id)),
            )?;
            Ok(0)
        }
    }
}

fn rotate(cli: &Cli, args: &KeyRotateArgs) -> Result<u8> {
    let (repository, password) = open_repository_with_password(cli)?;
    repository.require_full_key("rotate keys")?;
    let held = lock(cli, &repository, LockKind::Exclusive, "key rotate")?;
    let rotated =
        cairn_core::keys::rotate(&repository, &held, password.as_bytes(), args.kdf.params())?;
    let reporter = output::Reporter::new(cli);
    for error in &rotated.unreadable {
        reporter.warning(
            std::path::Path::new(&repository.location()),
            &format!("{error}: left as it was"),
        );
    }
    let mut message = format!(
        "rotated to epoch {}: {} sessions wrapped to the new key pair; this password's key is now {}",
        rotated.epoch,
        rotated.sessions,
        short(&rotated.key)
    );
    let others: Vec<String> = rotated
        .removed_keys
        .iter()
        .filter(|k| !k.in_use)
        .map(|k| {
            let labels = k.labels.clone().unwrap_or_default();
            let kind = k.header.map_or("", |h| kind(h.role));
            format!(
                "{} ({kind}, {}@{})",
                short(&k.id),
                output::printable(&labels.user),
                output::printable(&labels.host)
            )
        })
        .collect();
    if !others.is_empty() {
        message.push_str(&format!(
            "\nremoved the other keys, which held the old key pair: {}; add them again with `cairn key add`",
            others.join(", ")
        ));
    }
    output::line(cli, &message)?;
    Ok(0)
}

fn list(cli: &Cli, args: &KeyListArgs) -> Result<u8> {
    let repository = open_repository(cli)?;
    let keys = cairn_core::keys::list(&repository)?;
    if args.json {
        let rows: Vec<_> = keys
            .iter()
            .map(|k| {
                json!({
                    "id": k.id,
                    "in_use": k.in_use,
                    "kind": k.header.map(|h| kind(h.role)),
                    "epoch": k.header.map(|h| h.epoch),
                    "host": k.labels.as_ref().map(|l| &l.host),
                    "user": k.labels.as_ref().map(|l| &l.user),
                    "created": k.labels.as_ref().map(|l| created(l.created_s)),
                    "kdf": k.header.map(|h| json!({
                        "algorithm": "argon2id",
                        "memory_kib": h.kdf.memory_kib,
                        "iterations": h.kdf.iterations,
                        "parallelism": h.kdf.parallelism,
                    })),
                    "damaged": k.damaged,
                })
            })
            .collect();
        println!("{}", json!(rows));
        return Ok(exit_code(&keys));
    }
    println!(
        " {:<8}  {:<10}  {:<5}  {:<16}  {:<12}  {:<19}  key derivation",
        "ID", "kind", "epoch", "host", "user", "created"
    );
    for k in &keys {
        let kdf = match (&k.header, &k.damaged) {
            (_, Some(why)) => format!("damaged: {why}"),
            (Some(h), None) => format!(
                "argon2id, {} MiB, {} passes",
                h.kdf.memory_kib / 1024,
                h.kdf.iterations
            ),
            (None, None) => String::new(),
        };
        let labels = k.labels.clone().unwrap_or_default();
        let marker = if k.in_use { '*' } else { ' ' };
        println!(
            "{marker}{:<8}  {:<10}  {:<5}  {:<16}  {:<12}  {:<19}  {kdf}",
            short(&k.id),
            k.header.map_or("", |h| kind(h.role)),
            k.header.map_or(String::new(), |h| h.epoch.to_string()),
            output::printable(&labels.host),
            output::printable(&labels.user),
            k.labels
                .as_ref()
                .map_or(String::new(), |l| created(l.created_s)),
        );
    }
    Ok(exit_code(&keys))
}

/// How `key list` names a role.
fn kind(role: KeyRole) -> &'static str {
    match role {
        KeyRole::Full => "full",
        KeyRole::WriteOnly => "write-only",
    }
}

/// A key's creation time, local, to the second.
fn created(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// Fatal when a key file is damaged: a password it held no longer opens.
fn exit_code(keys: &[cairn_core::keys::KeyInfo]) -> u8 {
    if keys.iter().any(|k| k.damaged.is_some()) {
        crate::exit::FATAL
    } else {
        0
    }
}
