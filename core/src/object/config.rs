//! The repository's `config` object (SPEC.md §9).
//!
//! Stored in the clear, so that any tool can see what a directory is and
//! which format version it uses before asking for a password. It holds no
//! secret: the chunker's seed lives in the master keys.

use crate::chunker::ChunkerParams;
use crate::codec;
use crate::id::Id;

/// Leading bytes of the config object.
pub const CONFIG_MAGIC: &[u8; 4] = b"CRNC";
/// Repository format version written by this build.
pub const REPOSITORY_VERSION: u32 = 1;
/// Largest config object read.
pub const MAX_CONFIG_LEN: usize = 4096;

/// Settings fixed when the repository is created.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Config {
    /// Repository format version.
    pub version: u32,
    /// Random id naming the repository; names its local cache.
    pub id: Id,
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// Default zstd level for new blobs (0 stores raw).
    pub compression_level: i32,
    /// Packs are closed once they reach this many bytes.
    pub pack_target_bytes: u32,
}

/// Why a config object was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a config object, or out-of-range settings.
    #[error("not a valid config: {0}")]
    Malformed(String),
    /// A config from a newer cairn.
    #[error("unsupported repository version {0}")]
    Version(u32),
}

/// Default target pack size.
pub const DEFAULT_PACK_TARGET_BYTES: u32 = 16 << 20;
/// Smallest and largest pack target accepted.
pub const PACK_TARGET_RANGE: std::ops::RangeInclusive<u32> = (1 << 20)..=(1 << 30);
/// zstd levels accepted; 0 means no compression.
pub const COMPRESSION_LEVELS: std::ops::RangeInclusive<i32> = 0..=22;
/// The zstd level of new repositories: with small blobs one level higher,
/// the cheapest measured that stores less than borg (SPEC.md §8).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 4;

impl Config {
    /// The bytes stored under `config`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = CONFIG_MAGIC.to_vec();
        out.extend_from_slice(&codec::encode(self));
        out
    }

    /// Parses and validates a stored config.
    pub fn from_bytes(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.len() > MAX_CONFIG_LEN || !bytes.starts_with(CONFIG_MAGIC) {
            return Err(ConfigError::Malformed("bad magic or length".into()));
        }
        let config: Config = codec::decode(&bytes[CONFIG_MAGIC.len()..])
            .map_err(|e| ConfigError::Malformed(e.to_string()))?;
        if config.version != REPOSITORY_VERSION {
            return Err(ConfigError::Version(config.version));
        }
        if !config.chunker.is_valid()
            || !COMPRESSION_LEVELS.contains(&config.compression_level)
            || !PACK_TARGET_RANGE.contains(&config.pack_target_bytes)
        {
            return Err(ConfigError::Malformed("settings out of range".into()));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let config = Config {
            version: REPOSITORY_VERSION,
            id: Id([5; 32]),
            chunker: ChunkerParams::DEFAULT,
            compression_level: 3,
            pack_target_bytes: DEFAULT_PACK_TARGET_BYTES,
        };
        let bytes = config.to_bytes();
        assert_eq!(Config::from_bytes(&bytes).unwrap(), config);
        let mut bad = config.clone();
        bad.chunker.max_bytes = 1;
        assert!(Config::from_bytes(&bad.to_bytes()).is_err());
        let mut newer = config;
        newer.version = 2;
        assert!(matches!(
            Config::from_bytes(&newer.to_bytes()),
            Err(ConfigError::Version(2))
        ));
        assert!(Config::from_bytes(b"garbage").is_err());
    }
}
