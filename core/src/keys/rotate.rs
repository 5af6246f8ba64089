//! `key rotate`: a new X25519 key pair (SPEC.md §18, "Rotation"). Every
//! session's data key is wrapped again to the new public key, an epoch
//! record maps each session to its re-wrapped object, a key file of the new
//! epoch is stored for the current password, and only then are the old key
//! files, the old session objects and the old record deleted. No pack,
//! index segment, tree or snapshot changes. A crash at any step leaves a
//! repository that the current password opens and reads in full.

use std::collections::HashSet;

use x25519_dalek::StaticSecret;

use super::{list, now_s, KeyInfo};
use crate::backend::{object_name, ObjectKind};
use crate::crypto;
use crate::error::{Error, Result};
use crate::id::{Id, SessionId};
use crate::object::epoch::{self, EpochRecord, Rewrapped};
use crate::object::key_file::{self, KdfParams, KeyFileSpec, KeyRole};
use crate::object::session::{self, REWRAPPED_LEN, SESSION_LEN};
use crate::repository::lock::RepositoryLock;
use crate::repository::Repository;

/// What a rotation did.
#[derive(Debug)]
pub struct Rotated {
    /// The new epoch.
    pub epoch: u32,
    /// The new key file, for the password given.
    pub key: String,
    /// Sessions whose data keys were wrapped again.
    pub sessions: usize,
    /// The key files deleted: every one of an earlier epoch, and any of
    /// the new epoch that an unfinished rotation left. Their passwords no
    /// longer open the repository.
    pub removed_keys: Vec<KeyInfo>,
    /// Sessions that could not be opened (damaged, or sealed under another
    /// repository's key), left as they were: what they sealed was already
    /// unreadable.
    pub unreadable: Vec<Error>,
}

/// Rotates the key pair under `lock` (exclusive), keeping `password` (the
/// one in use) with a key file of the new epoch.
pub fn rotate(
    repository: &Repository,
    lock: &RepositoryLock,
    password: &[u8],
    kdf: KdfParams,
) -> Result<Rotated> {
    repository.require_full_key("rotate keys")?;
    crate::repository::check_kdf(kdf)?;
    lock.ensure_held()?;
    let backend = repository.backend();
    let old_epoch = repository.key_header().epoch;
    let epoch = old_epoch.checked_add(1).ok_or(Error::OutOfRange {
        setting: "key epoch",
        value: old_epoch.to_string(),
        allowed: "below 4294967295",
    })?;
    let private = StaticSecret::from(crypto::random_bytes::<32>());
    let keys = repository.master_keys().with_new_pair(private.clone());
    let public = keys.public();

    // 1. Every session's data key, wrapped to the new public key.
    let listed = listed_sessions(repository)?;
    let mut candidates: Vec<SessionId> = listed
        .iter()
        .filter(|(_, len)| *len == SESSION_LEN as u64)
        .map(|(id, _)| SessionId(*id))
        .chain(repository.rewrapped_sessions())
        .collect();
    candidates.sort();
    candidates.dedup();
    let mut mapping = Vec::with_capacity(candidates.len());
    let mut unreadable = Vec::new();
    let mut kept = HashSet::new();
    for id in candidates {
        let opened = match repository.open_session(id) {
            Ok(opened) => opened,
            // Damaged, or not this repository's: already unreadable, and
            // left exactly as it is, with whatever object holds it now.
            Err(e @ (Error::Unauthenticated { .. } | Error::Corrupted { .. })) => {
                kept.extend(repository.rewrapped_object(id));
                kept.insert(id.0);
                unreadable.push(e);
                continue;
            }
            // Anything else (storage failing) stops the rotation before it
            // changes anything: nothing of it is referenced yet.
            Err(e) => return Err(e),
        };
        let bytes = session::rewrap(id, epoch, &opened.data_key, &public);
        let object = Id::of_bytes(&bytes);
        put(repository, ObjectKind::Session, &object.to_hex(), &bytes)?;
        mapping.push(Rewrapped {
            original: id,
            object,
        });
    }

    // 2. The record that maps them: from here, writers refuse until a key
    // of the new epoch exists.
    let record = EpochRecord {
        previous: repository.epoch_record(),
        sessions: mapping,
    };
    let bytes = epoch::seal(epoch, &private, &record);
    if bytes.len() as u64 > epoch::MAX_EPOCH_RECORD_LEN {
        return Err(Error::OutOfRange {
            setting: "sessions to re-wrap",
            value: record.sessions.len().to_string(),
            allowed: "at most about 1.3 million (an epoch record of 80 MiB)",
        });
    }
    let record_id = Id::of_bytes(&bytes);
    put(repository, ObjectKind::Epoch, &record_id.to_hex(), &bytes)?;
    // A session started since the listing (if the lock was taken away)
    // would be wrapped to the old key and missing from the record: stop
    // here, where writers already refuse, so that a new run includes it.
    lock.ensure_held()?;
    let before: HashSet<Id> = listed.iter().map(|(id, _)| *id).collect();
    if let Some((id, _)) = listed_sessions(repository)?
        .into_iter()
        .find(|(id, len)| *len == SESSION_LEN as u64 && !before.contains(id))
    {
        return Err(Error::RotationUnfinished {
            epoch,
            reason: format!("session {} was stored while it ran", id.to_hex()),
        });
    }

    // 3. A key file of the new epoch for this password.
    let keys_before = list(repository)?;
    let labels = keys_before
        .iter()
        .find(|k| k.in_use)
        .and_then(|k| k.labels.clone())
        .unwrap_or_default();
    let spec = KeyFileSpec {
        role: KeyRole::Full,
        epoch,
        labels: key_file::KeyLabels {
            created_s: now_s(),
            ..labels
        },
    };
    let key_bytes =
        key_file::seal_key_file(&keys, password, kdf, &spec).ok_or(Error::WriteOnly {
            action: "rotate keys",
        })?;
    let key = Id::of_bytes(&key_bytes).to_hex();
    put(repository, ObjectKind::Key, &key, &key_bytes)?;

    // 4. Every other key file up to the new epoch: those of earlier epochs
    // hold the old private key, and one of the new epoch was stored by a
    // rotation that did not finish (this one started from the epoch before)
    // and holds a key pair nothing will be wrapped to.
    lock.ensure_held()?;
    let mut removed_keys = Vec::new();
    for old in keys_before {
        if old.id != key && old.header.is_some_and(|h| h.epoch <= epoch) {
            delete(repository, ObjectKind::Key, &old.id)?;
            removed_keys.push(old);
        }
    }

    // 5. What the old private key could still open: older records first, so
    // that a key file of another pair this rotation did not see (a store
    // may show a killed writer's last put late) finds no record and is
    // passed over before the sessions its record names are gone; then the
    // version 1 objects of the sessions just re-wrapped and older
    // re-wrapped objects (and leftovers of rotations that did not finish).
    let records = backend
        .list(ObjectKind::Epoch)
        .map_err(|e| Error::storage(ObjectKind::Epoch, "", e))?;
    for name in records {
        if name != record_id.to_hex() {
            delete(repository, ObjectKind::Epoch, &name)?;
        }
    }
    let mapped: HashSet<SessionId> = record.sessions.iter().map(|r| r.original).collect();
    let current: HashSet<Id> = record.sessions.iter().map(|r| r.object).collect();
    for (id, len) in &listed {
        let superseded = match *len {
            len if len == SESSION_LEN as u64 => mapped.contains(&SessionId(*id)),
            len if len == REWRAPPED_LEN as u64 => !current.contains(id) && !kept.contains(id),
            _ => false,
        };
        if superseded {
            delete(repository, ObjectKind::Session, &id.to_hex())?;
        }
    }
    Ok(Rotated {
        epoch,
        key,
        sessions: record.sessions.len(),
        removed_keys,
        unreadable,
    })
}

