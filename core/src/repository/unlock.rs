//! Unlocking a repository: which key file the password opens, whether
//! that key is really this repository's, and the session keys it unwraps
//! (SPEC.md §5, §6).

use super::{parse_name, Repository};
use crate::backend::{object_name, Backend, ObjectKind};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::{Id, SessionId};
use crate::object::key_file::{self, KeyFileError, MasterKeys};
use crate::object::session::{self, SESSION_LEN};

/// Intact sessions a key is tried against, at most, to tell whether it is
/// this repository's. It stops at the first that opens, so this many are
/// read only for a key that opens none: a repository's own key is never
/// refused because some sessions (planted, or left by another key) do not
/// open with it. Past this many, the check gives up and accepts the key.
const KEY_CHECK_SESSIONS: usize = 1024;

/// What trying a key against a repository's sessions showed.
enum KeyCheck {
    /// It opened one of them.
    Confirmed,
    /// There was nothing intact to try it on (a new repository).
    Unknown,
    /// Intact sessions exist and it opened none of them: this one, say.
    Refuted(String),
}

impl Repository {
    /// Tries every key file with `password`. Only when every key file is
    /// damaged is that the error; otherwise a failure is a wrong password.
    /// A key file that does not open and whose bytes do not match its name
    /// counts as damaged (the AEAD alone cannot tell damage from another
    /// password).
    /// Returns the master keys and the name of the key file that opened.
    pub(super) fn unlock(backend: &dyn Backend, password: &[u8]) -> Result<(MasterKeys, String)> {
        let names = backend
            .list(ObjectKind::Key)
            .map_err(|e| Error::storage(ObjectKind::Key, "", e))?;
        let mut damaged = None;
        let mut foreign = None;
        let mut well_formed = 0;
        for name in names {
            let object = object_name(ObjectKind::Key, &name);
            let len = backend
                .size(ObjectKind::Key, &name)
                .map_err(|e| Error::storage(ObjectKind::Key, &name, e))?;
            if len != key_file::KEY_FILE_LEN as u64 {
                damaged.get_or_insert_with(|| {
                    Error::corrupted(
                        &object,
                        format!("length {len}, not {}", key_file::KEY_FILE_LEN),
                    )
                });
                continue;
            }
            let bytes = backend
                .get(ObjectKind::Key, &name)
                .map_err(|e| Error::storage(ObjectKind::Key, &name, e))?;
            match key_file::open_key_file(&bytes, password) {
                Ok(keys) => match Repository::check_key(backend, &keys)? {
                    KeyCheck::Confirmed | KeyCheck::Unknown => return Ok((keys, name)),
                    // Another repository's key under the same password: try
                    // the other key files before saying so.
                    KeyCheck::Refuted(refuting) => {
                        foreign.get_or_insert(Error::ForeignKey {
                            key: object,
                            object: refuting,
                        });
                    }
                },
                // Key files are named by the hash of their bytes: one that
                // no longer matches was altered, not merely locked with
                // another password.
                Err(KeyFileError::WrongPassword) if Id::of_bytes(&bytes).to_hex() != name => {
                    damaged.get_or_insert_with(|| {
                        Error::corrupted(&object, "content does not match its name")
                    });
                }
                Err(KeyFileError::WrongPassword) => well_formed += 1,
                Err(e @ KeyFileError::Malformed(_)) => {
                    damaged.get_or_insert_with(|| Error::corrupted(&object, e));
                }
            }
        }
        if let Some(foreign) = foreign {
            return Err(foreign);
        }
        if damaged.is_none() && well_formed == 0 {
            return Err(Error::corrupted("keys/", "the repository has no key files"));
        }
        match damaged {
            Some(error) if well_formed == 0 => Err(error),
            _ => Err(Error::WrongPassword),
        }
    }

    /// Tries `keys` on the repository's sessions until one opens (at most
    /// [`KEY_CHECK_SESSIONS`] intact ones): every writing command stores
    /// one first, so a repository that was ever written to has one its own
    /// key opens. Damaged sessions (bytes that do not match their name)
    /// prove nothing and are passed over.
    fn check_key(backend: &dyn Backend, keys: &MasterKeys) -> Result<KeyCheck> {
        let names = backend
            .list(ObjectKind::Session)
            .map_err(|e| Error::storage(ObjectKind::Session, "", e))?;
        let mut refuting = None;
        let mut intact = 0;
        for name in names.iter().filter(|n| parse_name(n).is_some()) {
            if intact == KEY_CHECK_SESSIONS {
                return Ok(KeyCheck::Unknown);
            }
            let Ok(bytes) = backend.get(ObjectKind::Session, name) else {
                continue;
            };
            if bytes.len() != SESSION_LEN || Id::of_bytes(&bytes).to_hex() != *name {
                continue;
            }
            intact += 1;
            match session::open(&bytes, &keys.private) {
                Ok(_) => return Ok(KeyCheck::Confirmed),
                Err(session::SessionError::Authentication) => {
                    refuting.get_or_insert_with(|| object_name(ObjectKind::Session, name));
                }
                Err(session::SessionError::Malformed(_)) => {}
            }
        }
        Ok(refuting.map_or(KeyCheck::Unknown, KeyCheck::Refuted))
    }

    pub(crate) fn session_sealer(&self, id: SessionId) -> Result<Sealer> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sealer) = sessions.get(&id) {
            return Ok(sealer.clone());
        }
        let name = id.to_string();
        let bytes = self.get_verified(ObjectKind::Session, &name, SESSION_LEN as u64)?;
        let object = object_name(ObjectKind::Session, &name);
        let opened = session::open(&bytes, &self.keys.private).map_err(|e| match e {
            session::SessionError::Authentication => Error::Unauthenticated { object },
            session::SessionError::Malformed(_) => Error::corrupted(object, e),
        })?;
        sessions.insert(id, opened.sealer.clone());
        Ok(opened.sealer)
    }
}
