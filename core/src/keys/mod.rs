//! Key files: listing them, adding a password, removing one, changing the
//! one in use (SPEC.md §5, "Several key files"). Each key file seals the
//! same master keys under another password. A new key file is stored
//! (durably, under the name of its hash) before an old one is removed, so
//! a crash leaves both, and both open the repository. [`rotate`] replaces
//! the key pair itself.

mod rotate;

pub(crate) use rotate::rotation_leftovers;
pub use rotate::{rotate, Rotated};

use crate::backend::{object_name, ObjectKind};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::object::key_file::{self, KdfParams, KeyFileSpec, KeyLabels, KeyRole, MAX_KEY_FILE_LEN};
use crate::repository::lock::RepositoryLock;
use crate::repository::Repository;

/// One key file, as `key list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its name: the hex BLAKE3 of its bytes.
    pub id: String,
    /// Whether it is the one this run's password opened.
    pub in_use: bool,
    /// Its clear header (role, epoch, key derivation's cost); `None` if
    /// the file is not a well-formed key file.
    pub header: Option<key_file::KeyFileHeader>,
    /// Host, user and creation time, if it has them (version 2) and they
    /// open with this repository's keys.
    pub labels: Option<KeyLabels>,
    /// Why it is not usable, if it is not.
    pub damaged: Option<String>,
}

impl KeyInfo {
    /// Whether it is a well-formed full key file.
    fn is_full(&self) -> bool {
        self.damaged.is_none() && self.header.is_some_and(|h| h.role == KeyRole::Full)
    }
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
        let mut info = KeyInfo {
            in_use: name == in_use,
            id: name,
            header: None,
            labels: None,
            damaged: None,
        };
        if size > MAX_KEY_FILE_LEN as u64 {
            info.damaged = Some(format!("length {size}, more than any key file"));
            keys.push(info);
            continue;
        }
        let bytes = repository
            .backend()
            .get(ObjectKind::Key, &info.id)
            .map_err(|e| Error::storage(ObjectKind::Key, &info.id, e))?;
        match key_file::read_header(&bytes) {
            Ok(header) => {
                info.header = Some(header);
                info.labels = key_file::read_labels(&bytes, repository.master_keys());
                if Id::of_bytes(&bytes).to_hex() != info.id {
                    info.damaged = Some("content does not match its name".to_string());
                }
            }
            Err(e) => info.damaged = Some(e.to_string()),
        }
        keys.push(info);
    }
    Ok(keys)
}

/// What a new key file is for: its role and its labels.
#[derive(Clone, Debug)]
pub struct NewKey {
    /// Full or write-only.
    pub role: KeyRole,
    /// Who it is for (the creation time is set when it is sealed).
    pub labels: KeyLabels,
    /// Its key derivation's cost.
    pub kdf: KdfParams,
}

/// Stores a new key file for `password` and returns its name. The
/// password must not be empty (the CLI refuses one before this). A
/// write-only key can add write-only keys only.
pub fn add(repository: &Repository, password: &[u8], key: &NewKey) -> Result<String> {
    crate::repository::check_kdf(key.kdf)?;
    let spec = KeyFileSpec {
        role: key.role,
        epoch: repository.key_header().epoch,
        labels: KeyLabels {
            created_s: now_s(),
            ..key.labels.clone()
        },
    };
    let bytes = key_file::seal_key_file(repository.master_keys(), password, key.kdf, &spec).ok_or(
        Error::WriteOnly {
            action: "make a full key",
        },
    )?;
    let name = Id::of_bytes(&bytes).to_hex();
    repository
        .backend()
        .put(ObjectKind::Key, &name, &bytes)
        .map_err(|e| Error::storage(ObjectKind::Key, &name, e))?;
    Ok(name)
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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
    let others = keys.iter().filter(|k| k.id != name && k.is_full()).count();
    let removing_full = keys.iter().any(|k| k.id == name && k.is_full());
    if removing_full && others == 0 {
        return Err(Error::KeyRefused {
            key: object_name(ObjectKind::Key, name),
            reason: "it is the last full key file: without one nothing stored could be read".into(),
        });
    }
    lock.ensure_held()?;
    repository
        .backend()
        .delete(ObjectKind::Key, name)
        .map_err(|e| Error::storage(ObjectKind::Key, name, e))
}

/// Replaces the password in use: stores a key file for `password`, of the
/// same role and labels, then removes the one in use. Returns the new key
/// file's name.
pub fn change_password(
    repository: &Repository,
    lock: &RepositoryLock,
    password: &[u8],
    kdf: KdfParams,
) -> Result<String> {
    let old = repository.key_in_use();
    let labels = list(repository)?
        .into_iter()
        .find(|k| k.id == old)
        .and_then(|k| k.labels)
        .unwrap_or_default();
    let key = NewKey {
        role: repository.master_keys().role(),
        labels,
        kdf,
    };
    let new = add(repository, password, &key)?;
    lock.ensure_held()?;
    repository
        .backend()
        .delete(ObjectKind::Key, &old)
        .map_err(|e| Error::storage(ObjectKind::Key, &old, e))?;
    repository.set_key_in_use(new.clone());
    Ok(new)
}
