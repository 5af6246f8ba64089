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

/// An open session: its id and its data key.
pub struct Session {
    /// The session object's name.
    pub id: SessionId,
    /// Seals and opens everything the session wrote.
    pub sealer: Sealer,
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
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(ephemeral.as_bytes());
    material[64..].copy_from_slice(repository.as_bytes());
    let key = crypto::derive_key(WRAP_CONTEXT, &material);
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
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&bytes[5..SESSION_HEADER_LEN]);
    let ephemeral = PublicKey::from(ephemeral);
    let repository = PublicKey::from(private);
    let shared = private.diffie_hellman(&ephemeral);
    let wrap = wrapping_key(shared.as_bytes(), &ephemeral, &repository);
    let data_key = Sealer::new(&wrap)
        .open(&bytes[SESSION_HEADER_LEN..], &bytes[..SESSION_HEADER_LEN])
        .map_err(|_| SessionError::Authentication)?;
    let data_key: [u8; 32] = data_key
        .as_slice()
        .try_into()
        .map_err(|_| SessionError::Malformed("wrong data key length"))?;
    Ok(Session {
        id: SessionId(Id::of_bytes(bytes)),
        sealer: Sealer::new(&SecretKey(data_key)),
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
}
