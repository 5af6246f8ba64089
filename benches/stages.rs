//! One benchmark per stage of the backup pipeline, on in-memory data, plus
//! the whole pipeline into an in-memory repository.
//! `cargo bench -p cairn-benches`

use std::hint::black_box;

use cairn_benches::text_like;
use cairn_core::backend::MemoryBackend;
use cairn_core::internals::{Chunker, Encoder, IdKey, Sealer, SecretKey};
use cairn_core::{BlobType, ChunkerParams, InitOptions, KdfParams, Repository};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const INPUT_LEN: usize = 32 << 20;

fn stages(c: &mut Criterion) {
    let input = text_like(INPUT_LEN, 7);
    let chunker = Chunker::new(ChunkerParams::DEFAULT, 0x5eed);
    let chunks: Vec<&[u8]> = {
        let mut offset = 0;
        chunker
            .cut_all(&input)
            .into_iter()
            .map(|len| {
                let chunk = &input[offset..offset + len];
                offset += len;
                chunk
            })
            .collect()
    };
    let id_key = IdKey::from_bytes([3; 32]);
    let sealer = Sealer::new(&SecretKey::random());

    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Bytes(INPUT_LEN as u64));
    group.sample_size(10);
    group.bench_function("chunk (FastCDC, 256 KiB avg)", |b| {
        b.iter(|| black_box(chunker.cut_all(black_box(&input))))
    });
    group.bench_function("hash (keyed BLAKE3)", |b| {
        b.iter(|| {
            for chunk in &chunks {
                black_box(id_key.blob_id(0, chunk));
            }
        })
    });
    for level in [1, 3, 4] {
        let mut encoder = Encoder::new(level);
        group.bench_function(
            format!("compress + seal (zstd {level}, AES-256-GCM-SIV)"),
            |b| {
                b.iter(|| {
                    for chunk in &chunks {
                        black_box(encoder.seal(
                            id_key.blob_id(0, chunk),
                            BlobType::Data,
                            chunk,
                            &sealer,
                        ));
                    }
                })
            },
        );
    }
    group.bench_function("seal only (AES-256-GCM-SIV)", |b| {
        b.iter(|| {
            for chunk in &chunks {
                black_box(sealer.seal(chunk, b"aad"));
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(INPUT_LEN as u64));
    group.sample_size(10);
    group.bench_function(
        "chunk, hash, dedup, compress, seal, pack (memory backend)",
        |b| {
            b.iter_with_setup(
                || {
                    let cache = tempfile::tempdir().expect("temp dir");
                    let options = InitOptions {
                        kdf: KdfParams {
                            memory_kib: 64,
                            iterations: 1,
                            parallelism: 1,
                        },
                        ..InitOptions::default()
                    };
                    let repo = Repository::init(
                        Box::new(MemoryBackend::default()),
                        b"pw",
                        &options,
                        cache.path(),
                    )
                    .expect("init");
                    (cache, repo)
                },
                |(_cache, repo)| {
                    let mut writer = repo
                        .start_write(cairn_core::DEFAULT_COMPRESSION_LEVEL)
                        .expect("writer");
                    for batch in repo
                        .chunker()
                        .stream(&input[..])
                        .collect::<Vec<_>>()
                        .chunks(8)
                    {
                        let batch = batch
                            .iter()
                            .map(|c| c.as_ref().expect("in memory").clone())
                            .collect();
                        black_box(writer.add_blobs(BlobType::Data, batch).expect("add"));
                    }
                    writer.flush().expect("flush");
                },
            )
        },
    );
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
