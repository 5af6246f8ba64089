//! Key files: listing them, adding a password, removing one, changing the
//! one in use (SPEC.md §5, "Several key files"). Each key file seals the
//! same master keys under another password. A new key file is stored
//! (durably, under the name of its hash) before an old one is removed, so
//! a crash leaves both, and both open the repository.

use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::object::key_file::{self, KdfParams};
use crate::repository::lock::RepositoryLock;
use crate::repository::Repository;

/// One key file, as `key list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its name: the hex BLAKE3 of its bytes.
    pub id: String,
    /// Whether it is the one this run's password opened.
    pub in_use: bool,
    /// Its key derivation's cost, from its clear header; `None` if the
    /// file is not a well-formed key file.
    pub kdf: Option<KdfParams>,
    /// Why it is not usable, if it is not.
    pub damaged: Option<String>,
}

/// Every key file, in name order.
pub fn list(repository: &Repository) -> Result<Vec<KeyInfo>> {
    let in_use = repository.key_in_use();
    let mut names = repository
        .backend()
        .list(ObjectKind::Key)
        .map_err(|e| Error::storage(ObjectKind::Key, "", e))?;
    names.sort();
    let mut keys = Vec::with_capacity(names.len());
    for name in names {
        let size = repository
            .backend()
            .size(ObjectKind::Key, &name)
            .map_err(|e| Error::storage(ObjectKind::Key, &name, e))?;
        let (kdf, damaged) = if size != key_file::KEY_FILE_LEN as u64 {
            (
                None,
                Some(format!("length {size}, not {}", key_file::KEY_FILE_LEN)),
            )
        } else {
            let bytes = repository
                .backend()
                .get(ObjectKind::Key, &name)
                .map_err(|e| Error::storage(ObjectKind::Key, &name, e))?;
            match key_file::read_header(&bytes) {
                Ok(_) if Id::of_bytes(&bytes).to_hex() != name => (
                    key_file::read_header(&bytes).ok(),
                    Some("content does not match its name".to_string()),
                ),
                Ok(kdf) => (Some(kdf), None),
                Err(e) => (None, Some(e.to_string())),
            }
        };
        keys.push(KeyInfo {
            in_use: name == in_use,
            id: name,
            kdf,
            damaged,
        });
    }
    Ok(keys)
}

/// Stores a new key file for `password` and returns its name. The
/// password must not be empty (the CLI refuses one before this).
pub fn add(repository: &Repository, password: &[u8], kdf: KdfParams) -> Result<String> {
    crate::repository::check_kdf(kdf)?;
    let bytes = key_file::seal_key_file(repository.master_keys(), password, kdf);
    let name = Id::of_bytes(&bytes).to_hex();
    repository
        .backend()
        .put(ObjectKind::Key, &name, &bytes)
        .map_err(|e| Error::storage(ObjectKind::Key, &name, e))?;
    Ok(name)
}

/// The key file whose name starts with `prefix` (a unique prefix).
pub fn resolve(repository: &Repository, prefix: &str) -> Result<String> {
    let prefix = prefix.to_ascii_lowercase();
    let matches: Vec<KeyInfo> = list(repository)?
        .into_iter()
        .filter(|k| k.id.starts_with(&prefix))
        .collect();
    match matches.len() {
        1 => Ok(matches[0].id.clone()),
        0 => Err(Error::KeyNotFound { reference: prefix }),
        count => Err(Error::AmbiguousKey {
            reference: prefix,
            count,
        }),
    }
}

/// Removes the key file `name` under `lock` (exclusive: two removals at
/// once must not remove the last two keys). Refuses the key in use, and
/// the last well-formed key file.
pub fn remove(repository: &Repository, lock: &RepositoryLock, name: &str) -> Result<()> {
    let keys = list(repository)?;
    if name == repository.key_in_use() {
        return Err(Error::KeyRefused {
            key: object_name(ObjectKind::Key, name),
            reason: "it is the key this password opened; open with another password to remove it, or use `cairn key passwd` to replace it".into(),
        });
    }
    let others = keys
        .iter()
        .filter(|k| k.id != name && k.damaged.is_none())
        .count();
    if others == 0 {
        return Err(Error::KeyRefused {
            key: object_name(ObjectKind::Key, name),
            reason: "it is the last key file that opens the repository".into(),
        });
    }
    lock.ensure_held()?;
    repository
        .backend()
        .delete(ObjectKind::Key, name)
        .map_err(|e| Error::storage(ObjectKind::Key, name, e))
}

/// Replaces the password in use: stores a key file for `password`, then
/// removes the one in use. Returns the new key file's name.
pub fn change_password(
    repository: &Repository,
    lock: &RepositoryLock,
    password: &[u8],
    kdf: KdfParams,
) -> Result<String> {
    let old = repository.key_in_use();
    let new = add(repository, password, kdf)?;
    lock.ensure_held()?;
    repository
        .backend()
        .delete(ObjectKind::Key, &old)
        .map_err(|e| Error::storage(ObjectKind::Key, &old, e))?;
    repository.set_key_in_use(new.clone());
    Ok(new)
}
