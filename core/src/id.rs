//! Identifiers: 32-byte BLAKE3 outputs, typed by what they name (SPEC.md §2).
//!
//! Blob ids are keyed BLAKE3 of the plaintext; every stored file's name is the
//! unkeyed BLAKE3 of its bytes. The types keep a tree id from being passed
//! where a pack id belongs.

use std::fmt;

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

/// A 32-byte identifier.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode)]
pub struct Id(pub [u8; ID_LEN]);

impl Id {
    /// The unkeyed BLAKE3 hash of `bytes`: the name of a stored file.
    pub fn of_bytes(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hexadecimal, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, as shown to people.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }

    /// Parses 64 hex characters; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Id> {
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Id(out))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, bincode::Encode, bincode::Decode)]
        pub struct $name(pub Id);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

typed_id!(
    /// Keyed BLAKE3 of a blob's plaintext.
    BlobId
);
typed_id!(
    /// Name of a packfile: BLAKE3 of its bytes.
    PackId
);
typed_id!(
    /// Name of a snapshot object: BLAKE3 of its bytes.
    SnapshotId
);
typed_id!(
    /// Name of a session object: BLAKE3 of its bytes.
    SessionId
);
typed_id!(
    /// Name of an index segment: BLAKE3 of its bytes.
    SegmentId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::of_bytes(b"cairn");
        assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short().len(), 8);
        assert_eq!(Id::from_hex("zz"), None);
        assert_eq!(Id::from_hex(&id.to_hex()[..63]), None);
    }
}
