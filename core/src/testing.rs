//! Helpers shared by the unit tests.

/// `len` bytes of xorshift64 output from `seed` (which must not be 0):
/// reproducible, incompressible input for chunking and sealing tests and
/// for the test vectors, which depend on these exact bytes.
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    crate::xorshift::Xorshift64::new(seed).bytes(len)
}

/// Repository settings that open fast: the cheapest key derivation.
pub(crate) fn fast_options() -> crate::InitOptions {
    crate::InitOptions {
        kdf: crate::object::key_file::KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..crate::InitOptions::default()
    }
}

/// A new repository in memory, with its cache directory.
pub(crate) fn memory_repository() -> (tempfile::TempDir, crate::Repository) {
    memory_repository_on(&crate::backend::MemoryBackend::default())
}

/// A new repository in `backend` (whose clones share its objects, so the
/// test can damage them), with its cache directory.
pub(crate) fn memory_repository_on(
    backend: &crate::backend::MemoryBackend,
) -> (tempfile::TempDir, crate::Repository) {
    let cache = tempfile::tempdir().unwrap();
    let repo = crate::Repository::init(
        Box::new(backend.clone()),
        b"pw",
        &fast_options(),
        cache.path(),
    )
    .unwrap();
    (cache, repo)
}
