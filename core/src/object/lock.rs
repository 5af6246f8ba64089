//! Lock objects: who uses a repository, and how (SPEC.md §15,
//! "Locks").
//!
//! A lock says which host, process and user holds it, for which command,
//! whether it is exclusive, and when it was last refreshed. It is sealed
//! under the index key, which every holder of the master keys has, so that
//! the store can neither read who works on the repository nor forge a
//! lock. Its session field is all zeros: no session key is involved.

use crate::codec;
use crate::crypto::Sealer;
use crate::id::{Id, SessionId};
use crate::object::sealed::{self, ObjectError, SealedKind};

/// Largest lock object read from storage.
pub const MAX_LOCK_LEN: u64 = 64 << 10;

/// The plaintext of a lock object.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Lock {
    /// When it was written (or refreshed), nanoseconds since the epoch.
    pub time_ns: i64,
    /// Exclusive (no other lock may exist) or shared.
    pub exclusive: bool,
    /// Host of the process holding it.
    pub hostname: String,
    /// Which machine and process namespace, beyond the host name: the
    /// machine id (or boot id) and the pid namespace, so that containers
    /// or clones sharing a host name never judge each other's pids.
    pub host_id: String,
    /// User running that process.
    pub username: String,
    /// That process's id.
    pub pid: u32,
    /// The command, for messages (`backup`, `forget`).
    pub command: String,
}

impl Lock {
    /// Encodes the lock's plaintext.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a lock's plaintext.
    pub fn decode(bytes: &[u8]) -> Result<Lock, codec::DecodeError> {
        codec::decode(bytes)
    }

    /// Seals the lock for storage, under the index key.
    pub fn seal(&self, index_sealer: &Sealer) -> Vec<u8> {
        sealed::seal(SealedKind::Lock, NO_SESSION, index_sealer, &self.encode())
    }

    /// Opens a stored lock with the index key and decodes it.
    pub fn open(bytes: &[u8], index_sealer: &Sealer) -> Result<Lock, ObjectError> {
        let plain = sealed::open(SealedKind::Lock, index_sealer, bytes)?;
        Ok(Lock::decode(&plain)?)
    }
}

/// The session field of a lock: no session.
pub const NO_SESSION: SessionId = SessionId(Id([0; 32]));
