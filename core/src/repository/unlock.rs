//! Unlocking a repository: which key file the password opens, whether
//! that key is really this repository's, and the session keys it unwraps
//! (SPEC.md §5, §6).

use std::collections::HashMap;

use super::{parse_name, Repository};
use crate::backend::{object_name, Backend, ObjectKind};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::{Id, SessionId};
use crate::object::epoch::{self, MAX_EPOCH_RECORD_LEN};
use crate::object::key_file::{self, KeyFileError, KeyFileHeader, MasterKeys, MAX_KEY_FILE_LEN};
use crate::object::sealed::{self, ObjectError, SealedKind};
use crate::object::segment::MAX_SEGMENT_LEN;
use crate::object::session::{self, Session, REWRAPPED_LEN, SESSION_LEN};

/// A key file's bytes: `None` if it is gone since the listing, an error
/// message if it is longer than any key file (not read: storage is
/// untrusted).
fn read_key_file(
    backend: &dyn Backend,
    name: &str,
) -> Result<Option<std::result::Result<Vec<u8>, String>>> {
    let missing = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let len = match backend.size(ObjectKind::Key, name) {
        Ok(len) => len,
        Err(e) if missing(&e) => return Ok(None),
        Err(e) => return Err(Error::storage(ObjectKind::Key, name, e)),
    };
    if len > MAX_KEY_FILE_LEN as u64 {
        return Ok(Some(Err(format!(
            "length {len}, more than any key file ({MAX_KEY_FILE_LEN})"
        ))));
    }
    match backend.get(ObjectKind::Key, name) {
        Ok(bytes) => Ok(Some(Ok(bytes))),
        Err(e) if missing(&e) => Ok(None),
        Err(e) => Err(Error::storage(ObjectKind::Key, name, e)),
    }
}

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

/// What a password opened: the keys, the key file's name, its header and
/// the epoch record of its key pair.
pub(super) struct Unlocked {
    pub(super) keys: MasterKeys,
    pub(super) name: String,
    pub(super) header: KeyFileHeader,
    pub(super) epoch: EpochSessions,
}

