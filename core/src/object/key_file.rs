//! The master keys and the password-wrapped key files that hold them
//! (SPEC.md §5).
//!
//! The master keys never touch storage in the clear: each key file seals them
//! under a key derived from one password with Argon2id, whose parameters the
//! file records. Several key files (several passwords) can open one
//! repository.

use argon2::{Algorithm, Argon2, Params, Version};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::crypto::{self, IdKey, Sealer, SecretKey};

/// Leading bytes of a key file.
pub const KEY_FILE_MAGIC: &[u8; 4] = b"CRNK";
/// Key file format version written by this build.
pub const KEY_FILE_VERSION: u8 = 1;
/// KDF identifier for Argon2id version 0x13.
pub const KDF_ARGON2ID: u8 = 1;
/// Length of a key file's salt.
pub const SALT_LEN: usize = 32;
/// Length of the master key plaintext.
pub const MASTER_LEN: usize = 104;
/// Length of the key file header (magic to salt), which is also its AAD.
pub const KEY_FILE_HEADER_LEN: usize = 4 + 1 + 1 + 12 + SALT_LEN;
/// Exact length of a key file.
pub const KEY_FILE_LEN: usize = KEY_FILE_HEADER_LEN + crypto::SEAL_OVERHEAD + MASTER_LEN;

/// Argon2id cost parameters, as recorded in a key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The defaults for new key files: 64 MiB, 3 passes, 1 lane (as strong
    /// as borg 2's and kopia's; see SPEC.md §5).
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };

    /// Whether a key file read from storage asks for a sane amount of work.
    /// A hostile key file must not make `open` allocate gigabytes or spin.
    pub(crate) fn is_bounded(&self) -> bool {
        (8..=1 << 20).contains(&self.memory_kib)
            && (1..=64).contains(&self.iterations)
            && (1..=16).contains(&self.parallelism)
            && self.memory_kib >= 8 * self.parallelism
    }

    fn derive(&self, password: &[u8], salt: &[u8]) -> Result<SecretKey, argon2::Error> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))?;
        let mut key = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password, salt, &mut key)?;
        Ok(SecretKey(key))
    }
}

/// The repository's master keys.
pub struct MasterKeys {
    /// X25519 private key: unwraps session keys.
    pub(crate) private: StaticSecret,
    /// Key of the keyed BLAKE3 that names blobs.
    pub(crate) id_key: IdKey,
    /// Seals index segments; held by write-only keys too, for deduplication.
    pub(crate) index_key: SecretKey,
    /// Seed of the chunker's gear table, so cut points reveal nothing.
    pub(crate) chunker_seed: u64,
}

impl MasterKeys {
    /// Fresh random master keys for a new repository.
    pub fn generate() -> MasterKeys {
        let seed: [u8; 8] = crypto::random_bytes();
        MasterKeys {
            private: StaticSecret::from(crypto::random_bytes::<32>()),
            id_key: IdKey(crypto::random_bytes()),
            index_key: SecretKey::random(),
            chunker_seed: u64::from_le_bytes(seed),
        }
    }

    /// The repository's X25519 public key, to which sessions wrap data keys.
    pub fn public(&self) -> PublicKey {
        PublicKey::from(&self.private)
    }

    fn to_bytes(&self) -> Zeroizing<[u8; MASTER_LEN]> {
        let mut out = Zeroizing::new([0u8; MASTER_LEN]);
        out[0..32].copy_from_slice(self.private.as_bytes());
        out[32..64].copy_from_slice(&self.id_key.0);
        out[64..96].copy_from_slice(self.index_key.as_bytes());
        out[96..104].copy_from_slice(&self.chunker_seed.to_le_bytes());
        out
    }

    fn from_bytes(bytes: &[u8; MASTER_LEN]) -> MasterKeys {
        let mut private = [0u8; 32];
        private.copy_from_slice(&bytes[0..32]);
        let mut id_key = [0u8; 32];
        id_key.copy_from_slice(&bytes[32..64]);
        let mut index_key = [0u8; 32];
        index_key.copy_from_slice(&bytes[64..96]);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&bytes[96..104]);
        let keys = MasterKeys {
            private: StaticSecret::from(private),
            id_key: IdKey(id_key),
            index_key: SecretKey(index_key),
            chunker_seed: u64::from_le_bytes(seed),
        };
        zeroize::Zeroize::zeroize(&mut private);
        zeroize::Zeroize::zeroize(&mut id_key);
        zeroize::Zeroize::zeroize(&mut index_key);
        keys
    }

    /// Master keys from fixed bytes: the test vectors' and the fuzz
    /// targets' keys.
    pub(crate) fn from_fixed(bytes: [u8; MASTER_LEN]) -> MasterKeys {
        MasterKeys::from_bytes(&bytes)
    }
}

