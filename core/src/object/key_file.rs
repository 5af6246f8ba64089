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
pub const KEY_FILE_VERSION: u8 = 2;
/// KDF identifier for Argon2id version 0x13.
pub const KDF_ARGON2ID: u8 = 1;
/// Length of a key file's salt.
pub const SALT_LEN: usize = 32;
/// Length of the master key plaintext.
pub const MASTER_LEN: usize = 104;
/// Exact length of a version 1 key file.
pub const KEY_FILE_V1_LEN: usize = 50 + crypto::SEAL_OVERHEAD + MASTER_LEN;
/// Length of a version 2 key file's header (magic to epoch): the AAD of
/// its sealed keys.
const V2_HEADER_LEN: usize = 55;
/// Where a version 2 key file's labels begin: after the sealed keys and
/// the labels' length.
const V2_LABELS_AT: usize = V2_HEADER_LEN + crypto::SEAL_OVERHEAD + MASTER_LEN + 2;
/// Longest host or user label, in bytes.
pub const MAX_LABEL_LEN: usize = 255;
/// Longest key file this build reads: checked before a key file is read.
pub const MAX_KEY_FILE_LEN: usize = 1024;
/// Context of the key that seals version 2 key files' labels.
const LABELS_CONTEXT: &str = "cairn 2026-12 key file labels v1";

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
    /// The defaults for new key files: 64 MiB, 3 passes, 4 lanes (RFC
    /// 9106's second recommended setting, as much memory as borg 2 and
    /// kopia use; the lanes are derived on all cores: see SPEC.md §5).
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
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

/// What a key file lets its holder do (SPEC.md §18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// Read and write everything: holds the X25519 private key.
    Full,
    /// Write new backups only: holds the public key in its place.
    WriteOnly,
}

impl KeyRole {
    fn to_byte(self) -> u8 {
        match self {
            KeyRole::Full => 0,
            KeyRole::WriteOnly => 1,
        }
    }
}

/// A key file's clear header: readable without a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyFileHeader {
    /// Format version, 1 or 2.
    pub version: u8,
    /// Its key derivation's cost.
    pub kdf: KdfParams,
    /// Full or write-only (version 1 files are full).
    pub role: KeyRole,
    /// The key pair generation it holds (0 before any rotation).
    pub epoch: u32,
}

/// Who a key file was made for, and when: shown by `key list`. Sealed
/// under a key derived from the index key, so that every key holder can
/// read them and storage cannot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyLabels {
    /// Host name given when the key was made.
    pub host: String,
    /// User name given when the key was made.
    pub user: String,
    /// When it was made: seconds since the Unix epoch.
    pub created_s: i64,
}

impl KeyLabels {
    fn encode(&self) -> Vec<u8> {
        let host = truncated(&self.host);
        let user = truncated(&self.user);
        let mut out = Vec::with_capacity(10 + host.len() + user.len());
        out.extend_from_slice(&self.created_s.to_le_bytes());
        out.push(host.len() as u8);
        out.extend_from_slice(host);
        out.push(user.len() as u8);
        out.extend_from_slice(user);
        out
    }

    fn decode(bytes: &[u8]) -> Option<KeyLabels> {
        let created_s = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let (host, rest) = length_prefixed(&bytes[8..])?;
        let (user, rest) = length_prefixed(rest)?;
        rest.is_empty().then_some(KeyLabels {
            host,
            user,
            created_s,
        })
    }
}

/// The longest prefix of `label` that fits, cut at a character boundary.
fn truncated(label: &str) -> &[u8] {
    let mut end = label.len().min(MAX_LABEL_LEN);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    &label.as_bytes()[..end]
}

fn length_prefixed(bytes: &[u8]) -> Option<(String, &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let text = rest.get(..len as usize)?;
    Some((
        String::from_utf8(text.to_vec()).ok()?,
        &rest[len as usize..],
    ))
}

