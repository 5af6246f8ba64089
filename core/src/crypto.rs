//! Sealing and hashing primitives (SPEC.md §4). No I/O happens here.
//!
//! AES-256-GCM-SIV is used everywhere: it stays safe even if a random nonce
//! repeats, which matters for a store written by many hosts over many years.
//! Sealed bytes are `nonce (12) || ciphertext || tag (16)`.

use aes_gcm_siv::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::id::{BlobId, Id};

/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// Authentication tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Bytes a seal adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Fills an array with bytes from the operating system's CSPRNG.
///
/// # Panics
///
/// If the operating system cannot give random bytes: nothing cairn writes
/// is safe without them (nonces, keys), so there is no way to go on.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random number generator failed");
    out
}

/// Authentication of sealed bytes failed: wrong key, or the bytes were altered.
#[derive(Debug, thiserror::Error)]
#[error("authentication failed")]
pub struct OpenError;

/// A 256-bit secret key. Zeroed on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(pub(crate) [u8; 32]);

impl SecretKey {
    /// A fresh random key.
    pub fn random() -> SecretKey {
        SecretKey(random_bytes())
    }

    /// The raw key bytes, for wrapping into a key or session object.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// An AES-256-GCM-SIV key ready to seal and open.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256GcmSiv,
}

impl Sealer {
    /// Prepares the cipher for `key`.
    pub fn new(key: &SecretKey) -> Sealer {
        Sealer {
            cipher: Aes256GcmSiv::new(key.0.as_slice().into()),
        }
    }

    /// Seals `plaintext` under a fresh random nonce, binding `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.seal_with_nonce(random_bytes(), plaintext, aad)
    }

    /// Seals with a given nonce: only for test vectors, which need fixed output.
    pub(crate) fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Vec<u8> {
        // One allocation: the plaintext is copied once and encrypted where
        // it lies.
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
            .expect("AES-GCM-SIV encryption fails only past 2^36 bytes");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens `nonce || ciphertext || tag` where it lies, checking it against
    /// `aad`, and returns the plaintext: the part of `sealed` between the
    /// nonce and the tag. Saves the copy [`Sealer::open`] makes.
    pub fn open_in_place<'a>(
        &self,
        sealed: &'a mut [u8],
        aad: &[u8],
    ) -> Result<&'a [u8], OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad,
                ciphertext,
                aes_gcm_siv::Tag::from_slice(tag),
            )
            .map_err(|_| OpenError)?;
        Ok(ciphertext)
    }

    /// Opens `nonce || ciphertext || tag`, checking it against `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError)
    }
}

/// The key of the keyed BLAKE3 that names blobs.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IdKey(pub(crate) [u8; 32]);

impl IdKey {
    /// An id key from raw bytes (for tests and benchmarks; repositories
    /// take theirs from the master keys).
    pub fn from_bytes(bytes: [u8; 32]) -> IdKey {
        IdKey(bytes)
    }

    /// The blob id of `plaintext` of the type whose wire value is
    /// `type_byte`: keyed BLAKE3 of `type_byte || plaintext`, so ids reveal
    /// nothing about content to someone without the key, and a data blob
    /// and a tree blob never share an id.
    pub fn blob_id(&self, type_byte: u8, plaintext: &[u8]) -> BlobId {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(&[type_byte]);
        hasher.update(plaintext);
        BlobId(Id(*hasher.finalize().as_bytes()))
    }
}

/// Derives a 256-bit key from `material` for the purpose named by `context`
/// (BLAKE3's key derivation mode).
pub fn derive_key(context: &str, material: &[u8]) -> SecretKey {
    SecretKey(blake3::derive_key(context, material))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let sealer = Sealer::new(&SecretKey::random());
        let sealed = sealer.seal(b"hello", b"aad");
        assert_eq!(sealer.open(&sealed, b"aad").unwrap(), b"hello");
        assert!(sealer.open(&sealed, b"other").is_err());
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert!(sealer.open(&flipped, b"aad").is_err(), "flip at {i}");
        }
        assert!(sealer.open(&sealed[..10], b"aad").is_err());
        let mut in_place = sealed.clone();
        assert_eq!(
            sealer.open_in_place(&mut in_place, b"aad").unwrap(),
            b"hello"
        );
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(sealer.open_in_place(&mut flipped, b"aad").is_err());
        assert!(sealer.open_in_place(&mut [0u8; 10], b"aad").is_err());
        let other = Sealer::new(&SecretKey::random());
        assert!(other.open(&sealed, b"aad").is_err());
    }

    #[test]
    fn aes_key_schedules_are_wiped_on_drop() {
        // Fails to compile if aes's zeroize feature is lost.
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<aes::Aes256>();
    }

    #[test]
    fn nonces_are_fresh() {
        let sealer = Sealer::new(&SecretKey::random());
        assert_ne!(sealer.seal(b"x", b""), sealer.seal(b"x", b""));
    }

    #[test]
    fn blob_ids_depend_on_key() {
        let a = IdKey([1; 32]);
        let b = IdKey([2; 32]);
        assert_eq!(a.blob_id(0, b"data"), a.blob_id(0, b"data"));
        assert_ne!(a.blob_id(0, b"data"), b.blob_id(0, b"data"));
        assert_ne!(a.blob_id(0, b"data"), a.blob_id(0, b"datb"));
        assert_ne!(
            a.blob_id(0, b"data"),
            a.blob_id(1, b"data"),
            "types never share ids"
        );
    }
}
