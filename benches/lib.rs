//! Shared inputs for cairn's benchmarks (`stages.rs`) and the peer
//! comparison (`compare.sh`); see RESULTS.md for results.

/// Deterministic bytes that compress like source code and text: words from
/// a small vocabulary with xorshift-chosen order, so zstd has realistic
/// work and the chunker real cut points.
pub fn text_like(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 16] = [
        b"fn ", b"let ", b"match ", b"self", b"{\n", b"}\n", b"return ", b"Result<", b"the ",
        b"backup ", b"chunk ", b"= ", b"(", b")", b";\n", b"    ",
    ];
    let mut generator = cairn_core::internals::Xorshift64::new(seed | 1);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let state = generator.next_u64();
        out.extend_from_slice(WORDS[(state % 16) as usize]);
        if state.is_multiple_of(7) {
            out.extend_from_slice(&state.to_le_bytes()[..3]);
        }
    }
    out.truncate(len);
    out
}