/// The repository's master keys, or for a write-only key the same keys
/// with the public key in place of the private one.
pub struct MasterKeys {
    /// X25519 private key: unwraps session keys. `None` for a write-only
    /// key.
    pub(crate) private: Option<StaticSecret>,
    /// The X25519 public key sessions wrap their data keys to.
    public: PublicKey,
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
        let private = StaticSecret::from(crypto::random_bytes::<32>());
        MasterKeys {
            public: PublicKey::from(&private),
            private: Some(private),
            id_key: IdKey(crypto::random_bytes()),
            index_key: SecretKey::random(),
            chunker_seed: u64::from_le_bytes(seed),
        }
    }

    /// These keys with `other`'s id key and chunker seed: a repository
    /// that names and cuts blobs as `other`'s does.
    pub(crate) fn with_blob_naming_of(self, other: &MasterKeys) -> MasterKeys {
        MasterKeys {
            id_key: IdKey(other.id_key.0),
            chunker_seed: other.chunker_seed,
            ..self
        }
    }

    /// The same keys with a new X25519 pair: what a rotation leaves.
    pub(crate) fn with_new_pair(&self, private: StaticSecret) -> MasterKeys {
        MasterKeys {
            public: PublicKey::from(&private),
            private: Some(private),
            id_key: IdKey(self.id_key.0),
            index_key: self.index_key.clone(),
            chunker_seed: self.chunker_seed,
        }
    }

    /// The repository's X25519 public key, to which sessions wrap data keys.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// What these keys allow.
    pub fn role(&self) -> KeyRole {
        if self.private.is_some() {
            KeyRole::Full
        } else {
            KeyRole::WriteOnly
        }
    }

    /// The key that seals key files' labels.
    fn labels_sealer(&self) -> Sealer {
        Sealer::new(&crypto::derive_key(
            LABELS_CONTEXT,
            self.index_key.as_bytes(),
        ))
    }

    /// The plaintext a key file of `role` seals: the private key first for
    /// a full key, the public key for a write-only one. `None` if these
    /// keys cannot make such a file (a write-only key has no private key).
    fn to_bytes(&self, role: KeyRole) -> Option<Zeroizing<[u8; MASTER_LEN]>> {
        let mut out = Zeroizing::new([0u8; MASTER_LEN]);
        match role {
            KeyRole::Full => out[0..32].copy_from_slice(self.private.as_ref()?.as_bytes()),
            KeyRole::WriteOnly => out[0..32].copy_from_slice(self.public.as_bytes()),
        }
        out[32..64].copy_from_slice(&self.id_key.0);
        out[64..96].copy_from_slice(self.index_key.as_bytes());
        out[96..104].copy_from_slice(&self.chunker_seed.to_le_bytes());
        Some(out)
    }

    fn from_bytes(role: KeyRole, bytes: &[u8; MASTER_LEN]) -> MasterKeys {
        let mut first = [0u8; 32];
        first.copy_from_slice(&bytes[0..32]);
        let mut id_key = [0u8; 32];
        id_key.copy_from_slice(&bytes[32..64]);
        let mut index_key = [0u8; 32];
        index_key.copy_from_slice(&bytes[64..96]);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&bytes[96..104]);
        let (private, public) = match role {
            KeyRole::Full => {
                let private = StaticSecret::from(first);
                (Some(private.clone()), PublicKey::from(&private))
            }
            KeyRole::WriteOnly => (None, PublicKey::from(first)),
        };
        let keys = MasterKeys {
            private,
            public,
            id_key: IdKey(id_key),
            index_key: SecretKey(index_key),
            chunker_seed: u64::from_le_bytes(seed),
        };
        zeroize::Zeroize::zeroize(&mut first);
        zeroize::Zeroize::zeroize(&mut id_key);
        zeroize::Zeroize::zeroize(&mut index_key);
        keys
    }

    /// Master keys from fixed bytes: the test vectors' and the fuzz
    /// targets' keys.
    pub(crate) fn from_fixed(bytes: [u8; MASTER_LEN]) -> MasterKeys {
        MasterKeys::from_bytes(KeyRole::Full, &bytes)
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

/// What a new key file is for: role, key pair generation and labels.
#[derive(Clone, Debug)]
pub struct KeyFileSpec {
    /// Full or write-only.
    pub role: KeyRole,
    /// The key pair generation (SPEC.md §18).
    pub epoch: u32,
    /// Host, user and time of creation.
    pub labels: KeyLabels,
}

/// Seals `master` under `password` into the bytes of a version 2 key file.
/// `None` if `master` cannot make a key of `spec.role` (a write-only key
/// cannot make a full one).
pub fn seal_key_file(
    master: &MasterKeys,
    password: &[u8],
    params: KdfParams,
    spec: &KeyFileSpec,
) -> Option<Vec<u8>> {
    seal_key_file_with(
        master,
        password,
        params,
        spec,
        crypto::random_bytes(),
        [crypto::random_bytes(), crypto::random_bytes()],
    )
}

pub(crate) fn seal_key_file_with(
    master: &MasterKeys,
    password: &[u8],
    params: KdfParams,
    spec: &KeyFileSpec,
    salt: [u8; SALT_LEN],
    nonces: [[u8; crypto::NONCE_LEN]; 2],
) -> Option<Vec<u8>> {
    let plain = master.to_bytes(spec.role)?;
    let labels = spec.labels.encode();
    let mut out = Vec::with_capacity(V2_LABELS_AT + crypto::SEAL_OVERHEAD + labels.len());
    out.extend_from_slice(KEY_FILE_MAGIC);
    out.push(KEY_FILE_VERSION);
    out.push(KDF_ARGON2ID);
    out.extend_from_slice(&params.memory_kib.to_le_bytes());
    out.extend_from_slice(&params.iterations.to_le_bytes());
    out.extend_from_slice(&params.parallelism.to_le_bytes());
    out.extend_from_slice(&salt);
    out.push(spec.role.to_byte());
    out.extend_from_slice(&spec.epoch.to_le_bytes());
    let wrapping = params.derive(password, &salt).ok()?;
    let sealed = Sealer::new(&wrapping).seal_with_nonce(nonces[0], plain.as_slice(), &out);
    out.extend_from_slice(&sealed);
    let labels_len = (crypto::SEAL_OVERHEAD + labels.len()) as u16;
    out.extend_from_slice(&labels_len.to_le_bytes());
    let sealed = master
        .labels_sealer()
        .seal_with_nonce(nonces[1], &labels, &out);
    out.extend_from_slice(&sealed);
    Some(out)
}

/// A version 1 key file (SPEC.md §5): only for the test vector of the
/// released format.
#[cfg(test)]
pub(crate) fn seal_key_file_v1_with(
    master: &MasterKeys,
    password: &[u8],
    params: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; crypto::NONCE_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_FILE_V1_LEN);
    out.extend_from_slice(KEY_FILE_MAGIC);
    out.push(1);
    out.push(KDF_ARGON2ID);
    out.extend_from_slice(&params.memory_kib.to_le_bytes());
    out.extend_from_slice(&params.iterations.to_le_bytes());
    out.extend_from_slice(&params.parallelism.to_le_bytes());
    out.extend_from_slice(&salt);
    let wrapping = params.derive(password, &salt).expect("valid parameters");
    let plain = master.to_bytes(KeyRole::Full).expect("a full key");
    out.extend_from_slice(&Sealer::new(&wrapping).seal_with_nonce(nonce, plain.as_slice(), &out));
    out
}