impl Repository {
    /// Tries every key file with `password`, highest epoch first (SPEC.md
    /// §5, §18). Only when every key file is damaged is that the error;
    /// otherwise a failure is a wrong password. A key file that does not
    /// open and whose bytes do not match its name counts as damaged (the
    /// AEAD alone cannot tell damage from another password). A key whose
    /// epoch is below another key file's was superseded by a rotation, and
    /// is refused. A key of epoch 1 or more without an epoch record is
    /// passed over while another key file may open: a rotation that did not
    /// finish can leave a key file of the epoch a later rotation reached,
    /// for the same password, whose record that rotation deleted.
    pub(super) fn unlock(backend: &dyn Backend, password: &[u8]) -> Result<Unlocked> {
        let names = backend
            .list(ObjectKind::Key)
            .map_err(|e| Error::storage(ObjectKind::Key, "", e))?;
        let mut damaged = None;
        let mut foreign = None;
        let mut unrecorded = None;
        let mut well_formed = 0;
        // Clear headers first, so that the newest keys are tried first and
        // an older one is known to be superseded.
        let mut candidates = Vec::new();
        let mut newest = None;
        for name in names {
            let object = object_name(ObjectKind::Key, &name);
            match read_key_file(backend, &name)? {
                Some(Ok(bytes)) => match key_file::read_header(&bytes) {
                    Ok(header) => {
                        // Only an intact key file says which epoch is the
                        // newest: one flipped bit must not revoke the rest.
                        if Id::of_bytes(&bytes).to_hex() == name {
                            newest = newest.max(Some(header.epoch));
                        }
                        candidates.push((header.epoch, name));
                    }
                    Err(e) => {
                        damaged.get_or_insert_with(|| Error::corrupted(&object, e));
                    }
                },
                Some(Err(reason)) => {
                    damaged.get_or_insert_with(|| Error::corrupted(&object, reason));
                }
                None => {}
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, name) in candidates {
            let object = object_name(ObjectKind::Key, &name);
            let Some(Ok(bytes)) = read_key_file(backend, &name)? else {
                continue;
            };
            match key_file::open_key_file(&bytes, password) {
                // Superseded: the sessions it could open are gone, so
                // whether it is this repository's cannot be told either.
                Ok((_, header)) if newest.is_some_and(|newest| newest > header.epoch) => {
                    return Err(Error::KeyRevoked {
                        key: object,
                        epoch: header.epoch,
                        newest: newest.unwrap_or_default(),
                    });
                }
                Ok((keys, header)) => match Repository::check_key(backend, &keys, &header)? {
                    KeyCheck::Confirmed | KeyCheck::Unknown => {
                        match EpochSessions::load(backend, &keys, &header) {
                            Ok(epoch) => {
                                return Ok(Unlocked {
                                    keys,
                                    name,
                                    header,
                                    epoch,
                                })
                            }
                            Err(e @ Error::Corrupted { .. }) => {
                                unrecorded.get_or_insert(e);
                            }
                            Err(e) => return Err(e),
                        }
                    }
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
        if let Some(unrecorded) = unrecorded {
            return Err(unrecorded);
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

    /// Tells whether `keys` are this repository's. A full key of epoch 0 is
    /// tried on the sessions until one opens (at most
    /// [`KEY_CHECK_SESSIONS`] intact ones): every writing command stores
    /// one first, so a repository that was ever written to has one its own
    /// key opens. Damaged sessions (bytes that do not match their name)
    /// prove nothing and are passed over. A write-only key, which opens no
    /// session, is tried on index segments instead, which the index key
    /// seals.
    fn check_key(
        backend: &dyn Backend,
        keys: &MasterKeys,
        header: &KeyFileHeader,
    ) -> Result<KeyCheck> {
        let Some(private) = &keys.private else {
            return Repository::check_index_key(backend, keys);
        };
        if header.epoch > 0 {
            // Its epoch record, sealed under a key only this private key
            // derives, is the proof (checked when it is read).
            return Ok(KeyCheck::Unknown);
        }
        let names = backend
            .list(ObjectKind::Session)
            .map_err(|e| Error::storage(ObjectKind::Session, "", e))?;
        let mut refuting = None;
        let mut intact = 0;
        for name in names.iter().filter(|n| parse_name(n).is_some()) {
            if intact == KEY_CHECK_SESSIONS {
                return Ok(KeyCheck::Unknown);
            }
            if backend.size(ObjectKind::Session, name).ok() != Some(SESSION_LEN as u64) {
                continue;
            }
            let Ok(bytes) = backend.get(ObjectKind::Session, name) else {
                continue;
            };
            if bytes.len() != SESSION_LEN || Id::of_bytes(&bytes).to_hex() != *name {
                continue;
            }
            intact += 1;
            match session::open(&bytes, private) {
                Ok(_) => return Ok(KeyCheck::Confirmed),
                Err(session::SessionError::Authentication) => {
                    refuting.get_or_insert_with(|| object_name(ObjectKind::Session, name));
                }
                Err(session::SessionError::Malformed(_)) => {}
            }
        }
        Ok(refuting.map_or(KeyCheck::Unknown, KeyCheck::Refuted))
    }

    /// [`Repository::check_key`] for a write-only key: up to
    /// [`KEY_CHECK_SESSIONS`] intact index segments, until one opens.
    fn check_index_key(backend: &dyn Backend, keys: &MasterKeys) -> Result<KeyCheck> {
        let names = backend
            .list(ObjectKind::Index)
            .map_err(|e| Error::storage(ObjectKind::Index, "", e))?;
        let sealer = Sealer::new(&keys.index_key);
        let mut refuting = None;
        for name in names
            .iter()
            .filter(|n| parse_name(n).is_some())
            .take(KEY_CHECK_SESSIONS)
        {
            if backend
                .size(ObjectKind::Index, name)
                .map_or(true, |size| size > MAX_SEGMENT_LEN)
            {
                continue;
            }
            let Ok(bytes) = backend.get(ObjectKind::Index, name) else {
                continue;
            };
            if Id::of_bytes(&bytes).to_hex() != *name {
                continue;
            }
            match sealed::open(SealedKind::IndexSegment, &sealer, &bytes) {
                Ok(_) => return Ok(KeyCheck::Confirmed),
                Err(ObjectError::Authentication) => {
                    refuting.get_or_insert_with(|| object_name(ObjectKind::Index, name));
                }
                Err(_) => {}
            }
        }
        Ok(refuting.map_or(KeyCheck::Unknown, KeyCheck::Refuted))
    }

    pub(crate) fn session_sealer(&self, id: SessionId) -> Result<Sealer> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sealer) = sessions.get(&id) {
            return Ok(sealer.clone());
        }
        let opened = self.open_session(id)?;
        sessions.insert(id, opened.sealer.clone());
        Ok(opened.sealer)
    }

    /// Opens session `id`: through its re-wrapped object if the epoch
    /// record maps it, else its version 1 object (SPEC.md §6, §18).
    pub(crate) fn open_session(&self, id: SessionId) -> Result<Session> {
        let private = self.keys.private.as_ref().ok_or(Error::WriteOnly {
            action: "open a session's data key",
        })?;
        let auth = |object: String| {
            move |e: session::SessionError| match e {
                session::SessionError::Authentication => Error::Unauthenticated { object },
                session::SessionError::Malformed(_) => Error::corrupted(object, e),
            }
        };
        if let Some(rewrapped) = self.epoch.sessions.get(&id) {
            let name = rewrapped.to_hex();
            let object = object_name(ObjectKind::Session, &name);
            let bytes = self.get_verified(ObjectKind::Session, &name, REWRAPPED_LEN as u64)?;
            let (original, epoch) =
                session::rewrapped_header(&bytes).map_err(auth(object.clone()))?;
            if original != id || epoch != self.key_header.epoch {
                return Err(Error::corrupted(
                    object,
                    format!(
                        "stands for session {original} of epoch {epoch}, not {id} of epoch {}",
                        self.key_header.epoch
                    ),
                ));
            }
            return session::open_rewrapped(&bytes, private).map_err(auth(object));
        }
        let name = id.to_string();
        let bytes = self.get_verified(ObjectKind::Session, &name, SESSION_LEN as u64)?;
        let object = object_name(ObjectKind::Session, &name);
        session::open(&bytes, private).map_err(auth(object))
    }
}

/// The sessions of earlier epochs, for a key of epoch 1 or more: which
/// re-wrapped object holds each one's data key (SPEC.md §18).
#[derive(Default)]
pub(crate) struct EpochSessions {
    /// The record they come from.
    pub(crate) record: Option<Id>,
    /// Original session id → re-wrapped object.
    pub(crate) sessions: HashMap<SessionId, Id>,
}

impl EpochSessions {
    /// Reads the record of the key's epoch: the one whose clear public key
    /// is the key's own and that opens with it. A full key of epoch 0 and a
    /// write-only key have none (the latter could not open it).
    pub(crate) fn load(
        backend: &dyn Backend,
        keys: &MasterKeys,
        header: &KeyFileHeader,
    ) -> Result<EpochSessions> {
        let (Some(private), 1..) = (&keys.private, header.epoch) else {
            return Ok(EpochSessions::default());
        };
        let names = backend
            .list(ObjectKind::Epoch)
            .map_err(|e| Error::storage(ObjectKind::Epoch, "", e))?;
        let public = *keys.public().as_bytes();
        for name in names.iter().filter(|n| parse_name(n).is_some()) {
            let Ok(Ok(found)) = epoch::read_header_of(backend, name) else {
                continue;
            };
            if found.epoch != header.epoch || found.public != public {
                continue;
            }
            let size = backend
                .size(ObjectKind::Epoch, name)
                .map_err(|e| Error::storage(ObjectKind::Epoch, name, e))?;
            if size > MAX_EPOCH_RECORD_LEN {
                continue;
            }
            let bytes = backend
                .get(ObjectKind::Epoch, name)
                .map_err(|e| Error::storage(ObjectKind::Epoch, name, e))?;
            if Id::of_bytes(&bytes).to_hex() != *name {
                continue;
            }
            if let Ok(record) = epoch::open(&bytes, private) {
                return Ok(EpochSessions {
                    record: parse_name(name),
                    sessions: record
                        .sessions
                        .into_iter()
                        .map(|r| (r.original, r.object))
                        .collect(),
                });
            }
        }
        Err(Error::corrupted(
            "epochs/",
            format!(
                "no intact record of epoch {} opens with this key: the sessions written before it cannot be read",
                header.epoch
            ),
        ))
    }
}
