//! `cairn key list|add|remove|passwd`: arguments and printing; the key
//! files are handled by `cairn_core::keys`.

use std::path::PathBuf;

use anyhow::Result;
use cairn_core::{KdfParams, LockKind};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::{lock, open_repository, output, password, read_lock, Cli};

/// `key`.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// List the key files: id, key derivation cost, which one this
    /// password opened.
    List(KeyListArgs),
    /// Add a password: a new key file for the same repository keys.
    Add(NewPasswordArgs),
    /// Remove a key file (not the one in use, not the last one).
    Remove(KeyRemoveArgs),
    /// Replace the password in use by a new one.
    Passwd(NewPasswordArgs),
}

/// `key list`.
#[derive(Args)]
pub struct KeyListArgs {
    /// One JSON array.
    #[arg(long)]
    json: bool,
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
            let new = args.read()?;
            let id = cairn_core::keys::add(&repository, new.as_bytes(), args.kdf.params())?;
            output::line(cli, &format!("added key {}", &id[..8]))?;
            Ok(0)
        }
        KeyCommand::Remove(args) => {
            let repository = open_repository(cli)?;
            let held = lock(cli, &repository, LockKind::Exclusive, "key remove")?;
            let id = cairn_core::keys::resolve(&repository, &args.id)?;
            cairn_core::keys::remove(&repository, &held, &id)?;
            output::line(cli, &format!("removed key {}", &id[..8]))?;
            Ok(0)
        }
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
                &format!("replaced key {} by key {}", &old[..8], &id[..8]),
            )?;
            Ok(0)
        }
    }
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
                    "kind": "full",
                    "kdf": k.kdf.map(|p| json!({
                        "algorithm": "argon2id",
                        "memory_kib": p.memory_kib,
                        "iterations": p.iterations,
                        "parallelism": p.parallelism,
                    })),
                    "damaged": k.damaged,
                })
            })
            .collect();
        println!("{}", json!(rows));
        return Ok(0);
    }
    println!(" {:<8}  {:<5}  key derivation", "ID", "kind");
    for k in &keys {
        let kdf = match (&k.kdf, &k.damaged) {
            (_, Some(why)) => format!("damaged: {why}"),
            (Some(p), None) => format!(
                "argon2id, {} MiB, {} passes",
                p.memory_kib / 1024,
                p.iterations
            ),
            (None, None) => String::new(),
        };
        let marker = if k.in_use { '*' } else { ' ' };
        println!(
            "{marker}{:<8}  {:<5}  {kdf}",
            &k.id[..8.min(k.id.len())],
            "full"
        );
    }
    Ok(if keys.iter().any(|k| k.damaged.is_some()) {
        crate::exit::FATAL
    } else {
        0
    })
}