/// Reads the KDF parameters and opens a key file with `password`.
pub fn open_key_file(
    bytes: &[u8],
    password: &[u8],
) -> Result<(MasterKeys, KeyFileHeader), KeyFileError> {
    let header = read_header(bytes)?;
    let header_len = match header.version {
        1 => 50,
        _ => V2_HEADER_LEN,
    };
    let sealed_end = header_len + crypto::SEAL_OVERHEAD + MASTER_LEN;
    let wrapping = header
        .kdf
        .derive(password, &bytes[18..50])
        .map_err(|_| KeyFileError::Malformed("KDF parameters rejected"))?;
    let plain = Zeroizing::new(
        Sealer::new(&wrapping)
            .open(&bytes[header_len..sealed_end], &bytes[..header_len])
            .map_err(|_| KeyFileError::WrongPassword)?,
    );
    let master: &[u8; MASTER_LEN] = plain
        .as_slice()
        .try_into()
        .map_err(|_| KeyFileError::Malformed("wrong master length"))?;
    Ok((MasterKeys::from_bytes(header.role, master), header))
}

/// Checks a key file's length and clear header (SPEC.md §5, steps 1 to 3)
/// and returns it, without any derivation.
pub fn read_header(bytes: &[u8]) -> Result<KeyFileHeader, KeyFileError> {
    if bytes.len() < 6 || &bytes[0..4] != KEY_FILE_MAGIC {
        return Err(KeyFileError::Malformed("bad magic"));
    }
    let version = bytes[4];
    let (role, epoch) = match version {
        1 if bytes.len() == KEY_FILE_V1_LEN => (KeyRole::Full, 0),
        2 if bytes.len() >= V2_LABELS_AT && bytes.len() <= MAX_KEY_FILE_LEN => {
            let labels_len = u16::from_le_bytes([bytes[V2_LABELS_AT - 2], bytes[V2_LABELS_AT - 1]]);
            if bytes.len() != V2_LABELS_AT + labels_len as usize {
                return Err(KeyFileError::Malformed("wrong length"));
            }
            let role = match bytes[50] {
                0 => KeyRole::Full,
                1 => KeyRole::WriteOnly,
                _ => return Err(KeyFileError::Malformed("unknown role")),
            };
            (role, le32(bytes, 51))
        }
        1 | 2 => return Err(KeyFileError::Malformed("wrong length")),
        _ => return Err(KeyFileError::Malformed("unsupported version")),
    };
    if bytes[5] != KDF_ARGON2ID {
        return Err(KeyFileError::Malformed("unknown KDF"));
    }
    let kdf = KdfParams {
        memory_kib: le32(bytes, 6),
        iterations: le32(bytes, 10),
        parallelism: le32(bytes, 14),
    };
    if !kdf.is_bounded() {
        return Err(KeyFileError::Malformed("KDF parameters out of bounds"));
    }
    Ok(KeyFileHeader {
        version,
        kdf,
        role,
        epoch,
    })
}

