//! Helpers shared by the unit tests.

/// `len` bytes of xorshift64 output from `seed` (which must not be 0):
/// reproducible, incompressible input for chunking and sealing tests and
/// for the test vectors, which depend on these exact bytes.
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
