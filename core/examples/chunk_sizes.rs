//! Measures deduplication against index size for several chunk-size
//! settings, to choose the defaults recorded in SPEC.md §7.
//!
//! `cargo run --release -p cairn-core --example chunk_sizes -- FILE...`
//! Each file is chunked whole, in order, as successive versions backed up
//! into one repository; the output is one line per setting.

use std::collections::HashSet;

use cairn_core::internals::Chunker;
use cairn_core::ChunkerParams;

fn main() {
    let files: Vec<Vec<u8>> = std::env::args()
        .skip(1)
        .map(|path| std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect();
    let input: usize = files.iter().map(Vec::len).sum();
    println!("input {} MiB in {} files", input >> 20, files.len());
    println!(
        "min_KiB avg_KiB max_KiB  chunks  stored_MiB  stored_%  first_MiB  added_by_later_MiB"
    );
    let kib = 1024u32;
    for (min, avg, max) in [
        (64, 256, 1024),
        (128, 512, 2048),
        (256, 1024, 4096),
        (512, 1024, 8192),
        (512, 2048, 8192),
        (1024, 4096, 16384),
    ] {
        let params = ChunkerParams {
            min_bytes: min * kib,
            avg_bytes: avg * kib,
            max_bytes: max * kib,
        };
        let chunker = Chunker::new(params, 0x5eed);
        let mut seen = HashSet::new();
        let mut stored = 0usize;
        let mut first = 0usize;
        for (i, file) in files.iter().enumerate() {
            let mut offset = 0;
            for len in chunker.cut_all(file) {
                let chunk = &file[offset..offset + len];
                offset += len;
                if seen.insert(*blake3::hash(chunk).as_bytes()) {
                    stored += len;
                }
            }
            if i == 0 {
                first = stored;
            }
        }
        println!(
            "{min:>7} {avg:>7} {max:>7} {:>7} {:>11.1} {:>9.1} {:>10.1} {:>19.1}",
            seen.len(),
            stored as f64 / 1048576.0,
            100.0 * stored as f64 / input as f64,
            first as f64 / 1048576.0,
            (stored - first) as f64 / 1048576.0,
        );
    }
}
