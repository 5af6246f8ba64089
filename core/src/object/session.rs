//! Session objects: the per-command data keys (SPEC.md §6).
//!
//! Every command that writes draws a fresh random data key, wraps it to the
//! repository's X25519 public key (ephemeral-static Diffie-Hellman, then
//! BLAKE3 key derivation), and stores the result in `sessions/`. Packs and
//! snapshots name the session whose key sealed them. Writing needs only the
//! public key; reading needs the private key.

use x25519_dalek::{PublicKey, StaticSecret};

use crate::crypto::{self, Sealer, SecretKey};
use crate::id::{Id, SessionId};

/// Leading bytes of a session object.
pub const SESSION_MAGIC: &[u8; 4] = b"CRNS";
/// Session object format version written by this build.
pub const SESSION_VERSION: u8 = 1;
/// Length of the session header (magic, version, ephemeral public key): its AAD.
pub const SESSION_HEADER_LEN: usize = 4 + 1 + 32;
/// Exact length of a session object.
pub const SESSION_LEN: usize = SESSION_HEADER_LEN + crypto::SEAL_OVERHEAD + 32;
/// BLAKE3 key-derivation context for the key that wraps a data key.
pub const WRAP_CONTEXT: &str = "cairn 2026-11 session data key wrap v1";
/// Version of a re-wrapped session object (SPEC.md §18).
pub const REWRAPPED_VERSION: u8 = 2;
/// Length of a re-wrapped object's header (magic, version, original
/// session id, epoch, ephemeral public key): its AAD.
pub const REWRAPPED_HEADER_LEN: usize = 4 + 1 + 32 + 4 + 32;
/// Exact length of a re-wrapped session object.
pub const REWRAPPED_LEN: usize = REWRAPPED_HEADER_LEN + crypto::SEAL_OVERHEAD + 32;
/// BLAKE3 key-derivation context for the key that re-wraps a data key.
pub const REWRAP_CONTEXT: &str = "cairn session data key rewrap v2";

/// An open session: its id and its data key.
pub struct Session {
    /// The session's id: its version 1 object's name, even when it was
    /// opened through a re-wrapped object.
    pub id: SessionId,
    /// Seals and opens everything the session wrote.
    pub sealer: Sealer,
    /// The data key itself, to re-wrap it when the key pair rotates.
    pub(crate) data_key: SecretKey,
}

/// Why a session object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The bytes are not a session object.
    #[error("not a valid session object: {0}")]
    Malformed(&'static str),
    /// The private key does not open it, or it was altered.
    #[error("session key does not authenticate")]
    Authentication,
}

fn wrapping_key(shared: &[u8; 32], ephemeral: &PublicKey, repository: &PublicKey) -> SecretKey {
    wrapping_key_in(WRAP_CONTEXT, shared, ephemeral, repository)
}

fn wrapping_key_in(
    context: &str,
    shared: &[u8; 32],
    ephemeral: &PublicKey,
    repository: &PublicKey,
) -> SecretKey {
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(ephemeral.as_bytes());
    material[64..].copy_from_slice(repository.as_bytes());
    let key = crypto::derive_key(context, &material);
    zeroize::Zeroize::zeroize(&mut material);
    key
}

fn header(ephemeral: &PublicKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(SESSION_LEN);
    out.extend_from_slice(SESSION_MAGIC);
    out.push(SESSION_VERSION);
    out.extend_from_slice(ephemeral.as_bytes());
    out
}

/// Creates a session: a fresh data key wrapped to `repository`.
/// Returns the open session and the bytes to store under `sessions/<id>`.
pub fn create(repository: &PublicKey) -> (Session, Vec<u8>) {
    // A fresh random scalar, used for this one exchange and wiped when
    // dropped (x25519-dalek's zeroize feature). `StaticSecret` only because
    // `EphemeralSecret` can be drawn from nothing but a rand_core RNG.
    let ephemeral = StaticSecret::from(crypto::random_bytes::<32>());
    let ephemeral_public = PublicKey::from(&ephemeral);
    let shared = ephemeral.diffie_hellman(repository);
    assemble(
        repository,
        &ephemeral_public,
        shared.as_bytes(),
        SecretKey::random(),
        crypto::random_bytes(),
    )
}