/// Why a key file did not yield master keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The bytes are not a key file this build reads.
    #[error("not a valid key file: {0}")]
    Malformed(&'static str),
    /// The password does not open this key file.
    #[error("password does not open this key file")]
    WrongPassword,
}

/// Seals `master` under `password` into the bytes of a key file.
pub fn seal_key_file(master: &MasterKeys, password: &[u8], params: KdfParams) -> Vec<u8> {
    seal_key_file_with(
        master,
        password,
        params,
        crypto::random_bytes(),
        crypto::random_bytes(),
    )
}

pub(crate) fn seal_key_file_with(
    master: &MasterKeys,
    password: &[u8],
    params: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; crypto::NONCE_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_FILE_LEN);
    out.extend_from_slice(KEY_FILE_MAGIC);
    out.push(KEY_FILE_VERSION);
    out.push(KDF_ARGON2ID);
    out.extend_from_slice(&params.memory_kib.to_le_bytes());
    out.extend_from_slice(&params.iterations.to_le_bytes());
    out.extend_from_slice(&params.parallelism.to_le_bytes());
    out.extend_from_slice(&salt);
    let wrapping = params
        .derive(password, &salt)
        .expect("default KDF parameters are valid");
    let sealed = Sealer::new(&wrapping).seal_with_nonce(nonce, master.to_bytes().as_slice(), &out);
    out.extend_from_slice(&sealed);
    out
}

/// Reads the KDF parameters and opens a key file with `password`.
pub fn open_key_file(bytes: &[u8], password: &[u8]) -> Result<MasterKeys, KeyFileError> {
    let params = read_header(bytes)?;
    let header = &bytes[..KEY_FILE_HEADER_LEN];
    let salt = &bytes[18..KEY_FILE_HEADER_LEN];
    let wrapping = params
        .derive(password, salt)
        .map_err(|_| KeyFileError::Malformed("KDF parameters rejected"))?;
    let plain = Zeroizing::new(
        Sealer::new(&wrapping)
            .open(&bytes[KEY_FILE_HEADER_LEN..], header)
            .map_err(|_| KeyFileError::WrongPassword)?,
    );
    let master: &[u8; MASTER_LEN] = plain
        .as_slice()
        .try_into()
        .map_err(|_| KeyFileError::Malformed("wrong master length"))?;
    Ok(MasterKeys::from_bytes(master))
}

/// Checks a key file's length and clear header (SPEC.md §5, steps 1 to 3)
/// and returns its KDF parameters, without any derivation.
pub fn read_header(bytes: &[u8]) -> Result<KdfParams, KeyFileError> {
    if bytes.len() != KEY_FILE_LEN {
        return Err(KeyFileError::Malformed("wrong length"));
    }
    if &bytes[0..4] != KEY_FILE_MAGIC {
        return Err(KeyFileError::Malformed("bad magic"));
    }
    if bytes[4] != KEY_FILE_VERSION {
        return Err(KeyFileError::Malformed("unsupported version"));
    }
    if bytes[5] != KDF_ARGON2ID {
        return Err(KeyFileError::Malformed("unknown KDF"));
    }
    let le32 =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let params = KdfParams {
        memory_kib: le32(6),
        iterations: le32(10),
        parallelism: le32(14),
    };
    if !params.is_bounded() {
        return Err(KeyFileError::Malformed("KDF parameters out of bounds"));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn key_file_round_trip_and_wrong_password() {
        let master = MasterKeys::generate();
        let file = seal_key_file(&master, b"secret", FAST);
        assert_eq!(file.len(), KEY_FILE_LEN);
        let opened = open_key_file(&file, b"secret").unwrap();
        assert_eq!(opened.to_bytes().as_slice(), master.to_bytes().as_slice());
        assert!(matches!(
            open_key_file(&file, b"wrong"),
            Err(KeyFileError::WrongPassword)
        ));
    }

    #[test]
    fn hostile_parameters_are_refused_before_deriving() {
        let master = MasterKeys::generate();
        let mut file = seal_key_file(&master, b"pw", FAST);
        file[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            open_key_file(&file, b"pw"),
            Err(KeyFileError::Malformed(_))
        ));
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let master = MasterKeys::generate();
        let file = seal_key_file(&master, b"pw", FAST);
        for i in 0..file.len() {
            let mut flipped = file.clone();
            flipped[i] ^= 0x80;
            assert!(open_key_file(&flipped, b"pw").is_err(), "flip at {i}");
        }
    }
}