/// Opens a key file's labels with keys of its repository. `None` for a
/// version 1 file, which has none, and for labels that do not open
/// (altered, or another repository's).
pub fn read_labels(bytes: &[u8], keys: &MasterKeys) -> Option<KeyLabels> {
    let header = read_header(bytes).ok()?;
    if header.version < 2 {
        return None;
    }
    let plain = keys
        .labels_sealer()
        .open(&bytes[V2_LABELS_AT..], &bytes[..V2_LABELS_AT])
        .ok()?;
    KeyLabels::decode(&plain)
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn spec(role: KeyRole) -> KeyFileSpec {
        KeyFileSpec {
            role,
            epoch: 3,
            labels: KeyLabels {
                host: "db1".into(),
                user: "backup".into(),
                created_s: 1_800_000_000,
            },
        }
    }

    #[test]
    fn key_file_round_trip_and_wrong_password() {
        let master = MasterKeys::generate();
        let file = seal_key_file(&master, b"secret", FAST, &spec(KeyRole::Full)).unwrap();
        let (opened, header) = open_key_file(&file, b"secret").unwrap();
        assert_eq!(
            opened.to_bytes(KeyRole::Full).unwrap().as_slice(),
            master.to_bytes(KeyRole::Full).unwrap().as_slice()
        );
        assert_eq!((header.role, header.epoch), (KeyRole::Full, 3));
        assert_eq!(
            read_labels(&file, &opened),
            Some(spec(KeyRole::Full).labels)
        );
        assert!(matches!(
            open_key_file(&file, b"wrong"),
            Err(KeyFileError::WrongPassword)
        ));
    }

    #[test]
    fn a_write_only_key_file_holds_no_private_key() {
        let master = MasterKeys::generate();
        let file = seal_key_file(&master, b"pw", FAST, &spec(KeyRole::WriteOnly)).unwrap();
        let (opened, header) = open_key_file(&file, b"pw").unwrap();
        assert_eq!(header.role, KeyRole::WriteOnly);
        assert!(opened.private.is_none());
        assert_eq!(opened.public().as_bytes(), master.public().as_bytes());
        assert_eq!(opened.chunker_seed, master.chunker_seed);
        // It can make more write-only keys, never a full one.
        assert!(seal_key_file(&opened, b"pw", FAST, &spec(KeyRole::Full)).is_none());
        assert!(seal_key_file(&opened, b"pw", FAST, &spec(KeyRole::WriteOnly)).is_some());
        // Its labels open with the write-only keys too.
        assert_eq!(
            read_labels(&file, &opened),
            Some(spec(KeyRole::Full).labels)
        );
    }

    #[test]
    fn long_labels_are_cut_at_a_character_boundary() {
        let master = MasterKeys::generate();
        let mut spec = spec(KeyRole::Full);
        spec.labels.host = "é".repeat(200);
        let file = seal_key_file(&master, b"pw", FAST, &spec).unwrap();
        assert!(file.len() <= MAX_KEY_FILE_LEN);
        let labels = read_labels(&file, &master).unwrap();
        assert_eq!(labels.host, "é".repeat(127));
    }

    #[test]
    fn version_1_key_files_still_open_as_full_keys_of_epoch_0() {
        let master = MasterKeys::generate();
        let file = seal_key_file_v1_with(&master, b"pw", FAST, [1; 32], [2; 12]);
        assert_eq!(file.len(), KEY_FILE_V1_LEN);
        let (opened, header) = open_key_file(&file, b"pw").unwrap();
        assert_eq!(
            (header.version, header.role, header.epoch),
            (1, KeyRole::Full, 0)
        );
        assert!(opened.private.is_some());
        assert_eq!(read_labels(&file, &opened), None);
    }

    #[test]
    fn hostile_parameters_are_refused_before_deriving() {
        let master = MasterKeys::generate();
        let mut file = seal_key_file(&master, b"pw", FAST, &spec(KeyRole::Full)).unwrap();
        file[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            open_key_file(&file, b"pw"),
            Err(KeyFileError::Malformed(_))
        ));
    }

    #[test]
    fn every_flipped_byte_of_the_keys_or_header_is_refused() {
        let master = MasterKeys::generate();
        let file = seal_key_file(&master, b"pw", FAST, &spec(KeyRole::Full)).unwrap();
        for i in 0..file.len() {
            let mut flipped = file.clone();
            flipped[i] ^= 0x80;
            let opened = open_key_file(&flipped, b"pw");
            if i < V2_LABELS_AT - 2 {
                assert!(opened.is_err(), "flip at {i}");
            } else if let Ok((keys, _)) = opened {
                // Labels are not sealed under the password: a flip there
                // makes them unreadable, never different.
                assert_eq!(read_labels(&flipped, &keys), None, "flip at {i}");
            }
        }
    }
}