/// [`create`] with a given ephemeral key, data key and nonce: for test
/// vectors only. Reusing an ephemeral key anywhere else would be a flaw.
#[cfg(test)]
pub(crate) fn create_fixed(
    repository: &PublicKey,
    ephemeral: &StaticSecret,
    data_key: SecretKey,
    nonce: [u8; crypto::NONCE_LEN],
) -> (Session, Vec<u8>) {
    let ephemeral_public = PublicKey::from(ephemeral);
    let shared = ephemeral.diffie_hellman(repository);
    assemble(
        repository,
        &ephemeral_public,
        shared.as_bytes(),
        data_key,
        nonce,
    )
}

fn assemble(
    repository: &PublicKey,
    ephemeral_public: &PublicKey,
    shared: &[u8; 32],
    data_key: SecretKey,
    nonce: [u8; crypto::NONCE_LEN],
) -> (Session, Vec<u8>) {
    let wrap = wrapping_key(shared, ephemeral_public, repository);
    let mut bytes = header(ephemeral_public);
    let sealed = Sealer::new(&wrap).seal_with_nonce(nonce, data_key.as_bytes(), &bytes);
    bytes.extend_from_slice(&sealed);
    let session = Session {
        id: SessionId(Id::of_bytes(&bytes)),
        sealer: Sealer::new(&data_key),
        data_key,
    };
    (session, bytes)
}

/// Unwraps a stored session object with the repository's private key.
pub fn open(bytes: &[u8], private: &StaticSecret) -> Result<Session, SessionError> {
    if bytes.len() != SESSION_LEN {
        return Err(SessionError::Malformed("wrong length"));
    }
    if &bytes[..4] != SESSION_MAGIC {
        return Err(SessionError::Malformed("bad magic"));
    }
    if bytes[4] != SESSION_VERSION {
        return Err(SessionError::Malformed("unsupported version"));
    }
    let data_key = unwrap_data_key(WRAP_CONTEXT, bytes, 5, SESSION_HEADER_LEN, private)?;
    Ok(Session {
        id: SessionId(Id::of_bytes(bytes)),
        sealer: Sealer::new(&data_key),
        data_key,
    })
}

/// The data key sealed after the `header_len`-byte header of a session
/// object (the header is the AAD), wrapped to `private`'s public key with
/// the ephemeral public key at `ephemeral_at` and the wrapping key derived
/// in `context`.
fn unwrap_data_key(
    context: &str,
    bytes: &[u8],
    ephemeral_at: usize,
    header_len: usize,
    private: &StaticSecret,
) -> Result<SecretKey, SessionError> {
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&bytes[ephemeral_at..ephemeral_at + 32]);
    let ephemeral = PublicKey::from(ephemeral);
    let repository = PublicKey::from(private);
    let shared = private.diffie_hellman(&ephemeral);
    let wrap = wrapping_key_in(context, shared.as_bytes(), &ephemeral, &repository);
    let data_key = Sealer::new(&wrap)
        .open(&bytes[header_len..], &bytes[..header_len])
        .map_err(|_| SessionError::Authentication)?;
    let data_key: [u8; 32] = data_key
        .as_slice()
        .try_into()
        .map_err(|_| SessionError::Malformed("wrong data key length"))?;
    Ok(SecretKey(data_key))
}

/// Wraps the data key of session `original` again, to the public key of
/// `epoch` (SPEC.md §18): the bytes of a re-wrapped session object, to
/// store under the BLAKE3 of them.
pub fn rewrap(
    original: SessionId,
    epoch: u32,
    data_key: &SecretKey,
    repository: &PublicKey,
) -> Vec<u8> {
    rewrap_with(
        original,
        epoch,
        data_key,
        repository,
        &StaticSecret::from(crypto::random_bytes::<32>()),
        crypto::random_bytes(),
    )
}

