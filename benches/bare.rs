//! The machine's limit for a first backup: cairn's four content stages
//! (FastCDC, keyed BLAKE3, zstd, AES-256-GCM-SIV) over every regular file
//! of a tree, files and the chunks of each file spread over all cores with
//! rayon, and nothing else: no index lookups, no packs, no trees, no
//! writes. `compare.sh` runs it on its corpus beside the tools, so that
//! cairn's first backup can be stated as a share of it.
//!
//! `cargo run --release -p cairn-benches --bin bare-pipeline -- DIR [LEVEL]`
//!
//! Prints one line: bytes, seconds, MB/s, the level and the threads.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cairn_core::internals::{Chunker, Encoder, IdKey, Sealer, SecretKey};
use cairn_core::{BlobType, ChunkerParams, DEFAULT_COMPRESSION_LEVEL};
use rayon::prelude::*;

/// Every regular file below `root`, not following symbolic links.
fn regular_files(root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            regular_files(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

thread_local! {
    /// Each thread's encoder: zstd contexts are too costly to create per
    /// chunk, and the chunks of one file run on several threads.
    static ENCODER: RefCell<Option<Encoder>> = const { RefCell::new(None) };
}

/// Reads and cuts one file, then hashes, compresses and seals its chunks
/// on all cores, so that one large file does not leave the other cores
/// idle at the end of the run; returns the file's length.
fn process(path: &Path, chunker: &Chunker, id_key: &IdKey, sealer: &Sealer, level: i32) -> u64 {
    let Ok(data) = fs::read(path) else {
        return 0;
    };
    let mut ranges = Vec::new();
    let mut offset = 0;
    for len in chunker.cut_all(&data) {
        ranges.push(offset..offset + len);
        offset += len;
    }
    ranges.into_par_iter().for_each(|range| {
        let chunk = &data[range];
        let id = id_key.blob_id(0, chunk);
        ENCODER.with_borrow_mut(|encoder| {
            let encoder = encoder.get_or_insert_with(|| Encoder::new(level));
            std::hint::black_box(encoder.seal(id, BlobType::Data, chunk, sealer));
        });
    });
    data.len() as u64
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(root) = args.next().map(PathBuf::from) else {
        eprintln!("usage: bare-pipeline DIR [LEVEL]");
        return ExitCode::from(2);
    };
    let level = match args.next().map(|a| a.to_string_lossy().parse::<i32>()) {
        None => DEFAULT_COMPRESSION_LEVEL,
        Some(Ok(level)) => level,
        Some(Err(e)) => {
            eprintln!("bare-pipeline: LEVEL: {e}");
            return ExitCode::from(2);
        }
    };
    let mut files = Vec::new();
    if let Err(e) = regular_files(&root, &mut files) {
        eprintln!("bare-pipeline: {}: {e}", root.display());
        return ExitCode::from(1);
    }
    let chunker = Chunker::new(ChunkerParams::DEFAULT, 0x5eed);
    let id_key = IdKey::from_bytes([3; 32]);
    let sealer = Sealer::new(&SecretKey::random());
    let started = Instant::now();
    let bytes: u64 = files
        .par_iter()
        .map(|path| process(path, &chunker, &id_key, &sealer, level))
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{bytes} bytes in {seconds:.2} s: {:.0} MB/s (zstd {level}, {} threads)",
        bytes as f64 / 1e6 / seconds,
        rayon::current_num_threads()
    );
    ExitCode::SUCCESS
}
