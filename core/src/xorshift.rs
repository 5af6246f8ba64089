//! xorshift64: the one generator of reproducible, incompressible input for
//! unit tests, test vectors, black-box tests and benchmarks. Not random in
//! any sense that matters for security; keys and nonces come from the
//! operating system (`crypto::random_bytes`).

/// A xorshift64 generator.
#[derive(Clone, Debug)]
pub struct Xorshift64 {
    state: u64,
}

impl Xorshift64 {
    /// A generator started at `seed`, which must not be 0 (0 stays 0).
    pub fn new(seed: u64) -> Xorshift64 {
        Xorshift64 { state: seed }
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// `len` bytes: the low byte of each of the next `len` values. The
    /// test vectors depend on these exact bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