/// [`rewrap`] with a given ephemeral key and nonce: for test vectors only.
pub(crate) fn rewrap_with(
    original: SessionId,
    epoch: u32,
    data_key: &SecretKey,
    repository: &PublicKey,
    ephemeral: &StaticSecret,
    nonce: [u8; crypto::NONCE_LEN],
) -> Vec<u8> {
    let ephemeral_public = PublicKey::from(ephemeral);
    let shared = ephemeral.diffie_hellman(repository);
    let wrap = wrapping_key_in(
        REWRAP_CONTEXT,
        shared.as_bytes(),
        &ephemeral_public,
        repository,
    );
    let mut bytes = Vec::with_capacity(REWRAPPED_LEN);
    bytes.extend_from_slice(SESSION_MAGIC);
    bytes.push(REWRAPPED_VERSION);
    bytes.extend_from_slice(&original.0 .0);
    bytes.extend_from_slice(&epoch.to_le_bytes());
    bytes.extend_from_slice(ephemeral_public.as_bytes());
    let sealed = Sealer::new(&wrap).seal_with_nonce(nonce, data_key.as_bytes(), &bytes);
    bytes.extend_from_slice(&sealed);
    bytes
}

/// A re-wrapped session object's original session id and epoch, from its
/// clear header.
pub fn rewrapped_header(bytes: &[u8]) -> Result<(SessionId, u32), SessionError> {
    if bytes.len() != REWRAPPED_LEN {
        return Err(SessionError::Malformed("wrong length"));
    }
    rewrapped_header_prefix(bytes)
}

/// [`rewrapped_header`] from the object's first
/// [`REWRAPPED_HEADER_LEN`] bytes or more, whatever its length.
pub fn rewrapped_header_prefix(bytes: &[u8]) -> Result<(SessionId, u32), SessionError> {
    if bytes.len() < REWRAPPED_HEADER_LEN {
        return Err(SessionError::Malformed("too short"));
    }
    if &bytes[..4] != SESSION_MAGIC {
        return Err(SessionError::Malformed("bad magic"));
    }
    if bytes[4] != REWRAPPED_VERSION {
        return Err(SessionError::Malformed("unsupported version"));
    }
    let mut original = [0u8; 32];
    original.copy_from_slice(&bytes[5..37]);
    let epoch = u32::from_le_bytes([bytes[37], bytes[38], bytes[39], bytes[40]]);
    Ok((SessionId(Id(original)), epoch))
}

/// Opens a re-wrapped session object with the private key of its epoch.
/// The session is named by its original id.
pub fn open_rewrapped(bytes: &[u8], private: &StaticSecret) -> Result<Session, SessionError> {
    let (original, _) = rewrapped_header(bytes)?;
    let data_key = unwrap_data_key(REWRAP_CONTEXT, bytes, 41, REWRAPPED_HEADER_LEN, private)?;
    Ok(Session {
        id: original,
        sealer: Sealer::new(&data_key),
        data_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_and_unwrap() {
        let private = StaticSecret::from(crypto::random_bytes::<32>());
        let (session, bytes) = create(&PublicKey::from(&private));
        assert_eq!(bytes.len(), SESSION_LEN);
        let opened = open(&bytes, &private).unwrap();
        assert_eq!(opened.id, session.id);
        let sealed = session.sealer.seal(b"pack", b"");
        assert_eq!(opened.sealer.open(&sealed, b"").unwrap(), b"pack");

        let stranger = StaticSecret::from(crypto::random_bytes::<32>());
        assert!(open(&bytes, &stranger).is_err());
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1;
            assert!(open(&flipped, &private).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn a_rewrapped_data_key_opens_with_the_new_key_only() {
        let old = StaticSecret::from(crypto::random_bytes::<32>());
        let new = StaticSecret::from(crypto::random_bytes::<32>());
        let (session, _) = create(&PublicKey::from(&old));
        let bytes = rewrap(session.id, 4, &session.data_key, &PublicKey::from(&new));
        assert_eq!(bytes.len(), REWRAPPED_LEN);
        assert_eq!(rewrapped_header(&bytes).unwrap(), (session.id, 4));
        let opened = open_rewrapped(&bytes, &new).unwrap();
        assert_eq!(opened.id, session.id);
        assert_eq!(opened.data_key.as_bytes(), session.data_key.as_bytes());
        assert!(open_rewrapped(&bytes, &old).is_err());
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1;
            assert!(open_rewrapped(&flipped, &new).is_err(), "flip at {i}");
        }
    }
}
