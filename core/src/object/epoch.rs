//! Epoch records (SPEC.md §18): after a rotation of the X25519 key pair,
//! which re-wrapped session object holds each earlier session's data key.
//!
//! A record is sealed under a key derived from the private key of its
//! epoch, so only holders of that key can read it or make one that opens;
//! its clear header names the epoch and its public key, so that writers
//! holding an older key can tell that a rotation happened.

use x25519_dalek::{PublicKey, StaticSecret};

use crate::codec;
use crate::crypto::{self, Sealer};
use crate::id::{Id, SessionId};

/// Leading bytes of an epoch record.
pub const EPOCH_MAGIC: &[u8; 4] = b"CRNE";
/// Epoch record format version written by this build.
pub const EPOCH_RECORD_VERSION: u8 = 1;
/// Length of the clear header (magic, version, epoch, public key): its AAD.
pub const EPOCH_HEADER_LEN: usize = 4 + 1 + 4 + 32;
/// Largest epoch record read: a million sessions.
pub const MAX_EPOCH_RECORD_LEN: u64 = 80 << 20;
/// Context of the key that seals a record, derived from its private key.
const RECORD_CONTEXT: &str = "cairn epoch record v1";

/// Why an epoch record was refused.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The bytes are not an epoch record.
    #[error("not a valid epoch record: {0}")]
    Malformed(&'static str),
    /// It is not sealed under this private key, or was altered.
    #[error("epoch record does not authenticate")]
    Authentication,
    /// Its plaintext does not decode.
    #[error("epoch record does not decode: {0}")]
    Undecodable(#[from] codec::DecodeError),
}

/// Where one session's data key is, after a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Rewrapped {
    /// The session, by its original id.
    pub original: SessionId,
    /// The name of its re-wrapped object in `sessions/`.
    pub object: Id,
}

/// The plaintext of an epoch record.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct EpochRecord {
    /// The record of the epoch before, if it had one.
    pub previous: Option<Id>,
    /// Every session created before this epoch, sorted by original id,
    /// each once.
    pub sessions: Vec<Rewrapped>,
}

/// An epoch record's clear header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochHeader {
    /// The epoch it maps sessions for.
    pub epoch: u32,
    /// That epoch's public key.
    pub public: [u8; 32],
}

fn record_sealer(private: &StaticSecret) -> Sealer {
    Sealer::new(&crypto::derive_key(RECORD_CONTEXT, private.as_bytes()))
}

/// Seals `record` as the record of `epoch`, whose private key is `private`.
pub fn seal(epoch: u32, private: &StaticSecret, record: &EpochRecord) -> Vec<u8> {
    seal_with_nonce(epoch, private, record, crypto::random_bytes())
}

/// [`seal`] with a given nonce: for test vectors only.
pub(crate) fn seal_with_nonce(
    epoch: u32,
    private: &StaticSecret,
    record: &EpochRecord,
    nonce: [u8; crypto::NONCE_LEN],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(EPOCH_MAGIC);
    out.push(EPOCH_RECORD_VERSION);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(PublicKey::from(private).as_bytes());
    let sealed = record_sealer(private).seal_with_nonce(nonce, &codec::encode(record), &out);
    out.extend_from_slice(&sealed);
    out
}

/// Reads a record's clear header, without any key.
pub fn read_header(bytes: &[u8]) -> Result<EpochHeader, EpochError> {
    if bytes.len() < EPOCH_HEADER_LEN + crypto::SEAL_OVERHEAD {
        return Err(EpochError::Malformed("too short"));
    }
    if &bytes[..4] != EPOCH_MAGIC {
        return Err(EpochError::Malformed("bad magic"));
    }
    if bytes[4] != EPOCH_RECORD_VERSION {
        return Err(EpochError::Malformed("unsupported version"));
    }
    let mut public = [0u8; 32];
    public.copy_from_slice(&bytes[9..EPOCH_HEADER_LEN]);
    Ok(EpochHeader {
        epoch: u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]),
        public,
    })
}

/// Reads the clear header of the record `epochs/<name>`: only its first
/// bytes, whatever its size. The outer error is storage's.
pub(crate) fn read_header_of(
    backend: &dyn crate::backend::Backend,
    name: &str,
) -> std::io::Result<Result<EpochHeader, EpochError>> {
    let kind = crate::backend::ObjectKind::Epoch;
    let wanted = (EPOCH_HEADER_LEN + crypto::SEAL_OVERHEAD) as u64;
    if backend.size(kind, name)? < wanted {
        return Ok(Err(EpochError::Malformed("too short")));
    }
    Ok(read_header(&backend.get_range(kind, name, 0, wanted)?))
}

/// Opens a record with the private key of its epoch, and checks that its
/// sessions are sorted and unique.
pub fn open(bytes: &[u8], private: &StaticSecret) -> Result<EpochRecord, EpochError> {
    let header = read_header(bytes)?;
    if header.public != *PublicKey::from(private).as_bytes() {
        return Err(EpochError::Authentication);
    }
    let plain = record_sealer(private)
        .open(&bytes[EPOCH_HEADER_LEN..], &bytes[..EPOCH_HEADER_LEN])
        .map_err(|_| EpochError::Authentication)?;
    let record: EpochRecord = codec::decode(&plain)?;
    if !record
        .sessions
        .windows(2)
        .all(|pair| pair[0].original < pair[1].original)
    {
        return Err(EpochError::Malformed("sessions not sorted and unique"));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_opens_with_its_private_key_only() {
        let private = StaticSecret::from([7; 32]);
        let record = EpochRecord {
            previous: Some(Id([1; 32])),
            sessions: vec![
                Rewrapped {
                    original: SessionId(Id([2; 32])),
                    object: Id([3; 32]),
                },
                Rewrapped {
                    original: SessionId(Id([4; 32])),
                    object: Id([5; 32]),
                },
            ],
        };
        let bytes = seal(9, &private, &record);
        let header = read_header(&bytes).unwrap();
        assert_eq!(header.epoch, 9);
        assert_eq!(open(&bytes, &private).unwrap(), record);
        assert!(open(&bytes, &StaticSecret::from([8; 32])).is_err());
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1;
            assert!(open(&flipped, &private).is_err(), "flip at {i}");
        }
    }
}