/// What a rotation that did not finish left, by object, with why it
/// matters: objects an old private key could still read, or a record that
/// makes writers refuse. `check` warns about each; running `key rotate`
/// again removes them.
pub(crate) fn rotation_leftovers(repository: &Repository) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    let epoch = repository.key_header().epoch;
    let again = "run `cairn key rotate` again to finish it";
    for name in repository
        .backend()
        .list(ObjectKind::Epoch)
        .map_err(|e| Error::storage(ObjectKind::Epoch, "", e))?
    {
        let object = object_name(ObjectKind::Epoch, &name);
        let Ok(Ok(header)) = epoch::read_header_of(repository.backend(), &name) else {
            continue;
        };
        if header.epoch > epoch {
            found.push((object, format!("a key rotation to epoch {} was started and not finished: nothing is written until it is; {again}", header.epoch)));
        } else if Some(name.as_str()) != repository.epoch_record().map(|r| r.to_hex()).as_deref() {
            found.push((object, format!("an epoch record a rotation superseded: the old key pair can still read it; {again}")));
        }
    }
    for key in list(repository)? {
        if key.header.is_some_and(|h| h.epoch < epoch) {
            found.push((
                object_name(ObjectKind::Key, &key.id),
                format!("a key file a rotation revoked: it holds the old key pair; {again}"),
            ));
        }
    }
    if epoch == 0 {
        return Ok(found);
    }
    let current: HashSet<Id> = repository
        .rewrapped_sessions()
        .filter_map(|id| repository.rewrapped_object(id))
        .collect();
    let mapped: HashSet<SessionId> = repository.rewrapped_sessions().collect();
    for (id, len) in listed_sessions(repository)? {
        let object = object_name(ObjectKind::Session, &id.to_hex());
        if len == SESSION_LEN as u64 && mapped.contains(&SessionId(id)) {
            found.push((object, format!("the old wrapping of a re-wrapped session: the old key pair can still open it; {again}")));
        } else if len == REWRAPPED_LEN as u64 && !current.contains(&id) {
            found.push((
                object,
                format!("a re-wrapped session no epoch record of this key names; {again}"),
            ));
        }
    }
    Ok(found)
}

/// Every object in `sessions/` named like one, with its size.
fn listed_sessions(repository: &Repository) -> Result<Vec<(Id, u64)>> {
    let backend = repository.backend();
    let names = backend
        .list(ObjectKind::Session)
        .map_err(|e| Error::storage(ObjectKind::Session, "", e))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let Some(id) = Id::from_hex(&name).filter(|id| id.to_hex() == name) else {
            continue;
        };
        let len = backend
            .size(ObjectKind::Session, &name)
            .map_err(|e| Error::storage(ObjectKind::Session, &name, e))?;
        out.push((id, len));
    }
    Ok(out)
}

fn put(repository: &Repository, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<()> {
    repository
        .backend()
        .put(kind, name, bytes)
        .map_err(|e| Error::storage(kind, name, e))
}

/// Deletes an object; one already gone is no error.
fn delete(repository: &Repository, kind: ObjectKind, name: &str) -> Result<()> {
    match repository.backend().delete(kind, name) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Storage {
            object: object_name(kind, name),
            error: e,
        }),
    }
}
