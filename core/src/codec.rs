//! The one place stored structures are encoded and decoded (SPEC.md §3).
//!
//! Every structured object is framed as `version: u8 || body`, where body is
//! bincode 2.0 with fixed-width little-endian integers. Nothing else in the
//! crate touches bincode, so the crate could be replaced without changing a
//! stored byte; the test vectors in `format-spec/vectors` prove it.

use bincode::config::{self, Configuration, Fixint, Limit, LittleEndian};
use bincode::{Decode, Encode};

/// The structure version written by this build.
pub const STRUCTURE_VERSION: u8 = 1;

/// Largest framed structure this build will decode, in bytes.
pub const MAX_STRUCTURE_LEN: usize = 128 << 20;

type Config<const N: usize> = Configuration<LittleEndian, Fixint, Limit<N>>;

fn config<const N: usize>() -> Config<N> {
    config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<N>()
}

/// Encodes `value` as `STRUCTURE_VERSION || bincode(value)`.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    encode_as(STRUCTURE_VERSION, value)
}

/// Encodes `value` as `version || bincode(value)`, for a structure whose
/// layout has versions of its own (snapshots, SPEC.md §14).
pub fn encode_as<T: Encode>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Encoding into a Vec cannot fail for our types: they hold no maps with
    // fallible iteration and the limit only applies to decoding input sizes.
    let body = bincode::encode_to_vec(value, config::<MAX_STRUCTURE_LEN>())
        .expect("encoding cairn structures into memory cannot fail");
    out.extend_from_slice(&body);
    out
}

/// Why a framed structure could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Input was empty or longer than [`MAX_STRUCTURE_LEN`].
    #[error("structure length {0} out of bounds")]
    Length(usize),
    /// The version byte is not one this build reads.
    #[error("unsupported structure version {0}")]
    Version(u8),
    /// The body is not a valid encoding.
    #[error("malformed structure: {0}")]
    Malformed(String),
    /// The body decoded but bytes were left over.
    #[error("{0} trailing bytes after structure")]
    Trailing(usize),
    /// A tree entry's name could let a restore escape its target (§13).
    #[error("unsafe entry name {0:?}")]
    UnsafeName(String),
    /// A tree's entries are not sorted by name, or a name repeats (§13).
    #[error("entries not sorted or not unique")]
    UnsortedEntries,
    /// A timestamp's nanoseconds are 10^9 or more (§13).
    #[error("timestamp nanoseconds out of range")]
    TimestampOutOfRange,
    /// An index entry that cannot describe a blob in a pack (§11).
    #[error("implausible entry for blob {0}")]
    ImplausibleEntry(String),
}

/// Decodes a framed structure, bounding every allocation by the input size.
///
/// Errors on a wrong version, malformed or trailing bytes, or input larger
/// than [`MAX_STRUCTURE_LEN`].
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_as(STRUCTURE_VERSION, bytes)
}

/// [`decode`] for a structure framed with `version` (see [`encode_as`]).
pub fn decode_as<T: Decode<()>>(version: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.is_empty() || bytes.len() > MAX_STRUCTURE_LEN {
        return Err(DecodeError::Length(bytes.len()));
    }
    if bytes[0] != version {
        return Err(DecodeError::Version(bytes[0]));
    }
    let body = &bytes[1..];
    // bincode checks each length prefix against the limit before allocating.
    // Claims are counted in in-memory element sizes, so allow a multiple of
    // the input length, picked from a few fixed tiers.
    let claim = body.len().saturating_mul(16);
    let result = if claim <= 1 << 20 {
        bincode::decode_from_slice(body, config::<{ 1 << 20 }>())
    } else if claim <= 64 << 20 {
        bincode::decode_from_slice(body, config::<{ 64 << 20 }>())
    } else {
        bincode::decode_from_slice(body, config::<{ 2 << 30 }>())
    };
    let (value, used) = result.map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Encode, Decode)]
    struct Sample {
        a: u32,
        b: Vec<u8>,
        c: Option<i64>,
    }

    #[test]
    fn layout_is_fixed_width_little_endian() {
        let bytes = encode(&Sample {
            a: 0x01020304,
            b: vec![9, 8],
            c: Some(-1),
        });
        let expected: Vec<u8> = [
            &[1u8][..],
            &[4, 3, 2, 1],
            &[2, 0, 0, 0, 0, 0, 0, 0, 9, 8],
            &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(
            decode::<Sample>(&bytes).unwrap(),
            Sample {
                a: 0x01020304,
                b: vec![9, 8],
                c: Some(-1)
            }
        );
    }

    #[test]
    fn rejects_bad_frames() {
        let good = encode(&Sample {
            a: 1,
            b: vec![],
            c: None,
        });
        let mut wrong_version = good.clone();
        wrong_version[0] = 7;
        assert!(matches!(
            decode::<Sample>(&wrong_version),
            Err(DecodeError::Version(7))
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<Sample>(&trailing),
            Err(DecodeError::Trailing(1))
        ));
        assert!(decode::<Sample>(&good[..good.len() - 1]).is_err());
        assert!(decode::<Sample>(&[]).is_err());
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // A Vec<u8> claiming 2^60 bytes in a 20-byte input.
        let mut bytes = vec![1u8, 0, 0, 0, 0];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        bytes.push(0);
        assert!(decode::<Sample>(&bytes).is_err());
    }
}
