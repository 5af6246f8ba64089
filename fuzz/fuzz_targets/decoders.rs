//! Every decoder of stored bytes must refuse garbage without panicking or
//! allocating beyond its input. Run: `cargo +nightly fuzz run decoders`.
#![no_main]

use cairn_core::internals::{self as pack, IndexSegment};
use cairn_core::{Config, Snapshot, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Tree::decode(data);
    let _ = Snapshot::decode(data);
    let _ = IndexSegment::decode(data);
    let _ = Config::from_bytes(data);
    if data.len() >= pack::FOOTER_LEN {
        let _ = pack::trailer_bounds(&data[data.len() - pack::FOOTER_LEN..], data.len() as u64);
    }
});
