//! Sealed objects: the envelope of every encrypted structure (SPEC.md §10).
//!
//! `magic "CRNO" || kind (1) || session id (32) || nonce || ciphertext || tag`.
//! The first 37 bytes are the authenticated data, so an object cannot be
//! moved to another kind or claim another session. The session id says
//! which data key a reader needs.

use crate::crypto::{Sealer, SEAL_OVERHEAD};
use crate::id::{Id, SessionId};

/// Leading bytes of a sealed object.
pub const OBJECT_MAGIC: &[u8; 4] = b"CRNO";
/// Length of the header, which is also the authenticated data.
pub const OBJECT_HEADER_LEN: usize = 4 + 1 + 32;

/// What a sealed object holds; the wire value is the discriminant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedKind {
    /// A packfile's trailer.
    PackTrailer = 1,
    /// An index segment.
    IndexSegment = 2,
    /// A snapshot.
    Snapshot = 3,
    /// A lock.
    Lock = 4,
}

/// Why a sealed object was refused.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Too short, wrong magic or wrong kind.
    #[error("not a sealed {0:?} object")]
    Malformed(SealedKind),
    /// The key does not open it or it was altered.
    #[error("authentication failed")]
    Authentication,
    /// It opened, but what it holds does not decode.
    #[error(transparent)]
    Undecodable(#[from] crate::codec::DecodeError),
}

/// Seals `plaintext` as an object of `kind` written by `session`.
pub fn seal(kind: SealedKind, session: SessionId, sealer: &Sealer, plaintext: &[u8]) -> Vec<u8> {
    seal_with_nonce(
        kind,
        session,
        sealer,
        plaintext,
        crate::crypto::random_bytes(),
    )
}

/// [`seal`] with a given nonce: for test vectors, which need fixed output.
pub(crate) fn seal_with_nonce(
    kind: SealedKind,
    session: SessionId,
    sealer: &Sealer,
    plaintext: &[u8],
    nonce: [u8; crate::crypto::NONCE_LEN],
) -> Vec<u8> {
    let mut out = header(kind, session);
    out.extend_from_slice(&sealer.seal_with_nonce(nonce, plaintext, &out));
    out
}

fn header(kind: SealedKind, session: SessionId) -> Vec<u8> {
    let mut out = Vec::with_capacity(OBJECT_HEADER_LEN + SEAL_OVERHEAD);
    out.extend_from_slice(OBJECT_MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&session.0 .0);
    out
}

/// Reads the session id of a sealed object of `kind` without opening it.
pub fn session_of(kind: SealedKind, bytes: &[u8]) -> Result<SessionId, ObjectError> {
    if bytes.len() < OBJECT_HEADER_LEN + SEAL_OVERHEAD
        || &bytes[..4] != OBJECT_MAGIC
        || bytes[4] != kind as u8
    {
        return Err(ObjectError::Malformed(kind));
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&bytes[5..OBJECT_HEADER_LEN]);
    Ok(SessionId(Id(id)))
}

/// Opens a sealed object of `kind` with `sealer`.
pub fn open(kind: SealedKind, sealer: &Sealer, bytes: &[u8]) -> Result<Vec<u8>, ObjectError> {
    session_of(kind, bytes)?;
    sealer
        .open(&bytes[OBJECT_HEADER_LEN..], &bytes[..OBJECT_HEADER_LEN])
        .map_err(|_| ObjectError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    #[test]
    fn kind_and_session_are_authenticated() {
        let sealer = Sealer::new(&SecretKey::random());
        let session = SessionId(Id([7; 32]));
        let bytes = seal(SealedKind::Snapshot, session, &sealer, b"snap");
        assert_eq!(session_of(SealedKind::Snapshot, &bytes).unwrap(), session);
        assert_eq!(
            open(SealedKind::Snapshot, &sealer, &bytes).unwrap(),
            b"snap"
        );
        assert!(open(SealedKind::IndexSegment, &sealer, &bytes).is_err());
        let mut moved = bytes.clone();
        moved[4] = SealedKind::IndexSegment as u8;
        assert!(open(SealedKind::IndexSegment, &sealer, &moved).is_err());
        let mut other_session = bytes;
        other_session[10] ^= 1;
        assert!(open(SealedKind::Snapshot, &sealer, &other_session).is_err());
    }
}
